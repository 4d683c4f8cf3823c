"""Queues and their dead-letter queues: create or align their attributes and policies, and remove ours."""

from __future__ import annotations

import json

from agent.cloud.errors import MISSING_QUEUE_CODES, call
from agent.cloud.provisioning.common import (
    MAX_MESSAGE_SIZE,
    RETENTION_SECONDS,
    TAG_KEY,
    TAG_VALUE,
    Run,
    dlq_name,
    load_policy,
    merge_statement,
    no_sqs,
    pipes,
)
from agent.errors import BackendError, ObjectGoneError, ResourceMissingError, ThumbdropError


def queue_url(run: Run, name: str) -> str | None:
    try:
        out = call(f"look up queue {name}", run.sqs.get_queue_url, QueueName=name)
        return str(out["QueueUrl"])
    except ResourceMissingError:
        return None
    except ObjectGoneError as exc:  # a bare 404 without an SQS error code: nothing serves SQS there
        raise no_sqs(run.backend, f"look up queue {name}") from exc
    except ThumbdropError as exc:
        # Stores that answer a missing queue with a code of their own still say so in words.
        if exc.code in MISSING_QUEUE_CODES or "does not exist" in exc.message:
            return None
        raise


def queue_arn(run: Run, url: str) -> str:
    out = call("read queue ARN", run.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
    return str(out["Attributes"]["QueueArn"])


def _queue_attributes(run: Run, dead_letter_of: str | None) -> dict[str, str]:
    q = run.cfg.queues
    attrs = {
        "MaximumMessageSize": str(MAX_MESSAGE_SIZE),
        "MessageRetentionPeriod": str(RETENTION_SECONDS),
        "VisibilityTimeout": str(q.visibility_timeout),
        "ReceiveMessageWaitTimeSeconds": str(q.wait_seconds),
    }
    if dead_letter_of is not None:
        dlq_url = queue_url(run, dead_letter_of)
        dlq_arn = queue_arn(run, dlq_url) if dlq_url else f"<arn of {dead_letter_of}>"
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(q.max_receives)})
    return attrs


def _current(run: Run, url: str, name: str) -> dict[str, str]:
    got = call(f"read queue {name}", run.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
    return {str(k): v for k, v in got.get("Attributes", {}).items()}


def ensure_queue(run: Run, name: str, *, dead_letter_of: str | None) -> tuple[str, str]:
    """Create or align a queue; returns (url, arn) (placeholders in a dry run of a new queue)."""
    wanted = _queue_attributes(run, dead_letter_of)
    url = queue_url(run, name)
    if url is None:
        run.report.add("create", f"queue {name}" + (f" (dead letters to {dead_letter_of})" if dead_letter_of else ""))
        if run.dry:
            return f"<url of {name}>", f"<arn of {name}>"
        out = call(
            f"create queue {name}",
            run.sqs.create_queue,
            QueueName=name,
            Attributes=wanted,  # type: ignore[arg-type]
            tags={TAG_KEY: TAG_VALUE},
        )
        url = str(out["QueueUrl"])
        _verify_queue(run, url, name, wanted)
        return url, queue_arn(run, url)
    current = _current(run, url, name)
    differ = {k: v for k, v in wanted.items() if not _same_attr(k, current.get(k), v)}
    if differ:
        run.report.add("update", f"queue {name}: {', '.join(sorted(differ))}")
        if not run.dry:
            call(f"update queue {name}", run.sqs.set_queue_attributes, QueueUrl=url, Attributes=differ)  # type: ignore[arg-type]
            _verify_queue(run, url, name, wanted)
    else:
        run.report.add("ok", f"queue {name}")
    return url, str(current.get("QueueArn") or queue_arn(run, url))


def _verify_queue(run: Run, url: str, name: str, wanted: dict[str, str]) -> None:
    current = _current(run, url, name)
    bad = [k for k, v in wanted.items() if not _same_attr(k, current.get(k), v)]
    if bad:
        raise BackendError(f"queue {name}: the backend did not keep {', '.join(bad)} after setup")


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


def ensure_queue_policy(run: Run, url: str, arn: str, service: str, source_arn: str, name: str) -> None:
    statement = {
        "Sid": f"thumbdrop-{service.split('.')[0]}",
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sqs:SendMessage",
        "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
    }
    if url.startswith("<"):
        run.report.add("create", f"policy on queue {name} allowing {service}")
        return
    got = call(f"read policy of {name}", run.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["Policy"])
    policy = load_policy(got.get("Attributes", {}).get("Policy"))
    merged = merge_statement(policy, statement)
    if merged == policy:
        run.report.add("ok", f"policy on queue {name}")
        return
    run.report.add("update" if policy.get("Statement") else "create", f"policy on queue {name} allowing {service}")
    if not run.dry:
        call(f"set policy of {name}", run.sqs.set_queue_attributes, QueueUrl=url, Attributes={"Policy": json.dumps(merged)})


def teardown_queues(run: Run) -> None:
    """Delete the pipes' queues and dead-letter queues that thumbdrop created (tagged); keep any other."""
    for pipe in pipes(run.cfg):
        for name in (pipe.queue, dlq_name(pipe.queue)):
            url = queue_url(run, name)
            if url is None:
                continue
            tags = call(f"read tags of {name}", run.sqs.list_queue_tags, QueueUrl=url).get("Tags", {})
            if tags.get(TAG_KEY) != TAG_VALUE:
                run.report.add("keep", f"queue {name} (not created by thumbdrop)")
                continue
            run.report.add("delete", f"queue {name}")
            if not run.dry:
                call(f"delete queue {name}", run.sqs.delete_queue, QueueUrl=url)
