"""Dead-letter queues, queue purges and stale resources against moto's server over HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.cloud.clients import Backend
from agent.cloud.dlq import depth, list_dead_letters, redrive
from agent.cloud.provision import Provisioner
from agent.cloud.stale import find_stale, remove_stale
from agent.config.model import Config
from agent.errors import ImageError
from agent.pipeline.consumer import REASON_ATTR, QueueConsumer
from agent.service.runtime import queue_urls
from agent.state.status import Status
from tests.integration.cleanup_support import SOURCE, backend_for, config_data, make_config, write_config


def s3_event(key: str) -> str:
    return json.dumps(
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": SOURCE}, "object": {"key": key}}}]}
    )


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"])
    return list(resp.get("Messages", []))


def setup_empty(cfg: Config) -> Backend:
    """Provision, then drop the s3:TestEvent messages setting up notifications leaves on the queues."""
    backend = backend_for(cfg)
    Provisioner(cfg, backend).setup()
    urls = queue_urls(cfg, backend)
    for url in (urls.events, urls.pull, urls.events_dlq, urls.pull_dlq):
        backend.sqs.purge_queue(QueueUrl=url)
    return backend


@pytest.fixture()
def provisioned(moto_url: str, tmp_path: Path) -> tuple[Config, Backend]:
    cfg = make_config(moto_url, tmp_path)
    return cfg, setup_empty(cfg)


def test_consumer_dead_letter_lists_with_its_reason_and_redrives(provisioned: tuple[Config, Backend]) -> None:
    cfg, backend = provisioned
    urls = queue_urls(cfg, backend)
    sqs = backend.sqs
    sqs.send_message(QueueUrl=urls.events, MessageBody=s3_event("originals/bad.jpg"))

    def handle(_msg: dict[str, Any]) -> None:
        raise ImageError("cannot identify image file")

    consumer = QueueConsumer(
        name="test-worker",
        sqs=sqs,
        queue_url=urls.events,
        dlq_url=urls.events_dlq,
        handle=handle,
        describe=lambda _m: "originals/bad.jpg",
        concurrency=2,
        visibility_timeout=30,
        wait_seconds=1,
        status=Status(["worker"]),
    )
    consumer.drain(deadline=time.monotonic() + 10)
    consumer.join(timeout=5)
    assert consumer.outcome.dead_lettered == 1

    for _ in range(2):  # listing leaves every message in place, visible at once
        letters = list_dead_letters(sqs, urls.events_dlq, queue="td-events-dlq", max_receives=2)
        assert [(d.item, d.reason) for d in letters] == [("originals/bad.jpg", "cannot identify image file")]
    held = receive_all(sqs, urls.events_dlq)
    assert len(held) == 1  # visible right after the listing
    sqs.change_message_visibility(QueueUrl=urls.events_dlq, ReceiptHandle=held[0]["ReceiptHandle"], VisibilityTimeout=0)

    started = time.monotonic()
    result = redrive(backend, dlq_url=urls.events_dlq, source_url=urls.events, queue="td-events-dlq")
    assert (result.moved, result.failed, result.task) == (1, 0, None)  # moto has no StartMessageMoveTask: by hand
    assert time.monotonic() - started < 10  # the unsupported call is tried once, not retried
    back = receive_all(sqs, urls.events)
    assert [json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"] for m in back] == ["originals/bad.jpg"]
    assert REASON_ATTR not in back[0].get("MessageAttributes", {})  # the old verdict does not travel along
    assert depth(sqs, urls.events_dlq) == 0


def test_redrive_ends_while_an_agent_keeps_failing_the_same_items(provisioned: tuple[Config, Backend]) -> None:
    """A running worker dead-letters a still-bad image again at once, as a new message: redrive must not chase it."""
    cfg, backend = provisioned
    urls = queue_urls(cfg, backend)
    sqs = backend.sqs
    for i in range(13):  # more than one receive batch
        sqs.send_message(QueueUrl=urls.events_dlq, MessageBody=s3_event(f"originals/bad-{i}.jpg"))

    def handle(_msg: dict[str, Any]) -> None:
        raise ImageError("cannot identify image file")

    agent_worker = QueueConsumer(
        name="test-worker",
        sqs=sqs,
        queue_url=urls.events,
        dlq_url=urls.events_dlq,
        handle=handle,
        describe=lambda m: json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"],
        concurrency=2,
        visibility_timeout=30,
        wait_seconds=1,
        status=Status(["worker"]),
    )
    agent_worker.start()
    try:
        started = time.monotonic()
        result = redrive(backend, dlq_url=urls.events_dlq, source_url=urls.events, queue="td-events-dlq")
        took = time.monotonic() - started
        deadline = time.monotonic() + 30
        while agent_worker.outcome.dead_lettered < 13 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        agent_worker.stop()
        agent_worker.join(timeout=10)
    assert (result.moved, result.failed) == (13, 0), result
    assert took < 60, took
    # Every item failed again and is back in the dead-letter queue, once: nothing lost, nothing multiplied.
    assert agent_worker.outcome.dead_lettered == 13
    keys = sorted(d.item for d in list_dead_letters(sqs, urls.events_dlq, queue="td-events-dlq", max_receives=2))
    assert keys == sorted(f"originals/bad-{i}.jpg" for i in range(13))


def test_sqs_dead_lettered_messages_say_they_exceeded_max_receives(provisioned: tuple[Config, Backend]) -> None:
    cfg, backend = provisioned
    urls = queue_urls(cfg, backend)
    sqs = backend.sqs
    sqs.send_message(QueueUrl=urls.pull, MessageBody=s3_event("thumbs/slow.jpg"))
    for _ in range(3):  # max_receives is 2: the third receive moves it to the dead-letter queue
        sqs.receive_message(QueueUrl=urls.pull, VisibilityTimeout=0, WaitTimeSeconds=0)
    letters = list_dead_letters(sqs, urls.pull_dlq, queue="td-pull-dlq", max_receives=2)
    assert [(d.item, d.reason) for d in letters] == [("thumbs/slow.jpg", "exceeded max_receives (2 receives; limit 2)")]


def test_dlq_cli_list_redrive_and_purge(moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = write_config(tmp_path / "config.yaml", config_data(moto_url, tmp_path))
    cfg = make_config(moto_url, tmp_path)
    backend = setup_empty(cfg)
    urls = queue_urls(cfg, backend)
    attrs = {REASON_ATTR: {"DataType": "String", "StringValue": "Bad image: truncated"}}
    backend.sqs.send_message(QueueUrl=urls.events_dlq, MessageBody=s3_event("originals/a.jpg"), MessageAttributes=attrs)
    backend.sqs.send_message(QueueUrl=urls.pull_dlq, MessageBody=s3_event("thumbs/b.jpg"))
    capsys.readouterr()

    assert main(["-q", "--config", str(cfg_path), "dlq", "list"]) == 0
    out = capsys.readouterr().out
    assert "td-events-dlq: 1 dead-lettered message(s)" in out and "originals/a.jpg  Bad image: truncated" in out
    assert "thumbs/b.jpg  exceeded max_receives" in out
    assert main(["-q", "--config", str(cfg_path), "dlq", "list", "--queue", "pull", "--json"]) == 0
    assert [d["item"] for d in json.loads(capsys.readouterr().out)["td-pull-dlq"]] == ["thumbs/b.jpg"]

    assert main(["-q", "--config", str(cfg_path), "dlq", "redrive", "--queue", "pull"]) == 0
    assert "td-pull-dlq: 1 message(s) sent back for another try" in capsys.readouterr().out
    assert depth(backend.sqs, urls.pull) == 1
    # Redrive never asks, but a script passing --yes to both redrive and purge must work (README: asks unless --yes).
    backend.sqs.send_message(QueueUrl=urls.pull_dlq, MessageBody=s3_event("thumbs/c.jpg"))
    assert main(["-q", "--config", str(cfg_path), "dlq", "redrive", "--queue", "pull", "--yes"]) == 0
    assert "td-pull-dlq: 1 message(s) sent back for another try" in capsys.readouterr().out
    assert depth(backend.sqs, urls.pull) == 2

    assert main(["-q", "--config", str(cfg_path), "dlq", "purge"]) == 2  # no terminal to ask on, no --yes
    assert depth(backend.sqs, urls.events_dlq) == 1
    assert main(["-q", "--config", str(cfg_path), "dlq", "purge", "--yes"]) == 0
    assert "purged td-events-dlq" in capsys.readouterr().out
    assert depth(backend.sqs, urls.events_dlq) == 0


def test_cleanup_purge_queues(moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = write_config(tmp_path / "config.yaml", config_data(moto_url, tmp_path))
    cfg = make_config(moto_url, tmp_path)
    backend = setup_empty(cfg)
    urls = queue_urls(cfg, backend)
    for url in (urls.events, urls.pull, urls.pull_dlq):
        backend.sqs.send_message(QueueUrl=url, MessageBody=s3_event("x.jpg"))
    capsys.readouterr()
    assert main(["-q", "--config", str(cfg_path), "cleanup", "--purge-queues"]) == 2
    assert main(["-q", "--config", str(cfg_path), "cleanup", "--purge-queues", "--yes"]) == 0
    assert "td-events (1 message(s)), td-pull (1 message(s))" in capsys.readouterr().out
    assert (depth(backend.sqs, urls.events), depth(backend.sqs, urls.pull), depth(backend.sqs, urls.pull_dlq)) == (0, 0, 1)


def test_stale_resources_of_an_older_config_are_removed_and_the_rest_kept(moto_url: str, tmp_path: Path) -> None:
    old = make_config(moto_url, tmp_path, queues="old")
    new = make_config(moto_url, tmp_path, queues="new")
    backend = backend_for(new)
    Provisioner(old, backend).setup()
    Provisioner(new, backend).setup()
    sqs, s3 = backend.sqs, backend.s3
    sqs.create_queue(QueueName="someone-elses")  # not tagged: never touched
    fleet = sqs.create_queue(QueueName="fleet-pull", tags={"thumbdrop:managed": "true"})["QueueUrl"]
    fleet_arn = sqs.get_queue_attributes(QueueUrl=fleet, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    conf = s3.get_bucket_notification_configuration(Bucket=SOURCE)
    conf.pop("ResponseMetadata")
    entry = {
        "Id": "thumbdrop-pull-fleet-pull-1234",
        "QueueArn": fleet_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "other-agent/"}]}},
    }
    conf.setdefault("QueueConfigurations", []).append(entry)  # another agent of the fleet, another prefix
    s3.put_bucket_notification_configuration(Bucket=SOURCE, NotificationConfiguration=conf)

    found = find_stale(new, backend)
    assert sorted((s.kind, s.name) for s in found.remove) == [
        ("notification", next(s.name for s in found.remove if s.kind == "notification" and s.name.startswith(SOURCE))),
        ("notification", next(s.name for s in found.remove if s.kind == "notification" and not s.name.startswith(SOURCE))),
        ("queue", "old-events"),
        ("queue", "old-events-dlq"),
        ("queue", "old-pull"),
        ("queue", "old-pull-dlq"),
    ]
    assert [(s.name, s.note) for s in found.keep] == [("fleet-pull", f"still in use: bucket {SOURCE} notifies it")]
    assert remove_stale(backend, found.remove) == []
    names = {u.rsplit("/", 1)[-1] for u in sqs.list_queues()["QueueUrls"]}
    assert names == {"new-events", "new-events-dlq", "new-pull", "new-pull-dlq", "someone-elses", "fleet-pull"}
    ids = {e["Id"] for e in s3.get_bucket_notification_configuration(Bucket=SOURCE).get("QueueConfigurations", [])}
    assert entry["Id"] in ids and not any("old-" in i for i in ids) and any("new-events" in i for i in ids)
    assert find_stale(new, backend).remove == []
