"""A pause outlives a restart of the agent (a reboot, a crash) until 'resume'."""

from __future__ import annotations

import time
from pathlib import Path

from agent.cloud.clients import Backend
from agent.service.agent import Agent
from agent.service.control_client import ControlClient
from agent.service.runtime import pool_size
from tests.integration.test_agent_control import config, drop_image
from tests.support import wait_for


def test_pause_survives_a_restart_and_resume_clears_it(tmp_path: Path, moto_url: str) -> None:
    cfg = config(tmp_path, moto_url)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=pool_size(cfg))

    def start() -> tuple[Agent, ControlClient]:
        agent = Agent(cfg, backend, state)
        agent.start()
        assert agent.ready.wait(60), "the agent did not become ready"
        return agent, ControlClient(state)

    agent, client = start()
    try:
        assert client.call("pause") == "paused"
    finally:
        agent.stop()

    agent, client = start()
    try:
        assert client.call("status")["state"] == "paused"
        drop_image(tmp_path / "inbox" / "a.jpg")
        wait_for(lambda: client.call("status")["pending_local"] >= 1, 30, "the file to be noticed")
        time.sleep(1.5)  # settle_seconds is 0.2: unpaused, it would be uploaded by now
        assert client.call("status")["counts"]["uploaded"] == 0, "uploaded while paused"
        assert client.call("resume") == "running"
        wait_for((tmp_path / "thumbs" / "a.jpg").exists, 60, "the thumbnail once resumed")
    finally:
        agent.stop()

    agent, client = start()
    try:
        assert client.call("status")["state"] == "running"
    finally:
        agent.stop()


def test_resume_after_a_paused_restart_uploads_what_was_dropped_while_stopped(tmp_path: Path, moto_url: str) -> None:
    cfg = config(tmp_path, moto_url)  # rescan_seconds 0: no periodic rescan would pick the file up
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=pool_size(cfg))
    agent = Agent(cfg, backend, state)
    agent.start()
    try:
        assert agent.ready.wait(60), "the agent did not become ready"
        assert ControlClient(state).call("pause") == "paused"
    finally:
        agent.stop()

    drop_image(tmp_path / "inbox" / "dropped while stopped.jpg")  # no agent: no event for it, ever
    agent = Agent(cfg, backend, state)
    agent.start()
    try:
        assert agent.ready.wait(60), "the agent did not become ready"
        client = ControlClient(state)
        assert client.call("status")["state"] == "paused"
        wait_for(lambda: client.call("status")["pending_local"] == 1, 30, "status to count the file while paused")
        assert client.call("resume") == "running"
        wait_for((tmp_path / "thumbs" / "dropped while stopped.jpg").exists, 60, "the thumbnail once resumed")
    finally:
        agent.stop()
