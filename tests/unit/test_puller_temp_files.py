"""The puller's temp files: a reconcile (a reload, a 'sync' beside 'run') removes only those no live writer owns."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.config.loader import parse_config
from agent.pipeline.puller import TMP_MARK, ThumbnailPuller
from agent.state.status import Status
from tests.support import wait_for


class SlowBody:
    """A download body that hands out its first chunk, then waits until released (a slow link)."""

    def __init__(self, data: bytes) -> None:
        self.parts = [data[: len(data) // 2], data[len(data) // 2 :]]
        self.release = threading.Event()
        self.closed = False

    def read(self, _n: int) -> bytes:
        if len(self.parts) == 1:
            assert self.release.wait(30), "the test never released the download"
        return self.parts.pop(0) if self.parts else b""

    def close(self) -> None:
        self.closed = True


def puller(tmp_path: Path) -> ThumbnailPuller:
    cfg = parse_config({"watch": {"folders": [str(tmp_path / "inbox")]}, "local": {"thumbnails_dir": str(tmp_path / "th")}})
    backend: Any = SimpleNamespace(s3=None)
    return ThumbnailPuller(cfg, backend, Status(["puller"]))


def files(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_writers_temp_file_survives_a_concurrent_cleanup(tmp_path: Path) -> None:
    p = puller(tmp_path)
    target = tmp_path / "th" / "trip" / "a.jpg"
    body = SlowBody(b"thumbnail bytes" * 100)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            # The download path itself, with a GET answer already in hand (its body the slow one).
            p._write_atomic(target, None, lambda out: p._download("trip/a.jpg", {"Body": body, "ETag": '"e"'}, out))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    writer = threading.Thread(target=write, name="test-writer")
    writer.start()
    try:
        temp = wait_for(lambda: [f for f in files(target.parent) if TMP_MARK in f.name], 10, "the temp file")
        assert p.remove_stale_temp_files() == 0  # what a reload's reconcile does while the download runs
        assert temp[0].exists()
        assert f"{TMP_MARK}{os.getpid()}-" in temp[0].name
    finally:
        body.release.set()
        writer.join(10)
    assert errors == [] and target.read_bytes() == b"thumbnail bytes" * 100
    assert body.closed


def test_temp_files_of_gone_writers_and_old_nameless_ones_are_removed(tmp_path: Path) -> None:
    p = puller(tmp_path)
    folder = tmp_path / "th" / "x"
    folder.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".a.jpg{TMP_MARK}{dead_pid()}-k2j4_x8a",
            "other_live": f".b.jpg{TMP_MARK}{other.pid}-abcd1234",
            "old_nameless": f".c.jpg{TMP_MARK}q1w2e3r4",  # written by a version without the pid
            "fresh_nameless": f".d.jpg{TMP_MARK}z9x8c7v6",
        }
        for name in names.values():
            (folder / name).write_bytes(b"part")
        two_hours_ago = time.time() - 7200
        os.utime(folder / names["old_nameless"], (two_hours_ago, two_hours_ago))
        assert p.remove_stale_temp_files() == 2
        assert sorted(f.name for f in folder.iterdir()) == sorted([names["other_live"], names["fresh_nameless"]])
    finally:
        other.kill()
        other.wait()
