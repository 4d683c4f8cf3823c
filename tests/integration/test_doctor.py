"""`thumbdrop doctor` against moto's server: it pinpoints what is wrong, and passes when all is set up."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli.main import main
from agent.cloud.clients import Backend
from agent.cloud.provision import Provisioner
from agent.config import load_config
from agent.config.model import Config
from agent.pipeline.keys import PROBE_MARK
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.worker import ThumbnailWorker
from agent.service import doctor
from agent.service.checks import local as local_checks
from agent.service.checks.reach import clock
from agent.service.checks.resources import capability_checks
from agent.service.doctor import FAIL, PASS, SKIP, WARN, Check, diagnose
from agent.state.status import Status


def write_config(tmp_path: Path, endpoint: str, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "backend": {"endpoint_url": endpoint},
        "watch": {"folders": [str(tmp_path / "inbox")]},
        "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        **extra,
    }
    (tmp_path / "inbox" / "a" / "b").mkdir(parents=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def backend_of(cfg: Config) -> Backend:
    return Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


@pytest.fixture()
def set_up(moto_url: str, tmp_path: Path) -> tuple[Config, Backend]:
    cfg = load_config(write_config(tmp_path, moto_url))
    backend = backend_of(cfg)
    Provisioner(cfg, backend).setup()
    return cfg, backend


def test_capability_table_on_moto(set_up: tuple[Config, Backend]) -> None:
    cfg, backend = set_up
    rows = {c.name: c for c in capability_checks(cfg, backend)}
    assert list(rows) == [
        f"store {name}"
        for name in ("notifications", "lifecycle rules", "tagging", "versioning", "multipart listing", "multipart abort")
        + ("conditional writes", "SQS")
    ]
    assert rows["store notifications"].detail == "GetBucketNotificationConfiguration: supported"
    # No lifecycle rules or tags of their own would be a NoSuch... error: still the API answering.
    assert rows["store lifecycle rules"].result == PASS and rows["store tagging"].result == PASS
    assert rows["store versioning"].detail == "GetBucketVersioning: answers (read only; thumbdrop does not need versioning)"
    assert all(c.result == PASS for c in rows.values()), rows


def test_passes_when_everything_is_set_up(set_up: tuple[Config, Backend]) -> None:
    cfg, backend = set_up
    checks = diagnose(cfg)
    assert not doctor.failed(checks), "\n".join(f"{c.result} {c.name}: {c.detail}" for c in checks)
    c = by_name(checks)
    assert c["credentials"].result == PASS and "source: env" in c["credentials"].detail
    assert c["clock"].result == PASS
    assert c["bucket thumbdrop-source"].detail == "exists, created by thumbdrop setup"
    for queue in ("thumbdrop-events", "thumbdrop-events-dlq", "thumbdrop-pull", "thumbdrop-pull-dlq"):
        assert c[f"queue {queue}"].result == PASS
    assert c["notifications thumbdrop-source"].result == PASS
    assert c["notifications thumbdrop-thumbnails"].result == PASS
    assert c["access thumbdrop-source"].result == PASS and c["access thumbdrop-thumbnails"].result == PASS
    assert c["cleanup"].result in (PASS, WARN)
    assert c["inotify"].result == PASS and "3 watch(es)" in c["inotify"].detail
    assert c["disk thumbnails"].result in (PASS, WARN)
    # The probes are gone again.
    for bucket in (cfg.source.bucket, cfg.thumbnails.bucket):
        assert "Contents" not in backend.s3.list_objects_v2(Bucket=bucket)


def test_probe_events_are_ignored_by_the_worker_and_the_puller(set_up: tuple[Config, Backend], tmp_path: Path) -> None:
    cfg, backend = set_up
    diagnose(cfg)
    status = Status(["worker", "puller"])
    worker = ThumbnailWorker(cfg, backend, status, tmp_path / "tmp")
    puller = ThumbnailPuller(cfg, backend, status)
    for queue, handler in ((cfg.queues.events, worker.handle_message), (cfg.queues.pull, puller.handle_message)):
        url = backend.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        messages = backend.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        assert any(PROBE_MARK in m["Body"] for m in messages)
        for m in messages:
            handler(m)
    assert status.counts["ignored"] == 0  # doctor's own probes: not foreign events, not counted or logged
    assert status.counts["thumbnailed"] == 0 and status.counts["pulled"] == 0 and status.counts["failed"] == 0
    assert not list((tmp_path / "thumbs").rglob("*")) if (tmp_path / "thumbs").exists() else True


def test_pinpoints_a_wrong_endpoint(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:1"))
    started = time.monotonic()
    checks = diagnose(cfg)
    assert time.monotonic() - started < 20
    c = by_name(checks)
    assert c["backend"].result == FAIL
    assert "http://127.0.0.1:1" in c["backend"].detail
    assert "backend.endpoint_url" in c["backend"].fix
    assert c["buckets"].result == SKIP and c["notifications"].result == SKIP
    assert c["inotify"].result == PASS  # the local checks still run


def test_pinpoints_a_missing_bucket(set_up: tuple[Config, Backend]) -> None:
    cfg, backend = set_up
    backend.s3.delete_bucket(Bucket=cfg.thumbnails.bucket)
    c = by_name(diagnose(cfg))
    assert c["bucket thumbdrop-thumbnails"].result == FAIL
    assert c["bucket thumbdrop-thumbnails"].detail == "does not exist"
    assert "thumbdrop setup" in c["bucket thumbdrop-thumbnails"].fix
    assert c["bucket thumbdrop-source"].result == PASS
    assert "access thumbdrop-thumbnails" not in c and c["access thumbdrop-source"].result == PASS


def test_pinpoints_a_missing_notification(set_up: tuple[Config, Backend]) -> None:
    cfg, backend = set_up
    backend.s3.put_bucket_notification_configuration(Bucket=cfg.source.bucket, NotificationConfiguration={})
    checks = diagnose(cfg)
    c = by_name(checks)
    assert c["notifications thumbdrop-source"].result == FAIL
    assert c["notifications thumbdrop-source"].fix == "run 'thumbdrop setup'"
    assert c["notifications thumbdrop-thumbnails"].result == PASS
    assert [x.name for x in checks if x.result == FAIL] == ["notifications thumbdrop-source"]


def test_cli_json_and_exit_codes(set_up: tuple[Config, Backend], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, backend = set_up
    assert main(["--config", cfg.origin, "doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and {c["result"] for c in report["checks"]} <= {PASS, WARN}
    backend.s3.delete_bucket(Bucket=cfg.thumbnails.bucket)
    assert main(["--config", cfg.origin, "doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  bucket thumbdrop-thumbnails" in out
    assert "fix: run 'thumbdrop setup'" in out


def test_cli_reports_an_invalid_config_as_a_failed_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("queues:\n  max_receives: 0\n")
    assert main(["--config", str(path), "doctor"]) == 2  # exit 2 on an invalid config, as every command
    out = capsys.readouterr().out
    assert "FAIL  config" in out and "queues.max_receives: must be between 1 and 1000, got 0" in out
    assert main(["--config", str(path), "doctor", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_embedded_backend_not_running_is_fine(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "local"))
    c = by_name(diagnose(cfg))
    assert c["backend"].result == PASS and "not running" in c["backend"].detail
    assert not doctor.failed(list(c.values()))


# --- single checks ----------------------------------------------------------------------------


def test_inotify_limit(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "local"))  # inbox, inbox/a, inbox/a/b
    limit = tmp_path / "max_user_watches"
    limit.write_text("2\n")
    check = local_checks.inotify_check(cfg, limit_file=limit)
    assert check.result == FAIL and "fs.inotify.max_user_watches" in check.fix
    limit.write_text("5\n")
    assert local_checks.inotify_check(cfg, limit_file=limit).result == WARN
    limit.write_text("8192\n")
    assert local_checks.inotify_check(cfg, limit_file=limit).result == PASS


def test_video_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.imaging import video

    cfg = load_config(write_config(tmp_path, "local"))
    assert local_checks.video_check(cfg).result == PASS  # PyAV is in the test extra
    monkeypatch.setattr(video, "av", None)
    check = local_checks.video_check(cfg)  # the default patterns include videos
    assert check.result == WARN and "*.mov" in check.detail and "thumbdrop[video]" in check.fix
    cfg.watch.include = ["*.jpg"]
    assert local_checks.video_check(cfg).result == PASS


def test_free_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Usage:
        free = 50 << 20

    monkeypatch.setattr(local_checks.shutil, "disk_usage", lambda _p: Usage)
    check = local_checks.disk_check("disk thumbnails", tmp_path / "not" / "yet")
    assert check.result == FAIL and "50 MiB free" in check.detail
    Usage.free = 500 << 20
    assert local_checks.disk_check("disk thumbnails", tmp_path).result == WARN
    Usage.free = 50 << 30
    assert local_checks.disk_check("disk thumbnails", tmp_path).result == PASS


@pytest.mark.parametrize(("offset", "result"), [(0, PASS), (-120, WARN), (3600, FAIL)])
def test_clock_skew_against_the_date_header(offset: float, result: str) -> None:
    now = time.time()
    resp = {"ResponseMetadata": {"HTTPHeaders": {"date": formatdate(now - offset, usegmt=True)}}}
    check = clock(resp, now)
    assert check.result == result
    if result != PASS:
        assert "timedatectl" in check.fix or "time" in check.fix
