"""An S3-only store (s3rver): what works without queues, with the missing APIs degraded and reported.

s3rver has no notifications, no SQS or SNS, no tagging or lifecycle rules; list_multipart_uploads answers 501 and
abort_multipart_upload 405; it ignores If-None-Match. The full scenario (tests/stores/test_scenario.py) runs here
once poll mode exists.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.capabilities import reset_warnings
from agent.cloud.clients import Backend
from agent.cloud.lifecycle import ensure_lifecycle
from agent.cloud.provision import Provisioner
from agent.config import parse_config
from agent.config.model import Config
from agent.errors import UnsupportedError
from agent.pipeline.cleanup_run import execute, plan_cleanup
from agent.pipeline.uploader import Uploader
from agent.service.doctor import FAIL, PASS, WARN, diagnose
from agent.state.journal import Journal
from agent.state.status import Status
from tests.e2e.conftest import make_image, wait_for
from tests.stores.conftest import Store, agent_env

HOSTILE = ["a b+c&d=é.jpg", "100%/x%20y.jpg", "sp ace/ünï côdé.jpg", "plus+sign.jpg"]


@pytest.fixture()
def s3only(s3rver: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, Backend]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3rver.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3rver.secret)
    reset_warnings()
    n = s3rver.names()
    (tmp_path / "inbox").mkdir()
    cfg = parse_config(
        {
            "backend": {"endpoint_url": s3rver.endpoint, "addressing_style": "path", "max_attempts": 2},
            "source": {"bucket": n["source"], "prefix": "originals/"},
            "thumbnails": {"bucket": n["thumbs"], "prefix": "thumbs/"},
            "queues": {"events": n["events"], "pull": n["pull"]},
            "watch": {"folders": [str(tmp_path / "inbox")]},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
            "cleanup": {"mode": "lifecycle", "delete_pulled_thumbnails": False, "thumbnails_max_age_days": 30.0},
        }
    )
    return cfg, Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)


def warnings_about(caplog: pytest.LogCaptureFixture, api: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and api in r.getMessage()]


def test_setup_makes_the_buckets_then_says_the_store_serves_no_sqs(
    s3only: tuple[Config, Backend], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, backend = s3only
    caplog.set_level(logging.WARNING)
    with pytest.raises(UnsupportedError) as info:
        Provisioner(cfg, backend).setup()
    assert "serves no SQS" in info.value.message and cfg.backend.endpoint_url in info.value.message
    assert "queues.mode: poll" in (info.value.hint or "") and "sqs_endpoint_url" in (info.value.hint or "")
    assert "coming" not in (info.value.hint or "")  # poll mode exists now
    names = {b["Name"] for b in backend.s3.list_buckets()["Buckets"]}
    assert {cfg.source.bucket, cfg.thumbnails.bucket} <= names
    # Tagging is missing: one warning for both buckets, naming the API and the consequence.
    tagging = warnings_about(caplog, "PutBucketTagging")
    assert len(tagging) == 1 and "teardown keeps them" in tagging[0]


def test_lifecycle_mode_on_a_store_without_lifecycle_rules_degrades(
    s3only: tuple[Config, Backend], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, backend = s3only
    caplog.set_level(logging.WARNING)
    prov = Provisioner(cfg, backend)
    for bucket in (cfg.source.bucket, cfg.thumbnails.bucket):
        prov.ensure_bucket(bucket)
    ensure_lifecycle(prov)
    ensure_lifecycle(prov)  # again (run and sync call it at every start): still no second warning, no error
    skipped = [c.what for c in prov.report.changes if c.verb == "skip"]
    assert any("lifecycle rules on bucket" in s and "not supported" in s for s in skipped), prov.report.changes
    lifecycle = warnings_about(caplog, "PutBucketLifecycleConfiguration")
    assert len(lifecycle) == 1 and "cleanup.mode: agent" in lifecycle[0]


def test_uploads_hostile_names_and_a_multipart_file(
    s3only: tuple[Config, Backend], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, backend = s3only
    Provisioner(cfg, backend).ensure_bucket(cfg.source.bucket)
    inbox = tmp_path / "inbox"
    for rel in HOSTILE:
        make_image(inbox / rel, (120, 90))
    big = inbox / "big" / "twenty megabytes.jpg"
    big.parent.mkdir()
    big.write_bytes(os.urandom(20 << 20))  # only uploaded here, never decoded
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    uploader = Uploader(cfg, backend, Status(["uploader"]), journal)
    caplog.set_level(logging.WARNING)
    try:
        results = [f.result() for f in uploader.reconcile()]
        assert results == ["uploaded"] * (len(HOSTILE) + 1)
        # No multipart listing here (501): the stale-upload sweep at start warns once and goes on.
        assert uploader.abort_stale_multipart() == 0
        assert uploader.abort_stale_multipart() == 0
        # Uploaded once: the journal remembers the ETag the store gave (s3rver's multipart ETag is the whole
        # object's MD5, not S3's MD5-of-parts-N, so the content hash alone would not match it).
        assert [f.result() for f in uploader.reconcile()] == ["unchanged"] * (len(HOSTILE) + 1)
    finally:
        uploader.pool.shutdown(wait=True)
        journal.close()
    listed = {o["Key"]: o for o in backend.s3.list_objects_v2(Bucket=cfg.source.bucket, Prefix="originals/").get("Contents", [])}
    assert set(listed) == {f"originals/{rel}" for rel in [*HOSTILE, "big/twenty megabytes.jpg"]}
    for rel in HOSTILE:
        assert listed[f"originals/{rel}"]["Size"] == (inbox / rel).stat().st_size
    head = backend.s3.head_object(Bucket=cfg.source.bucket, Key="originals/big/twenty megabytes.jpg")
    assert head["ContentLength"] == 20 << 20
    assert head["ETag"].strip('"') == hashlib.md5(big.read_bytes(), usedforsecurity=False).hexdigest()  # s3rver's way
    assert len(warnings_about(caplog, "ListMultipartUploads")) == 1


def test_doctor_prints_the_capability_table(s3only: tuple[Config, Backend]) -> None:
    cfg, backend = s3only
    prov = Provisioner(cfg, backend)
    for bucket in (cfg.source.bucket, cfg.thumbnails.bucket):
        prov.ensure_bucket(bucket)
    rows = {c.name: c for c in diagnose(cfg) if c.name.startswith("store ")}
    table = "\n".join(f"{c.result} {c.name}: {c.detail}" for c in rows.values())
    expected: dict[str, Any] = {
        "store notifications": FAIL,  # the queue modes need it: a FAIL naming the way out
        "store SQS": FAIL,
        "store lifecycle rules": FAIL,  # cleanup.mode lifecycle needs it
        "store tagging": WARN,
        "store versioning": PASS,
        "store multipart listing": WARN,
        "store multipart abort": WARN,
        "store conditional writes": WARN,
    }
    assert {name: rows[name].result for name in expected if name in rows} == expected, table
    assert "501" in rows["store multipart listing"].detail or "NotImplemented" in rows["store multipart listing"].detail
    assert "405" in rows["store multipart abort"].detail or "MethodNotAllowed" in rows["store multipart abort"].detail
    assert "ignored" in rows["store conditional writes"].detail
    assert "poll" in rows["store notifications"].fix
    # The probes stay in the reserved key space and are gone again.
    assert "Contents" not in backend.s3.list_objects_v2(Bucket=cfg.source.bucket)


def test_cleanup_works_without_multipart_listing(
    s3only: tuple[Config, Backend], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, backend = s3only
    cfg.cleanup.mode = "agent"
    prov = Provisioner(cfg, backend)
    for bucket in (cfg.source.bucket, cfg.thumbnails.bucket):
        prov.ensure_bucket(bucket)
    cfg.cleanup.max_delete_fraction = 1.0
    backend.s3.put_object(Bucket=cfg.thumbnails.bucket, Key="thumbs/old one.jpg", Body=b"t" * 10)
    caplog.set_level(logging.WARNING)
    plan = plan_cleanup(cfg, backend, now=datetime.now(UTC) + timedelta(days=31))
    assert {d.key for d in plan.deletions} == {"thumbs/old one.jpg"}
    execute(plan, cfg, backend)
    assert "Contents" not in backend.s3.list_objects_v2(Bucket=cfg.thumbnails.bucket)
    assert len(warnings_about(caplog, "ListMultipartUploads")) == 1


@pytest.mark.e2e
def test_setup_and_run_name_the_fix_when_the_store_serves_no_sqs(
    s3rver: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    e = agent_env(s3rver, tmp_path, request)
    n = s3rver.names()
    e.write_config({"source": {"bucket": n["source"]}, "thumbnails": {"bucket": n["thumbs"]}})
    setup = e.cli("setup")
    assert setup.rc == 3, str(setup)
    assert "serves no SQS" in setup.stderr and "queues.mode: poll" in setup.stderr, str(setup)
    agent = e.start_agent()
    wait_for(lambda: not agent.alive(), 60, "the agent to stop", agent.diagnose)
    assert agent.proc.returncode == 3, agent.diagnose()
    assert "serves no SQS" in agent.log() and "sqs_endpoint_url" in agent.log(), agent.diagnose()
    assert "Traceback" not in agent.log() + setup.stderr


def test_doctor_in_sns_mode_reports_the_missing_sns_without_crashing(s3only: tuple[Config, Backend]) -> None:
    cfg, backend = s3only
    cfg.queues.mode = "sns"
    cfg.queues.via_sns = True
    Provisioner(cfg, backend).ensure_bucket(cfg.source.bucket)
    rows = {c.name: c for c in diagnose(cfg) if c.name.startswith("store ")}
    assert rows["store SNS"].result == FAIL and "not served here" in rows["store SNS"].detail, rows


def test_teardown_on_an_s3_only_store_keeps_untagged_buckets_and_skips_the_queues(s3only: tuple[Config, Backend]) -> None:
    cfg, backend = s3only
    prov = Provisioner(cfg, backend)
    for bucket in (cfg.source.bucket, cfg.thumbnails.bucket):
        prov.ensure_bucket(bucket)
    report = Provisioner(cfg, backend).teardown()
    got = [str(c) for c in report.changes]
    assert any(c.startswith("skip") and "no SQS at" in c for c in got), got
    # No tagging on s3rver: thumbdrop cannot prove the buckets are its own, so it keeps them (never deletes blindly).
    assert any(c.startswith("keep") and cfg.source.bucket in c for c in got), got
    names = {b["Name"] for b in backend.s3.list_buckets()["Buckets"]}
    assert {cfg.source.bucket, cfg.thumbnails.bucket} <= names
