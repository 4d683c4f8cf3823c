"""RoleThreads: named threads that stop, pause and join against one deadline."""

from __future__ import annotations

import threading

from agent.pipeline.role import Role, RoleThreads


class Ticker(RoleThreads):
    def __init__(self) -> None:
        super().__init__("ticker")
        self.ticks = 0
        self.woken = threading.Event()

    def start(self) -> None:
        self.spawn(self._loop, "loop")

    def wake(self) -> None:
        self.woken.set()

    def _loop(self) -> None:
        while not self.stop_event.wait(0.01):
            if not self.paused.is_set():
                self.ticks += 1


def test_a_role_starts_pauses_resumes_stops_and_joins() -> None:
    role = Ticker()
    assert isinstance(role, Role)
    role.start()
    assert [t.name for t in threading.enumerate() if t.name.startswith("ticker")] == ["ticker-loop"]
    role.pause()
    role.resume()
    assert role.woken.is_set()  # a resume cuts the role's wait short
    role.stop()
    assert role.stopping
    assert role.join(10)
    assert not [t for t in threading.enumerate() if t.name.startswith("ticker")]


def test_join_reports_a_thread_that_outlives_the_deadline() -> None:
    release = threading.Event()
    role = RoleThreads("stuck")
    role.spawn(release.wait, "call")
    role.stop()
    assert not role.join(0.05)
    release.set()
    assert role.join(10)
