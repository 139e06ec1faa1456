"""The README's commands are the ones CI runs."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ci_runs_the_readme_test_command():
    ci_lines = open(os.path.join(REPO, ".ci", "run")).read().splitlines()
    command = [line for line in ci_lines if "pytest" in line and not line.startswith("#")]
    assert len(command) == 1
    assert command[0] in open(os.path.join(REPO, "README.md")).read()


def test_quickstart_trains_the_default_config():
    readme = open(os.path.join(REPO, "README.md")).read()
    assert "--config=configs/default.py" in readme.split("## Quickstart")[1].split("##")[0]
