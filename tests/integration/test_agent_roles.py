"""One role lifecycle: the agent drives every role through the Role protocol (start, pause, resume, stop, join)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.config.model import Config
from agent.pipeline.cleaner_role import CleanerRole
from agent.pipeline.consumer import QueueConsumer
from agent.pipeline.handoff import Handoff
from agent.pipeline.poll import Poller
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.role import Role
from agent.pipeline.uploader import Uploader
from agent.pipeline.worker import ThumbnailWorker
from agent.service.agent import Agent
from agent.service.runtime import pool_size
from tests.integration.test_agent_control import drop_image
from tests.support import wait_for


def config(tmp_path: Path, moto_url: str, **queues: Any) -> Config:
    return parse_config(
        {
            "backend": {"endpoint_url": moto_url, "addressing_style": "path", "max_attempts": 2},
            "watch": {"folders": [str(tmp_path / "inbox")], "settle_seconds": 0.2, "rescan_seconds": 0},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
            "queues": {"wait_seconds": 1, "visibility_timeout": 30, **queues},
            "cleanup": {"interval_minutes": 60},
            "roles": ["uploader", "worker", "puller", "cleaner"],
        },
        origin=str(tmp_path / "thumbdrop.yaml"),
    )


def started(tmp_path: Path, moto_url: str, **queues: Any) -> Agent:
    cfg = config(tmp_path, moto_url, **queues)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    agent = Agent(cfg, Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=pool_size(cfg)), state)
    agent.start()
    return agent


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("sqs", [Uploader, CleanerRole, ThumbnailWorker, QueueConsumer, ThumbnailPuller, QueueConsumer, Handoff]),
        ("poll", [Uploader, CleanerRole, ThumbnailWorker, ThumbnailPuller, Handoff, Poller]),
    ],
)
def test_every_role_is_started_paused_resumed_stopped_and_joined_alike(
    tmp_path: Path, moto_url: str, mode: str, expected: list[type]
) -> None:
    agent = started(tmp_path, moto_url, mode=mode)
    try:
        assert agent.ready.wait(60), "the agent did not become ready"
        assert [type(r) for r in agent.running] == expected
        assert all(isinstance(r, Role) for r in agent.running)
        agent.pause()
        paused = {r.name for r in agent.running if getattr(r, "paused", None) is not None and r.paused.is_set()}  # type: ignore[attr-defined]
        # A pause holds uploads, pulls and cleanups; the worker's queue goes on (thumbnails of what is up there).
        assert paused == {"uploader", "cleaner", *(["puller"] if mode == "sqs" else ["poller"])}
        agent.resume()
        assert not any(getattr(r, "paused", threading.Event()).is_set() for r in agent.running)
        drop_image(tmp_path / "inbox" / "a.jpg")
        wait_for((tmp_path / "thumbs" / "a.jpg").exists, 60, "a thumbnail through the roles")
    finally:
        agent.stop()
    # A receive thread may still sit in its last long poll (1 s here): a daemon, given a second by the stop.
    wait_for(lambda: all(r.join(0.1) for r in agent.running), 10, "every role to end after the agent's stop")


def test_a_role_made_after_the_stop_is_never_started(tmp_path: Path, moto_url: str) -> None:
    """stop() during the start-up (the bootstrap thread still provisioning): nothing starts behind its back."""
    agent = started(tmp_path, moto_url)
    agent.stop()
    late = CleanerRole(agent.cfg, agent.backend, agent.status, ready=agent.ready)
    agent._run(late)
    assert late not in agent.running
    assert not [t for t in threading.enumerate() if t.name == "cleaner" and t.is_alive()]
