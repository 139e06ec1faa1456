"""The README's commands: the one CI runs, and the recipes as written."""

import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import make_npy_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ci_runs_the_readme_test_command():
    ci_lines = open(os.path.join(REPO, ".ci", "run")).read().splitlines()
    command = [line for line in ci_lines if "pytest" in line and not line.startswith("#")]
    assert len(command) == 1
    assert command[0] in open(os.path.join(REPO, "README.md")).read()


def test_quickstart_trains_the_default_config():
    readme = open(os.path.join(REPO, "README.md")).read()
    assert "--config=configs/default.py" in readme.split("## Quickstart")[1].split("##")[0]


# What the test adds to the README's commands: where to write, and a size
# that trains in seconds.
SMALL = ["--config.steps=2", "--config.batch_size=8", "--config.eval_batch_size=16",
         "--config.model.channels=8", "--config.model.num_blocks=2",
         "--config.model.projection_dim=8", "--config.data.num_frames=24",
         "--config.data.eval_num_frames=56", "--config.checkpoint_every=2",
         "--config.log_every=2"]


@pytest.mark.slow   # runs the entry points: the full tier
def test_the_own_features_recipe_runs_as_written(tmp_path):
    """The README's three commands for features made elsewhere, on a tiny
    npy corpus: the config derives what such features cannot serve, so no
    further flag is needed."""
    readme = open(os.path.join(REPO, "README.md")).read()
    block = readme.split("**Bring your own features.**")[1].split("```bash\n")[1]
    commands = [shlex.split(line) for line in block.split("```")[0].strip().splitlines()]
    assert len(commands) == 3
    files = {"src.csv": make_npy_corpus(str(tmp_path / "src"), 20, seed=0),
             "tgt.csv": make_npy_corpus(str(tmp_path / "tgt"), 20, seed=1)}
    data, workdir = str(tmp_path / "data"), str(tmp_path / "W")
    for command in commands:
        args = [sys.executable] + [
            arg.replace("=src.csv", "=" + files["src.csv"]).replace(
                "=tgt.csv", "=" + files["tgt.csv"]).replace("=W", "=" + workdir).replace(
                "_dim=D", "_dim=20") for arg in command[1:]]
        args += ([f"--data_dir={data}"] if "data_prep" in args
                 else [f"--config.data.data_dir={data}"] + SMALL)
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "emo-dna      target UAR" in done.stdout
    assert ("note: data.feature='npy' has no prosody tracks or mel bands: "
            "data.utterance_stats, loss.cluster_labels, loss.cluster_agreement, "
            "strong_augment.warp turned off") in done.stderr
