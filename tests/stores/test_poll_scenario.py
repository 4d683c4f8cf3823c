"""The end-to-end scenario in queues.mode poll, on moto and on s3rver (an S3-only store): run, sync, a restart
that redoes nothing, hostile names, a 20 MB multipart file, cleanup, and failure markers with dlq list/redrive.
No queue or topic may be created or called."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import E2EEnv, check_thumbnail, files_under, image_bytes, make_image, wait_for
from tests.stores.conftest import Store, agent_env
from tests.stores.test_scenario import BIG, CLEANUP, HOSTILE, make_big_bmp, scenario_config, thumb_of

pytestmark = pytest.mark.e2e


def poll_config(store: Store) -> dict[str, Any]:
    data = scenario_config(store, "poll")
    data["queues"]["poll_seconds"] = 2
    return data


def no_queues_made(e: E2EEnv, store: Store, names: dict[str, Any]) -> None:
    if not store.queues:
        return  # s3rver serves no SQS at all: any call would have failed the run
    urls = e.sqs.list_queues(QueueNamePrefix=names["events"]).get("QueueUrls", [])
    urls += e.sqs.list_queues(QueueNamePrefix=names["pull"]).get("QueueUrls", [])
    assert urls == [], urls


def test_poll_scenario(poll_store: Store, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    e: E2EEnv = agent_env(poll_store, tmp_path, request)
    extra = poll_config(poll_store)
    e.write_config(extra)
    source, thumbs = extra["source"]["bucket"], extra["thumbnails"]["bucket"]

    # --- sync: hostile names, no queues ---
    for rel, size in HOSTILE.items():
        make_image(e.inbox / "sync" / rel, size)
    first = e.cli("sync")
    assert first.rc == 0, str(first)
    want = {f"sync/{thumb_of(rel)}" for rel in HOSTILE}
    assert want <= files_under(e.thumbs), str(first)
    for rel, size in HOSTILE.items():
        check_thumbnail(e.thumbs / "sync" / thumb_of(rel), size)

    # --- run: hand-over uploader -> worker -> puller, a 20 MB multipart file, a broken image ---
    agent = e.start_agent()
    agent.wait_ready(90)
    for rel, size in HOSTILE.items():
        make_image(e.inbox / "run" / rel, size)
    big_size = make_big_bmp(e.inbox / BIG)
    (e.inbox / "run" / "broken.jpg").write_bytes(image_bytes((300, 200))[:200] + bytes(range(256)) * 8)
    want |= {f"run/{thumb_of(rel)}" for rel in HOSTILE} | {thumb_of(BIG)}
    wait_for(lambda: want <= files_under(e.thumbs), 180, "every thumbnail in poll mode", agent.diagnose)
    check_thumbnail(e.thumbs / thumb_of(BIG), (2600, 2600))
    assert e.s3.head_object(Bucket=source, Key=BIG)["ContentLength"] == big_size
    wait_for(
        lambda: any(k.endswith("broken.jpg.json") for k in e.keys(thumbs, ".thumbdrop-failed/")),
        90,
        "the failure marker of broken.jpg",
        agent.diagnose,
    )
    listed = e.cli("dlq", "list", "--json")
    assert listed.rc == 0 and "run/broken.jpg" in listed.stdout, str(listed)
    # An image another host uploaded (no event, no hand-over): found by the listing.
    other = "other host/from elsewhere.jpg"
    e.s3.put_object(Bucket=source, Key=other, Body=image_bytes((320, 240)))
    wait_for(lambda: thumb_of(other) in files_under(e.thumbs), 60, "a thumbnail found by listing", agent.diagnose)
    status = e.cli("status", "--json")
    assert status.rc == 0 and "poll mode: no queues" in status.stdout, str(status)
    rc, _took = agent.terminate(30)
    assert rc == 0, agent.diagnose()
    assert "Traceback" not in agent.log(), agent.diagnose()
    no_queues_made(e, poll_store, extra["queues"])

    # --- a restart redoes nothing ---
    objects = {k: v["ETag"] for k, v in e.keys(source).items()}
    thumb_objects = {k: v["LastModified"] for k, v in e.keys(thumbs).items()}
    again = e.start_agent()
    again.wait_ready(90)
    time.sleep(6)  # three listing passes (poll_seconds 2): a redo would show by now
    lines = again.log().splitlines()  # (a store's one-time warnings may use the same words: look at the events)
    for done in ("uploaded ", "thumbnailed ", "pulled "):
        assert not any(f"INFO    {done}" in line for line in lines), again.diagnose()
    assert {k: v["ETag"] for k, v in e.keys(source).items()} == objects
    assert {k: v["LastModified"] for k, v in e.keys(thumbs).items()} == thumb_objects

    # --- dlq redrive: the marker goes, the next listing tries the image again (and marks it again) ---
    marker = next(k for k in e.keys(thumbs, ".thumbdrop-failed/") if k.endswith("broken.jpg.json"))
    stamp = e.keys(thumbs)[marker]["LastModified"]
    redriven = e.cli("dlq", "redrive")
    assert redriven.rc == 0 and "1 failure marker(s) removed" in redriven.stdout, str(redriven)
    wait_for(
        lambda: marker in e.keys(thumbs) and e.keys(thumbs)[marker]["LastModified"] > stamp,
        60,
        "broken.jpg retried after the redrive",
        again.diagnose,
    )
    rc, _took = again.terminate(30)
    assert rc == 0, again.diagnose()

    # --- cleanup: pulled thumbnails leave the bucket; no lease is left behind ---
    e.write_config({**extra, **CLEANUP})
    before = files_under(e.thumbs)
    cleaned = e.cli("cleanup")
    assert cleaned.rc == 0, str(cleaned)
    left = [k for k in e.keys(thumbs) if not k.startswith(".thumbdrop-failed/")]
    assert left == [], f"{cleaned}\nleft: {left}"
    assert files_under(e.thumbs) == before
    for argv in (("cleanup", "--purge-queues", "--yes"), ("dlq", "purge", "--yes")):
        out = e.cli(*argv)
        assert out.rc == 0 and "poll mode: no queues" in out.stdout, str(out)
    no_queues_made(e, poll_store, extra["queues"])
    assert json.loads(e.cli("status", "--json").stdout)["queues"]["queues"] == "poll mode: no queues"


def test_doctor_in_poll_mode_checks_no_queue(poll_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor in poll mode: one 'poll mode: no queues' row, S3 alone in the endpoints, nothing FAILs for want of
    SQS, SNS or notifications (s3rver has none of them)."""
    from agent.cloud.clients import Backend
    from agent.cloud.provision import Provisioner
    from agent.config import parse_config
    from agent.service.doctor import FAIL, diagnose

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", poll_store.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", poll_store.secret)
    (tmp_path / "inbox").mkdir()
    data = poll_config(poll_store)
    data["local"] = {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")}
    data["watch"] = {"folders": [str(tmp_path / "inbox")]}
    data["cleanup"] = {"mode": "agent"}
    cfg = parse_config(data)
    report = Provisioner(cfg, Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)).setup()
    assert "poll mode: no queues" in str(report)
    rows = {c.name: c for c in diagnose(cfg)}
    assert rows["queues"].detail.startswith("poll mode: no queues"), rows
    assert rows["endpoints"].detail.startswith("S3: ") and "SQS" not in rows["endpoints"].detail
    assert not [c for c in rows.values() if c.result == FAIL], [c for c in rows.values() if c.result == FAIL]
    assert not any(n.startswith("queue ") for n in rows)


