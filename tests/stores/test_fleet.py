"""A fleet on one pair of buckets: 3 agents (all roles) and 2 extra workers, in both queue modes.

Design: each agent uploads under its own source.prefix and pulls its own thumbnails.prefix, and has its own
events and pull queues; setup routes each prefix to its queues (S3 notification filter rules in mode sqs; SNS
subscription filter policies on the event's key in mode sns, where the agents share the topics). An extra worker is
a config like its agent's with roles [worker]: a competing consumer on that agent's events queue. A queue already
fed by another prefix is refused at setup; an event that still reaches the wrong agent is released, never consumed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.clients import Backend
from agent.cloud.provision import Provisioner
from agent.config import parse_config
from agent.errors import BackendError, TransientError
from agent.pipeline.worker import ThumbnailWorker
from agent.state.status import Status
from tests.e2e.conftest import E2EEnv, check_thumbnail, files_under, make_image, s3_event, wait_for
from tests.stores.conftest import Store, agent_env

pytestmark = pytest.mark.e2e

AGENTS = ("deva", "devb", "devc")
IMAGES = ("one.jpg", "two words.jpg", "x+y.jpg")


def fleet_config(store: Store, n: dict[str, str], agent: str, mode: str) -> dict[str, Any]:
    return {
        "backend": {"endpoint_url": store.endpoint, "addressing_style": "path", "max_attempts": 3},
        "source": {"bucket": n["source"], "prefix": f"{agent}/"},
        "thumbnails": {"bucket": n["thumbs"], "prefix": f"thumbs/{agent}/"},
        "queues": {
            "mode": mode,
            "events": f"{n['events']}-{agent}",
            "pull": f"{n['pull']}-{agent}",
            "events_topic": n["events_topic"],  # shared by the fleet in mode sns
            "pull_topic": n["pull_topic"],
            "wait_seconds": 1,
            "visibility_timeout": 30,
        },
    }


@pytest.mark.parametrize("mode", ["sqs", "sns"])
def test_each_agent_gets_exactly_its_own_thumbnails(
    moto_store: Store, mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    n = moto_store.names()
    envs: dict[str, E2EEnv] = {}
    for agent in AGENTS:
        e = envs[agent] = agent_env(moto_store, tmp_path / agent, request)
        e.write_config(fleet_config(moto_store, n, agent, mode))
        done = e.cli("setup")  # one after the other: each adds its entries to the shared notification config
        assert done.rc == 0, str(done)
    extra: list[E2EEnv] = []
    for i, agent in enumerate(("deva", "devb")):
        w = agent_env(moto_store, tmp_path / f"worker{i}", request)
        cfg = copy.deepcopy(fleet_config(moto_store, n, agent, mode))
        w.write_config({**cfg, "roles": ["worker"]})
        extra.append(w)
    procs = [e.start_agent() for e in [*envs.values(), *extra]]
    for p in procs:
        p.wait_ready(120, reconciled=False)

    for e in envs.values():
        for j, name in enumerate(IMAGES):
            make_image(e.inbox / name, (300 + 40 * j, 200), color=(40 * j, 100, 200))

    def diagnose() -> str:
        return "\n".join(p.diagnose() for p in procs)

    for agent, e in envs.items():
        wait_for(lambda e=e: set(IMAGES) <= files_under(e.thumbs), 180, f"the thumbnails of {agent}", diagnose)
    for agent, e in envs.items():
        assert files_under(e.thumbs) == set(IMAGES), f"{agent}: {files_under(e.thumbs)}\n{diagnose()}"
        for j, name in enumerate(IMAGES):
            check_thumbnail(e.thumbs / name, (300 + 40 * j, 200))
    thumbs = envs["deva"].keys(n["thumbs"])
    assert set(thumbs) == {f"thumbs/{a}/{name}" for a in AGENTS for name in IMAGES}
    # No process ever saw another agent's event: routing, not filtering after the fact.
    for p in procs:
        log = p.log()
        assert "another agent's work" not in log and "outside source.prefix" not in log, p.diagnose()
    # Nothing dead-lettered anywhere.
    for e in envs.values():
        listed = e.cli("dlq", "list", "--json")
        assert listed.rc == 0, str(listed)
        letters = json.loads(listed.stdout)
        assert len(letters) == 2 and all(v == [] for v in letters.values()), listed.stdout  # both exist, empty


def test_a_queue_fed_by_another_prefix_is_refused(moto_store: Store, moto_server: str) -> None:
    """The fleet of the old README (one events queue for all): the second agent's setup says what to change."""
    n = moto_store.names()
    first = parse_config(fleet_config(moto_store, n, "deva", "sqs"))
    Provisioner(first, Backend(first.backend, endpoint_url=moto_server, local=False)).setup()
    data = fleet_config(moto_store, n, "devb", "sqs")
    data["queues"]["events"] = first.queues.events
    second = parse_config(data)
    with pytest.raises(BackendError) as info:
        Provisioner(second, Backend(second.backend, endpoint_url=moto_server, local=False)).setup()
    assert f"queue {first.queues.events} already receives the events of prefix 'deva/'" in info.value.message
    assert "give each agent of a fleet its own queues.events" in (info.value.hint or "")


