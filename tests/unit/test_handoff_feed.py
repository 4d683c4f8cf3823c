"""The hand-over on a shared pool (under run: the worker consumer's): at most its size of thumbnail jobs are queued
there, so the consumer's own jobs never wait behind a backlog; each source in hand has a Future its events wait on."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from agent.pipeline.handoff import Handoff
from tests.support import wait_for


class FakeWorker:
    def __init__(self) -> None:
        self.layout = SimpleNamespace(thumb_keys=lambda rel: [rel])
        self.gate = threading.Event()
        self.started: list[str] = []
        self.fail = {"bad.jpg"}

    def make(self, rel: str, **_kw: Any) -> tuple[str, list[Any]]:
        self.started.append(rel)
        self.gate.wait(20)
        if rel in self.fail:
            raise ValueError("a bug")
        return "thumbnailed", []


def test_a_backlog_waits_in_the_hand_over_not_in_the_shared_pool() -> None:
    worker = FakeWorker()
    pool = ThreadPoolExecutor(2, thread_name_prefix="shared-job")
    told: list[tuple[str, str]] = []
    handoff = Handoff(
        worker,  # type: ignore[arg-type]
        None,
        worker_concurrency=2,
        pull_concurrency=1,
        listener=lambda rel, _stage, result, _reason: told.append((rel, result)),
        worker_pool=pool,
    )
    try:
        handoff.expect("uploading.jpg")
        for i in range(10):
            handoff.thumbnail(f"{i}.jpg")
        handoff.thumbnail("bad.jpg")
        wait_for(lambda: len(worker.started) == 2, 10, "two jobs running")
        assert pool._work_queue.qsize() == 0, "the backlog was queued on the shared pool"
        # Another job of the pool's owner runs next, not after eleven thumbnails.
        other = pool.submit(worker.started.append, "the consumer's job")
        futures = {rel: handoff.pending(rel) for rel in ["0.jpg", "5.jpg", "bad.jpg", "uploading.jpg"]}
        assert all(f is not None and not f.done() for f in futures.values())
        assert handoff.pending("nothing.jpg") is None
        worker.gate.set()
        other.result(10)
        wait_for(lambda: len(told) == 11, 20, "every job told")
        assert worker.started.index("the consumer's job") == 2, worker.started
        assert futures["0.jpg"].result(5) == "thumbnailed"  # type: ignore[union-attr]
        assert futures["bad.jpg"].result(5) == "failed"  # type: ignore[union-attr]
        assert handoff.pending("0.jpg") is None, "a finished job is no longer in hand"
        assert not futures["uploading.jpg"].done()  # type: ignore[union-attr]
        handoff.let_go("uploading.jpg", "cancelled")  # its upload failed: its events become jobs
        assert futures["uploading.jpg"].result(1) == "cancelled"  # type: ignore[union-attr]
    finally:
        worker.gate.set()
        handoff.close(wait=False)
        pool.shutdown(wait=True)


def test_a_stop_lets_go_of_what_waits_and_keeps_what_runs() -> None:
    worker = FakeWorker()
    pool = ThreadPoolExecutor(1, thread_name_prefix="shared-job")
    handoff = Handoff(
        worker,  # type: ignore[arg-type]
        None,
        worker_concurrency=1,
        pull_concurrency=1,
        listener=lambda *_a: None,
        worker_pool=pool,
    )
    try:
        handoff.thumbnail("running.jpg")
        handoff.thumbnail("waiting.jpg")
        handoff.expect("uploading.jpg")
        wait_for(lambda: worker.started == ["running.jpg"], 10, "the first job running")
        running, waiting, uploading = (handoff.pending(r) for r in ("running.jpg", "waiting.jpg", "uploading.jpg"))
        handoff.close(wait=False)
        assert waiting is not None and waiting.result(1) == "cancelled"
        assert uploading is not None and uploading.result(1) == "cancelled"
        assert running is not None and not running.done()
        handoff.thumbnail("late.jpg")  # after the stop: not taken, nothing left in hand
        assert handoff.pending("late.jpg") is None
        worker.gate.set()
        assert running.result(10) == "thumbnailed"
        assert worker.started == ["running.jpg"]
    finally:
        worker.gate.set()
        pool.shutdown(wait=True)
