"""Whole-file writes: all or nothing, never onto something that is not a regular file."""

import os
import stat

import pytest

from retina.files import write_atomically
from retina.run_dir import StepLog


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    write_atomically(target, "new")
    write_atomically(tmp_path / "plot.png", lambda path: path.write_bytes(b"\x89PNG"))
    assert target.read_text() == "new" and (tmp_path / "plot.png").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "plot.png"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "summary.csv"
    target.write_text("old")

    def fails(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(target, fails)
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("target", [os.devnull, "a folder"])
def test_a_device_or_folder_is_never_replaced(tmp_path, target):
    path = tmp_path / target if target == "a folder" else target
    if target == "a folder":
        path.mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        write_atomically(path, "step,loss\n")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)  # /dev/null is still the device


def test_a_step_log_without_a_path_keeps_nothing(tmp_path):
    log = StepLog(None, restored_step=0)
    log.write(1, 0.5, 0.25)
    log.truncate(0)
    log.close()
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
