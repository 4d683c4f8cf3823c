"""Create or verify, idempotently, everything the pipeline needs; and remove it again.

Buckets, queues with dead-letter queues, queue policies, optional SNS topics and
subscriptions, bucket notifications. Foreign notification entries on a bucket
are kept; resources thumbdrop creates are tagged ``thumbdrop:managed=true`` so
teardown (and later cleanups) remove only those. Everything is read back after
writing because some stores (moto among them) accept configurations they would
never deliver on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from agent.cloud.capabilities import degrade
from agent.cloud.clients import Backend
from agent.cloud.errors import MISSING_QUEUE_CODES, call
from agent.config.model import Config
from agent.errors import (
    AccessDeniedError,
    BackendError,
    ObjectGoneError,
    ResourceMissingError,
    ThumbdropError,
    UnsupportedError,
)

log = logging.getLogger(__name__)

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
            rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
            prefix = next((str(r.get("Value", "")) for r in rules if str(r.get("Name", "")).lower() == "prefix"), "")
            if pipe.prefix.startswith(prefix) or prefix.startswith(pipe.prefix):
                found.append(str(entry.get("Id") or "(no id)"))
    return found


class Provisioner:
    def __init__(self, cfg: Config, backend: Backend, *, dry_run: bool = False) -> None:
        self.cfg = cfg
        self.backend = backend
        self.s3 = backend.s3
        self.sqs = backend.sqs
        self.sns = backend.sns
        self.report = Report(dry_run=dry_run)
        self.dry = dry_run

    # --- setup -------------------------------------------------------------

    def setup(self) -> Report:
        for bucket in dict.fromkeys([self.cfg.source.bucket, self.cfg.thumbnails.bucket]):
            self.ensure_bucket(bucket)
        targets: dict[str, list[tuple[Pipe, str]]] = {}
        if self.cfg.queues.mode == "poll":
            self.report.add("skip", "queues, topics and notifications (poll mode: no queues)")
            from agent.cloud.lifecycle import ensure_lifecycle

            ensure_lifecycle(self)
            return self.report
        for pipe in pipes(self.cfg):
            self.ensure_queue(dlq_name(pipe.queue), dead_letter_of=None)
            queue_url, queue_arn = self.ensure_queue(pipe.queue, dead_letter_of=dlq_name(pipe.queue))
            if pipe.topic:
                topic_arn = self.ensure_topic(pipe.topic, bucket=pipe.bucket)
                self.ensure_queue_policy(queue_url, queue_arn, "sns.amazonaws.com", topic_arn, pipe.queue)
                self.ensure_subscription(topic_arn, queue_arn, pipe)
                targets.setdefault(pipe.bucket, []).append((pipe, topic_arn))
            else:
                source = bucket_arn(self.backend.region, pipe.bucket)
                self.ensure_queue_policy(queue_url, queue_arn, "s3.amazonaws.com", source, pipe.queue)
                targets.setdefault(pipe.bucket, []).append((pipe, queue_arn))
        if not events_reach_queues(self.backend):
            what = f"S3 at {self.backend.where('s3')} cannot deliver bucket events to SQS at {self.backend.where('sqs')}"
            log.warning(
                "%s: new objects are found only by the rescans (watch.rescan_seconds); put S3 and the "
                "queues on one backend, or use queues.mode: poll",
                what,
            )
            self.report.add("skip", f"notifications ({what})")
            targets = {}
        for bucket, entries in targets.items():
            try:
                self.ensure_notifications(bucket, entries)
            except UnsupportedError:
                degrade(
                    "bucket notifications (PutBucketNotificationConfiguration)",
                    f"no events from bucket {bucket}: new objects are found only by the rescans "
                    "(watch.rescan_seconds); queues.mode: poll is made for such stores",
                )
                self.report.add("skip", f"notifications on bucket {bucket} (not supported by this store)")
        from agent.cloud.lifecycle import ensure_lifecycle  # lifecycle imports this module

        ensure_lifecycle(self)
        return self.report

    def ensure_bucket(self, bucket: str) -> None:
        if self.bucket_exists(bucket):
            self.report.add("ok", f"bucket {bucket}")
            return
        self.report.add("create", f"bucket {bucket}")
        if self.dry:
            return
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.backend.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.backend.region}
        try:
            call(f"create bucket {bucket}", self.s3.create_bucket, **kwargs)
        except ThumbdropError as exc:
            # Another agent of the fleet created it a moment ago: AWS says BucketAlreadyOwnedByYou, some stores
            # (s3rver) BucketAlreadyExists. Ours if we can use it; else the name really is someone else's.
            if exc.code != "BucketAlreadyOwnedByYou" and not self.bucket_exists(bucket):
                raise
        tags = {"TagSet": [{"Key": TAG_KEY, "Value": TAG_VALUE}]}
        try:
            call(f"tag bucket {bucket}", self.s3.put_bucket_tagging, Bucket=bucket, Tagging=tags)
        except UnsupportedError:
            degrade("bucket tagging (PutBucketTagging)", "buckets are not marked as thumbdrop's, so teardown keeps them")

    def bucket_exists(self, bucket: str) -> bool:
        try:
            call(f"check bucket {bucket}", self.s3.head_bucket, Bucket=bucket)
            return True
        except ResourceMissingError:
            return False
        except ThumbdropError as exc:
            if isinstance(exc, ObjectGoneError):  # HEAD gives a bare 404 without a code
                return False
            if isinstance(exc, AccessDeniedError):
                # HEAD answers a bare 403 (no error code) for refused credentials too: ask once with a GET, whose
                # body names the cause (InvalidAccessKeyId, SignatureDoesNotMatch, a missing bucket...).
                try:
                    call(f"list bucket {bucket}", self.s3.list_objects_v2, Bucket=bucket, MaxKeys=1)
                except ResourceMissingError:
                    return False
                except ThumbdropError as probe:
                    if not isinstance(probe, AccessDeniedError):
                        raise probe from exc  # e.g. the credentials themselves were refused: say that
                else:
                    return True  # HEAD refused but listing allowed: usable
                raise BackendError(
                    f"bucket {bucket!r} exists but these credentials may not use it (owned by another account?)",
                    hint="choose another bucket name, or grant s3:ListBucket/GetObject/PutObject on it",
                ) from exc
            raise

    def queue_url(self, name: str) -> str | None:
        try:
            out = call(f"look up queue {name}", self.sqs.get_queue_url, QueueName=name)
            return str(out["QueueUrl"])
        except ResourceMissingError:
            return None
        except ObjectGoneError as exc:  # a bare 404 without an SQS error code: nothing serves SQS there
            raise no_sqs(self.backend, f"look up queue {name}") from exc
        except ThumbdropError as exc:
            # Stores that answer a missing queue with a code of their own still say so in words.
            if exc.code in MISSING_QUEUE_CODES or "does not exist" in exc.message:
                return None
            raise

    def _queue_attributes(self, dead_letter_of: str | None) -> dict[str, str]:
        attrs = {
            "MaximumMessageSize": str(MAX_MESSAGE_SIZE),
            "MessageRetentionPeriod": str(RETENTION_SECONDS),
            "VisibilityTimeout": str(self.cfg.queues.visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": str(self.cfg.queues.wait_seconds),
        }
        if dead_letter_of is not None:
            dlq_url = self.queue_url(dead_letter_of)
            dlq_arn = self._arn(dlq_url) if dlq_url else f"<arn of {dead_letter_of}>"
            attrs["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.cfg.queues.max_receives)}
            )
        return attrs

    def _arn(self, url: str) -> str:
        out = call("read queue ARN", self.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
        return str(out["Attributes"]["QueueArn"])

    def ensure_queue(self, name: str, *, dead_letter_of: str | None) -> tuple[str, str]:
        """Create or align a queue; returns (url, arn) (placeholders in a dry run of a new queue)."""
        wanted = self._queue_attributes(dead_letter_of)
        url = self.queue_url(name)
        if url is None:
            self.report.add("create", f"queue {name}" + (f" (dead letters to {dead_letter_of})" if dead_letter_of else ""))
            if self.dry:
                return f"<url of {name}>", f"<arn of {name}>"
            out = call(
                f"create queue {name}",
                self.sqs.create_queue,
                QueueName=name,
                Attributes=wanted,  # type: ignore[arg-type]
                tags={TAG_KEY: TAG_VALUE},
            )
            url = str(out["QueueUrl"])
            self._verify_queue(url, name, wanted)
            return url, self._arn(url)
        got = call(f"read queue {name}", self.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
        current: dict[str, str] = {str(k): v for k, v in got.get("Attributes", {}).items()}
        differ = {k: v for k, v in wanted.items() if not _same_attr(k, current.get(k), v)}
        if differ:
            self.report.add("update", f"queue {name}: {', '.join(sorted(differ))}")
            if not self.dry:
                call(f"update queue {name}", self.sqs.set_queue_attributes, QueueUrl=url, Attributes=differ)  # type: ignore[arg-type]
                self._verify_queue(url, name, wanted)
        else:
            self.report.add("ok", f"queue {name}")
        return url, str(current.get("QueueArn") or self._arn(url))

    def _verify_queue(self, url: str, name: str, wanted: dict[str, str]) -> None:
        got = call(f"read queue {name}", self.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
        current: dict[str, str] = {str(k): v for k, v in got.get("Attributes", {}).items()}
        bad = [k for k, v in wanted.items() if not _same_attr(k, current.get(k), v)]
        if bad:
            raise BackendError(f"queue {name}: the backend did not keep {', '.join(bad)} after setup")

    def ensure_queue_policy(self, url: str, arn: str, service: str, source_arn: str, name: str) -> None:
        statement = {
            "Sid": f"thumbdrop-{service.split('.')[0]}",
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
        }
        if url.startswith("<"):
            self.report.add("create", f"policy on queue {name} allowing {service}")
            return
        got = call(f"read policy of {name}", self.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["Policy"])
        policy = _load_policy(got.get("Attributes", {}).get("Policy"))
        merged = _merge_statements(policy, statement, ours_prefix="thumbdrop-")
        if merged == policy:
            self.report.add("ok", f"policy on queue {name}")
            return
        self.report.add("update" if policy.get("Statement") else "create", f"policy on queue {name} allowing {service}")
        if not self.dry:
            call(
                f"set policy of {name}",
                self.sqs.set_queue_attributes,
                QueueUrl=url,
                Attributes={"Policy": json.dumps(merged)},
            )

    def topic_arn(self, name: str) -> str | None:
        paginator = self.sns.get_paginator("list_topics")
        for page in call("list SNS topics", lambda: list(paginator.paginate())):
            for topic in page.get("Topics", []):
                if topic["TopicArn"].rsplit(":", 1)[-1] == name:
                    return str(topic["TopicArn"])
        return None

    def ensure_topic(self, name: str, *, bucket: str) -> str:
        arn = self.topic_arn(name)
        if arn is None:
            self.report.add("create", f"topic {name}")
            if self.dry:
                return f"<arn of topic {name}>"
            out = call(f"create topic {name}", self.sns.create_topic, Name=name, Tags=[{"Key": TAG_KEY, "Value": TAG_VALUE}])
            arn = str(out["TopicArn"])
        else:
            self.report.add("ok", f"topic {name}")
        statement = {
            "Sid": "thumbdrop-s3",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "SNS:Publish",
            "Resource": arn,
            "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn(self.backend.region, bucket)}},
        }
        if arn.startswith("<"):
            self.report.add("create", f"policy on topic {name} allowing S3")
            return arn
        attrs = call(f"read topic {name}", self.sns.get_topic_attributes, TopicArn=arn).get("Attributes", {})
        policy = _load_policy(attrs.get("Policy"))
        merged = _merge_statements(policy, statement, ours_prefix="thumbdrop-")
        if merged != policy:
            self.report.add("update", f"policy on topic {name} allowing S3")
            if not self.dry:
                call(
                    f"set policy of topic {name}",
                    self.sns.set_topic_attributes,
                    TopicArn=arn,
                    AttributeName="Policy",
                    AttributeValue=json.dumps(merged),
                )
        else:
            self.report.add("ok", f"policy on topic {name}")
        return arn

    def ensure_subscription(self, topic_arn: str, queue_arn: str, pipe: Pipe) -> None:
        if topic_arn.startswith("<") or queue_arn.startswith("<"):
            self.report.add("create", f"subscription {pipe.topic} -> {pipe.queue}")
            return
        policy = sns_filter_policy(pipe.prefix)
        for sub in self._subscriptions(topic_arn):
            if sub.get("Endpoint") == queue_arn and sub.get("Protocol") == "sqs":
                self._ensure_filter(sub["SubscriptionArn"], policy, pipe)
                return
        self.report.add(
            "create", f"subscription {pipe.topic} -> {pipe.queue}" + (f" (keys under {pipe.prefix})" if policy else "")
        )
        if not self.dry:
            attrs = {"FilterPolicyScope": "MessageBody", "FilterPolicy": policy} if policy else {}
            call(
                f"subscribe {pipe.queue} to {pipe.topic}",
                self.sns.subscribe,
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes=attrs,
                ReturnSubscriptionArn=True,
            )

    def _ensure_filter(self, sub_arn: str, policy: str | None, pipe: Pipe) -> None:
        """Agents sharing a topic see only their prefix: the subscription's payload filter says which."""
        what = f"subscription {pipe.topic} -> {pipe.queue}"
        attrs = call(f"read {what}", self.sns.get_subscription_attributes, SubscriptionArn=sub_arn).get("Attributes", {})
        current = attrs.get("FilterPolicy") or None
        same = (current is None and policy is None) or (
            current is not None and policy is not None and json.loads(current) == json.loads(policy)
        )
        if same:
            self.report.add("ok", what)
            return
        self.report.add("update", f"{what}: filter on keys under {pipe.prefix!r}" if policy else f"{what}: no filter")
        if self.dry:
            return
        if policy:
            call(
                f"set {what} scope",
                self.sns.set_subscription_attributes,
                SubscriptionArn=sub_arn,
                AttributeName="FilterPolicyScope",
                AttributeValue="MessageBody",
            )
        call(
            f"set {what} filter",
            self.sns.set_subscription_attributes,
            SubscriptionArn=sub_arn,
            AttributeName="FilterPolicy",
            AttributeValue=policy or "",
        )

    def _subscriptions(self, topic_arn: str) -> list[dict[str, Any]]:
        paginator = self.sns.get_paginator("list_subscriptions_by_topic")
        subs: list[dict[str, Any]] = []
        for page in call("list subscriptions", lambda: list(paginator.paginate(TopicArn=topic_arn))):
            subs.extend(dict(sub) for sub in page.get("Subscriptions", []))
        return subs

    def ensure_notifications(self, bucket: str, entries: list[tuple[Pipe, str]]) -> None:
        current = self._notifications(bucket)
        our_ids = own_notification_ids(self.cfg)
        _refuse_shared_queue(bucket, current, our_ids, entries)
        desired = _strip_ids(current, our_ids)
        stale = sorted(_ids(current) & our_ids - {notification_id(p) for p, _ in entries})
        if stale:
            mode = "through SNS" if self.cfg.queues.via_sns else "straight to SQS"
            self.report.add("replace", f"thumbdrop's route(s) {', '.join(stale)} on bucket {bucket} (queues.via_sns: now {mode})")
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
            self.report.add("keep", f"{foreign} notification(s) on bucket {bucket} that thumbdrop did not create")
        if _normalise(desired) == _normalise(current):
            self.report.add("ok", f"notifications on bucket {bucket}")
            return
        self.report.add("update" if _has_ids(current, our_ids) else "create", f"notifications on bucket {bucket}")
        if self.dry:
            return
        call(
            f"set notifications on bucket {bucket}",
            self.s3.put_bucket_notification_configuration,
            Bucket=bucket,
            NotificationConfiguration=desired,  # type: ignore[arg-type]
        )
        after = self._notifications(bucket)
        if _normalise(after) != _normalise(desired):
            raise BackendError(
                f"bucket {bucket}: the notification configuration did not stick",
                hint="check that the store supports bucket notifications to SQS/SNS",
            )

    def routes(self) -> list[tuple[Pipe, list[str]]]:
        """For each pipe whose bucket and queue exist: the Ids of the notifications that route its bucket's new
        objects to its queue (``routes_to``); a topic counts when the queue is subscribed to it."""
        out: list[tuple[Pipe, list[str]]] = []
        for pipe in pipes(self.cfg):
            url = self.queue_url(pipe.queue)
            if url is None or not self.bucket_exists(pipe.bucket):
                continue
            queue_arn = self._arn(url)
            conf = self._notifications(pipe.bucket)
            topics = {str(e["TopicArn"]) for e in conf.get("TopicConfigurations") or [] if e.get("TopicArn")}
            out.append((pipe, routes_to(conf, pipe, queue_arn, {t for t in topics if self._feeds(t, queue_arn)})))
        return out

    def _feeds(self, topic_arn: str, queue_arn: str) -> bool:
        try:
            subs = self._subscriptions(topic_arn)
        except ThumbdropError:
            return False  # someone else's topic we may not read: not known to reach our queue
        return any(s.get("Endpoint") == queue_arn and s.get("Protocol") == "sqs" for s in subs)

    def _notifications(self, bucket: str) -> dict[str, Any]:
        if self.dry and not self.bucket_exists(bucket):
            return {}
        out = call(
            f"read notifications of bucket {bucket}",
            self.s3.get_bucket_notification_configuration,
            Bucket=bucket,
        )
        return {k: v for k, v in out.items() if k.endswith("Configurations") or k == "EventBridgeConfiguration"}

    # --- teardown ----------------------------------------------------------

    def teardown(self, *, empty_buckets: bool = False) -> Report:
        """Remove what setup created (tagged ours); keep foreign notifications and non-empty buckets."""
        if self.cfg.queues.mode == "poll":
            self.report.add("skip", "queues, topics and notifications (poll mode: no queues)")
            self._teardown_s3(empty_buckets)
            return self.report
        for bucket in dict.fromkeys([self.cfg.source.bucket, self.cfg.thumbnails.bucket]):
            if not self.bucket_exists(bucket):
                continue
            try:
                current = self._notifications(bucket)
            except UnsupportedError:
                continue  # a store without notifications has none of ours
            our_ids = own_notification_ids(self.cfg)
            if _has_ids(current, our_ids):
                self.report.add("delete", f"thumbdrop notifications on bucket {bucket}")
                if not self.dry:
                    call(
                        f"set notifications on bucket {bucket}",
                        self.s3.put_bucket_notification_configuration,
                        Bucket=bucket,
                        NotificationConfiguration=_strip_ids(current, our_ids),  # type: ignore[arg-type]
                    )
        try:
            self.queue_url(self.cfg.queues.events)
        except UnsupportedError:  # an S3-only store: no queues or topics of ours can exist there
            self.report.add("skip", f"queues and topics (no SQS at {self.backend.where('sqs')})")
            self._teardown_s3(empty_buckets)
            return self.report
        for pipe in pipes(self.cfg):
            for name in (pipe.queue, dlq_name(pipe.queue)):
                url = self.queue_url(name)
                if url is None:
                    continue
                tags = call(f"read tags of {name}", self.sqs.list_queue_tags, QueueUrl=url).get("Tags", {})
                if tags.get(TAG_KEY) != TAG_VALUE:
                    self.report.add("keep", f"queue {name} (not created by thumbdrop)")
                    continue
                self.report.add("delete", f"queue {name}")
                if not self.dry:
                    call(f"delete queue {name}", self.sqs.delete_queue, QueueUrl=url)
        for topic in dict.fromkeys([self.cfg.queues.events_topic, self.cfg.queues.pull_topic]):
            arn = self.topic_arn(topic)
            if arn is None:
                continue
            topic_tags = call(f"read tags of topic {topic}", self.sns.list_tags_for_resource, ResourceArn=arn).get("Tags", [])
            if not any(t["Key"] == TAG_KEY and t["Value"] == TAG_VALUE for t in topic_tags):
                self.report.add("keep", f"topic {topic} (not created by thumbdrop)")
                continue
            for sub in self._subscriptions(arn):
                if sub.get("SubscriptionArn", "").startswith("arn:"):
                    self.report.add("delete", f"subscription {topic} -> {sub.get('Endpoint', '').rsplit(':', 1)[-1]}")
                    if not self.dry:
                        call("unsubscribe", self.sns.unsubscribe, SubscriptionArn=sub["SubscriptionArn"])
            self.report.add("delete", f"topic {topic}")
            if not self.dry:
                call(f"delete topic {topic}", self.sns.delete_topic, TopicArn=arn)
        self._teardown_s3(empty_buckets)
        return self.report

    def _teardown_s3(self, empty_buckets: bool) -> None:
        from agent.cloud.lifecycle import ensure_lifecycle

        ensure_lifecycle(self, remove=True)
        for bucket in dict.fromkeys([self.cfg.source.bucket, self.cfg.thumbnails.bucket]):
            self._teardown_bucket(bucket, empty_buckets)

    def _teardown_bucket(self, bucket: str, empty: bool) -> None:
        if not self.bucket_exists(bucket):
            return
        try:
            tags = call(f"read tags of bucket {bucket}", self.s3.get_bucket_tagging, Bucket=bucket).get("TagSet", [])
        except ThumbdropError:
            tags = []  # NoSuchTagSet: not ours
        if not any(t["Key"] == TAG_KEY and t["Value"] == TAG_VALUE for t in tags):
            self.report.add("keep", f"bucket {bucket} (not created by thumbdrop)")
            return
        listing = call(f"list bucket {bucket}", self.s3.list_objects_v2, Bucket=bucket, MaxKeys=1)
        if listing.get("KeyCount", 0) and not empty:
            self.report.add("keep", f"bucket {bucket} (not empty; use --empty-buckets to delete its objects too)")
            return
        if listing.get("KeyCount", 0):
            self.report.add("delete", f"every object in bucket {bucket}")
            if not self.dry:
                _empty_bucket(self.s3, bucket)
        self.report.add("delete", f"bucket {bucket}")
        if not self.dry:
            call(f"delete bucket {bucket}", self.s3.delete_bucket, Bucket=bucket)


