"""What in the agent's status is news to the user: failures not seen before (rate-limited by the notifier),
and the agent going offline, back online or stopping on an error (once per change)."""

from __future__ import annotations

from agent.state.status import StatusSnapshot
from agent.tray.notify import Notifier


class News:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.seen_failure_at: float | None = None
        self.last_problem = ""  # "error: ..." or "offline: ..." as last told, "" when all is well

    def attached(self, snap: StatusSnapshot) -> None:
        """A new agent: the failures it lists already are not news."""
        self.seen_failure_at = max((float(f.get("at") or 0) for f in snap.get("failures") or []), default=0.0)

    @property
    def told_error(self) -> bool:
        return self.last_problem.startswith("error")

    def notify(self, snap: StatusSnapshot) -> None:
        failures = [f for f in snap.get("failures") or [] if isinstance(f, dict)]
        seen = self.seen_failure_at or 0.0
        new = [f for f in failures if float(f.get("at") or 0) > seen]
        if new:
            self.seen_failure_at = max(float(f.get("at") or 0) for f in new)
            self.notifier.failure([f"{f.get('name')}: {f.get('reason')}" for f in new])
        problem = ""
        if snap.get("state") == "error" or snap.get("fatal"):
            problem = f"error: {snap.get('fatal') or 'the agent stopped'}"
        elif snap.get("offline_since"):
            problem = f"offline: {snap.get('offline_reason') or 'backend unreachable'}"
        kind = problem.split(":", 1)[0]
        if kind and kind != self.last_problem.split(":", 1)[0]:
            title = "thumbdrop stopped on an error" if kind == "error" else "thumbdrop is offline"
            self.notifier.now(title, problem.split(": ", 1)[1])
        elif not kind and self.last_problem.startswith("offline"):
            self.notifier.now("thumbdrop is back online", "syncing resumes")
        self.last_problem = problem
