"""benchmarks/ablation.py: differences between rows, their standard error
over seeds (hand-worked), the group columns and the errors on bad input."""

import csv
import math

import pytest

from benchmarks import ablation


def test_difference_and_its_standard_error_by_hand():
    values = {"a": [0.5, 0.7], "b": [0.6, 0.6]}
    reference = {"a": [0.4, 0.4], "b": [0.5, 0.7]}
    delta, error = ablation.difference(values, reference, ["a", "b"])
    # Task a: 0.6 - 0.4; task b: 0.6 - 0.6.  Variances of the means: a
    # 0.02 / 2 + 0, b 0 + 0.02 / 2; SE = sqrt(0.01 + 0.01) / 2.
    assert delta == pytest.approx(0.1)
    assert error == pytest.approx(math.sqrt(0.02) / 2)


def test_one_seed_has_a_difference_and_no_standard_error():
    delta, error = ablation.difference({"a": [0.7]}, {"a": [0.5]}, ["a"])
    assert delta == pytest.approx(0.2)
    assert math.isnan(error)


def _write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "method", "seed", "uar"])
        writer.writeheader()
        writer.writerows(rows)


def test_the_table_has_a_mean_per_group_with_the_difference(tmp_path):
    runs = tmp_path / "results.csv"
    tasks = {"it_festival:en_flite": 0.8, "en_phone:hi_festival": 0.4}
    _write(runs, [{"task": t, "method": m, "seed": s, "uar": u + bump + 0.01 * s}
                  for t, u in tasks.items()
                  for m, bump in (("source_only", 0.0), ("emodna", 0.05))
                  for s in (0, 1)])
    doc = tmp_path / "doc.md"
    ablation.main(["--doc", str(doc), "--seeds=0,1",
                   f"--row=recipe={runs}:emodna", f"--row=source-only={runs}:source_only"])
    table = [line for line in doc.read_text().splitlines() if line.startswith("| ")]
    assert table[0].split(" | ")[-3:] == ["mean, development suite", "mean, swapped pair",
                                          "mean |"]
    source_only = table[2].split(" | ")
    # Each row's two seeds are 0.01 apart: a mean's variance is 0.00005 / 2,
    # a task's difference's 0.00005, the two-task mean's 2 x 0.00005 / 2^2.
    assert source_only[-3:] == ["**0.805** (-0.050 ± 0.007)", "**0.405** (-0.050 ± 0.007)",
                                "**0.605** (-0.050 ± 0.005) |"]
    assert table[1].split(" | ")[-1] == "**0.655** |"   # the reference: no difference


def test_rows_without_a_common_task_are_refused(tmp_path, capsys):
    runs = tmp_path / "results.csv"
    _write(runs, [{"task": "it_festival:en_flite", "method": "emodna", "seed": 0, "uar": 0.8},
                  {"task": "en_phone:hi_festival", "method": "source_only", "seed": 0,
                   "uar": 0.4}])
    with pytest.raises(SystemExit):
        ablation.main(["--doc", str(tmp_path / "doc.md"),
                       f"--row=a={runs}:emodna", f"--row=b={runs}:source_only"])
    assert "no task has runs at seeds [0] in every --row" in capsys.readouterr().err


def test_a_row_can_read_another_column_of_the_csv(tmp_path, capsys):
    runs = tmp_path / "results.csv"
    with open(runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "method", "seed", "uar",
                                               "uar_ensemble"])
        writer.writeheader()
        writer.writerows([{"task": "it_festival:en_flite", "method": "emodna", "seed": 0,
                           "uar": 0.8, "uar_ensemble": 0.9},
                          # evaluated before the column: no value, not a zero
                          {"task": "en_phone:hi_festival", "method": "emodna", "seed": 0,
                           "uar": 0.4, "uar_ensemble": ""}])
    assert ablation.parse_row(f"e={runs}:emodna@uar_ensemble") == (
        "e", str(runs), "emodna", "uar_ensemble")
    assert ablation.row_values(str(runs), "emodna", [0], "uar_ensemble") == {
        "it_festival:en_flite": [0.9]}
    doc = tmp_path / "doc.md"
    ablation.main(["--doc", str(doc), f"--row=selected={runs}:emodna",
                   f"--row=ensemble={runs}:emodna@uar_ensemble"])
    table = [line for line in doc.read_text().splitlines() if line.startswith("| ")]
    assert table[2].startswith("| ensemble (`results.csv`: emodna, uar_ensemble) | 0.900 |")
    assert "**0.900** (+0.100)" in table[2]
    with pytest.raises(SystemExit):
        ablation.main(["--doc", str(doc), f"--row=x={runs}:emodna@uar_oracle"])
    assert "column 'uar_oracle' is not one of uar, uar_last" in capsys.readouterr().err