def _refuse_shared_queue(bucket: str, current: dict[str, Any], our_ids: set[str], entries: list[tuple[Pipe, str]]) -> None:
    """A queue fed by another prefix would hand this agent events it will not work on (and take them from
    the agent that would): each agent of a fleet needs its own queues, routed by the notification's prefix."""
    for pipe, arn in entries:
        if pipe.topic:
            continue  # one topic, many prefixes: the subscriptions' filter policies route them
        for entry in current.get("QueueConfigurations", []):
            if entry.get("Id") in our_ids or entry.get("QueueArn") != arn:
                continue
            rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
            other = next((str(r.get("Value", "")) for r in rules if str(r.get("Name", "")).lower() == "prefix"), "")
            if not other.startswith(pipe.prefix):
                # (A rule for a part of our own prefix only repeats our events: doctor warns about duplicates.)
                key = "queues.events" if pipe.kind == "events" else "queues.pull"
                raise BackendError(
                    f"queue {pipe.queue} already receives the events of prefix {other!r} in bucket {bucket} (another "
                    f"agent's config); sharing it, each agent would take the other's events and not do their work",
                    hint=f"give each agent of a fleet its own {key} (e.g. {pipe.queue}-{pipe.prefix.strip('/') or 'root'}),"
                    " or the same prefix",
                )


