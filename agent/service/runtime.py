"""What every command that talks to the backend needs: state dir, pool size, queue URLs (the backend: ``agent.ops.backend``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from agent.config.loader import DEFAULTS_ORIGIN
from agent.config.model import Config
from agent.errors import ResourceMissingError

if TYPE_CHECKING:  # boto3 loads when a backend is opened (agent.ops.backend): a no-op 'sync' never opens one
    from agent.cloud.clients import Backend

log = logging.getLogger(__name__)


def state_dir(cfg: Config) -> Path:
    path = Path(cfg.local.state_dir) if cfg.local.state_dir else Path(platformdirs.user_state_dir("thumbdrop"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def report_missing_watch_folders(cfg: Config) -> list[dict[str, str]]:
    """Name each watch folder that does not exist, once per command, with what to do about it: for one the
    journal has uploads from (an unplugged drive), never "create it". ``[{folder, detail}]`` for --json.

    For 'sync' only: 'run' leaves this to its uploader (which creates a new folder and waits for a missing one).
    """
    from agent.state.journal import JOURNAL_FILE, Journal
    from agent.state.watch_folders import MISSING, check_folder

    where = "the config" if cfg.origin == DEFAULTS_ORIGIN else cfg.origin
    path = state_dir(cfg) / JOURNAL_FILE
    journal = Journal(path) if path.exists() else None  # read, never created here
    out: list[dict[str, str]] = []
    try:
        for folder in cfg.watch.folders:
            if Path(folder).is_dir():
                continue
            state = check_folder(folder, journal.uploads_under if journal is not None else lambda _f: [])
            if state.state == MISSING:
                text = f"{state.describe()} ({state.fix()})"
            else:
                text = (
                    f"watch folder {folder} does not exist: nothing is uploaded from it until it does "
                    f"(create it, mount the drive it is on, or fix watch.folders in {where})"
                )
            log.warning("%s", text)
            out.append({"folder": folder, "detail": text})
    finally:
        if journal is not None:
            journal.close()
    return out


def pool_size(cfg: Config) -> int:
    return cfg.transfer.concurrency + worker_concurrency(cfg) + 16


def worker_concurrency(cfg: Config) -> int:
    return cfg.worker.concurrency or os.cpu_count() or 1


@dataclass
class Queues:
    events: str | None
    events_dlq: str | None
    pull: str | None
    pull_dlq: str | None


def ensure_resources(cfg: Config, backend: Backend) -> None:
    """Provision what is missing (auto_setup), or check it is there and name 'thumbdrop setup' if not."""
    from agent.cloud.provision import Provisioner

    if cfg.backend.auto_setup:
        report = Provisioner(cfg, backend).setup()
        for change in report.changes:
            if change.verb not in ("ok", "keep"):
                log.info("setup: %s", change)
        return
    prov = Provisioner(cfg, backend, dry_run=True)
    missing = [] if cfg.queues.mode == "poll" else [cfg.queues.events, cfg.queues.pull]
    missing = [q for q in missing if prov.queue_url(q) is None]
    for bucket in dict.fromkeys([cfg.source.bucket, cfg.thumbnails.bucket]):
        if not prov.bucket_exists(bucket):
            missing.append(f"bucket {bucket}")
    if missing:
        raise ResourceMissingError(
            f"missing: {', '.join(missing)} (backend.auto_setup is off)",
            hint="run 'thumbdrop setup' (with credentials allowed to create them)",
        )


def queue_urls(cfg: Config, backend: Backend) -> Queues:
    from agent.cloud.provision import Provisioner, dlq_name

    if cfg.queues.mode == "poll":
        return Queues(None, None, None, None)  # poll mode: no queues, and none is looked up
    prov = Provisioner(cfg, backend, dry_run=True)
    return Queues(
        events=prov.queue_url(cfg.queues.events),
        events_dlq=prov.queue_url(dlq_name(cfg.queues.events)),
        pull=prov.queue_url(cfg.queues.pull),
        pull_dlq=prov.queue_url(dlq_name(cfg.queues.pull)),
    )
