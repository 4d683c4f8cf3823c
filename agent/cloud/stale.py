"""Queues, topics and subscriptions an older config left behind (``cleanup --stale-resources``).

Stale means: tagged ``thumbdrop:managed=true`` by setup, and named by no key of
the current config; and a bucket notification thumbdrop made for this config's
prefix that points at a queue or topic the config no longer names. A stale queue still in use is kept, since in a fleet it is
another agent's: one a current topic delivers to, one a configured bucket
notifies, or the dead-letter queue of a queue that is kept. Subscriptions of
current topics are removed only when the queue they deliver to no longer exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.cloud.provision import TAG_KEY, TAG_VALUE, dlq_name
from agent.config.model import Config
from agent.errors import ObjectGoneError, ResourceMissingError, ThumbdropError


@dataclass(frozen=True)
class Stale:
    kind: str  # "queue", "topic", "subscription" or "notification"
    name: str
    ref: str  # queue URL, topic ARN, subscription ARN, or "bucket\nId" of a bucket notification
    note: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.note})"


@dataclass
class StaleReport:
    remove: list[Stale] = field(default_factory=list)
    keep: list[Stale] = field(default_factory=list)


def _name(ref: str) -> str:
    return ref.rstrip("/").replace("/", ":").rsplit(":", 1)[-1]


def _tagged(tags: Any) -> bool:
    if isinstance(tags, dict):
        return bool(tags.get(TAG_KEY) == TAG_VALUE)
    return any(t.get("Key") == TAG_KEY and t.get("Value") == TAG_VALUE for t in tags or [])


def _pages(client: Any, operation: str, key: str, action: str, **kwargs: Any) -> list[Any]:
    paginator = client.get_paginator(operation)
    pages = call(action, lambda: list(paginator.paginate(**kwargs)))
    return [item for page in pages for item in page.get(key, [])]


def find_stale(cfg: Config, backend: Backend) -> StaleReport:
    """What ``--stale-resources`` would remove, and what it keeps because something still uses it."""
    sqs, sns = backend.sqs, backend.sns
    report = StaleReport()
    q = cfg.queues
    queue_names = {q.events, q.pull, dlq_name(q.events), dlq_name(q.pull)}
    topic_names = {q.events_topic, q.pull_topic}

    stale_topics: set[str] = set()
    current_topics: set[str] = set()
    for topic in _pages(sns, "list_topics", "Topics", "list SNS topics"):
        arn = str(topic["TopicArn"])
        tags = call(f"read tags of topic {_name(arn)}", sns.list_tags_for_resource, ResourceArn=arn).get("Tags", [])
        if _name(arn) in topic_names:
            if _tagged(tags):  # only thumbdrop's own topics get their dangling subscriptions removed
                current_topics.add(arn)
        elif _tagged(tags):
            stale_topics.add(arn)
            report.remove.append(Stale("topic", _name(arn), arn, "created by thumbdrop; no longer in the config"))
    subs = _pages(sns, "list_subscriptions", "Subscriptions", "list SNS subscriptions")

    urls = _pages(sqs, "list_queues", "QueueUrls", "list queues", PaginationConfig={"PageSize": 1000})
    existing = {_name(u) for u in urls}
    in_use: dict[str, str] = {}  # queue name -> why it is kept
    for s in subs:
        if s.get("Protocol") == "sqs" and s.get("TopicArn") not in stale_topics:
            in_use.setdefault(_name(str(s.get("Endpoint", ""))), f"topic {_name(str(s.get('TopicArn')))} delivers to it")
    prefixes: dict[str, set[str]] = {}
    for bucket, prefix in ((cfg.source.bucket, cfg.source.prefix), (cfg.thumbnails.bucket, cfg.thumbnails.prefix)):
        prefixes.setdefault(bucket, set()).add(prefix)
    for bucket, bucket_prefixes in prefixes.items():
        entries = _notifications(backend, bucket)
        # thumbdrop's routes of the current queues.via_sns mode, by prefix: a route of the other mode beside one
        # of them gives every upload two events (an older setup kept both); alone, it is still the only route.
        current = {p for i, t, p, kind in entries if i.startswith("thumbdrop-") and (kind == TOPICS) == q.via_sns}
        for entry_id, target, prefix, kind in entries:
            ours = entry_id.startswith("thumbdrop-") and prefix in bucket_prefixes
            other_mode = ours and (kind == TOPICS) != q.via_sns and prefix in current
            if ours and (_name(target) not in queue_names | topic_names or other_mode):
                # Our prefix, a target the config no longer names: an older config of this agent (S3 allows no
                # second entry for the same prefix and events, so no other agent can own it).
                note = "made for the other queues.via_sns setting: a second route" if other_mode else "an older config's"
                report.remove.append(Stale("notification", f"{bucket}: {entry_id}", f"{bucket}\n{entry_id}\n{kind}", note))
            else:
                in_use.setdefault(_name(target), f"bucket {bucket} notifies it")

    candidates: dict[str, str] = {}  # name -> url
    redrive_of: dict[str, str] = {}  # queue name -> its dead-letter queue's name
    for url in urls:
        name = _name(url)
        attrs = call(f"read queue {name}", sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["RedrivePolicy"])
        policy = attrs.get("Attributes", {}).get("RedrivePolicy")
        if policy:
            redrive_of[name] = _name(str(_json(policy).get("deadLetterTargetArn", "")))
        if name in queue_names:
            continue
        if _tagged(call(f"read tags of queue {name}", sqs.list_queue_tags, QueueUrl=url).get("Tags", {})):
            candidates[name] = url
    kept = set(queue_names) | {n for n in candidates if n in in_use}
    kept |= {redrive_of[n] for n in list(kept) if n in redrive_of}
    for name, url in sorted(candidates.items()):
        if name in kept:
            why = in_use.get(name) or "the dead-letter queue of a queue that is kept"
            report.keep.append(Stale("queue", name, url, f"still in use: {why}"))
        else:
            report.remove.append(Stale("queue", name, url, "created by thumbdrop; no longer in the config"))

    gone_queues = {n for n in candidates if n not in kept}
    for s in subs:
        target = _name(str(s.get("Endpoint", "")))
        arn = str(s.get("SubscriptionArn", ""))
        if s.get("TopicArn") in current_topics and s.get("Protocol") == "sqs" and arn.startswith("arn:"):
            if target not in existing or target in gone_queues:
                report.remove.append(Stale("subscription", f"{_name(str(s['TopicArn']))} -> {target}", arn, "its queue is gone"))
    return report


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


TOPICS = "TopicConfigurations"


def _notifications(backend: Backend, bucket: str) -> list[tuple[str, str, str, str]]:
    """(Id, target ARN, prefix filter, QueueConfigurations or TopicConfigurations) of a bucket's notifications."""
    try:
        conf: Any = call(
            f"read notifications of bucket {bucket}", backend.s3.get_bucket_notification_configuration, Bucket=bucket
        )
    except (ResourceMissingError, ObjectGoneError):
        return []
    out = []
    for kind, arn_key in (("QueueConfigurations", "QueueArn"), ("TopicConfigurations", "TopicArn")):
        for e in conf.get(kind, []):
            rules = ((e.get("Filter") or {}).get("Key") or {}).get("FilterRules", [])
            prefix = next((str(r.get("Value", "")) for r in rules if str(r.get("Name", "")).lower() == "prefix"), "")
            out.append((str(e.get("Id", "")), str(e.get(arn_key, "")), prefix, kind))
    return out