def sns_filter_policy(prefix: str) -> str | None:
    """An SNS payload filter passing only S3 events under ``prefix``: agents sharing a topic each get their own.

    Event keys are URL-encoded and stores differ: AWS sends a space as '+', LocalStack as %20; moto sends '/'
    as %2F. Every spelling is listed (any one matches)."""
    if not prefix:
        return None
    from urllib.parse import quote, quote_plus

    variants = sorted({prefix, quote_plus(prefix, safe="/"), quote_plus(prefix, safe=""), quote(prefix, safe="/")})
    return json.dumps({"Records": {"s3": {"object": {"key": [{"prefix": v} for v in variants]}}}}, sort_keys=True)


def _empty_bucket(s3: Any, bucket: str) -> None:
    paginator = s3.get_paginator("list_objects_v2")
    for page in call(f"list bucket {bucket}", lambda: list(paginator.paginate(Bucket=bucket))):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            out = call(f"delete objects in {bucket}", s3.delete_objects, Bucket=bucket, Delete={"Objects": keys[i : i + 1000]})
            if out.get("Errors"):
                first = out["Errors"][0]
                raise BackendError(f"could not delete {len(out['Errors'])} object(s) in {bucket}, e.g. {first}")


def _same_attr(key: str, current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    if key == "RedrivePolicy":
        try:
            a, b = json.loads(current), json.loads(wanted)
        except ValueError:
            return False
        return bool(
            a.get("deadLetterTargetArn") == b.get("deadLetterTargetArn")
            and str(a.get("maxReceiveCount")) == str(b.get("maxReceiveCount"))
        )
    return str(current) == str(wanted)


def _load_policy(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        policy = json.loads(text)
    except ValueError:
        return {}
    return policy if isinstance(policy, dict) else {}


def _merge_statements(policy: dict[str, Any], statement: dict[str, Any], *, ours_prefix: str) -> dict[str, Any]:
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
