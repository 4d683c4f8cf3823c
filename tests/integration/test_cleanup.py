"""Cleanup against moto's server over HTTP: each rule, scope safety, batching, the guard, lifecycle, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.lifecycle import cleanup_mode_report, read_rules
from agent.cloud.provision import Provisioner
from agent.errors import MassDeleteError
from agent.pipeline.cleaner_role import CleanerRole
from agent.pipeline.cleanup_run import execute, plan_cleanup
from agent.pipeline.uploader import Uploader
from agent.state.journal import Journal
from agent.state.status import Status
from tests.integration.cleanup_support import (
    SOURCE,
    THUMBS,
    backend_for,
    config_data,
    keys_in,
    local_thumbnail,
    make_buckets,
    make_config,
    put,
    put_many,
    write_config,
)

REPO = Path(__file__).resolve().parents[2]
FOREIGN = ["backup/a.jpg", "originalsX/a.jpg", "thumbs-old/a.jpg", "readme.txt"]


def soon() -> datetime:
    """The injected clock, a little ahead: objects made a moment ago must count as made before now."""
    return datetime.now(UTC) + timedelta(minutes=1)


def deleted_keys(plan: Any) -> set[str]:
    return {d.key for d in plan.deletions}


def test_originals_go_once_thumbnailed_and_foreign_keys_survive_in_a_shared_bucket(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path, shared=True, delete_originals=True, max_delete_fraction=1.0)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    for key in ["originals/a.jpg", "originals/none.jpg", "originals/bad.jpg", *FOREIGN]:
        put(backend, SOURCE, key)
    put(backend, SOURCE, "thumbs/a.jpg", source="originals/a.jpg")
    put(backend, SOURCE, "thumbs/.thumbdrop-failed/bad.jpg.json", b"{}")  # failed: never thumbnailed
    plan = plan_cleanup(cfg, backend, now=soon())
    assert deleted_keys(plan) == {"originals/a.jpg"}
    outcome = execute(plan, cfg, backend)
    assert [d.key for d in outcome.done] == ["originals/a.jpg"] and outcome.errors == []
    assert keys_in(backend, SOURCE) == {
        "originals/none.jpg",
        "originals/bad.jpg",
        "thumbs/a.jpg",
        "thumbs/.thumbdrop-failed/bad.jpg.json",
        *FOREIGN,
    }


def test_pulled_and_age_rules_with_the_injected_clock(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path, delete_pulled_thumbnails=True, thumbnails_max_age_days=30, max_delete_fraction=1.0)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    put(backend, THUMBS, "thumbs/pulled.jpg", b"t" * 10, source="originals/pulled.jpg")
    put(backend, THUMBS, "thumbs/other-size.jpg", b"t" * 10, source="originals/other-size.jpg")
    put(backend, THUMBS, "elsewhere/old.jpg", b"t" * 10)
    local_thumbnail(cfg, "pulled.jpg", 10)
    local_thumbnail(cfg, "other-size.jpg", 9)
    assert deleted_keys(plan_cleanup(cfg, backend, now=soon())) == {"thumbs/pulled.jpg"}
    later = plan_cleanup(cfg, backend, now=soon() + timedelta(days=31))
    assert {(d.key, d.reason.split(";")[0].split(" older")[0]) for d in later.deletions} == {
        ("thumbs/pulled.jpg", "thumbnail"),
        ("thumbs/other-size.jpg", "thumbnail"),
    }
    execute(later, cfg, backend)
    assert keys_in(backend, THUMBS) == {"elsewhere/old.jpg"}


def test_orphan_thumbnails_and_failure_markers(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path, delete_orphans=True, max_delete_fraction=1.0)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    put(backend, SOURCE, "originals/here.jpg")
    put(backend, THUMBS, "thumbs/here.jpg", source="originals/here.jpg")
    put(backend, THUMBS, "thumbs/gone.jpg", source="originals/gone.jpg")
    put(backend, THUMBS, "thumbs/no-metadata.jpg")  # looks like a thumbnail, but thumbdrop did not write it
    put(backend, THUMBS, "thumbs/.thumbdrop-failed/gone-bad.jpg.json", b"{}")
    put(backend, THUMBS, "thumbs/.thumbdrop-failed/here.jpg.json", b"{}")
    plan = plan_cleanup(cfg, backend, now=soon())
    assert deleted_keys(plan) == {"thumbs/gone.jpg", "thumbs/.thumbdrop-failed/gone-bad.jpg.json"}
    execute(plan, cfg, backend)
    assert keys_in(backend, THUMBS) == {"thumbs/here.jpg", "thumbs/no-metadata.jpg", "thumbs/.thumbdrop-failed/here.jpg.json"}


def test_incomplete_multipart_uploads_abort_by_age(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path)  # the one rule on by default: 24 h
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    for bucket, key in ((SOURCE, "originals/big.tif"), (THUMBS, "thumbs/x.jpg"), (SOURCE, "other/keep.tif")):
        backend.s3.create_multipart_upload(Bucket=bucket, Key=key)
    started = backend.s3.list_multipart_uploads(Bucket=SOURCE)["Uploads"][0]["Initiated"]  # moto pins this date
    assert plan_cleanup(cfg, backend, now=started + timedelta(hours=23)).deletions == []
    plan = plan_cleanup(cfg, backend, now=started + timedelta(hours=25))
    assert {(d.bucket, d.key, d.action) for d in plan.deletions} == {
        (SOURCE, "originals/big.tif", "abort"),
        (THUMBS, "thumbs/x.jpg", "abort"),
    }
    execute(plan, cfg, backend)
    assert [u["Key"] for u in backend.s3.list_multipart_uploads(Bucket=SOURCE).get("Uploads", [])] == ["other/keep.tif"]
    assert backend.s3.list_multipart_uploads(Bucket=THUMBS).get("Uploads", []) == []


def test_2500_objects_paginate_and_delete_in_batches_of_1000(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(moto_url, tmp_path, thumbnails_max_age_days=1)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    put_many([(THUMBS, f"thumbs/{i // 100:02d}/IMG_{i:04d}.jpg") for i in range(2500)] + [(THUMBS, k) for k in FOREIGN])
    batches: list[int] = []
    real = backend.s3.delete_objects

    def spy(**kwargs: Any) -> Any:
        batches.append(len(kwargs["Delete"]["Objects"]))
        return real(**kwargs)

    monkeypatch.setattr(backend.s3, "delete_objects", spy)
    plan = plan_cleanup(cfg, backend, now=soon() + timedelta(days=2))
    assert len(plan.deletions) == 2500  # the listing went past its first page of 1000
    with pytest.raises(MassDeleteError):  # 100% of the prefix: the guard stops it
        execute(plan, cfg, backend)
    assert batches == []
    outcome = execute(plan, cfg, backend, force=True)
    assert len(outcome.done) == 2500 and outcome.errors == []
    assert max(batches) <= 1000 and sum(batches) == 2500 and len(batches) == 3
    assert keys_in(backend, THUMBS) == set(FOREIGN)


def test_per_key_errors_of_delete_objects_are_reported(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(moto_url, tmp_path, delete_originals=True, max_delete_fraction=1.0)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    for name in ("a", "b"):
        put(backend, SOURCE, f"originals/{name}.jpg")
        put(backend, THUMBS, f"thumbs/{name}.jpg", source=f"originals/{name}.jpg")
    real = backend.s3.delete_objects

    def refuse_b(**kwargs: Any) -> Any:
        objects = kwargs["Delete"]["Objects"]
        kwargs["Delete"]["Objects"] = [o for o in objects if o["Key"] != "originals/b.jpg"]
        out = real(**kwargs)
        out["Errors"] = [{"Key": "originals/b.jpg", "Code": "AccessDenied", "Message": "Access Denied"}]
        return out

    monkeypatch.setattr(backend.s3, "delete_objects", refuse_b)
    outcome = execute(plan_cleanup(cfg, backend, now=soon()), cfg, backend)
    assert [d.key for d in outcome.done] == ["originals/a.jpg"]
    assert [(d.key, e) for d, e in outcome.errors] == [("originals/b.jpg", "AccessDenied: Access Denied")]
    assert "originals/b.jpg" in keys_in(backend, SOURCE)


def test_mass_delete_guard_stops_a_run_until_forced(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path, delete_orphans=True)  # default max_delete_fraction 0.5
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    put(backend, SOURCE, "originals/kept.jpg")
    put(backend, THUMBS, "thumbs/kept.jpg", source="originals/kept.jpg")
    for i in range(3):  # as if source.prefix were wrong: most thumbnails look orphaned
        put(backend, THUMBS, f"thumbs/{i}.jpg", source=f"originals/{i}.jpg")
    plan = plan_cleanup(cfg, backend, now=soon())
    assert plan.problems == [
        f"would delete 3 of the 4 objects under s3://{THUMBS}/thumbs/ (75%), more than cleanup.max_delete_fraction (0.5)"
    ]
    with pytest.raises(MassDeleteError) as info:
        execute(plan, cfg, backend)
    assert info.value.exit_code == 1 and "--force" in info.value.hint
    assert len(keys_in(backend, THUMBS)) == 4
    execute(plan, cfg, backend, force=True)
    assert keys_in(backend, THUMBS) == {"thumbs/kept.jpg"}


def test_pruned_originals_are_not_uploaded_again(moto_url: str, tmp_path: Path) -> None:
    """The uploader trusts local thumbnails newer than the file: pruning the bucket causes no re-upload."""
    cfg = make_config(moto_url, tmp_path, delete_originals=True, max_delete_fraction=1.0)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    photo = tmp_path / "inbox" / "trip" / "a.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"original bytes")
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    uploader = Uploader(cfg, backend, Status(["uploader"]), journal)
    try:
        lf = uploader.local_file(photo)
        assert lf is not None and uploader.upload(lf) == "uploaded"
        put(backend, THUMBS, "thumbs/trip/a.jpg", source="originals/trip/a.jpg")
        thumb = local_thumbnail(cfg, "trip/a.jpg")  # what the puller leaves: newer than the file
        later = photo.stat().st_ctime + 5
        os.utime(thumb, (later, later))
        execute(plan_cleanup(cfg, backend, now=soon()), cfg, backend)
        assert "originals/trip/a.jpg" not in keys_in(backend, SOURCE)
        assert [f.result() for f in uploader.reconcile()] == ["unchanged"]
        assert "originals/trip/a.jpg" not in keys_in(backend, SOURCE)
        photo.write_bytes(b"edited bytes")  # a real change still goes up
        os.utime(photo, (later + 5, later + 5))
        assert [f.result() for f in uploader.reconcile()] == ["uploaded"]
        assert "originals/trip/a.jpg" in keys_in(backend, SOURCE)
    finally:
        uploader.pool.shutdown(wait=True)
        journal.close()


def test_local_rules_move_finished_files_and_remove_orphaned_thumbnails(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(
        moto_url, tmp_path, inbox_after_upload="move", inbox_move_to=str(tmp_path / "done"), remove_orphan_local_thumbnails=True
    )
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    inbox = tmp_path / "inbox"
    finished, changing = inbox / "a.jpg", inbox / "b.jpg"
    for f in (finished, changing):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"photo")
    later = finished.stat().st_ctime + 5
    for rel in ("a.jpg", "b.jpg", "deleted.jpg"):
        os.utime(local_thumbnail(cfg, rel), (later, later))
    put(backend, THUMBS, "thumbs/deleted.jpg", source="originals/deleted.jpg")
    put(backend, THUMBS, "thumbs/a.jpg", source="originals/a.jpg")
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    from agent.pipeline.cleaner_local import journal_lookup
    from agent.state.journal import UploadRecord

    journal.record_upload(UploadRecord(str(inbox / "deleted.jpg"), "originals/deleted.jpg", 5, 1, "sha", "etag"))
    try:
        plan = plan_cleanup(cfg, backend, now=soon(), uploaded_from=journal_lookup(journal))
    finally:
        journal.close()
    assert {(Path(d.key).name, d.action) for d in plan.deletions} == {
        ("a.jpg", "move"),
        ("b.jpg", "move"),
        ("deleted.jpg", "delete"),  # the local thumbnail
        ("deleted.jpg", "delete"),  # its copy in the bucket
    }
    changing.write_bytes(b"still being edited")  # changed between plan and run: left alone
    os.utime(changing, (later + 10, later + 10))
    outcome = execute(plan, cfg, backend)
    assert [(Path(d.key).name, e) for d, e in outcome.errors] == [("b.jpg", "changed since it was selected; left alone")]
    assert (tmp_path / "done" / "a.jpg").read_bytes() == b"photo" and not finished.exists() and changing.exists()
    assert not (tmp_path / "thumbnails" / "deleted.jpg").exists() and (tmp_path / "thumbnails" / "a.jpg").exists()
    assert keys_in(backend, THUMBS) == {"thumbs/a.jpg"}
    assert deleted_keys(plan_cleanup(cfg, backend, now=soon())) == set()  # a.jpg's thumbnail is not an orphan once moved


def test_lifecycle_rules_merge_with_foreign_rules_and_are_idempotent(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(
        moto_url, tmp_path, mode="lifecycle", delete_originals=True, originals_min_age_days=30, thumbnails_max_age_days=90
    )
    backend = backend_for(cfg)
    backend.s3.create_bucket(Bucket=SOURCE)
    foreign = {"ID": "keep-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}}
    other = {
        "ID": "thumbdrop-expire-originals-0badc0de",
        "Status": "Enabled",
        "Filter": {"Prefix": "old/"},
        "Expiration": {"Days": 3},
    }
    backend.s3.put_bucket_lifecycle_configuration(Bucket=SOURCE, LifecycleConfiguration={"Rules": [foreign, other]})
    first = Provisioner(cfg, backend).setup()
    assert any(c.verb == "create" and c.what.startswith(f"lifecycle rules on bucket {SOURCE}") for c in first.changes)
    rules = {r["ID"]: r for r in read_rules(backend.s3, SOURCE)}
    assert rules["keep-logs"]["Expiration"] == {"Days": 7} and "thumbdrop-expire-originals-0badc0de" in rules
    ours = [r for r in rules.values() if r["ID"].startswith("thumbdrop-") and r["ID"] != other["ID"]]
    assert sorted((r["ID"].rsplit("-", 1)[0], r["Filter"]["Prefix"]) for r in ours) == [
        ("thumbdrop-abort-multipart", "originals/"),
        ("thumbdrop-expire-originals", "originals/"),
    ]
    assert {r["ID"].rsplit("-", 1)[0]: r for r in read_rules(backend.s3, THUMBS)}["thumbdrop-expire-thumbnails"][
        "Expiration"
    ] == {"Days": 90}
    second = Provisioner(cfg, backend).setup()
    assert not second.changed and any(c.verb == "ok" and c.what.startswith("lifecycle rules on bucket") for c in second.changes)
    assert "lifecycle rules in place" in cleanup_mode_report(cfg, backend)
    agent_mode = make_config(moto_url, tmp_path, mode="agent", delete_originals=True)
    assert "WARN thumbdrop lifecycle rules still installed" in cleanup_mode_report(agent_mode, backend)
    Provisioner(agent_mode, backend).setup()
    assert {r["ID"] for r in read_rules(backend.s3, SOURCE)} == {"keep-logs", other["ID"]}
    assert read_rules(backend.s3, THUMBS) == []


def test_lifecycle_never_expires_a_whole_foreign_bucket(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path, mode="both", thumbnails_max_age_days=5)
    cfg.thumbnails.prefix = ""
    backend = backend_for(cfg)
    make_buckets(backend, cfg)  # created outside setup: not tagged as thumbdrop's
    report = Provisioner(cfg, backend).setup()
    assert any("without a lifecycle expiry for all its objects" in c.what for c in report.changes)
    assert [r.get("Expiration") for r in read_rules(backend.s3, THUMBS)] == [None]  # only the multipart abort


def test_cleaner_role_runs_in_its_thread_and_stops(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path, delete_originals=True, max_delete_fraction=1.0)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    put(backend, SOURCE, "originals/a.jpg")
    put(backend, THUMBS, "thumbs/a.jpg", source="originals/a.jpg")
    ready = threading.Event()
    role = CleanerRole(cfg, backend, Status(["cleaner"]), ready=ready)
    role.start()
    assert [t.name for t in threading.enumerate() if t.name == "cleaner"] == ["cleaner"]
    ready.set()
    try:
        for _ in range(100):
            if "originals/a.jpg" not in keys_in(backend, SOURCE):
                break
            role.stop_event.wait(0.05)
        assert role.runs == 1 and "originals/a.jpg" not in keys_in(backend, SOURCE)
    finally:
        role.stop()
        assert role.join(5)
    assert not [t for t in threading.enumerate() if t.name == "cleaner"]


def _cli(tmp_path: Path, cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBDROP")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(cfg_path), "cleanup", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e
def test_cli_dry_run_lists_only_thumbdrops_objects(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path, delete_originals=True)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    for key in FOREIGN:
        put(backend, SOURCE, key)
        put(backend, THUMBS, key, source="originals/x.jpg")
    for name in ("a", "b"):
        put(backend, SOURCE, f"originals/{name}.jpg")
    put(backend, THUMBS, "thumbs/a.jpg", source="originals/a.jpg")
    data = config_data(moto_url, tmp_path, delete_originals=True)
    del data["backend"]["max_attempts"], data["queues"]
    cfg_path = write_config(tmp_path / "config.yaml", data)
    dry = _cli(tmp_path, cfg_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "originals/a.jpg" in dry.stdout and "total: 1 item(s), 10 bytes" in dry.stdout
    for key in ["originals/b.jpg", *FOREIGN]:
        assert key not in dry.stdout
    listed = _cli(tmp_path, cfg_path, "--dry-run", "--json")
    assert [i["key"] for i in json.loads(listed.stdout)["items"]] == ["originals/a.jpg"]
    assert "originals/a.jpg" in keys_in(backend, SOURCE)  # a dry run deletes nothing
    real = _cli(tmp_path, cfg_path, "--json")
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["items"] == json.loads(listed.stdout)["items"]  # the same selection
    assert keys_in(backend, SOURCE) == {"originals/b.jpg", *FOREIGN}
    put(backend, THUMBS, "thumbs/b.jpg", source="originals/b.jpg")  # now the last original under the prefix can go
    stopped = _cli(tmp_path, cfg_path)
    assert stopped.returncode == 1 and "Cleanup stopped" in stopped.stderr and "--force" in stopped.stderr
    assert "originals/b.jpg" in stopped.stdout and "originals/b.jpg" in keys_in(backend, SOURCE)
    assert _cli(tmp_path, cfg_path, "--force").returncode == 0
    assert keys_in(backend, SOURCE) == set(FOREIGN)
