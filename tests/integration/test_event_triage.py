"""Redundant events never wait for a job slot: the consumer's triage deletes what the journal knows is done, and
parks (outside the job pool) the events of work this process has in hand, against the moto server over HTTP."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from agent.pipeline.worker import ThumbnailWorker
from agent.state.journal import Journal
from tests.integration.test_agent_control import drop_image
from tests.integration.test_agent_roles import started
from tests.integration.test_worker_puller import Stack, consuming, jpeg, make_stack, sns_wrap
from tests.support import wait_for

Message = dict[str, Any]


@pytest.fixture()
def stack(moto_url: str, tmp_path: Path) -> Stack:
    return make_stack(moto_url, tmp_path)


@pytest.fixture()
def plain_queue(stack: Stack) -> tuple[str, str]:
    dlq = stack.sqs.create_queue(QueueName="triage-test-dlq")["QueueUrl"]
    return stack.sqs.create_queue(QueueName="triage-test", Attributes={"VisibilityTimeout": "30"})["QueueUrl"], dlq


def test_redundant_messages_are_deleted_while_the_jobs_run(stack: Stack, plain_queue: tuple[str, str]) -> None:
    url, _dlq = plain_queue
    calls: list[str] = []
    started_work, release = threading.Event(), threading.Event()

    def handle(m: Message) -> None:
        calls.append(m["Body"])
        started_work.set()
        release.wait(30)

    redundant = lambda m: True if m["Body"].startswith("dup") else None  # noqa: E731
    with consuming(stack, url, None, handle, concurrency=2, triage=redundant) as consumer:
        try:
            stack.sqs.send_message(QueueUrl=url, MessageBody="work")
            wait_for(started_work.is_set, 20, "the job to start")
            for i in range(15):  # more than one receive and one delete batch
                stack.sqs.send_message(QueueUrl=url, MessageBody=f"dup {i}")
            wait_for(lambda: stack.depth(url) == (0, 1), 20, "every redundant message deleted while the job runs")
            assert calls == ["work"], "a redundant message was handled as a job"
            release.set()
            wait_for(lambda: stack.depth(url) == (0, 0), 20, "the job's message deleted")
        finally:
            release.set()  # before the consumer's join, which waits for the job
    assert consumer.outcome.ok == 16


def test_a_message_whose_work_is_in_hand_waits_outside_the_pool(stack: Stack, plain_queue: tuple[str, str]) -> None:
    """One job slot: the parked message does not hold it, its visibility is kept extended while it waits, and it
    is deleted (never handled) once the work it waits for is done."""
    url, _dlq = plain_queue
    calls: list[str] = []
    in_hand: Future[str] = Future()

    def triage(m: Message) -> bool | Future[str] | None:
        if m["Body"] != "made here":
            return None
        return True if in_hand.done() else in_hand

    visibility = 6
    with consuming(stack, url, None, lambda m: calls.append(m["Body"]), concurrency=1, visibility=visibility, triage=triage):
        stack.sqs.send_message(QueueUrl=url, MessageBody="made here")
        wait_for(lambda: stack.depth(url) == (0, 1), 20, "the message received and parked")
        stack.sqs.send_message(QueueUrl=url, MessageBody="a job")
        wait_for(lambda: calls == ["a job"], 20, "the next message handled while the first one waits")
        t0 = time.monotonic()
        stolen: list[Message] = []
        while time.monotonic() - t0 < visibility + 3:  # past the original visibility timeout
            resp = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0, VisibilityTimeout=1)
            stolen.extend(resp.get("Messages", []))
            time.sleep(0.25)
        assert stolen == [], "a parked message became visible to other consumers"
        in_hand.set_result("thumbnailed")
        wait_for(lambda: stack.depth(url) == (0, 0), 20, "the parked message deleted")
    assert calls == ["a job"]


def test_a_message_whose_work_failed_elsewhere_becomes_a_job(stack: Stack, plain_queue: tuple[str, str]) -> None:
    url, _dlq = plain_queue
    calls: list[str] = []
    in_hand: Future[str] = Future()
    waits = lambda m: None if in_hand.done() else in_hand  # noqa: E731
    with consuming(stack, url, None, lambda m: calls.append(m["Body"]), concurrency=2, triage=waits):
        stack.sqs.send_message(QueueUrl=url, MessageBody="failed elsewhere")
        wait_for(lambda: stack.depth(url) == (0, 1), 20, "the message parked")
        assert calls == []
        in_hand.set_result("failed")
        wait_for(lambda: calls == ["failed elsewhere"], 20, "the message handled as a job after the failure")
        wait_for(lambda: stack.depth(url) == (0, 0), 20, "its message deleted")


def test_the_worker_triage_knows_done_in_hand_and_everything_else(stack: Stack) -> None:
    key = "t/été 1.jpg"
    stack.s3.put_object(Bucket=stack.cfg.source.bucket, Key=key, Body=jpeg())
    (event,) = stack.receive(stack.urls.events, expect=1)
    journal = Journal(stack.root / "journal.sqlite3")
    worker = ThumbnailWorker(stack.cfg, stack.backend, stack.status, stack.root / "work", journal)
    try:
        assert worker.triage(event) is None, "not made yet: a job"
        making: Future[str] = Future()
        worker.in_hand = lambda rel: making if rel == key else None
        assert worker.triage(event) is making
        worker.in_hand = None
        worker.handle_message(event)
        skipped = stack.status.counts["skipped"]
        assert worker.triage(event) is True
        assert worker.triage({**event, "Body": sns_wrap(event["Body"])}) is True
        assert stack.status.counts["skipped"] == skipped + 2
        body = json.loads(event["Body"])
        body["Records"][0]["s3"]["bucket"]["name"] = "someone-elses"
        assert worker.triage({**event, "Body": json.dumps(body)}) is None, "a foreign bucket: the handler logs it"
        assert worker.triage({**event, "Body": "not json"}) is None, "a bad body: the handler dead-letters it"
        assert worker.triage({**event, "Body": json.dumps({"Event": "s3:TestEvent"})}) is True
    finally:
        worker.close()
        journal.close()


def test_run_receives_the_events_of_its_own_uploads_while_their_thumbnails_wait(tmp_path: Path, moto_url: str) -> None:
    """Under run, the hand-over has every upload in hand: their events are received at once and parked (none
    stays queued behind the thumbnail jobs), then deleted when the hand-over made them; no job handles them."""
    agent = started(tmp_path, moto_url)
    gate = threading.Event()
    try:
        assert agent.ready.wait(60), "the agent did not become ready"
        worker = agent.worker
        assert worker is not None and agent.handoff is not None
        make, handle = worker.make, worker.handle_message
        handled: list[str] = []

        def slow_make(*args: Any, **kwargs: Any) -> Any:
            gate.wait(60)
            return make(*args, **kwargs)

        def counted(msg: Message) -> Any:
            handled.append(msg["Body"])
            return handle(msg)

        worker.make = slow_make  # type: ignore[method-assign]
        consumer = next(c for c in agent.consumers if c.name == "worker")
        consumer.handle = counted
        events = consumer.queue_url
        sqs = agent.backend.sqs
        n = 8
        for i in range(n):
            drop_image(tmp_path / "inbox" / f"held {i}.jpg")
        wait_for(lambda: agent.status.counts["uploaded"] >= n, 60, "every image uploaded")

        def depth() -> tuple[int, int]:
            a = sqs.get_queue_attributes(
                QueueUrl=events, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

        wait_for(lambda: depth()[0] == 0, 30, "every event received while the thumbnails wait")
        gate.set()
        for i in range(n):
            wait_for((tmp_path / "thumbs" / f"held {i}.jpg").exists, 60, f"thumbnail {i}")
        wait_for(lambda: depth() == (0, 0), 30, "every event deleted")
        assert handled == [], "a redundant event was handled as a job"
    finally:
        gate.set()
        agent.stop()
    wait_for(lambda: all(r.join(0.1) for r in agent.running), 20, "every role to end")
