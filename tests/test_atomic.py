"""Atomic writes (issue 8.2): a killed or failing writer never leaves a partial target file.

A writer SIGKILLed mid-write cannot clean up, so its temporary file stays behind; it is named
``.<target>.<random>.tmp`` (hidden, other suffix), so it can never be taken for the target, and the
next successful write to the same target is unaffected by it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deepcompress.atomic import atomic_open, atomic_write_bytes

CHUNK = 1 << 16

WRITER = """
import sys, time
from deepcompress.atomic import atomic_open
with atomic_open(sys.argv[1]) as handle:
    for i in range(10_000):  # 640 MiB if never killed; the test kills it after the first chunks
        handle.write(bytes([i % 251]) * {chunk})
        handle.flush()
        if i == 2:
            print("writing", flush=True)
        time.sleep(0.01)
""".format(chunk=CHUNK)


def _kill_while_writing(target: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        # the temporary file really holds a partial write at this point
        partial = [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
        assert len(partial) == 1 and partial[0].stat().st_size >= 3 * CHUNK
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _leftovers(directory: Path, target: Path) -> list[str]:
    names = sorted(p.name for p in directory.iterdir() if p != target)
    for name in names:  # hidden, distinct suffix: never mistaken for the target
        assert name.startswith(f".{target.name}.") and name.endswith(".tmp") and name != target.name
    return names


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_killed_writer_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.dcz"
    target.write_bytes(b"old content")
    _kill_while_writing(target)
    assert target.read_bytes() == b"old content"
    assert len(_leftovers(tmp_path, target)) == 1
    atomic_write_bytes(target, b"new")  # a later write is unaffected by the orphaned temp file
    assert target.read_bytes() == b"new"


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_killed_writer_of_a_new_file_leaves_no_target(tmp_path: Path) -> None:
    target = tmp_path / "model.dcz"
    _kill_while_writing(target)
    assert not target.exists()
    assert len(_leftovers(tmp_path, target)) == 1


def test_exception_inside_the_block_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.dcz"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["model.dcz"]


def test_successful_write_replaces_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "model.dcz"
    target.write_bytes(b"old content")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["model.dcz"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing" / "x.dcz", b"")


def test_new_files_get_the_umask_mode_and_existing_files_keep_theirs(tmp_path: Path) -> None:
    import stat

    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.bin"
        atomic_write_bytes(fresh, b"x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        kept = tmp_path / "kept.bin"
        kept.write_bytes(b"old")
        kept.chmod(0o640)
        atomic_write_bytes(kept, b"new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_bytes() == b"new"
    finally:
        os.umask(old)
