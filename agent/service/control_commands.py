"""The control socket's commands that act on the agent's items: cleanup, redrive, retry one item.

The work itself is the operations layer's (``agent.ops``), shared with the CLI;
here it is bound to the running agent (its journal, stop event and status) and
its refusals become ``CommandError`` answers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent.config.model import Config
from agent.errors import ThumbdropError
from agent.ops import cleanup, dlq
from agent.service.runtime import queue_urls
from agent.state.status import Status

PLAN_ITEMS_SHOWN = 20
_cleanup_lock = threading.Lock()  # one cleanup at a time per agent, whoever asks


class Controllable(Protocol):
    """What the control server needs from the agent (a fake in tests)."""

    cfg: Config
    status: Status
    state_dir: Path
    backend: Any

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def sync_now(self) -> None: ...
    def request_stop(self) -> None: ...


class CommandError(Exception):
    """A request the agent answers with ``ok: false``; ``code`` is stable for programs, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def cleanup_now(target: Controllable, *, dry_run: bool) -> dict[str, Any]:
    """Apply the cleanup policy now, or (dry run) count what it would delete. Never forces past the mass-delete guard."""
    if not _cleanup_lock.acquire(blocking=False):
        raise CommandError("busy", "a cleanup is already running")
    try:
        done = cleanup.run(
            target.cfg,
            target.backend,
            getattr(target, "journal", None),
            dry_run=dry_run,
            stop=getattr(target, "stop_event", None),
        )
    finally:
        _cleanup_lock.release()
    plan, outcome = done.plan, done.outcome
    if dry_run:
        return {
            "objects": len(plan.deletions),
            "bytes": plan.total_bytes,
            "problems": list(plan.problems),
            "notes": list(plan.notes),
            "items": [d.as_dict() for d in plan.deletions[:PLAN_ITEMS_SHOWN]],
        }
    if outcome is None:
        exc = done.guard_error()
        raise CommandError("guard", f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
    for d, error in outcome.errors:
        target.status.fail(f"{d.bucket}:{d.key}", error, "cleaner")
    return {
        "deleted": len(outcome.done),
        "bytes": sum(d.size for d in outcome.done),
        "failed": len(outcome.errors),
        "stopped": outcome.stopped,
    }


def retry_item(target: Controllable, args: dict[str, Any]) -> dict[str, Any]:
    """Try one failed item again, by the role that failed it; it leaves the failures list (and comes back if it fails again)."""
    name, role = args.get("name"), args.get("role")
    if not isinstance(name, str) or not name or not isinstance(role, str):
        raise CommandError("bad-request", 'retry needs {"name": ITEM, "role": ROLE} as listed in the status failures')
    listed = [f for f in target.status.snapshot()["failures"] if f["name"] == name and f["role"] == role]
    if not listed:
        raise CommandError("not-found", f"{name} ({role}) is not in the failures list (retried already, or it went through)")
    again = _retry_action(target, name, role)
    # Off the list BEFORE the item is tried again: a try that fails at once must be able to list it anew (a
    # failure already listed with the same reason is not listed twice), not be wiped by a late resolve.
    target.status.resolved(name, role)
    try:
        how = again()
    except BaseException:
        target.status.remember(name, listed[0]["reason"], role)  # not retried after all: still failing
        raise
    return {"retried": name, "how": how}


def _retry_action(target: Controllable, name: str, role: str) -> Callable[[], str]:
    """What tries ``name`` again by ``role`` (checked now, run by the caller); it returns how, in words."""
    from agent.cloud.errors import call
    from agent.cloud.events import s3_event_body
    from agent.pipeline.keys import Layout

    layout = Layout.of(target.cfg)
    if role == "uploader":
        uploader = getattr(target, "uploader", None)
        if uploader is None:
            raise CommandError("unavailable", "this agent does not run the uploader role")

        def upload() -> str:
            uploader.touch(Path(name))  # uploaded again once it has settled, as if it had just changed
            return "queued for upload"

        return upload
    if role == "puller":
        thumb_rel = layout.rel_of_thumb_key(name)
        puller = getattr(target, "puller", None)
        if thumb_rel is None or puller is None:
            raise CommandError("unavailable", f"{name} cannot be pulled by this agent (not a thumbnail key, or no puller role)")

        def pull() -> str:
            puller.reconcile(only_rels={thumb_rel})  # a failure again is listed again by the puller itself
            return "pulled again"

        return pull
    if role != "worker":
        raise CommandError("unavailable", f"items failed by the {role} cannot be retried one by one; use 'Retry all'")
    rel = layout.rel_of_source_key(name)
    if rel is None:
        raise CommandError("unavailable", f"{name} is not a key under source.prefix")
    source_rel: str = rel
    poll = target.cfg.queues.mode == "poll"
    events_url = None
    if not poll:
        events_url = queue_urls(target.cfg, target.backend).events
        if events_url is None:
            raise CommandError("unavailable", "the events queue does not exist (run 'thumbdrop setup')")

    def thumbnail() -> str:
        # The marker makes the worker repeat its verdict for the same content; without it the image is decoded afresh.
        with contextlib.suppress(ThumbdropError):
            call(
                f"clear the failure marker of {name}",
                target.backend.s3.delete_object,
                Bucket=target.cfg.thumbnails.bucket,
                Key=layout.failure_key(source_rel),
            )
        if poll:
            handoff = getattr(target, "handoff", None)
            if handoff is not None and getattr(handoff, "worker", None) is not None:
                handoff.thumbnail(source_rel)
                return "handed to the worker again"
            return "marker removed: the next listing tries it again"
        call(
            f"send {name} to the worker again",
            target.backend.sqs.send_message,
            QueueUrl=events_url,
            MessageBody=s3_event_body(target.cfg.source.bucket, name),
        )
        return "sent to the worker again"

    return thumbnail


def redrive_dead_letters(target: Controllable) -> dict[str, Any]:
    """Send dead-lettered messages back to their queues for another try."""
    cfg = target.cfg
    out: dict[str, Any] = {"sent_back": 0, "failed": 0, "moving": 0, "queues": {}}
    if cfg.queues.mode == "poll":  # no queues: the failure markers go, and the next listing retries them
        removed, failed = dlq.clear_failure_markers(cfg, target.backend)
        out.update(sent_back=removed, failed=len(failed))
        return out
    for q, result in dlq.redrive(cfg, target.backend):
        if result is None:
            continue
        out["sent_back"] += result.moved
        out["failed"] += result.failed
        out["moving"] += 1 if result.task else 0  # the backend moves them itself (StartMessageMoveTask)
        out["queues"][q.name] = {"sent_back": result.moved, "failed": result.failed, "task": result.task}
    return out
