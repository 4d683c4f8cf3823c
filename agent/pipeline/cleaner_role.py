"""The cleaner role inside ``run``: the cleanup policy every ``cleanup.interval_minutes``.

One named thread (started and joined by the agent, like every Role). It waits
until the agent has found its buckets, runs once, then sleeps on its stop
event, so a stop wakes it at once; a run in progress stops between delete batches. It never
forces past the mass-delete guard: that takes a person ('thumbdrop cleanup --force').
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from agent.cloud.clients import Backend
from agent.config.model import Config
from agent.errors import ConfigError, MassDeleteError, ThumbdropError
from agent.ops import cleanup
from agent.pipeline.cleanup_run import Outcome, summary
from agent.pipeline.role import RoleThreads
from agent.state.journal import Journal
from agent.state.status import Status

log = logging.getLogger(__name__)


class CleanerRole(RoleThreads):
    """A Role: ``start`` runs its thread; ``pause`` skips the runs until ``resume``; ``stop`` ends a run between
    delete batches and the wait between runs at once."""

    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        status: Status,
        *,
        ready: threading.Event,
        journal: Journal | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__("cleaner")
        self.cfg = cfg
        self.backend = backend
        self.status = status
        self.ready = ready
        self.journal = journal
        self.clock = clock
        self.runs = 0

    def start(self) -> None:
        self.spawn(self.run)

    def run(self) -> None:
        """The thread's body: until the stop event."""
        while not self.ready.wait(0.5):
            if self.stop_event.is_set():
                return
        interval = self.cfg.cleanup.interval_minutes * 60
        while not self.stop_event.is_set():
            if not self.paused.is_set():
                self.run_once()
            if self.stop_event.wait(interval):
                return

    def run_once(self) -> Outcome | None:
        """One run of the policy; problems are logged and shown in status, never raised."""
        self.runs += 1
        try:
            plan = cleanup.make_plan(self.cfg, self.backend, self.journal, stop=self.stop_event, now=self.clock())
            for note in plan.notes:
                log.info("cleanup: %s", note)
            if not plan.deletions:
                log.debug("cleanup: nothing to remove")
                return Outcome()
            done = cleanup.carry_out(plan, self.cfg, self.backend, dry_run=False, stop=self.stop_event)
            if done.outcome is None:
                raise done.guard_error()
            outcome = done.outcome
        except MassDeleteError as exc:
            log.error("cleanup stopped: %s (%s)", exc.message, exc.hint)
            self.status.fail("cleanup", exc.message, "cleaner")
            return None
        except ConfigError as exc:
            log.error("cleanup policy: %s", "; ".join(exc.problems))
            self.status.fail("cleanup", "; ".join(exc.problems), "cleaner")
            return None
        except ThumbdropError as exc:
            if exc.kind == "transient":
                self.status.offline(str(exc))
                log.warning("cleanup postponed: %s", exc)
            else:
                log.error("cleanup failed: %s", exc)
                self.status.fail("cleanup", str(exc), "cleaner")
            return None
        for d, error in outcome.errors:
            log.error("cleanup: could not remove %s %s: %s", d.bucket, d.key, error)
            self.status.fail(f"{d.bucket}:{d.key}", error, "cleaner")
        log.info("cleanup: %s", summary(outcome))
        return outcome
