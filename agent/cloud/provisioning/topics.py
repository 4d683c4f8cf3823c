"""SNS topics and their queue subscriptions (with a payload filter per prefix), and removing ours."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, quote_plus

from agent.cloud.errors import call
from agent.cloud.provisioning.common import TAG_KEY, TAG_VALUE, Pipe, Run, bucket_arn, is_ours, load_policy, merge_statement


def topic_arn(run: Run, name: str) -> str | None:
    paginator = run.sns.get_paginator("list_topics")
    for page in call("list SNS topics", lambda: list(paginator.paginate())):
        for topic in page.get("Topics", []):
            if topic["TopicArn"].rsplit(":", 1)[-1] == name:
                return str(topic["TopicArn"])
    return None


def ensure_topic(run: Run, name: str, *, bucket: str) -> str:
    arn = topic_arn(run, name)
    if arn is None:
        run.report.add("create", f"topic {name}")
        if run.dry:
            return f"<arn of topic {name}>"
        out = call(f"create topic {name}", run.sns.create_topic, Name=name, Tags=[{"Key": TAG_KEY, "Value": TAG_VALUE}])
        arn = str(out["TopicArn"])
    else:
        run.report.add("ok", f"topic {name}")
    statement = {
        "Sid": "thumbdrop-s3",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "SNS:Publish",
        "Resource": arn,
        "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn(run.backend.region, bucket)}},
    }
    if arn.startswith("<"):
        run.report.add("create", f"policy on topic {name} allowing S3")
        return arn
    attrs = call(f"read topic {name}", run.sns.get_topic_attributes, TopicArn=arn).get("Attributes", {})
    policy = load_policy(attrs.get("Policy"))
    merged = merge_statement(policy, statement)
    if merged != policy:
        run.report.add("update", f"policy on topic {name} allowing S3")
        if not run.dry:
            call(
                f"set policy of topic {name}",
                run.sns.set_topic_attributes,
                TopicArn=arn,
                AttributeName="Policy",
                AttributeValue=json.dumps(merged),
            )
    else:
        run.report.add("ok", f"policy on topic {name}")
    return arn


def ensure_subscription(run: Run, topic: str, queue_arn: str, pipe: Pipe) -> None:
    if topic.startswith("<") or queue_arn.startswith("<"):
        run.report.add("create", f"subscription {pipe.topic} -> {pipe.queue}")
        return
    policy = sns_filter_policy(pipe.prefix)
    for sub in subscriptions(run, topic):
        if sub.get("Endpoint") == queue_arn and sub.get("Protocol") == "sqs":
            _ensure_filter(run, sub["SubscriptionArn"], policy, pipe)
            return
    run.report.add("create", f"subscription {pipe.topic} -> {pipe.queue}" + (f" (keys under {pipe.prefix})" if policy else ""))
    if not run.dry:
        attrs = {"FilterPolicyScope": "MessageBody", "FilterPolicy": policy} if policy else {}
        call(
            f"subscribe {pipe.queue} to {pipe.topic}",
            run.sns.subscribe,
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes=attrs,
            ReturnSubscriptionArn=True,
        )


def _ensure_filter(run: Run, sub_arn: str, policy: str | None, pipe: Pipe) -> None:
    """Agents sharing a topic see only their prefix: the subscription's payload filter says which."""
    what = f"subscription {pipe.topic} -> {pipe.queue}"
    attrs = call(f"read {what}", run.sns.get_subscription_attributes, SubscriptionArn=sub_arn).get("Attributes", {})
    current = attrs.get("FilterPolicy") or None
    same = (current is None and policy is None) or (
        current is not None and policy is not None and json.loads(current) == json.loads(policy)
    )
    if same:
        run.report.add("ok", what)
        return
    run.report.add("update", f"{what}: filter on keys under {pipe.prefix!r}" if policy else f"{what}: no filter")
    if run.dry:
        return
    if policy:
        call(
            f"set {what} scope",
            run.sns.set_subscription_attributes,
            SubscriptionArn=sub_arn,
            AttributeName="FilterPolicyScope",
            AttributeValue="MessageBody",
        )
    call(
        f"set {what} filter",
        run.sns.set_subscription_attributes,
        SubscriptionArn=sub_arn,
        AttributeName="FilterPolicy",
        AttributeValue=policy or "",
    )


def subscriptions(run: Run, topic: str) -> list[dict[str, Any]]:
    paginator = run.sns.get_paginator("list_subscriptions_by_topic")
    subs: list[dict[str, Any]] = []
    for page in call("list subscriptions", lambda: list(paginator.paginate(TopicArn=topic))):
        subs.extend(dict(sub) for sub in page.get("Subscriptions", []))
    return subs


def sns_filter_policy(prefix: str) -> str | None:
    """An SNS payload filter passing only S3 events under ``prefix``: agents sharing a topic each get their own.

    Event keys are URL-encoded and stores differ: AWS sends a space as '+', LocalStack as %20; moto sends '/'
    as %2F. Every spelling is listed (any one matches)."""
    if not prefix:
        return None
    variants = sorted({prefix, quote_plus(prefix, safe="/"), quote_plus(prefix, safe=""), quote(prefix, safe="/")})
    return json.dumps({"Records": {"s3": {"object": {"key": [{"prefix": v} for v in variants]}}}}, sort_keys=True)


def teardown_topics(run: Run) -> None:
    """Delete the topics thumbdrop created (tagged) and their subscriptions; keep any other topic."""
    for topic in dict.fromkeys([run.cfg.queues.events_topic, run.cfg.queues.pull_topic]):
        arn = topic_arn(run, topic)
        if arn is None:
            continue
        topic_tags = call(f"read tags of topic {topic}", run.sns.list_tags_for_resource, ResourceArn=arn).get("Tags", [])
        if not is_ours(topic_tags):
            run.report.add("keep", f"topic {topic} (not created by thumbdrop)")
            continue
        for sub in subscriptions(run, arn):
            if sub.get("SubscriptionArn", "").startswith("arn:"):
                run.report.add("delete", f"subscription {topic} -> {sub.get('Endpoint', '').rsplit(':', 1)[-1]}")
                if not run.dry:
                    call("unsubscribe", run.sns.unsubscribe, SubscriptionArn=sub["SubscriptionArn"])
        run.report.add("delete", f"topic {topic}")
        if not run.dry:
            call(f"delete topic {topic}", run.sns.delete_topic, TopicArn=arn)
