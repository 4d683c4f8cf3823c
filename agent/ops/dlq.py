"""Dead-lettered items: which dead-letter queues there are, listing, redriving and purging them.

Poll mode has no queues: the worker's failure markers are its dead letters, and
clearing them is its redrive (the next listing tries those sources again).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config.model import Config
from agent.ops.queues import depth, purge
from agent.service.runtime import queue_urls

if TYPE_CHECKING:
    from agent.cloud.clients import Backend
    from agent.cloud.dlq import DeadLetter, RedriveResult

# purge: a dead-letter queue is emptied as a work queue is (agent.ops.queues)
__all__ = [
    "DeadLetterQueue",
    "clear_failure_markers",
    "dead_letter_queues",
    "depths",
    "failure_markers",
    "list_letters",
    "purge",
    "redrive",
]


@dataclass(frozen=True)
class DeadLetterQueue:
    kind: str  # "events" or "pull"
    name: str  # the dead-letter queue's name
    url: str | None  # None: it does not exist (run 'thumbdrop setup')
    source_url: str | None  # the queue its messages came from


def dead_letter_queues(cfg: Config, backend: Backend, which: str = "all") -> list[DeadLetterQueue]:
    """The dead-letter queues of the events and pull queues (``which``: "events", "pull" or "all")."""
    from agent.cloud.provision import dlq_name

    urls = queue_urls(cfg, backend)
    rows = [
        DeadLetterQueue("events", dlq_name(cfg.queues.events), urls.events_dlq, urls.events),
        DeadLetterQueue("pull", dlq_name(cfg.queues.pull), urls.pull_dlq, urls.pull),
    ]
    return [r for r in rows if which in ("all", r.kind)]


def list_letters(
    cfg: Config, backend: Backend, which: str, *, limit: int
) -> tuple[dict[str, list[DeadLetter] | None], dict[str, list[Any]]]:
    """({queue: its dead letters, None if missing}, {queue: messages removed as about items done since})."""
    from agent.cloud.dlq import list_dead_letters
    from agent.pipeline.puller import done_since as puller_done_since
    from agent.pipeline.worker import done_since as worker_done_since

    out: dict[str, list[DeadLetter] | None] = {}
    removed: dict[str, list[Any]] = {}
    # A message about an item that went through since (a newer version of the file) is stale: it goes.
    done = {"events": worker_done_since(cfg, backend), "pull": puller_done_since(cfg, backend)}
    for q in dead_letter_queues(cfg, backend, which):
        if q.url is None:
            out[q.name] = None
            continue
        removed[q.name] = []
        out[q.name] = list_dead_letters(
            backend.sqs,
            q.url,
            queue=q.name,
            max_receives=cfg.queues.max_receives,
            limit=limit,
            done=done[q.kind],
            removed=removed[q.name],
        )
    return out, removed


def redrive(cfg: Config, backend: Backend, which: str = "all") -> Iterator[tuple[DeadLetterQueue, RedriveResult | None]]:
    """Send each queue's dead letters back to its source queue, one queue at a time (None: a queue is missing)."""
    from agent.cloud.dlq import redrive as redrive_queue

    for q in dead_letter_queues(cfg, backend, which):
        if q.url is None or q.source_url is None:
            yield q, None
            continue
        yield q, redrive_queue(backend, dlq_url=q.url, source_url=q.source_url, queue=q.name)


def depths(cfg: Config, backend: Backend, which: str = "all") -> dict[str, tuple[str, int]]:
    """{dead-letter queue name: (URL, messages in it)} for those that exist."""
    out: dict[str, tuple[str, int]] = {}
    for q in dead_letter_queues(cfg, backend, which):
        if q.url is not None:
            out[q.name] = (q.url, depth(backend, q.url))
    return out


def failure_markers(cfg: Config, backend: Backend, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Poll mode: the worker's failure markers (``item``, ``reason``, ``at``, ``marker``)."""
    from agent.pipeline.poll import failure_markers as markers

    return markers(backend.s3, cfg, limit=limit)


def clear_failure_markers(cfg: Config, backend: Backend) -> tuple[int, list[str]]:
    """Poll mode: remove every failure marker, so the next listing tries those sources again; (removed, failed)."""
    from agent.pipeline.poll import clear_markers

    return clear_markers(backend.s3, cfg, [r["marker"] for r in failure_markers(cfg, backend)])
