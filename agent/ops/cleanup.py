"""Cleanup, plan then execute: the one path for 'thumbdrop cleanup', the control socket and the cleaner role.

The engine is ``pipeline.cleanup_run``; this module feeds it the journal's proof
of which local files were this machine's, and applies the mass-delete guard the
same way for every caller: a dry run only plans, and a real run stops before
deleting anything when the guard objects, unless forced (which takes a person).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config.model import Config
from agent.errors import MassDeleteError, UsageError

if TYPE_CHECKING:
    from agent.cloud.clients import Backend
    from agent.pipeline.cleanup_run import Outcome, Plan
    from agent.state.journal import Journal


@dataclass
class CleanupRun:
    plan: Plan
    outcome: Outcome | None  # None: nothing was carried out (a dry run, or the guard stopped it)
    stopped: bool  # the mass-delete guard stopped a real run: nothing deleted

    def guard_error(self) -> MassDeleteError:
        return MassDeleteError(self.plan.problems)


def make_plan(
    cfg: Config,
    backend: Backend,
    journal: Journal | None,
    *,
    stop: threading.Event | None = None,
    now: datetime | None = None,
) -> Plan:
    """What a run would delete (deletes nothing); ``journal`` (None: no local file counts as this machine's)."""
    from agent.pipeline.cleaner_local import journal_lookup
    from agent.pipeline.cleanup_run import plan_cleanup

    return plan_cleanup(
        cfg,
        backend,
        now=now if now is not None else datetime.now(UTC),
        uploaded_from=journal_lookup(journal) if journal is not None else None,
        recorded_under=journal.uploads_under if journal is not None else None,
        accepted=journal.folder_identity if journal is not None else None,
        stop=stop,
    )


def carry_out(
    plan: Plan, cfg: Config, backend: Backend, *, dry_run: bool, force: bool = False, stop: threading.Event | None = None
) -> CleanupRun:
    """Execute ``plan`` unless it is a dry run or the guard stops it; per-item errors are in the outcome."""
    from agent.pipeline.cleanup_run import execute

    stopped = bool(plan.problems) and not force and not dry_run
    outcome = None if dry_run or stopped else execute(plan, cfg, backend, force=force, stop=stop)
    return CleanupRun(plan, outcome, stopped)


def run(
    cfg: Config,
    backend: Backend,
    journal: Journal | None,
    *,
    dry_run: bool,
    force: bool = False,
    stop: threading.Event | None = None,
    now: datetime | None = None,
) -> CleanupRun:
    """Plan, then carry out: for a running agent (its journal, its stop event)."""
    plan = make_plan(cfg, backend, journal, stop=stop, now=now)
    return carry_out(plan, cfg, backend, dry_run=dry_run, force=force, stop=stop)


def run_standalone(cfg: Config, backend: Backend, *, dry_run: bool, force: bool) -> CleanupRun:
    """Plan, then carry out, for a command: the journal is opened only to plan, and only if the policy reads it."""
    with _journal(cfg, wanted=cfg.cleanup.remove_orphan_local_thumbnails) as journal:
        plan = make_plan(cfg, backend, journal)
    return carry_out(plan, cfg, backend, dry_run=dry_run, force=force)


@contextmanager
def _journal(cfg: Config, *, wanted: bool = True) -> Iterator[Journal | None]:
    # Here, not at the top: the cleaner role (pipeline) imports this module, and must not load the service layer.
    from agent.service.runtime import state_dir
    from agent.state.journal import JOURNAL_FILE, Journal

    journal = Journal(state_dir(cfg) / JOURNAL_FILE) if wanted else None
    try:
        yield journal
    finally:
        if journal is not None:
            journal.close()


def forget_folder(cfg: Config, given: str) -> tuple[Path, int]:
    """Accept what is in a watch folder now as that folder: the way out of "another drive" (state.watch_folders).

    The journal forgets the files not on it, so no rule ever takes them as deleted; (the folder, how many it forgot).
    """
    from agent.config.cleanup_checks import move_target
    from agent.state.watch_folders import stamp_marker

    wanted = Path(given).expanduser().resolve()
    roots = [Path(f) for f in cfg.watch.folders if Path(f).expanduser().resolve() == wanted]
    if not roots:
        raise UsageError(f"{given} is not one of watch.folders ({', '.join(cfg.watch.folders) or 'none'}); give one of them")
    root = roots[0]
    if not root.is_dir():
        raise UsageError(f"watch folder {root} is not there: mount the drive you want to accept first")
    moved_to = move_target(cfg) if cfg.cleanup.inbox_after_upload == "move" else None

    def present(path: str) -> bool:
        if Path(path).exists():
            return True
        if moved_to is None:
            return False
        rel = Path(path).relative_to(root)
        return (moved_to / rel).exists() or (moved_to / root.name / rel).exists()

    marker = stamp_marker(root)
    with _journal(cfg) as journal:
        assert journal is not None
        return root, journal.forget_folder(str(root), marker, present)
