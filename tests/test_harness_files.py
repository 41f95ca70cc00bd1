"""Atomic writes clean up after killed writers and make the rename durable; folder locks die with their holder."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fedcompress import files
from fedcompress.errors import RunError
from fedcompress.federation.client_state import ROUND_KEY, save_state_to_disk
from fedcompress.files import FolderLock, atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

# A writer that hangs after writing its temporary file (before the rename), so it can be killed mid-write.
HANGING_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from fedcompress.files import atomic_write_text
    os.replace = lambda *args: time.sleep(300)
    atomic_write_text(sys.argv[1], "half")
    """
)


def _python(code: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env)


def _others(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_next_write_removes_the_temporary_file_of_a_killed_writer(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_text(target, "old")
    writer = _python(HANGING_WRITER, str(target))
    _wait_for(lambda: len(_others(tmp_path, "result.json")) == 1)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert target.read_text() == "old"  # the killed write never happened
    assert len(_others(tmp_path, "result.json")) == 1  # ... but left its temporary file
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert _others(tmp_path, "result.json") == []


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    target = tmp_path / "checkpoint.pt"
    writer = _python(HANGING_WRITER, str(target))
    try:
        _wait_for(lambda: len(_others(tmp_path, "checkpoint.pt")) == 1)
        (in_flight,) = _others(tmp_path, "checkpoint.pt")
        atomic_write_bytes(target, b"mine")
        assert (tmp_path / in_flight).exists()  # the other writer may still rename it
    finally:
        writer.kill()
        writer.wait()


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert events == ["fsync file", "rename", "fsync folder"]


def test_mode_applies_to_the_new_file_whatever_was_there(tmp_path):
    target = tmp_path / "secret"
    target.write_text("old")
    target.chmod(0o644)
    atomic_write_bytes(target, b"new", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"new"


def test_a_second_lock_on_a_folder_is_refused_naming_the_holder(tmp_path):
    busy = rf"in use by another run \(pid {os.getpid()}\)"
    with FolderLock(tmp_path, what="run"), pytest.raises(RunError, match=busy):
        FolderLock(tmp_path, what="run").__enter__()
    with FolderLock(tmp_path, what="run"):  # released on exit
        pass


def test_a_lock_dies_with_a_killed_holder(tmp_path):
    holder = _python(
        "import sys, time; from fedcompress.files import FolderLock\n"
        "with FolderLock(sys.argv[1]):\n"
        "    open(sys.argv[1] + '/held', 'w').close()\n"
        "    time.sleep(300)\n",
        str(tmp_path),
    )
    _wait_for(lambda: (tmp_path / "held").exists())
    with pytest.raises(RunError, match=f"pid {holder.pid}"):
        FolderLock(tmp_path).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with FolderLock(tmp_path):  # no stale lock: the kernel released it with the process
        pass


def test_outputs_get_the_umask_modes_and_secrets_stay_owner_only(tmp_path):
    plain = tmp_path / "result.json"
    old = os.umask(0o022)
    try:
        atomic_write_bytes(plain, b"{}")
        save_state_to_disk(tmp_path, 0, {ROUND_KEY: np.array(1), "codec/residual": np.zeros(3)})
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644  # like report.md and every other output of a run
    (state_file,) = (tmp_path / "client-state" / "partition-0").glob("*.npz")
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600  # a site's residuals and accountant