def test_poll_mode_makes_the_sizes_a_config_change_adds(
    poll_store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The poll pass compares one size; the full pass at start makes the sizes added to thumbnails.sizes, also for
    an image another host uploaded (no local file, so no hand-over makes them)."""
    e: E2EEnv = agent_env(poll_store, tmp_path, request)
    extra = poll_config(poll_store)
    extra["thumbnails"]["sizes"] = [64, 96]
    e.write_config(extra)
    other = "other host/a photo.jpg"
    agent = e.start_agent()
    agent.wait_ready(90)
    e.s3.put_object(Bucket=extra["source"]["bucket"], Key=other, Body=image_bytes((400, 300)))
    first = {"64/other host/a photo.jpg", "96/other host/a photo.jpg"}
    wait_for(lambda: first <= files_under(e.thumbs), 90, "the first sizes", agent.diagnose)
    rc, _took = agent.terminate(timeout=30)
    assert rc == 0, agent.diagnose()

    extra["thumbnails"]["sizes"] = [64, 96, 128]
    e.write_config(extra)
    agent = e.start_agent()
    agent.wait_ready(90)
    want = first | {"128/other host/a photo.jpg"}
    wait_for(lambda: want <= files_under(e.thumbs), 120, "the thumbnails of the added size", agent.diagnose)
    from PIL import Image

    with Image.open(e.thumbs / "128" / "other host" / "a photo.jpg") as im:
        assert im.size == (128, 96)
    rc, _took = agent.terminate(timeout=30)
    assert rc == 0, agent.diagnose()
