"""The Prometheus endpoint: Status counters, durations, queue depths; stopped cleanly."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from agent.errors import BackendError
from agent.service import metrics as metrics_module
from agent.service.metrics import Metrics
from agent.state.status import Status


@pytest.fixture()
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Metrics, Status]]:
    polls: list[int] = []

    def fake_poll(_cfg: Any, _backend: Any) -> dict[tuple[str, str], int]:
        polls.append(1)
        return {("events", "visible"): 4, ("events", "in_flight"): 1, ("events", "dead_letter"): 2}

    monkeypatch.setattr(metrics_module, "_poll_depths", fake_poll)
    m = Metrics(host="127.0.0.1", port=0, queue_poll_seconds=60)
    status = Status(["uploader", "worker"])
    m.attach(status, object(), object())  # type: ignore[arg-type]  # the fake poll never looks at them
    m.start()
    try:
        yield m, status
    finally:
        m.stop()
    assert len(polls) == 1  # two scrapes within queue_poll_seconds: one poll


def scrape(m: Metrics) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_counters_durations_and_depths(served: tuple[Metrics, Status]) -> None:
    m, status = served
    status.count("uploaded", 3)
    status.count("seen", 4)
    status.fail("x.jpg", "bad", "worker")
    status.done("upload", 0.2, 1000)
    status.done("upload", 3.0, 5000)
    status.done("thumbnail", 0.04, 800)
    status.count("previewed")
    status.done("preview", 40.0, 9_000_000)
    status.begin("transcoding")
    text = scrape(m)
    assert 'thumbdrop_files_total{event="uploaded"} 3.0' in text
    assert 'thumbdrop_files_total{event="seen"} 4.0' in text
    assert 'thumbdrop_files_total{event="failed"} 1.0' in text
    assert 'thumbdrop_bytes_total{activity="upload"} 6000.0' in text
    assert 'thumbdrop_duration_seconds_count{activity="upload"} 2.0' in text
    assert 'thumbdrop_duration_seconds_bucket{activity="upload",le="0.25"} 1.0' in text
    assert 'thumbdrop_duration_seconds_count{activity="pull"} 0.0' in text
    assert 'thumbdrop_files_total{event="previewed"} 1.0' in text  # video previews
    assert 'thumbdrop_duration_seconds_bucket{activity="preview",le="60.0"} 1.0' in text
    assert 'thumbdrop_active{activity="transcoding"} 1.0' in text
    assert 'thumbdrop_last_success_timestamp_seconds{activity="upload"}' in text
    assert 'thumbdrop_queue_messages{queue="events",state="visible"} 4.0' in text
    assert 'thumbdrop_queue_messages{queue="events",state="dead_letter"} 2.0' in text
    assert 'thumbdrop_state{state="starting"} 1.0' in text
    assert "thumbdrop_offline 0.0" in text
    scrape(m)


def test_a_new_agent_after_a_reload(served: tuple[Metrics, Status]) -> None:
    m, old = served
    old.done("pull", 0.1, 10)
    new = Status(["puller"])
    new.counts.update(old.counts)
    m.attach(new, object(), object())  # type: ignore[arg-type]
    new.done("pull", 0.1, 10)
    assert 'thumbdrop_duration_seconds_count{activity="pull"} 2.0' in scrape(m)


def test_needs_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(BackendError, match="prometheus_client is not installed"):
        Metrics(host="127.0.0.1", port=9464)


def test_port_in_use() -> None:
    first = Metrics(host="127.0.0.1", port=0)
    first.start()
    try:
        with pytest.raises(BackendError, match="cannot serve metrics"):
            Metrics(host="127.0.0.1", port=first.port).start()
    finally:
        first.stop()
