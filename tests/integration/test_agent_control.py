"""A real Agent against the moto server, driven through its control socket: pause, sync-now, stop, cleanup, dlq."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.config.model import Config
from agent.service.agent import Agent
from agent.service.control import AgentAlreadyRunningError
from agent.service.control_client import AgentNotRunningError, ControlClient
from agent.service.runtime import pool_size
from tests.support import wait_for


def drop_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (40, 120, 200)).save(buf, "JPEG")
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def config(tmp_path: Path, moto_url: str) -> Config:
    return parse_config(
        {
            "backend": {"endpoint_url": moto_url, "addressing_style": "path", "max_attempts": 2},
            # No periodic rescan: only sync-now (or an event) can make a reconcile round happen.
            "watch": {"folders": [str(tmp_path / "inbox")], "settle_seconds": 0.2, "rescan_seconds": 0},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
            "queues": {"wait_seconds": 1, "visibility_timeout": 30},
            "roles": ["uploader", "worker", "puller"],
        },
        origin=str(tmp_path / "thumbdrop.yaml"),
    )


@pytest.fixture()
def running(tmp_path: Path, moto_url: str) -> Iterator[tuple[Agent, ControlClient]]:
    cfg = config(tmp_path, moto_url)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=pool_size(cfg))
    agent = Agent(cfg, backend, state)
    agent.start()
    try:
        assert agent.ready.wait(60), "the agent did not become ready"
        yield agent, ControlClient(state)
    finally:
        agent.stop()


def test_pause_resume_and_sync_now_through_the_socket(running: tuple[Agent, ControlClient], tmp_path: Path) -> None:
    agent, client = running
    drop_image(tmp_path / "inbox" / "a.jpg")
    thumb = tmp_path / "thumbs" / "a.jpg"
    wait_for(thumb.exists, 60, "the first thumbnail")

    assert client.call("pause") == "paused"
    assert agent.paused.is_set() and client.call("status")["state"] == "paused"
    for name in ("b.jpg", "c.jpg", "d.jpg"):
        drop_image(tmp_path / "inbox" / name)
    # The count goes on while paused (it used to freeze at its value when the pause began). Polled: on a loaded
    # machine the watcher may see the three files later than any fixed sleep.
    shown = wait_for(
        lambda: (s := client.call("status"))["pending_local"] >= 3 and s, 60, "the paused files to be counted as pending"
    )
    time.sleep(1.0)  # and paused means paused: still nothing uploaded a while after they were seen
    shown = client.call("status")
    assert shown["counts"]["uploaded"] == 1, "uploaded while paused"
    assert shown["pending_local"] >= 3, shown["pending_local"]
    assert client.call("resume") == "running"
    for name in ("b.jpg", "c.jpg", "d.jpg"):
        wait_for((tmp_path / "thumbs" / name).exists, 60, "the thumbnails of the files dropped while paused")

    # rescan_seconds is 0: without sync-now nothing would bring a deleted thumbnail back. The resume's own
    # catch-up round may still be running on a loaded machine and pull it back once: delete it until it stays.
    for _ in range(30):
        thumb.unlink(missing_ok=True)
        time.sleep(1.0)
        if not thumb.exists():
            break
    assert not thumb.exists(), "a deleted thumbnail kept coming back without sync-now"
    assert client.call("sync-now") == {"triggered": True}
    wait_for(thumb.exists, 30, "sync-now to pull the thumbnail back")


def test_stop_through_the_socket_and_a_second_agent_refused(running: tuple[Agent, ControlClient], tmp_path: Path) -> None:
    agent, client = running
    second = Agent(agent.cfg, agent.backend, agent.state_dir)
    with pytest.raises(AgentAlreadyRunningError):
        second.start()
    second.journal.close()
    assert client.call("stop") == {"stopping": True}
    assert agent.stop_event.is_set()  # the owner (service.run) sees it and calls stop()
    agent.stop()
    assert not (agent.state_dir / "control.sock").exists()
    with pytest.raises(AgentNotRunningError):
        client.call("status")


def test_cleanup_and_redrive_through_the_socket(running: tuple[Agent, ControlClient]) -> None:
    _agent, client = running
    plan = client.call("cleanup-now", dry_run=True, timeout=60)
    assert plan["objects"] == 0 and plan["problems"] == []  # the default policy keeps everything
    done = client.call("cleanup-now", dry_run=False, timeout=60)
    assert done["deleted"] == 0 and done["failed"] == 0
    redriven = client.call("dlq-redrive", timeout=60)
    assert redriven["sent_back"] == 0 and redriven["failed"] == 0


def test_an_unexpected_error_in_a_rescan_does_not_end_the_rescans(
    running: tuple[Agent, ControlClient], caplog: pytest.LogCaptureFixture
) -> None:
    agent, client = running
    assert agent.puller is not None
    rounds: list[str] = []
    real = agent.puller.reconcile

    def flaky(**kwargs: Any) -> dict[str, int]:
        rounds.append("round")
        if len(rounds) == 1:
            raise RuntimeError("a bug, or a local fault nobody expected")
        return real(**kwargs)

    agent.puller.reconcile = flaky  # type: ignore[method-assign]
    client.call("sync-now")
    wait_for(lambda: len(rounds) >= 1, 20, "the failing round")
    client.call("sync-now")
    wait_for(lambda: len(rounds) >= 2, 20, "a second round after the failure")
    assert "reconcile round failed" in caplog.text
    assert [t for t in agent._threads if t.is_alive()], "the rescan thread died"


def test_retry_sends_a_failed_image_to_the_worker_again(running: tuple[Agent, ControlClient], tmp_path: Path) -> None:
    agent, client = running
    bad = tmp_path / "inbox" / "bad.jpg"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\xff\xd8 this is not a JPEG")

    def worker_failure() -> dict[str, Any] | None:
        return next((f for f in client.call("status")["failures"] if f["name"] == "bad.jpg" and f["role"] == "worker"), None)

    first = wait_for(worker_failure, 60, "the worker's failure")
    failed_before = client.call("status")["failed_total"]  # every failure ever; counts["failed"] is what still fails
    marker_key = ".thumbdrop-failed/bad.jpg.json"

    def marker() -> dict[str, Any] | None:
        # Written beside the status entry, not before it: polled.
        try:
            body = agent.backend.s3.get_object(Bucket=agent.cfg.thumbnails.bucket, Key=marker_key)["Body"].read()
        except agent.backend.s3.exceptions.NoSuchKey:
            return None
        return dict(json.loads(body))

    marker_at = wait_for(marker, 60, "the failure marker")["at"]

    assert client.call("retry", name="bad.jpg", role="worker")["how"] == "sent to the worker again"
    # The worker decodes it afresh (not its remembered verdict): the same reason comes back, with a new marker.
    again = wait_for(lambda: (f := worker_failure()) and f["at"] > first["at"] and f, 60, "the worker to try it again")
    assert again["reason"] == first["reason"]
    assert client.call("status")["failed_total"] > failed_before
    wait_for(lambda: (m := marker()) is not None and m["at"] > marker_at, 60, "a new failure marker")