def test_another_agents_event_is_released_not_consumed(moto_store: Store, moto_server: str, tmp_path: Path) -> None:
    cfg = parse_config(fleet_config(moto_store, moto_store.names(), "deva", "sqs"))
    backend = Backend(cfg.backend, endpoint_url=moto_server, local=False)
    worker = ThumbnailWorker(cfg, backend, Status(["worker"]), tmp_path / "tmp")
    try:
        body = json.dumps(s3_event(cfg.source.bucket, "devb/not-mine.jpg"))
        with pytest.raises(TransientError) as info:  # the consumer then releases it: never deleted here
            worker.handle_message({"Body": body, "MessageId": "1", "ReceiptHandle": "r"})
        assert "devb/not-mine.jpg is outside source.prefix 'deva/'" in info.value.message
        own = json.dumps(s3_event(cfg.source.bucket, "deva/.thumbdrop-doctor-probe"))
        worker.handle_message({"Body": own, "MessageId": "2", "ReceiptHandle": "r"})  # a probe: ignored, consumed
    finally:
        worker.close()


def test_each_agent_gets_exactly_its_own_thumbnails_in_poll_mode(
    poll_store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Poll mode: each agent lists its own prefixes. The extra workers (one with a shard of the key space) find
    their agent's images by listing; leases (where the store honours If-None-Match) keep them off each other's."""
    n = poll_store.names()
    envs: dict[str, E2EEnv] = {}
    for agent in AGENTS:
        e = envs[agent] = agent_env(poll_store, tmp_path / agent, request)
        cfg = fleet_config(poll_store, n, agent, "poll")
        cfg["queues"]["poll_seconds"] = 2
        e.write_config(cfg)
    extra: list[E2EEnv] = []
    for i, (agent, shard) in enumerate((("deva", None), ("devb", "0/1"))):
        w = agent_env(poll_store, tmp_path / f"worker{i}", request)
        cfg = copy.deepcopy(fleet_config(poll_store, n, agent, "poll"))
        cfg["queues"]["poll_seconds"] = 2
        w.write_config({**cfg, "roles": ["worker"], "worker": {"shard": shard}})
        extra.append(w)
    procs = [e.start_agent() for e in [*envs.values(), *extra]]
    for p in procs:
        p.wait_ready(120, reconciled=False)

    for e in envs.values():
        for j, name in enumerate(IMAGES):
            make_image(e.inbox / name, (300 + 40 * j, 200), color=(40 * j, 100, 200))

    def diagnose() -> str:
        return "\n".join(p.diagnose() for p in procs)

    for agent, e in envs.items():
        wait_for(lambda e=e: set(IMAGES) <= files_under(e.thumbs), 180, f"the thumbnails of {agent}", diagnose)
    for agent, e in envs.items():
        assert files_under(e.thumbs) == set(IMAGES), f"{agent}: {files_under(e.thumbs)}\n{diagnose()}"
        for j, name in enumerate(IMAGES):
            check_thumbnail(e.thumbs / name, (300 + 40 * j, 200))
    wait_for(lambda: not [k for k in envs["deva"].keys(n["thumbs"]) if ".thumbdrop-lease/" in k], 30, "leases released", diagnose)
    thumbs = set(envs["deva"].keys(n["thumbs"]))
    assert thumbs == {f"thumbs/{a}/{name}" for a in AGENTS for name in IMAGES}, thumbs
    for p in procs:
        assert "Traceback" not in p.log(), p.diagnose()
    if poll_store.queues:
        assert envs["deva"].sqs.list_queues(QueueNamePrefix=n["events"]).get("QueueUrls", []) == []
