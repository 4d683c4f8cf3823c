"""atomic_write / atomic_file: the target is replaced whole or not at all, and no temp file is left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.state.files import TMP_MARK, atomic_file, atomic_write


def test_atomic_write_replaces_the_file_whole_with_the_given_mode(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    target.write_text("old")
    atomic_write(target, "new ✓", perms=0o600)
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write(target, b"\x00bytes", perms=0o644, fsync=True)
    assert target.read_bytes() == b"\x00bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["status.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.jpg"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as out:
        out.write(b"half")
        names = os.listdir(tmp_path)
        assert any(TMP_MARK in n and str(os.getpid()) in n for n in names), names  # the temp names our pid
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.jpg"]