def _drop_notification(backend: Backend, ref: str) -> None:
    bucket, entry_id, *kind = ref.split("\n")  # kind: only from that list (both modes may share an Id)
    s3 = backend.s3
    conf: Any = call(f"read notifications of bucket {bucket}", s3.get_bucket_notification_configuration, Bucket=bucket)
    kept: dict[str, Any] = {}
    for key, value in conf.items():
        if key.endswith("Configurations"):
            kept[key] = [e for e in value if e.get("Id") != entry_id or (kind and key != kind[0])]
        elif key == "EventBridgeConfiguration":
            kept[key] = value
    call(
        f"set notifications on bucket {bucket}",
        s3.put_bucket_notification_configuration,
        Bucket=bucket,
        NotificationConfiguration=kept,
    )


def remove_stale(backend: Backend, items: list[Stale]) -> list[tuple[Stale, str]]:
    """Remove what ``find_stale`` listed: notifications and subscriptions first, queues last. Returns the failures."""
    failures: list[tuple[Stale, str]] = []
    order = {"notification": 0, "subscription": 1, "topic": 2, "queue": 3}
    for item in sorted(items, key=lambda s: order[s.kind]):
        try:
            if item.kind == "notification":
                _drop_notification(backend, item.ref)
            elif item.kind == "subscription":
                call(f"unsubscribe {item.name}", backend.sns.unsubscribe, SubscriptionArn=item.ref)
            elif item.kind == "topic":
                for s in _pages(
                    backend.sns, "list_subscriptions_by_topic", "Subscriptions", "list subscriptions", TopicArn=item.ref
                ):
                    if str(s.get("SubscriptionArn", "")).startswith("arn:"):
                        call("unsubscribe", backend.sns.unsubscribe, SubscriptionArn=s["SubscriptionArn"])
                call(f"delete topic {item.name}", backend.sns.delete_topic, TopicArn=item.ref)
            else:
                call(f"delete queue {item.name}", backend.sqs.delete_queue, QueueUrl=item.ref)
        except ThumbdropError as exc:
            failures.append((item, str(exc)))
    return failures
