"""What a ``sync`` has accounted for: its result, each image's passed phases, and the progress shown.

``Ledger`` is the bookkeeping half of ``service.sync.Sync``: every image is open until accounted for (done,
failed with a reason, or left unfinished), and each phase (upload, thumbnail, pull) counts the images past it.
Its condition ``_cond`` guards ``result``, ``_open``, ``_passed`` and ``_waiting``; ``_shown`` belongs to the
thread that shows progress.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.pipeline.local_files import LocalFile

Progress = Callable[[str, int, int], None]


@dataclass
class SyncResult:
    files: int = 0
    uploaded: int = 0
    thumbnailed: int = 0
    pulled: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # name -> reason
    unfinished: list[str] = field(default_factory=list)
    timed_out: bool = False
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.unfinished and not self.timed_out and not self.interrupted

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "uploaded": self.uploaded,
            "thumbnailed": self.thumbnailed,
            "pulled": self.pulled,
            "failures": [{"name": k, "reason": v} for k, v in sorted(self.failures.items())],
            "unfinished": sorted(self.unfinished),
            "timed_out": self.timed_out,
            "interrupted": self.interrupted,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SyncResult:
        return cls(
            files=int(d.get("files", 0)),
            uploaded=int(d.get("uploaded", 0)),
            thumbnailed=int(d.get("thumbnailed", 0)),
            pulled=int(d.get("pulled", 0)),
            failures={str(f["name"]): str(f["reason"]) for f in d.get("failures", [])},
            unfinished=[str(n) for n in d.get("unfinished", [])],
            timed_out=bool(d.get("timed_out")),
            interrupted=bool(d.get("interrupted")),
        )


class Ledger:
    """The accounting of one sync (see the module docstring)."""

    def __init__(self, roles: list[str], *, timeout: float | None, progress: Progress, stop: threading.Event) -> None:
        self.roles = set(roles)
        self.deadline = time.monotonic() + timeout if timeout is not None else float("inf")
        self.progress = progress
        self.stop = stop
        self.result = SyncResult()
        self._cond = threading.Condition()
        self._open: dict[str, LocalFile] = {}  # rel -> file, until accounted for
        self._passed: dict[str, set[str]] = {p: set() for p in self.phases()}
        self._waiting: dict[str, datetime] = {}  # rel -> uploaded since (no local worker: the fleet makes them)
        self._shown: dict[str, tuple[int, int]] = {}

    def phases(self) -> list[str]:
        phases = ["upload"]
        if {"worker", "puller"} & self.roles:
            phases.append("thumbnail")
        if "puller" in self.roles:
            phases.append("pull")
        return phases

    def _late(self) -> bool:
        if self.stop.is_set():
            self.result.interrupted = True
            return True
        if time.monotonic() >= self.deadline:
            self.result.timed_out = True
            return True
        return False

    def _fail(self, rel: str, name: str, reason: str) -> None:
        with self._cond:
            self.result.failures[name] = reason
        self._done(rel)

    def _pass(self, rel: str, *phases: str) -> None:
        with self._cond:
            for phase in phases:
                if phase in self._passed:
                    self._passed[phase].add(rel)

    def _done(self, rel: str) -> None:
        with self._cond:
            for passed in self._passed.values():
                passed.add(rel)
            self._open.pop(rel, None)
            self._waiting.pop(rel, None)
            self._cond.notify_all()

    def _show_progress(self, *, force: bool = False) -> None:
        total = self.result.files
        for phase, passed in self._passed.items():
            now = (len(passed), total)
            if force or self._shown.get(phase) != now:
                self._shown[phase] = now
                self.progress(phase, *now)

    def claims(self, rel: str) -> bool:
        """This sync is taking ``rel`` through the pipeline (an agent's own hand-over leaves it alone)."""
        with self._cond:
            return rel in self._open

    def progress_snapshot(self) -> dict[str, list[int]]:
        """For a client watching a sync the agent runs: {phase: [done, total]}."""
        return {phase: [len(p), self.result.files] for phase, p in self._passed.items()}
