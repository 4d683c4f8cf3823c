"""'thumbdrop cleanup --dry-run' that trips the mass-delete guard: the whole table, the totals, then why a real run stops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config.loader import parse_config
from agent.state.journal import Journal, UploadRecord
from tests.integration.cleanup_support import (
    SOURCE,
    THUMBS,
    backend_for,
    config_data,
    local_thumbnail,
    make_buckets,
    put,
    write_config,
)
from tests.integration.test_cleanup import _cli

pytestmark = pytest.mark.e2e


def test_dry_run_past_the_guard_prints_the_table_the_totals_and_the_refusal(moto_url: str, tmp_path: Path) -> None:
    done = tmp_path / "done"
    data = config_data(moto_url, tmp_path, delete_orphans=True, inbox_after_upload="move", inbox_move_to=str(done))
    del data["queues"]
    cfg_path = write_config(tmp_path / "config.yaml", data)
    backend = backend_for(parse_config(data))
    make_buckets(backend, parse_config(data))
    put(backend, SOURCE, "originals/kept.jpg")
    put(backend, THUMBS, "thumbs/kept.jpg", source="originals/kept.jpg")
    for i in range(3):  # as if source.prefix were wrong: most thumbnails look orphaned
        put(backend, THUMBS, f"thumbs/{i}.jpg", source=f"originals/{i}.jpg")
    photo = tmp_path / "inbox" / "trip" / "kept.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"photo bytes")
    thumb = tmp_path / "thumbnails" / "trip" / "kept.jpg"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"t")
    later = photo.stat().st_ctime + 5
    os.utime(thumb, (later, later))

    dry = _cli(tmp_path, cfg_path, "--dry-run")
    assert dry.returncode == 1, dry.stderr
    move = f"{photo} -> {done / 'trip' / 'kept.jpg'}"
    width = len(move)
    rows = [
        f"  {'BUCKET':<9}  ACTION  SIZE  {'KEY':<{width}}  REASON",
        *(
            f"  td-thumbs  delete  10 B  {f'thumbs/{i}.jpg':<{width}}  orphan: its original originals/{i}.jpg is gone"
            for i in range(3)
        ),
        f"  (local)    move    11 B  {move}  uploaded and thumbnailed",
    ]
    assert dry.stdout.splitlines() == [
        f"cleanup on S3-compatible endpoint {moto_url} (us-east-1) (dry run: nothing deleted); would remove or move:",
        *rows,
        "total: 4 item(s), 41 bytes (41 B)",
        "a real run would stop here, deleting nothing:",
        f"  would delete 3 of the 4 objects under s3://{THUMBS}/thumbs/ (75%), more than cleanup.max_delete_fraction (0.5)",
        "  (check source/thumbnails bucket and prefix in the config; if the list is right, use --force)",
    ], dry.stdout
    assert photo.exists() and len(list(backend.s3.list_objects_v2(Bucket=THUMBS)["Contents"])) == 4  # nothing done


def test_the_guards_hint_fits_when_the_local_thumbnails_folder_trips_it(moto_url: str, tmp_path: Path) -> None:
    """The hint always said "check source/thumbnails bucket and prefix", also when no bucket was at stake."""
    # Most of the folder's files are still there (else the folder itself looks unplugged and is skipped), and
    # a strict guard: 2 of 5 local thumbnails to delete trips it.
    data = config_data(moto_url, tmp_path, remove_orphan_local_thumbnails=True, max_delete_fraction=0.3)
    del data["queues"]
    cfg_path = write_config(tmp_path / "config.yaml", data)
    cfg = parse_config(data)
    make_buckets(backend_for(cfg), cfg)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("kept0.jpg", "kept1.jpg", "kept2.jpg"):
        (inbox / name).write_bytes(b"photo")
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        for name in ("kept0.jpg", "kept1.jpg", "kept2.jpg", "gone0.jpg", "gone1.jpg"):
            journal.record_upload(UploadRecord(str(inbox / name), f"originals/{name}", 5, 1, "sha", "etag"))
            local_thumbnail(cfg, name)
    finally:
        journal.close()

    dry = _cli(tmp_path, cfg_path, "--dry-run")
    assert dry.returncode == 1, dry.stderr
    out = dry.stdout.splitlines()
    assert out[-2:] == [
        f"  would delete 2 of the 5 objects under {tmp_path / 'thumbnails'} (local thumbnails) (40%), more than "
        "cleanup.max_delete_fraction (0.3)",
        "  (check local.thumbnails_dir and watch.folders in the config (a drive or share with the photos not mounted?); "
        "if the list is right, use --force)",
    ], dry.stdout
    real = _cli(tmp_path, cfg_path)
    assert real.returncode == 1
    assert (
        "how to fix: check local.thumbnails_dir and watch.folders in the config (a drive or share with the photos not "
        "mounted?); if the list is right, run 'thumbdrop cleanup --force' (or raise cleanup.max_delete_fraction)"
    ) in real.stderr, real.stderr
    assert all((tmp_path / "thumbnails" / n).exists() for n in ("gone0.jpg", "gone1.jpg"))


def test_cleanup_that_only_moved_files_says_moved(moto_url: str, tmp_path: Path) -> None:
    """The heading said "removed:" above rows that were moves (inbox_after_upload: move)."""
    done = tmp_path / "done"
    data = config_data(moto_url, tmp_path, inbox_after_upload="move", inbox_move_to=str(done))
    del data["queues"]
    cfg_path = write_config(tmp_path / "config.yaml", data)
    cfg = parse_config(data)
    make_buckets(backend_for(cfg), cfg)
    photo = tmp_path / "inbox" / "kept.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"photo bytes")
    thumb = local_thumbnail(cfg, "kept.jpg")
    later = photo.stat().st_ctime + 5
    os.utime(thumb, (later, later))

    dry = _cli(tmp_path, cfg_path, "--dry-run")
    assert dry.stdout.splitlines()[0].endswith("(dry run: nothing deleted); would move:"), dry.stdout
    real = _cli(tmp_path, cfg_path)
    assert real.returncode == 0, real.stderr
    lines = real.stdout.splitlines()
    assert lines[0] == f"cleanup on S3-compatible endpoint {moto_url} (us-east-1); moved:", real.stdout
    assert lines[2].startswith("  (local)  move ") and (done / "kept.jpg").exists()
