"""Bucket notifications: route new objects to the queues (or topics), keep foreign entries, remove ours."""

from __future__ import annotations

import json
from typing import Any

from agent.cloud.errors import call
from agent.cloud.provisioning.buckets import bucket_exists
from agent.cloud.provisioning.common import EVENTS, Pipe, Run, notification_id, own_notification_ids, pipes
from agent.cloud.provisioning.queues import queue_arn, queue_url
from agent.cloud.provisioning.topics import subscriptions
from agent.errors import BackendError, ThumbdropError, UnsupportedError


def ensure_notifications(run: Run, bucket: str, entries: list[tuple[Pipe, str]]) -> None:
    current = read_notifications(run, bucket)
    our_ids = own_notification_ids(run.cfg)
    _refuse_shared_queue(bucket, current, our_ids, entries)
    desired = _strip_ids(current, our_ids)
    stale = sorted(_ids(current) & our_ids - {notification_id(p) for p, _ in entries})
    if stale:
        mode = "through SNS" if run.cfg.queues.via_sns else "straight to SQS"
        run.report.add("replace", f"thumbdrop's route(s) {', '.join(stale)} on bucket {bucket} (queues.via_sns: now {mode})")
    for pipe, arn in entries:
        entry: dict[str, Any] = {"Id": notification_id(pipe), "Events": list(EVENTS)}
        if pipe.prefix:
            entry["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": pipe.prefix}]}}
        if pipe.topic:
            entry["TopicArn"] = arn
            desired.setdefault("TopicConfigurations", []).append(entry)
        else:
            entry["QueueArn"] = arn
            desired.setdefault("QueueConfigurations", []).append(entry)
    foreign = sum(len(v) for k, v in _strip_ids(current, our_ids).items() if isinstance(v, list))
    if foreign:
        run.report.add("keep", f"{foreign} notification(s) on bucket {bucket} that thumbdrop did not create")
    if _normalise(desired) == _normalise(current):
        run.report.add("ok", f"notifications on bucket {bucket}")
        return
    run.report.add("update" if _has_ids(current, our_ids) else "create", f"notifications on bucket {bucket}")
    if run.dry:
        return
    _put(run, bucket, desired)
    after = read_notifications(run, bucket)
    if _normalise(after) != _normalise(desired):
        raise BackendError(
            f"bucket {bucket}: the notification configuration did not stick",
            hint="check that the store supports bucket notifications to SQS/SNS",
        )


def remove_notifications(run: Run) -> None:
    """Take thumbdrop's routes (for this config, in either mode) off both buckets; keep everyone else's."""
    for bucket in dict.fromkeys([run.cfg.source.bucket, run.cfg.thumbnails.bucket]):
        if not bucket_exists(run, bucket):
            continue
        try:
            current = read_notifications(run, bucket)
        except UnsupportedError:
            continue  # a store without notifications has none of ours
        our_ids = own_notification_ids(run.cfg)
        if _has_ids(current, our_ids):
            run.report.add("delete", f"thumbdrop notifications on bucket {bucket}")
            if not run.dry:
                _put(run, bucket, _strip_ids(current, our_ids))


def _put(run: Run, bucket: str, conf: dict[str, Any]) -> None:
    call(
        f"set notifications on bucket {bucket}",
        run.s3.put_bucket_notification_configuration,
        Bucket=bucket,
        NotificationConfiguration=conf,  # type: ignore[arg-type]
    )


def routes(run: Run) -> list[tuple[Pipe, list[str]]]:
    """For each pipe whose bucket and queue exist: the Ids of the notifications that route its bucket's new
    objects to its queue (``routes_to``); a topic counts when the queue is subscribed to it."""
    out: list[tuple[Pipe, list[str]]] = []
    for pipe in pipes(run.cfg):
        url = queue_url(run, pipe.queue)
        if url is None or not bucket_exists(run, pipe.bucket):
            continue
        arn = queue_arn(run, url)
        conf = read_notifications(run, pipe.bucket)
        topics = {str(e["TopicArn"]) for e in conf.get("TopicConfigurations") or [] if e.get("TopicArn")}
        out.append((pipe, routes_to(conf, pipe, arn, {t for t in topics if _feeds(run, t, arn)})))
    return out


