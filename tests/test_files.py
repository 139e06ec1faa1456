"""data_prep.files.atomic_write: all or nothing."""

import os

import pytest

from data_prep import files


def test_a_finished_write_replaces_the_file(tmp_path):
    path = str(tmp_path / "a.txt")
    with open(path, "w") as f:
        f.write("old")
    with files.atomic_write(path) as f:
        f.write("new")
    assert open(path).read() == "new"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_an_error_half_way_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "a.txt")
    with open(path, "w") as f:
        f.write("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with files.atomic_write(path) as f:
            f.write("half")
            raise RuntimeError("disk on fire")
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_concurrent_writers_of_one_path_never_collide(tmp_path):
    # Two writers open the same path at once (two benchmark processes sharing
    # an output folder): each finishes, the last rename wins, nothing is lost.
    path = str(tmp_path / "table.csv")
    with files.atomic_write(path) as first:
        first.write("first")
        with files.atomic_write(path) as second:
            second.write("second")
        assert open(path).read() == "second"
    assert open(path).read() == "first"
    assert os.listdir(tmp_path) == ["table.csv"]
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_current_umask()


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
