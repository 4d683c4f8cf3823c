"""Create or verify, idempotently, everything the pipeline needs; and remove it again.

Buckets, queues with dead-letter queues, queue policies, optional SNS topics and
subscriptions, bucket notifications, lifecycle rules. Foreign notification entries on a bucket
are kept; resources thumbdrop creates are tagged ``thumbdrop:managed=true`` so
teardown (and later cleanups) remove only those. Everything is read back after
writing because some stores (moto among them) accept configurations they would
never deliver on.

This module puts the steps in order; each kind of resource has its module in ``agent.cloud.provisioning``.
"""

from __future__ import annotations

from agent.cloud import lifecycle
from agent.cloud.capabilities import degrade
from agent.cloud.provisioning import buckets, notifications, queues, topics
from agent.cloud.provisioning.common import (
    EVENTS,
    MAX_MESSAGE_SIZE,
    RETENTION_SECONDS,
    TAG_KEY,
    TAG_VALUE,
    Change,
    Pipe,
    Report,
    Run,
    bucket_arn,
    dlq_name,
    events_reach_queues,
    log,
    own_notification_ids,
    partition,
    pipes,
)
from agent.cloud.provisioning.topics import sns_filter_policy
from agent.errors import UnsupportedError

__all__ = [
    "EVENTS",
    "MAX_MESSAGE_SIZE",
    "RETENTION_SECONDS",
    "TAG_KEY",
    "TAG_VALUE",
    "Change",
    "Pipe",
    "Provisioner",
    "Report",
    "bucket_arn",
    "dlq_name",
    "events_reach_queues",
    "own_notification_ids",
    "partition",
    "pipes",
    "sns_filter_policy",
]


class Provisioner(Run):
    """``setup`` and ``teardown`` for one config on one backend; ``dry_run`` only reports what they would do."""

    def setup(self) -> Report:
        for bucket in dict.fromkeys([self.cfg.source.bucket, self.cfg.thumbnails.bucket]):
            buckets.ensure_bucket(self, bucket)
        if self.cfg.queues.mode == "poll":
            self.report.add("skip", "queues, topics and notifications (poll mode: no queues)")
        else:
            self._setup_routes()
        lifecycle.ensure_lifecycle(self)
        return self.report

    def _setup_routes(self) -> None:
        """Queues (and topics) for each pipe, and the bucket notifications that feed them."""
        targets: dict[str, list[tuple[Pipe, str]]] = {}
        for pipe in pipes(self.cfg):
            queues.ensure_queue(self, dlq_name(pipe.queue), dead_letter_of=None)
            queue_url, queue_arn = queues.ensure_queue(self, pipe.queue, dead_letter_of=dlq_name(pipe.queue))
            if pipe.topic:
                topic_arn = topics.ensure_topic(self, pipe.topic, bucket=pipe.bucket)
                queues.ensure_queue_policy(self, queue_url, queue_arn, "sns.amazonaws.com", topic_arn, pipe.queue)
                topics.ensure_subscription(self, topic_arn, queue_arn, pipe)
                targets.setdefault(pipe.bucket, []).append((pipe, topic_arn))
            else:
                source = bucket_arn(self.backend.region, pipe.bucket)
                queues.ensure_queue_policy(self, queue_url, queue_arn, "s3.amazonaws.com", source, pipe.queue)
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
                notifications.ensure_notifications(self, bucket, entries)
            except UnsupportedError:
                degrade(
                    "bucket notifications (PutBucketNotificationConfiguration)",
                    f"no events from bucket {bucket}: new objects are found only by the rescans "
                    "(watch.rescan_seconds); queues.mode: poll is made for such stores",
                )
                self.report.add("skip", f"notifications on bucket {bucket} (not supported by this store)")

    def teardown(self, *, empty_buckets: bool = False) -> Report:
        """Remove what setup created (tagged ours); keep foreign notifications and non-empty buckets."""
        if self.cfg.queues.mode == "poll":
            self.report.add("skip", "queues, topics and notifications (poll mode: no queues)")
        else:
            self._teardown_routes()
        lifecycle.ensure_lifecycle(self, remove=True)
        for bucket in dict.fromkeys([self.cfg.source.bucket, self.cfg.thumbnails.bucket]):
            buckets.teardown_bucket(self, bucket, empty_buckets)
        return self.report

    def _teardown_routes(self) -> None:
        notifications.remove_notifications(self)
        try:
            self.queue_url(self.cfg.queues.events)
        except UnsupportedError:  # an S3-only store: no queues or topics of ours can exist there
            self.report.add("skip", f"queues and topics (no SQS at {self.backend.where('sqs')})")
            return
        queues.teardown_queues(self)
        topics.teardown_topics(self)

    # The single steps other modules use (doctor, runtime, the Lambda worker, tests).

    def ensure_bucket(self, bucket: str) -> None:
        buckets.ensure_bucket(self, bucket)

    def bucket_exists(self, bucket: str) -> bool:
        return buckets.bucket_exists(self, bucket)

    def queue_url(self, name: str) -> str | None:
        return queues.queue_url(self, name)

    def routes(self) -> list[tuple[Pipe, list[str]]]:
        """For each pipe whose bucket and queue exist: the Ids of the notifications routing its new objects to its
        queue (see ``agent.cloud.provisioning.notifications.routes``)."""
        return notifications.routes(self)
