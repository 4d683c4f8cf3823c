"""S3 on one endpoint, SQS/SNS on another: two moto servers in two processes (one moto shares its state).

What can honestly be tested across two servers: every client goes to its own endpoint, setup makes the buckets on
the S3 endpoint and the queues on the queue endpoint, and a config whose notifications cannot be delivered says so
(setup, doctor); status and doctor name the endpoint of each service.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from agent.cli.main import main
from agent.cloud.clients import Backend
from agent.cloud.provision import Provisioner
from agent.config import load_config
from agent.service.doctor import FAIL, PASS, diagnose
from tests.stores.conftest import Store


@pytest.fixture()
def split_config(moto_store: Store, moto_process: Store, tmp_path: Path) -> Path:
    n = moto_store.names()
    (tmp_path / "inbox").mkdir()
    data = {
        "backend": {
            "endpoint_url": moto_process.endpoint,  # the queues
            "s3_endpoint_url": moto_store.endpoint,
            "addressing_style": "path",
            "max_attempts": 2,
        },
        "source": {"bucket": n["source"]},
        "thumbnails": {"bucket": n["thumbs"]},
        "queues": {"events": n["events"], "pull": n["pull"]},
        "watch": {"folders": [str(tmp_path / "inbox")]},
        "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_setup_puts_buckets_and_queues_on_their_own_endpoints_and_says_events_cannot_flow(
    split_config: Path, moto_store: Store, moto_process: Store, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(split_config)
    backend = Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)
    assert backend.s3.meta.endpoint_url == moto_store.endpoint
    assert backend.sqs.meta.endpoint_url == moto_process.endpoint
    caplog.set_level(logging.WARNING)
    report = Provisioner(cfg, backend).setup()
    s3_buckets = {b["Name"] for b in moto_store.client("s3").list_buckets()["Buckets"]}
    other_buckets = {b["Name"] for b in moto_process.client("s3").list_buckets()["Buckets"]}
    assert {cfg.source.bucket, cfg.thumbnails.bucket} <= s3_buckets
    assert not {cfg.source.bucket, cfg.thumbnails.bucket} & other_buckets
    queues = moto_process.client("sqs").list_queues(QueueNamePrefix=cfg.queues.events).get("QueueUrls", [])
    assert len(queues) == 2  # the queue and its dead-letter queue, on the queue endpoint
    assert not moto_store.client("sqs").list_queues(QueueNamePrefix=cfg.queues.events).get("QueueUrls")
    # No notification pointing at a queue the S3 endpoint cannot reach, and a clear word why.
    skipped = [c.what for c in report.changes if c.verb == "skip"]
    assert skipped and "cannot deliver bucket events" in skipped[0], report.changes
    conf = moto_store.client("s3").get_bucket_notification_configuration(Bucket=cfg.source.bucket)
    assert not conf.get("QueueConfigurations")
    warned = [r.getMessage() for r in caplog.records if "cannot deliver bucket events" in r.getMessage()]
    assert warned and "queues.mode: poll" in warned[0]


def test_doctor_and_status_name_each_endpoint(
    split_config: Path, moto_store: Store, moto_process: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(split_config)
    Provisioner(cfg, Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)).setup()
    checks = {c.name: c for c in diagnose(cfg)}
    assert checks["endpoints"].result == PASS
    assert f"S3: {moto_store.endpoint}" in checks["endpoints"].detail
    assert f"SQS: {moto_process.endpoint}" in checks["endpoints"].detail
    notif = [c for name, c in checks.items() if name == "store notifications"]
    assert notif and notif[0].result == FAIL and "cannot deliver bucket events" in notif[0].detail
    assert main(["--config", str(split_config), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queues"]["endpoints"] == {
        "s3": moto_store.endpoint,
        "sqs": moto_process.endpoint,
        "sns": moto_process.endpoint,
    }
    assert report["queues"]["events"]["visible"] == 0  # the depths come from the queue endpoint
