"""``Sync`` in-process against the moto server: streamed hand-over, no drains, redundant events cost no S3 call,
a no-op costs no request at all."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.clients import Backend
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.worker import ThumbnailWorker
from agent.service.sync import Sync
from agent.state.journal import Journal
from agent.state.status import Status
from tests.integration.test_worker_puller import Stack, consuming, files_under, jpeg, make_stack
from tests.support import wait_for

N = 6


@pytest.fixture()
def stack(moto_url: str, tmp_path: Path) -> Stack:
    return make_stack(moto_url, tmp_path)


def count_requests(backend: Backend, *, sqs: bool = True) -> Counter[str]:
    """Every API call the backend's clients (S3, and ``sqs``: SQS) make from now on, by operation name."""
    calls: Counter[str] = Counter()

    def seen(event_name: str, **_kw: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    for client in (backend.s3, backend.sqs) if sqs else (backend.s3,):
        client.meta.events.register("before-call.*.*", seen)
    return calls


def drop_images(inbox: Path, n: int = N) -> list[str]:
    names = [f"pic {i}.jpg" for i in range(n)]
    inbox.mkdir(parents=True, exist_ok=True)
    past = time.time() - 30  # settled already: no settle wait
    for i, name in enumerate(names):
        (inbox / name).write_bytes(jpeg((320 + i, 240), color=(20 * i, 90, 160)))
        os.utime(inbox / name, (past, past))
    return names


def run_sync(stack: Stack, backend: Any, progress: list[tuple[str, int, int]] | None = None) -> Any:
    return Sync(
        stack.cfg,
        backend,
        Path(stack.cfg.local.state_dir),
        timeout=120,
        progress=lambda p, d, t: progress.append((p, d, t)) if progress is not None else None,
        stop=threading.Event(),
    ).run()


def test_sync_hands_over_in_process_and_leaves_redundant_events_to_whoever_meets_them(stack: Stack) -> None:
    names = drop_images(Path(stack.cfg.watch.folders[0]))
    calls = count_requests(stack.backend)
    progress: list[tuple[str, int, int]] = []
    result = run_sync(stack, stack.backend, progress)
    assert result.ok, result.as_dict()
    assert (result.files, result.uploaded, result.thumbnailed, result.pulled) == (N, N, N, N)
    assert files_under(stack.thumbs) == set(names)
    # Streamed, not phased: the worker took each key from the uploader (no HEAD of it, no receive), and each
    # thumbnail went to the local folder from the job's own file (no download of it).
    assert calls["ReceiveMessage"] == 0 and calls["DeleteMessageBatch"] == 0, calls
    assert calls["HeadObject"] == 0, calls
    assert calls["GetObject"] == N, calls  # the sources only
    assert calls["PutObject"] == 2 * N, calls  # the sources and their thumbnails
    assert calls["ListObjectsV2"] == 2, calls  # one listing per bucket
    for phase in ("upload", "thumbnail", "pull"):
        assert (phase, N, N) in progress, progress
    # sync did not wait on the events of what it did: they are all still queued.
    assert stack.depth(stack.urls.events)[0] >= N
    assert stack.depth(stack.urls.pull)[0] >= N

    # Whoever meets them (a running agent, the next 'run') consumes them for one receive and delete each, and
    # no S3 call: the journal knows the sources' ETags are thumbnailed and the thumbnails pulled.
    journal = Journal(Path(stack.cfg.local.state_dir) / "journal.sqlite3")
    try:
        status = Status(stack.cfg.roles)
        worker = ThumbnailWorker(stack.cfg, stack.backend, status, stack.root / "work", journal)
        puller = ThumbnailPuller(stack.cfg, stack.backend, status, journal)
        s3_calls = count_requests(stack.backend, sqs=False)
        with consuming(stack, stack.urls.events, stack.urls.events_dlq, worker.handle_message):
            wait_for(lambda: stack.depth(stack.urls.events) == (0, 0), 30, "the redundant events consumed")
        with consuming(stack, stack.urls.pull, stack.urls.pull_dlq, puller.handle_message):
            wait_for(lambda: stack.depth(stack.urls.pull) == (0, 0), 30, "the redundant pull events consumed")
        assert sum(s3_calls.values()) == 0, s3_calls
        assert status.counts["skipped"] >= 2 * N and status.counts["thumbnailed"] == 0
        assert status.counts["failed"] == 0
    finally:
        journal.close()


def test_a_sync_with_nothing_to_do_makes_no_request(stack: Stack) -> None:
    names = drop_images(Path(stack.cfg.watch.folders[0]))
    assert run_sync(stack, stack.backend).ok
    opened: list[int] = []

    @contextlib.contextmanager
    def backend_source() -> Iterator[Backend]:
        opened.append(1)
        yield stack.backend

    calls = count_requests(stack.backend)
    progress: list[tuple[str, int, int]] = []
    result = run_sync(stack, backend_source, progress)
    assert result.ok and (result.files, result.uploaded, result.thumbnailed, result.pulled) == (N, 0, 0, 0)
    assert opened == [] and sum(calls.values()) == 0, calls  # local stats only: not even a backend
    assert ("pull", N, N) in progress

    # One changed file: the backend is opened, one listing per bucket, and only that file moves.
    changed = Path(stack.cfg.watch.folders[0]) / names[0]
    changed.write_bytes(jpeg((500, 300), color=(250, 250, 0)))
    past = time.time() - 30
    os.utime(changed, (past, past))
    result = run_sync(stack, backend_source, progress)
    assert result.ok and (result.uploaded, result.thumbnailed, result.pulled) == (1, 1, 1), result.as_dict()
    assert opened == [1]
    assert calls["ListObjectsV2"] == 2 and calls["PutObject"] == 2 and calls["GetObject"] == 1, calls
    assert calls["HeadObject"] == 1 and calls["DeleteObject"] == 0, calls  # is the old thumbnail of this content?


def test_run_hands_over_in_process_and_does_each_image_once(tmp_path: Path, moto_url: str) -> None:
    """Under run, a file this agent uploads is handed to its worker at once; the S3 event that follows races that
    hand-over, and whichever comes second finds the journal's record: each image is thumbnailed once, the source
    is read once, and the loser costs no S3 call."""
    from agent.service.agent import Agent
    from agent.service.runtime import pool_size
    from tests.integration.test_agent_control import config, drop_image

    cfg = config(tmp_path, moto_url)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=pool_size(cfg))
    by_key: Counter[tuple[str, str, str]] = Counter()

    def seen(event_name: str, params: dict[str, Any], **_kw: Any) -> None:
        by_key[(event_name.rsplit(".", 1)[-1], str(params.get("Bucket", "")), str(params.get("Key", "")))] += 1

    backend.s3.meta.events.register("before-parameter-build.s3.*", seen)
    agent = Agent(cfg, backend, state)
    agent.start()
    try:
        assert agent.ready.wait(60), "the agent did not become ready"
        names = [f"run {i}.jpg" for i in range(4)]
        for name in names:
            drop_image(tmp_path / "inbox" / name)
        thumbs = tmp_path / "thumbs"
        wait_for(lambda: files_under(thumbs) == set(names), 60, "every thumbnail pulled")
        wait_for(
            lambda: agent.status.counts["skipped"] >= len(names),  # the second of (event, hand-over) of each image
            60,
            "the redundant work skipped",
            lambda: f"{agent.status.counts} {dict(by_key)}",
        )
        source, thumbnails = cfg.source.bucket, cfg.thumbnails.bucket
        for name in names:
            assert by_key[("PutObject", thumbnails, name)] == 1, by_key  # thumbnailed once
            assert by_key[("GetObject", source, name)] == 1, by_key  # the source read once
            assert by_key[("HeadObject", source, name)] <= 1, by_key
        assert agent.status.counts["thumbnailed"] == len(names) and agent.status.counts["failed"] == 0
    finally:
        agent.stop()
