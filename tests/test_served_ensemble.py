"""benchmarks/served_ensemble.py: its --runs list, read before any export."""

import argparse

import pytest

from benchmarks import served_ensemble


def test_runs_are_read_into_task_method_and_seed():
    parser = argparse.ArgumentParser()
    assert served_ensemble.parse_runs(
        parser, "hi_festival:en_subdued:emodna:0, en_phone:hi_festival:source_only:12"
    ) == [("hi_festival:en_subdued", "emodna", 0),
          ("en_phone:hi_festival", "source_only", 12)]


@pytest.mark.parametrize("runs", ["hi_festival:en_subdued:emodna",
                                  "hi_festival:en_subdued:emodna:zero",
                                  "hi_festival::emodna:0"])
def test_a_malformed_run_is_a_usage_error_naming_it(tmp_path, capsys, runs):
    with pytest.raises(SystemExit):
        served_ensemble.main([f"--data_dir={tmp_path}", f"--out={tmp_path}",
                              f"--runs=a:b:emodna:1,{runs}",
                              f"--doc={tmp_path}/doc.md"])
    assert f"--runs: {runs!r} is not SRC:TGT:METHOD:SEED" in capsys.readouterr().err
    assert not (tmp_path / "doc.md").exists()
