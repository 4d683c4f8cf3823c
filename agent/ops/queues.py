"""The events and pull queues: their depths, dropping what waits in them, and stale resources of older configs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.config.model import Config
from agent.service.runtime import queue_urls

if TYPE_CHECKING:
    from agent.cloud.clients import Backend
    from agent.cloud.stale import Stale, StaleReport


def queue_depths(cfg: Config, backend: Backend) -> dict[str, dict[str, int] | None]:
    """{"events"|"pull": {"visible", "in_flight", "dead_letter"?}} (None: the queue is missing)."""
    from agent.cloud.errors import call

    if cfg.queues.mode == "poll":
        return {}  # poll mode: no queues
    urls = queue_urls(cfg, backend)
    out: dict[str, dict[str, int] | None] = {}
    for name, url, dlq in (("events", urls.events, urls.events_dlq), ("pull", urls.pull, urls.pull_dlq)):
        if url is None:
            out[name] = None
            continue
        attrs = call(
            "read queue depth",
            backend.sqs.get_queue_attributes,
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        entry = {
            "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        }
        if dlq is not None:
            dead = call(
                "read queue depth", backend.sqs.get_queue_attributes, QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            entry["dead_letter"] = int(dead.get("ApproximateNumberOfMessages", 0))
        out[name] = entry
    return out


def work_queues(cfg: Config, backend: Backend) -> dict[str, str]:
    """{queue name: URL} of the events and pull queues that exist."""
    urls = queue_urls(cfg, backend)
    return {n: u for n, u in ((cfg.queues.events, urls.events), (cfg.queues.pull, urls.pull)) if u}


def depth(backend: Backend, url: str) -> int:
    """Messages waiting in one queue (visible ones)."""
    from agent.cloud import dlq

    return dlq.depth(backend.sqs, url)


def purge(backend: Backend, url: str, name: str) -> int:
    """Drop every message in one queue; about how many went."""
    from agent.cloud import dlq

    return dlq.purge(backend.sqs, url, name)


def find_stale(cfg: Config, backend: Backend) -> StaleReport:
    """Queues, topics and subscriptions thumbdrop created for an older config (``keep``: still in use)."""
    from agent.cloud.stale import find_stale as find

    return find(cfg, backend)


def remove_stale(backend: Backend, items: list[Stale]) -> list[tuple[Stale, str]]:
    """Remove them; (item, error) for each that could not go."""
    from agent.cloud.stale import remove_stale as remove

    return remove(backend, items)