def routes_to(conf: dict[str, Any], pipe: Pipe, queue_arn: str, topic_arns: set[str]) -> list[str]:
    """Ids of the entries in a bucket's notification configuration that deliver the pipe's object-created
    events (keys under ``pipe.prefix``) to its queue: straight, or through one of ``topic_arns`` (topics
    subscribed to that queue). More than one means every upload arrives more than once."""
    found = []
    for kind, arn_key in (("QueueConfigurations", "QueueArn"), ("TopicConfigurations", "TopicArn")):
        for entry in conf.get(kind) or []:
            target = entry.get(arn_key)
            if not (target == queue_arn if kind == "QueueConfigurations" else target in topic_arns):
                continue
            if not any(e in ("s3:*", "s3:ObjectCreated:*") or e.startswith("s3:ObjectCreated:") for e in entry.get("Events", [])):
                continue
            if pipe.prefix.startswith(_prefix(entry)) or _prefix(entry).startswith(pipe.prefix):
                found.append(str(entry.get("Id") or "(no id)"))
    return found


def _prefix(entry: dict[str, Any]) -> str:
    """The key prefix a notification entry filters on ('' for the whole bucket)."""
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return next((str(r.get("Value", "")) for r in rules if str(r.get("Name", "")).lower() == "prefix"), "")


def _feeds(run: Run, topic: str, queue: str) -> bool:
    try:
        subs = subscriptions(run, topic)
    except ThumbdropError:
        return False  # someone else's topic we may not read: not known to reach our queue
    return any(s.get("Endpoint") == queue and s.get("Protocol") == "sqs" for s in subs)


def read_notifications(run: Run, bucket: str) -> dict[str, Any]:
    if run.dry and not bucket_exists(run, bucket):
        return {}
    out = call(f"read notifications of bucket {bucket}", run.s3.get_bucket_notification_configuration, Bucket=bucket)
    return {k: v for k, v in out.items() if k.endswith("Configurations") or k == "EventBridgeConfiguration"}


def _refuse_shared_queue(bucket: str, current: dict[str, Any], our_ids: set[str], entries: list[tuple[Pipe, str]]) -> None:
    """A queue fed by another prefix would hand this agent events it will not work on (and take them from
    the agent that would): each agent of a fleet needs its own queues, routed by the notification's prefix."""
    for pipe, arn in entries:
        if pipe.topic:
            continue  # one topic, many prefixes: the subscriptions' filter policies route them
        for entry in current.get("QueueConfigurations", []):
            if entry.get("Id") in our_ids or entry.get("QueueArn") != arn:
                continue
            other = _prefix(entry)
            if not other.startswith(pipe.prefix):
                # (A rule for a part of our own prefix only repeats our events: doctor warns about duplicates.)
                key = "queues.events" if pipe.kind == "events" else "queues.pull"
                raise BackendError(
                    f"queue {pipe.queue} already receives the events of prefix {other!r} in bucket {bucket} (another "
                    f"agent's config); sharing it, each agent would take the other's events and not do their work",
                    hint=f"give each agent of a fleet its own {key} (e.g. {pipe.queue}-{pipe.prefix.strip('/') or 'root'}),"
                    " or the same prefix",
                )


def _strip_ids(conf: dict[str, Any], ids: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in conf.items():
        if isinstance(value, list):
            kept = [e for e in value if e.get("Id") not in ids]
            if kept:
                out[key] = kept
        else:
            out[key] = value
    return out


def _ids(conf: dict[str, Any]) -> set[str]:
    return {str(e.get("Id")) for v in conf.values() if isinstance(v, list) for e in v}


def _has_ids(conf: dict[str, Any], ids: set[str]) -> bool:
    return any(e.get("Id") in ids for v in conf.values() if isinstance(v, list) for e in v)


def _normalise(conf: dict[str, Any]) -> str:
    """A comparable form: lists sorted by Id, filter rule names lower-cased (S3 echoes 'Prefix')."""

    def norm_entry(e: dict[str, Any]) -> dict[str, Any]:
        e = json.loads(json.dumps(e))
        rules = e.get("Filter", {}).get("Key", {}).get("FilterRules")
        if rules is not None:
            for r in rules:
                r["Name"] = r["Name"].lower()
            rules.sort(key=lambda r: r["Name"])
        e["Events"] = sorted(e.get("Events", []))
        return e

    out = {}
    for key, value in conf.items():
        if isinstance(value, list) and value:
            out[key] = sorted((norm_entry(e) for e in value), key=lambda e: str(e.get("Id")))
    return json.dumps(out, sort_keys=True)
