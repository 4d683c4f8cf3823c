"""What the provisioning modules share: names and tags, the report, the pipes, and one setup or teardown run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.cloud.clients import Backend
from agent.config.model import Config
from agent.errors import UnsupportedError

log = logging.getLogger("agent.cloud.provision")

TAG_KEY = "thumbdrop:managed"
TAG_VALUE = "true"
RETENTION_SECONDS = 14 * 24 * 3600  # the SQS maximum: an offline agent loses no events for two weeks
MAX_MESSAGE_SIZE = 262144  # S3 events with many records, wrapped by SNS, stay well below this
EVENTS = ["s3:ObjectCreated:*"]


@dataclass
class Change:
    verb: str  # "create", "update", "delete", "ok", "keep"
    what: str

    def __str__(self) -> str:
        return f"{self.verb:<7} {self.what}"


@dataclass
class Report:
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    def add(self, verb: str, what: str) -> None:
        change = Change(verb, what)
        self.changes.append(change)
        log.debug("%s%s", "(dry run) " if self.dry_run else "", change)

    @property
    def changed(self) -> bool:
        return any(c.verb not in ("ok", "keep") for c in self.changes)


class Run:
    """One setup or teardown: the config, the backend's clients, and the report of what was (or would be) done."""

    def __init__(self, cfg: Config, backend: Backend, *, dry_run: bool = False) -> None:
        self.cfg = cfg
        self.backend = backend
        self.s3 = backend.s3
        self.sqs = backend.sqs
        self.sns = backend.sns
        self.report = Report(dry_run=dry_run)
        self.dry = dry_run


def is_ours(tags: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a resource's tag list (S3 and SNS shape: Key/Value pairs) marks it as created by thumbdrop."""
    return any(t.get("Key") == TAG_KEY and t.get("Value") == TAG_VALUE for t in tags)


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def bucket_arn(region: str, bucket: str) -> str:
    return f"arn:{partition(region)}:s3:::{bucket}"


def events_reach_queues(backend: Backend) -> bool:
    """Whether S3 can deliver bucket events to the queues: one backend, or S3 and SQS both on AWS."""
    if not backend.split:
        return True

    def aws(url: str | None) -> bool:
        return url is None or ".amazonaws.com" in url.split("//", 1)[-1].split("/", 1)[0]

    return aws(backend.endpoint_for("s3")) and aws(backend.endpoint_for("sqs"))


def no_sqs(backend: Backend, action: str) -> UnsupportedError:
    return UnsupportedError(
        f"{backend.where('sqs')} serves no SQS (it answered a bare 404 while trying to {action})",
        hint="this looks like an S3-only store: point backend.sqs_endpoint_url at a queue service (e.g. AWS SQS), "
        "or use queues.mode: poll (no queues: the roles list the buckets)",
    )


def dlq_name(queue: str) -> str:
    return f"{queue}-dlq"


def notification_id(pipe: Pipe) -> str:
    """Stable per (kind, destination, prefix): agents sharing a topic converge on one entry."""
    target = pipe.topic or pipe.queue
    suffix = "-" + hashlib.sha1(pipe.prefix.encode()).hexdigest()[:8] if pipe.prefix else ""
    return f"thumbdrop-{pipe.kind}-{target}{suffix}"


@dataclass
class Pipe:
    """One event path: bucket + prefix -> (topic ->) queue."""

    kind: str  # "events" or "pull"
    bucket: str
    prefix: str
    queue: str
    topic: str | None


def pipes(cfg: Config) -> list[Pipe]:
    q = cfg.queues
    return [
        Pipe("events", cfg.source.bucket, cfg.source.prefix, q.events, q.events_topic if q.via_sns else None),
        Pipe("pull", cfg.thumbnails.bucket, cfg.thumbnails.prefix, q.pull, q.pull_topic if q.via_sns else None),
    ]


def own_notification_ids(cfg: Config) -> set[str]:
    """The Ids of thumbdrop's routes for this config in either mode (via SNS or straight to SQS).

    Turning ``queues.via_sns`` on or off changes the Id when a topic and its queue are named differently: the
    other mode's route is still thumbdrop's, to be replaced rather than kept as someone else's (two routes
    would give every upload two events).
    """
    ids: set[str] = set()
    for via_sns in (False, True):
        flipped = dataclasses.replace(cfg, queues=dataclasses.replace(cfg.queues, via_sns=via_sns))
        ids.update(notification_id(p) for p in pipes(flipped))
    return ids


def load_policy(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        policy = json.loads(text)
    except ValueError:
        return {}
    return policy if isinstance(policy, dict) else {}


def merge_statement(policy: dict[str, Any], statement: dict[str, Any]) -> dict[str, Any]:
    """Replace our statement (same Sid) in a policy, keeping everyone else's."""
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    kept = [s for s in statements if s.get("Sid") != statement["Sid"]]
    mine = [s for s in statements if s.get("Sid") == statement["Sid"]]
    if mine == [statement]:
        return policy
    merged = dict(policy) or {"Version": "2012-10-17"}
    merged.setdefault("Version", "2012-10-17")
    merged["Statement"] = [*kept, statement]
    return merged
