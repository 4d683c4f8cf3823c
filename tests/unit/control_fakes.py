"""A fake agent behind a real control socket, for the control and tray tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.config.loader import parse_config
from agent.config.model import Config
from agent.service.control import ControlServer
from agent.state.status import Status


def make_config(tmp: Path, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "watch": {"folders": [str(tmp / "inbox")]},
        "local": {"thumbnails_dir": str(tmp / "thumbs"), "state_dir": str(tmp / "state")},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_config(data, origin=str(tmp / "thumbdrop.yaml"))


class FakeAgent:
    """What ControlServer needs from an Agent; records what it was asked to do."""

    def __init__(self, cfg: Config, state_dir: Path) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.backend: Any = None
        self.status = Status(list(cfg.roles))
        self.status.set_state("running")
        self.stop_event = threading.Event()
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")
        self.status.set_state("paused")

    def resume(self) -> None:
        self.calls.append("resume")
        self.status.set_state("running")

    def sync_now(self) -> None:
        self.calls.append("sync-now")

    def request_stop(self) -> None:
        self.calls.append("stop")
        self.stop_event.set()


@contextmanager
def serving(agent: FakeAgent) -> Iterator[ControlServer]:
    """The fake agent's control socket, up for the block; stopped and joined after it."""
    server = ControlServer(agent.state_dir, agent)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.join(5)
