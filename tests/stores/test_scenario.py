"""One end-to-end scenario, several S3 implementations: run, sync, a restart that redoes nothing, hostile names,
a 20 MB multipart file, cleanup, and the dead-letter queue.

Parametrised over (store, mode): moto and LocalStack in the queue modes sqs and sns. Poll mode runs the same
scenario on moto and s3rver in tests/stores/test_poll_scenario.py (failure markers instead of a DLQ).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import E2EEnv, check_thumbnail, files_under, image_bytes, make_image, wait_for
from tests.stores.conftest import Store, agent_env

pytestmark = pytest.mark.e2e

MODES = ["sqs", "sns"]
# Names that broke S3 clients and event parsers somewhere: spaces ('+' or %20 in events), '+', '%', '&', '=',
# unicode (NFC), and a folder.
HOSTILE = {
    "a b+c&d=é.jpg": (640, 480),
    "100%/x%20y.jpg": (300, 500),
    "sp ace/ünï côdé.jpg": (500, 300),
    "plus+sign.png": (200, 200),
}
BIG = "big/twenty megabytes.bmp"  # > transfer.multipart_threshold_mb (8): a multipart upload of 3 parts


def thumb_of(rel: str) -> str:
    return rel if rel.lower().endswith((".jpg", ".jpeg")) else rel + ".jpg"


def make_big_bmp(path: Path) -> int:
    """A 2600 x 2600 noisy BMP: 20 MB on disk, quick to decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(7).integers(0, 255, (2600, 2600, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path, "BMP")
    return path.stat().st_size


def scenario_config(store: Store, mode: str) -> dict[str, Any]:
    n = store.names()
    return {
        "backend": {"endpoint_url": store.endpoint, "addressing_style": "path", "max_attempts": 3},
        "source": {"bucket": n["source"]},
        "thumbnails": {"bucket": n["thumbs"]},
        "queues": {
            "mode": mode,
            "events": n["events"],
            "pull": n["pull"],
            "events_topic": n["events_topic"],
            "pull_topic": n["pull_topic"],
            "wait_seconds": 1,
            "visibility_timeout": 30,
            "max_receives": 2,
        },
    }


CLEANUP = {"cleanup": {"delete_pulled_thumbnails": True}}


@pytest.mark.parametrize("mode", MODES)
def test_scenario(queue_store: Store, mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    e: E2EEnv = agent_env(queue_store, tmp_path, request)
    extra = scenario_config(queue_store, mode)
    e.write_config(extra)
    source, thumbs = extra["source"]["bucket"], extra["thumbnails"]["bucket"]

    # --- sync: one shot, with hostile names; it also sets everything up (backend.auto_setup) ---
    for rel, size in HOSTILE.items():
        make_image(e.inbox / "sync" / rel, size)
    first = e.cli("sync")
    assert first.rc == 0, str(first)
    want = {f"sync/{thumb_of(rel)}" for rel in HOSTILE}
    assert want <= files_under(e.thumbs), str(first)
    for rel, size in HOSTILE.items():
        check_thumbnail(e.thumbs / "sync" / thumb_of(rel), size)

    # --- run: the same names and a 20 MB multipart file through the queues (events, then pull) ---
    agent = e.start_agent()
    agent.wait_ready(90)
    for rel, size in HOSTILE.items():
        make_image(e.inbox / "run" / rel, size)
    big_size = make_big_bmp(e.inbox / BIG)
    (e.inbox / "run" / "broken.jpg").write_bytes(image_bytes((300, 200))[:200] + bytes(range(256)) * 8)
    want |= {f"run/{thumb_of(rel)}" for rel in HOSTILE} | {thumb_of(BIG)}
    wait_for(lambda: want <= files_under(e.thumbs), 180, "every thumbnail through the queues", agent.diagnose)
    check_thumbnail(e.thumbs / thumb_of(BIG), (2600, 2600))
    assert e.s3.head_object(Bucket=source, Key=BIG)["ContentLength"] == big_size
    assert "-" in e.s3.head_object(Bucket=source, Key=BIG)["ETag"], "the big file was not a multipart upload"
    # The broken file: a failure marker, and its event in the events dead-letter queue (dead-lettered at once).
    wait_for(
        lambda: any(k.endswith("broken.jpg.json") for k in e.keys(thumbs, ".thumbdrop-failed/")),
        90,
        "the failure marker of broken.jpg",
        agent.diagnose,
    )
    dlq = None

    def dead_lettered() -> bool:
        nonlocal dlq
        dlq = e.cli("dlq", "list", "--json")
        return dlq.rc == 0 and "broken.jpg" in dlq.stdout

    wait_for(dead_lettered, 60, "broken.jpg in 'dlq list'", lambda: f"{dlq}\n{agent.diagnose()}")
    rc, _took = agent.terminate(30)
    assert rc == 0, agent.diagnose()

    # --- a restart redoes nothing: no upload, no thumbnail, nothing pulled again ---
    objects = {k: v["ETag"] for k, v in e.keys(source).items()}
    thumb_objects = {k: v["LastModified"] for k, v in e.keys(thumbs).items()}
    again = e.start_agent()
    again.wait_ready(90)
    time.sleep(3)  # the worker's and the puller's reconciles follow the uploader's; a redo would show by now
    log = again.log()
    assert " uploaded " not in log, again.diagnose()
    assert "thumbnailed " not in log, again.diagnose()
    assert "pulled " not in log, again.diagnose()
    assert {k: v["ETag"] for k, v in e.keys(source).items()} == objects
    assert {k: v["LastModified"] for k, v in e.keys(thumbs).items()} == thumb_objects
    rc, _took = again.terminate(30)
    assert rc == 0, again.diagnose()

    # --- cleanup: thumbnails pulled here leave the bucket; the local copies and the originals stay ---
    e.write_config({**extra, **CLEANUP})  # not before: the cleaner role inside 'run' would apply it too
    before = files_under(e.thumbs)
    cleaned = e.cli("cleanup")
    assert cleaned.rc == 0, str(cleaned)
    left = [k for k in e.keys(thumbs) if not k.startswith(".thumbdrop-failed/")]
    assert left == [], f"{cleaned}\nleft: {left}"
    assert files_under(e.thumbs) == before
    assert BIG in e.keys(source)
    status = e.cli("status", "--json")
    assert status.rc == 0, str(status)
    assert json.loads(status.stdout)["queues"].get("backend"), status.stdout


def test_doctor_capability_table_on_stores_with_queues(
    queue_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto and LocalStack have every optional API thumbdrop knows: the table is all PASS, the probes are gone."""
    from agent.cloud.clients import Backend
    from agent.cloud.provision import Provisioner
    from agent.config import parse_config
    from agent.service.doctor import PASS, diagnose

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", queue_store.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", queue_store.secret)
    (tmp_path / "inbox").mkdir()
    data = scenario_config(queue_store, "sns")
    data["local"] = {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")}
    data["watch"] = {"folders": [str(tmp_path / "inbox")]}
    cfg = parse_config(data)
    Provisioner(cfg, Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)).setup()
    rows = {c.name: c for c in diagnose(cfg) if c.name.startswith("store ")}
    assert len(rows) == 9 and all(c.result == PASS for c in rows.values()), rows
    assert "Contents" not in queue_store.client("s3").list_objects_v2(Bucket=cfg.source.bucket)
