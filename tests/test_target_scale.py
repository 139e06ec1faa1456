"""benchmarks/target_scale.py: the table's figures from its measurements, and
the reproduce line every generated table carries."""

import pytest

from benchmarks import cross_corpus
from benchmarks import target_scale


def _row(size=4000):
    on = {"wall_s": 60.0, "steps_per_s": 8.0, "upkeep_s": 1.5, "clusterings": 6,
          "peak_rss_mib": 1100.0}
    off = {"wall_s": 50.0, "steps_per_s": 8.5, "upkeep_s": 0.0, "clusterings": 0,
           "peak_rss_mib": 1000.0}
    # The full-pass design: 6 clusterings x 4000 utterances at 400 utt/s.
    return {"size": size, "prep_per_s": 150.0, "on": on, "off": off,
            "eval_per_s": 400.0, "clusterings_full_pass_s": 6 * size / 400.0}


def test_the_ratios_and_shares_are_computed_from_the_measurements():
    bank = {"size": 100000, "cluster_s": 0.5, "record_s": 0.0, "bytes_per_utterance": 232.0}
    text = target_scale.markdown([_row()], [bank], "python x", every=50, step_s=0.1)
    cells = [c.strip() for c in text.splitlines()[6].split("|")[1:-1]]
    assert cells[0] == "4000" and cells[1] == "150"
    assert cells[4] == "1.50 (6)" and cells[5] == "2.5%"           # 1.5 s of 60
    assert cells[10] == "**1.20**"                                  # 60 / 50
    assert cells[12:] == ["60", "54.5%", "2.20"]   # 60 / (50 + 60); (50 + 60) / 50
    bank_cells = [c.strip() for c in text.splitlines()[-1].split("|")[1:-1]]
    # 0.5 s of a clustering against 50 steps of 0.1 s: 0.5 / 5.5.
    assert bank_cells == ["100000", "0.50", "0.000", "**9.1%**", "232"]


def test_a_target_size_must_fill_its_speakers():
    with pytest.raises(ValueError, match="--sizes: 1001 is not a multiple of 40 speakers"):
        target_scale.specs(1001)


@pytest.mark.parametrize("argv", [["--out", "/tmp/x", "--data_dir", "/d", "--seeds", "0"],
                                  ["--out=/tmp/x", "--data_dir=/d", "--seeds", "0"]])
def test_the_reproduce_line_hides_this_machine_s_folders(argv):
    assert cross_corpus.reproduce_command("cross_corpus.py", argv) == (
        "python benchmarks/cross_corpus.py --out=OUT --data_dir=DATA --seeds 0")
