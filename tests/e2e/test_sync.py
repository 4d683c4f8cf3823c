"""``thumbdrop sync``: one shot, failures listed by name with reasons, --json, --timeout, embedded backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    THUMB_BUCKET,
    E2EEnv,
    check_thumbnail,
    files_under,
    image_bytes,
    make_image,
)

pytestmark = pytest.mark.e2e

GOOD: dict[str, tuple[tuple[int, int], tuple[int, int, int], str]] = {
    "one.jpg": ((800, 600), (200, 40, 40), "one.jpg"),
    "sub dir/two.png": ((300, 1200), (40, 200, 40), "sub dir/two.png.jpg"),
    "été/trois 3.jpeg": ((120, 90), (40, 40, 200), "été/trois 3.jpeg"),
}


def prepare(inbox: Path) -> None:
    for rel, (size, color, _thumb) in GOOD.items():
        make_image(inbox / rel, size, color=color)
    # A corrupt JPEG: a real header, then garbage where the image data should be.
    real = image_bytes((400, 300))
    (inbox / "bad.jpg").write_bytes(real[:200] + bytes(range(256)) * 8)
    (inbox / "empty.png").write_bytes(b"")


def failed_lines(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*FAILED (.+?): (.+)$", stdout, re.MULTILINE))


def test_sync_reports_bad_files_until_they_are_removed(e2e: E2EEnv) -> None:
    prepare(e2e.inbox)
    first = e2e.cli("sync")
    assert first.rc == 1, str(first)
    expected = {thumb for _s, _c, thumb in GOOD.values()}
    assert files_under(e2e.thumbs) == expected, str(first)
    for _rel, (size, color, thumb) in GOOD.items():
        check_thumbnail(e2e.thumbs / thumb, size, color=color)
    failed = failed_lines(first.stdout)
    assert set(failed) == {"bad.jpg", "empty.png"}, str(first)
    assert all(reason.strip() for reason in failed.values())
    assert "empty" in failed["empty.png"].lower() or "0 bytes" in failed["empty.png"], failed
    assert re.search(r"5 image\(s\) in scope: 5 uploaded, 3 thumbnailed, 3 pulled, 2 failed", first.stdout), str(first)
    assert "upload: 5/5" in first.stderr, str(first)  # not a terminal: one plain progress line per phase

    stamps = {k: v["LastModified"] for k, v in e2e.keys(THUMB_BUCKET).items()}
    local_stamps = {rel: (e2e.thumbs / rel).stat().st_mtime_ns for rel in expected}
    second = e2e.cli("-q", "sync")
    assert second.rc == 1, str(second)
    assert "upload:" not in second.stderr, str(second)  # -q: warnings and errors only
    assert set(failed_lines(second.stdout)) == {"bad.jpg", "empty.png"}, str(second)
    assert re.search(r"0 uploaded, 0 thumbnailed, 0 pulled", second.stdout), str(second)
    assert {k: v["LastModified"] for k, v in e2e.keys(THUMB_BUCKET).items()} == stamps
    assert {rel: (e2e.thumbs / rel).stat().st_mtime_ns for rel in expected} == local_stamps

    (e2e.inbox / "bad.jpg").unlink()
    (e2e.inbox / "empty.png").unlink()
    third = e2e.cli("sync")
    assert third.rc == 0, str(third)
    assert "FAILED" not in third.stdout
    assert re.search(r"3 image\(s\) in scope: .* 0 failed", third.stdout), str(third)


def test_sync_json_summary(e2e: E2EEnv) -> None:
    for rel, (size, color, _thumb) in GOOD.items():
        make_image(e2e.inbox / rel, size, color=color)
    res = e2e.cli("sync", "--json")
    assert res.rc == 0, str(res)
    summary = json.loads(res.stdout)
    assert summary["files"] == 3
    assert summary["uploaded"] == 3
    assert summary["thumbnailed"] == 3
    assert summary["pulled"] == 3
    assert summary["failures"] == []
    assert summary["unfinished"] == []
    assert summary["timed_out"] is False and summary["interrupted"] is False
    assert files_under(e2e.thumbs) == {thumb for _s, _c, thumb in GOOD.values()}

    (e2e.inbox / "bad.jpg").write_bytes(b"this is not an image at all")
    res = e2e.cli("sync", "--json")
    assert res.rc == 1, str(res)
    summary = json.loads(res.stdout)
    assert summary["files"] == 4 and summary["uploaded"] == 1 and summary["thumbnailed"] == 0
    assert [f["name"] for f in summary["failures"]] == ["bad.jpg"]
    assert summary["failures"][0]["reason"]


def test_sync_timeout_lists_what_is_unfinished(e2e: E2EEnv) -> None:
    names = [f"t/{i}.jpg" for i in range(4)]
    for n in names:
        make_image(e2e.inbox / n, (640, 480))
    # The deadline passes before the first step (setting up the backend alone takes longer): deterministic.
    res = e2e.cli("sync", "--timeout", "0.001")
    assert res.rc == 1, str(res)
    assert "timed out" in res.stdout.lower(), str(res)
    unfinished = set(re.findall(r"^\s*UNFINISHED (.+)$", res.stdout, re.MULTILINE))
    assert unfinished == set(names), str(res)

    res = e2e.cli("sync", "--timeout", "0.001", "--json")
    assert res.rc == 1, str(res)
    summary = json.loads(res.stdout)
    assert summary["timed_out"] is True
    assert set(summary["unfinished"]) == set(names), str(res)

    done = e2e.cli("sync", "--timeout", "120")
    assert done.rc == 0, str(done)
    assert files_under(e2e.thumbs) == set(names)


def test_sync_with_the_embedded_backend_and_no_config(e2e: E2EEnv) -> None:
    inbox = e2e.home / "ThumbDrop" / "inbox"
    thumbs = e2e.home / "ThumbDrop" / "thumbnails"
    make_image(inbox / "holiday/beach 1.jpg", (1024, 768), color=(20, 120, 220))
    make_image(inbox / "logo.png", (200, 50), color=(220, 20, 120))
    first = e2e.cli("--local", "sync", config=False)
    assert first.rc == 0, str(first)
    assert "embedded backend started" in first.stderr, str(first)
    assert re.search(r"2 image\(s\) in scope: 2 uploaded, 2 thumbnailed, 2 pulled, 0 failed", first.stdout), str(first)
    assert files_under(thumbs) == {"holiday/beach 1.jpg", "logo.png.jpg"}
    check_thumbnail(thumbs / "holiday/beach 1.jpg", (1024, 768), color=(20, 120, 220))
    check_thumbnail(thumbs / "logo.png.jpg", (200, 50), color=(220, 20, 120))
    # The embedded backend lived and died with the command: no discovery file left behind.
    state = e2e.home / ".local" / "state" / "thumbdrop"
    assert state.is_dir()
    assert not (state / "local-backend.json").exists()
    # Nothing went to the shared moto server.
    assert not e2e.s3.list_buckets()["Buckets"]
    stamps = {rel: (thumbs / rel).stat().st_mtime_ns for rel in files_under(thumbs)}

    second = e2e.cli("--local", "sync", config=False)
    assert second.rc == 0, str(second)
    assert re.search(r"2 image\(s\) in scope: 0 uploaded, 0 thumbnailed, 0 pulled, 0 failed", second.stdout), str(second)
    assert {rel: (thumbs / rel).stat().st_mtime_ns for rel in files_under(thumbs)} == stamps


def test_interrupted_sync_says_so_and_lists_what_it_left(e2e: E2EEnv) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.e2e.conftest import REPO

    # Files written just now and a long settle time: sync is still waiting for them to settle when Ctrl-C comes.
    e2e.write_config({"watch": {"settle_seconds": 30}})
    prepare(e2e.inbox)
    argv = [sys.executable, "-m", "agent", "--config", str(e2e.config_path), "sync"]
    proc = subprocess.Popen(argv, cwd=REPO, env=e2e.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"{proc.returncode}\n{out}\n{err}"
    assert "unfinished (interrupted):" in out, out
    for rel in GOOD:
        assert f"UNFINISHED {rel}" in out, out


def test_inspecting_the_embedded_backend_with_no_agent_says_so(e2e: E2EEnv) -> None:
    """A new embedded server is empty: 'missing, run setup' would send a newcomer round in circles."""
    for args in (("dlq", "list"), ("cleanup", "--dry-run")):
        res = e2e.cli("--local", *args, config=False)
        assert res.rc == 3, str(res)
        assert "the embedded backend is not running" in res.stderr and "thumbdrop run" in res.stderr, str(res)
    setup = e2e.cli("--local", "setup", config=False)
    assert setup.rc == 0 and "'run' and 'sync' set it up themselves" in setup.stdout, str(setup)


def test_sync_beside_a_running_agent_asks_the_agent(e2e: E2EEnv) -> None:
    """Issue 14 item 9: the agent does the work; sync prints its result and exit code and uploads nothing itself."""
    e2e.write_config()
    agent = e2e.start_agent()
    agent.wait_ready()
    assert e2e.cli("pause").rc == 0  # the agent's watcher holds back: every upload below is the sync's request
    for rel, (size, color, _thumb) in GOOD.items():
        make_image(e2e.inbox / rel, size, color=color)
    (e2e.inbox / "bad.jpg").write_bytes(b"this is not an image at all")
    res = e2e.cli("-v", "sync", "--json", timeout=180)
    assert res.rc == 1, str(res) + agent.diagnose()
    summary = json.loads(res.stdout)
    assert (summary["files"], summary["uploaded"], summary["thumbnailed"], summary["pulled"]) == (4, 4, 3, 3), summary
    assert [f["name"] for f in summary["failures"]] == ["bad.jpg"] and summary["failures"][0]["reason"], summary
    assert files_under(e2e.thumbs) == {thumb for _s, _c, thumb in GOOD.values()}
    assert "runs on this state dir: it does this sync" in res.stderr, str(res)
    assert "uploaded " not in res.stderr and "thumbnailed " not in res.stderr, str(res)  # not done by this process
    log = agent.log()
    assert "sync 1 requested through the control interface" in log, agent.diagnose()
    for rel in GOOD:
        assert f"uploaded {e2e.inbox / rel}" in log, agent.diagnose()

    again = e2e.cli("sync", timeout=120)  # the agent again; text output, same exit code rule
    assert again.rc == 1, str(again)
    assert re.search(r"4 image\(s\) in scope: 0 uploaded, 0 thumbnailed, 0 pulled, 1 failed", again.stdout), str(again)
    assert set(failed_lines(again.stdout)) == {"bad.jpg"}, str(again)
    (e2e.inbox / "bad.jpg").unlink()
    assert e2e.cli("sync", timeout=120).rc == 0
    assert "sync 3 requested" in agent.log()
    rc, _ = agent.terminate(timeout=30)
    assert rc == 0, agent.diagnose()
