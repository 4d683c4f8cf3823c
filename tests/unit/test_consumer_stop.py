"""A consumer is a Role: its threads end on stop(), whenever the stop comes."""

from __future__ import annotations

import threading

from agent.pipeline.consumer import QueueConsumer
from agent.pipeline.role import Role
from agent.state.status import Status


def consumer() -> QueueConsumer:
    return QueueConsumer(
        name="puller",
        sqs=None,
        queue_url="http://127.0.0.1:9/q",
        dlq_url=None,
        handle=lambda _msg: None,
        describe=lambda _msg: "?",
        concurrency=1,
        visibility_timeout=30,
        wait_seconds=1,
        status=Status(["puller"]),
    )


def test_a_stop_just_before_the_heartbeat_goes_idle_ends_it() -> None:
    """stop() sets _busy; a heartbeat that then found nothing in flight cleared it and slept for good (a thread
    leak seen under load): it must see the stop instead."""
    c = consumer()
    assert isinstance(c, Role)
    c.stop()  # before the loop's idle check: exactly the losing order of the race
    heartbeat = threading.Thread(target=c._housekeeping_loop, name="puller-heartbeat", daemon=True)
    heartbeat.start()
    heartbeat.join(10)
    alive = heartbeat.is_alive()
    c._busy.set()  # let a leaked loop go, so the test itself leaves nothing behind
    heartbeat.join(10)
    assert not alive, "the heartbeat slept through the stop"


def test_pause_holds_the_puller_but_not_a_consumer_that_is_not_pausable() -> None:
    c = consumer()
    c.pause()
    assert c.paused.is_set()
    c.resume()
    assert not c.paused.is_set()
    c.pausable = False
    c.pause()
    assert not c.paused.is_set()
