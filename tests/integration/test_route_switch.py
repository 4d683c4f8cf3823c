"""Turning queues.via_sns on or off replaces thumbdrop's own route; doctor warns about duplicate routes (issue 14, item 6).

Against moto's server over HTTP: moto delivers S3 events to SQS, and through SNS, during the PUT.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.cloud.provision import Provisioner
from agent.service.doctor import WARN, diagnose
from tests.integration.test_provision import (
    assert_nothing_more,
    drain_test_events,
    event_keys,
    make_backend,
    make_config,
    notifications,
    receive_events,
    setup,
    whats,
)

# Topics named apart from their queues: the route Ids then differ between the two modes.
TOPICS = {"events_topic": "photo-events-topic", "pull_topic": "photo-pull-topic"}
NAMES = [pytest.param(TOPICS, id="topics-named-apart"), pytest.param({}, id="default-names")]


def routes(backend: Any, bucket: str) -> list[str]:
    conf = notifications(backend, bucket)
    return sorted(e["Id"] for entries in conf.values() for e in entries)


def one_event_per_upload(backend: Any, key: str, *, wrapped: bool) -> None:
    for queue, bucket in (("thumbdrop-events", "thumbdrop-source"), ("thumbdrop-pull", "thumbdrop-thumbnails")):
        drain_test_events(backend, queue)
        backend.s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        docs = receive_events(backend, queue)  # a second event would come in the same batch, or below
        assert event_keys(docs) == [key], f"{queue}: {docs}"
        assert (docs[0].get("Type") == "Notification") is wrapped
        assert_nothing_more(backend, queue)


@pytest.mark.parametrize("names", NAMES)
@pytest.mark.parametrize(("first", "then"), [(True, False), (False, True)], ids=["sns-to-direct", "direct-to-sns"])
def test_switching_via_sns_replaces_thumbdrops_route(moto_url: str, names: dict[str, str], first: bool, then: bool) -> None:
    before = make_config(moto_url, queues={"via_sns": first, **names})
    backend = make_backend(before, moto_url)
    setup(before, backend)
    after = make_config(moto_url, queues={"via_sns": then, **names})

    report = setup(after, backend)
    assert not [w for w in whats(report, "keep") if "did not create" in w], "thumbdrop's own route called foreign"
    for bucket in ("thumbdrop-source", "thumbdrop-thumbnails"):
        conf = notifications(backend, bucket)
        assert len(routes(backend, bucket)) == 1, conf
        assert list(conf) == (["TopicConfigurations"] if then else ["QueueConfigurations"])
    if names:
        assert any("queues.via_sns" in w for w in whats(report, "replace")), [str(c) for c in report.changes]
    assert setup(after, backend).changed is False

    one_event_per_upload(backend, "after switch/IMG 1.jpg", wrapped=then)
    checks = diagnose(after)
    assert not [c for c in checks if c.name.startswith(("routes", "notifications")) and c.result != "PASS"], checks


def test_doctor_names_a_leftover_route_of_the_other_mode(moto_url: str) -> None:
    """Before this fix setup left such a route in place; doctor must say that setup replaces it, and not FAIL."""
    sns = make_config(moto_url, queues={"via_sns": True, **TOPICS})
    backend = make_backend(sns, moto_url)
    setup(sns, backend)
    direct = make_config(moto_url, queues={"via_sns": False, **TOPICS})
    # The direct route added by hand beside the SNS one: the state the old setup left behind.
    conf = notifications(backend, "thumbdrop-source")
    queue_arn = backend.sqs.get_queue_attributes(
        QueueUrl=backend.sqs.get_queue_url(QueueName="thumbdrop-events")["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    conf["QueueConfigurations"] = [
        {"Id": "thumbdrop-events-thumbdrop-events", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
    ]
    Provisioner(direct, backend).s3.put_bucket_notification_configuration(
        Bucket="thumbdrop-source", NotificationConfiguration=conf
    )
    c = {x.name: x for x in diagnose(direct)}
    assert c["routes events"].result == WARN
    assert "2 notifications send new objects under s3://thumbdrop-source/ to queue thumbdrop-events" in c["routes events"].detail
    assert "every upload arrives 2 times" in c["routes events"].detail
    assert c["routes events"].fix == "run 'thumbdrop setup': it replaces thumbdrop's own routes"
    assert c["notifications thumbdrop-source"].result == WARN
    setup(direct, backend)
    assert routes(backend, "thumbdrop-source") == ["thumbdrop-events-thumbdrop-events"]


@pytest.mark.parametrize("via_sns", [False, True], ids=["direct", "sns"])
def test_doctor_warns_about_a_hand_added_duplicate_route(moto_url: str, via_sns: bool) -> None:
    cfg = make_config(moto_url, queues={"via_sns": via_sns, **TOPICS})
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    c = {x.name: x for x in diagnose(cfg)}
    assert "routes events" not in c and "routes pull" not in c  # one route each: nothing to say

    # Someone adds their own rule for the same events into thumbdrop's queue, for a sub-prefix.
    queue_arn = backend.sqs.get_queue_attributes(
        QueueUrl=backend.sqs.get_queue_url(QueueName="thumbdrop-pull")["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    conf = notifications(backend, "thumbdrop-thumbnails")
    extra = {
        "Id": "my-own-rule",
        "QueueArn": queue_arn,
        "Events": ["s3:ObjectCreated:Put"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "256/"}]}},
    }
    conf.setdefault("QueueConfigurations", []).append(extra)
    backend.s3.put_bucket_notification_configuration(Bucket="thumbdrop-thumbnails", NotificationConfiguration=conf)

    c = {x.name: x for x in diagnose(cfg)}
    check = c["routes pull"]
    assert check.result == WARN
    assert "my-own-rule" in check.detail and "every upload arrives 2 times" in check.detail
    assert check.fix == (
        "remove the extra notification(s) my-own-rule from bucket thumbdrop-thumbnails, or point them at another queue or prefix"
    )
    assert "routes events" not in c
    # setup keeps it: not thumbdrop's to remove.
    report = setup(cfg, backend)
    assert any(
        "1 notification(s) on bucket thumbdrop-thumbnails that thumbdrop did not create" in w for w in whats(report, "keep")
    )


def test_stale_resources_removes_the_other_modes_route_only_beside_a_current_one(moto_url: str) -> None:
    from agent.cloud.stale import find_stale, remove_stale

    sns = make_config(moto_url, queues={"via_sns": True, **TOPICS})
    backend = make_backend(sns, moto_url)
    setup(sns, backend)
    direct = make_config(moto_url, queues={"via_sns": False, **TOPICS})
    assert [s for s in find_stale(direct, backend).remove if s.kind == "notification"] == []  # the only route: kept
    # The state an older setup left: the direct route added beside the SNS one on the source bucket.
    conf = notifications(backend, "thumbdrop-source")
    queue_arn = backend.sqs.get_queue_attributes(
        QueueUrl=backend.sqs.get_queue_url(QueueName="thumbdrop-events")["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    conf["QueueConfigurations"] = [
        {"Id": "thumbdrop-events-thumbdrop-events", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
    ]
    backend.s3.put_bucket_notification_configuration(Bucket="thumbdrop-source", NotificationConfiguration=conf)

    stale = [s for s in find_stale(direct, backend).remove if s.kind == "notification"]
    assert [(s.name, s.note) for s in stale] == [
        (
            "thumbdrop-source: thumbdrop-events-photo-events-topic",
            "made for the other queues.via_sns setting: a second route",
        )
    ]
    assert remove_stale(backend, stale) == []
    assert routes(backend, "thumbdrop-source") == ["thumbdrop-events-thumbdrop-events"]
    drain_test_events(backend, "thumbdrop-events")
    backend.s3.put_object(Bucket="thumbdrop-source", Key="once.jpg", Body=b"x")
    assert event_keys(receive_events(backend, "thumbdrop-events")) == ["once.jpg"]
    assert_nothing_more(backend, "thumbdrop-events")
