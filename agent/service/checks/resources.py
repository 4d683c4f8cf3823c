"""The buckets and queues: there, accessible, able to take a write; the store's optional APIs; the cleanup mode."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from agent.cloud.capabilities import probe
from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.cloud.lifecycle import cleanup_mode_report
from agent.cloud.provision import Provisioner, dlq_name, events_reach_queues
from agent.cloud.provisioning.buckets import bucket_is_ours
from agent.config.model import Config
from agent.errors import ThumbdropError
from agent.pipeline.keys import PROBE_MARK
from agent.service.checks import FAIL, PASS, SKIP, WARN, Check


def capability_checks(cfg: Config, backend: Backend) -> list[Check]:
    """The store's capability table: one row per optional API, probed in the reserved key space."""
    queue_mode = cfg.queues.mode in ("sqs", "sns")
    needed = {"notifications", "SQS", "SNS"} if queue_mode else set()
    if cfg.cleanup.mode != "agent":
        needed.add("lifecycle rules")
    out = []
    for cap in probe(backend, cfg.source.bucket, cfg.source.prefix, queues=queue_mode, sns=cfg.queues.mode == "sns"):
        result = PASS if cap.supported else SKIP if cap.supported is None else FAIL if cap.name in needed else WARN
        fix = ""
        if cap.supported is False and cap.name in needed:
            fix = "use a store that has it, or " + cap.detail.split(": ", 1)[-1]
        out.append(Check(f"store {cap.name}", result, f"{cap.api}: {cap.detail}", fix))
    if queue_mode and backend.split and not backend.local and not events_reach_queues(backend):
        out.append(
            Check(
                "store notifications",
                FAIL,
                f"S3 at {backend.where('s3')} cannot deliver bucket events to SQS at {backend.where('sqs')}",
                "put S3 and the queues on one backend, or queues.mode: poll",
            )
        )
    return out


def bucket_checks(cfg: Config, backend: Backend) -> Iterator[Check]:
    prov = Provisioner(cfg, backend, dry_run=True)
    for bucket in dict.fromkeys([cfg.source.bucket, cfg.thumbnails.bucket]):
        name = f"bucket {bucket}"
        try:
            exists = prov.bucket_exists(bucket)
        except ThumbdropError as exc:
            yield Check(name, FAIL, exc.message, exc.hint)
            continue
        if not exists:
            yield Check(name, FAIL, "does not exist", "run 'thumbdrop setup', or fix source.bucket / thumbnails.bucket")
            continue
        # No tag set at all, or not allowed to read it: either way not known to be ours.
        ours = bucket_is_ours(backend.s3, bucket)
        yield Check(
            name, PASS, "exists, created by thumbdrop setup" if ours else "exists and is accessible (not created by setup)"
        )


def queue_checks(cfg: Config, backend: Backend) -> Iterator[Check]:
    prov = Provisioner(cfg, backend, dry_run=True)
    for queue in (cfg.queues.events, dlq_name(cfg.queues.events), cfg.queues.pull, dlq_name(cfg.queues.pull)):
        name = f"queue {queue}"
        try:
            url = prov.queue_url(queue)
            if url is None:
                yield Check(name, FAIL, "does not exist", "run 'thumbdrop setup', or fix queues.events / queues.pull")
                continue
            attrs = call(f"read queue {queue}", backend.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
        except ThumbdropError as exc:
            yield Check(name, FAIL, exc.message, exc.hint or "grant sqs:GetQueueUrl and sqs:GetQueueAttributes on it")
            continue
        a = attrs.get("Attributes", {})
        depth = f"{a.get('ApproximateNumberOfMessages', '?')} waiting, {a.get('ApproximateNumberOfMessagesNotVisible', '?')} in flight"
        if not queue.endswith("-dlq") and "RedrivePolicy" not in a:
            yield Check(name, WARN, f"exists ({depth}) but has no dead-letter queue", "run 'thumbdrop setup'")
        elif queue.endswith("-dlq") and a.get("ApproximateNumberOfMessages", "0") != "0":
            yield Check(
                name, WARN, f"{a['ApproximateNumberOfMessages']} dead-lettered item(s)", "see them with 'thumbdrop dlq list'"
            )
        else:
            yield Check(name, PASS, f"exists ({depth})")


def access_check(backend: Backend, bucket: str, prefix: str) -> Check:
    """Write, read and delete one uniquely named object: the permissions the roles need, tried for real."""
    key = f"{prefix}{PROBE_MARK}{uuid.uuid4().hex}"
    name = f"access {bucket}"
    arn = f"arn:aws:s3:::{bucket}/{prefix}*"
    body = b"thumbdrop doctor probe; safe to delete\n"
    step = "write"
    try:
        call(f"write s3://{bucket}/{key}", backend.s3.put_object, Bucket=bucket, Key=key, Body=body)
        step = "read"
        got = call(f"read s3://{bucket}/{key}", backend.s3.get_object, Bucket=bucket, Key=key)["Body"].read()
        if got != body:
            return Check(
                name, FAIL, f"read back {len(got)} bytes instead of the {len(body)} written", "check the store's consistency"
            )
        step = "delete"
        call(f"delete s3://{bucket}/{key}", backend.s3.delete_object, Bucket=bucket, Key=key)
    except ThumbdropError as exc:
        action = {"write": "s3:PutObject", "read": "s3:GetObject", "delete": "s3:DeleteObject"}[step]
        leftover = f"; delete s3://{bucket}/{key} by hand" if step == "delete" else ""
        return Check(
            name,
            FAIL if step != "delete" else WARN,
            f"cannot {step} objects: {exc.message}",
            f"grant {action} on {arn}{leftover}",
        )
    return Check(name, PASS, f"write, read and delete allowed under s3://{bucket}/{prefix}")


def cleanup_mode(cfg: Config, backend: Backend) -> Check:
    try:
        lines = cleanup_mode_report(cfg, backend).splitlines()
    except (ThumbdropError, AttributeError) as exc:
        return Check("cleanup", WARN, f"cannot tell the cleanup mode: {exc}")
    trouble = [ln for ln in lines if "WARN" in ln or "missing" in ln or "cannot" in ln]
    return Check("cleanup", WARN if trouble else PASS, "; ".join(lines), "run 'thumbdrop setup'" if trouble else "")
