"""'thumbdrop cleanup --dry-run' that trips the mass-delete guard: the whole table, the totals, then why a real run stops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config.loader import parse_config
from tests.integration.cleanup_support import SOURCE, THUMBS, backend_for, config_data, make_buckets, put, write_config
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
        f"cleanup on S3-compatible endpoint {moto_url} (us-east-1) (dry run: nothing deleted); would remove:",
        *rows,
        "total: 4 item(s), 41 bytes (41 B)",
        "a real run would stop here, deleting nothing:",
        f"  would delete 3 of the 4 objects under s3://{THUMBS}/thumbs/ (75%), more than cleanup.max_delete_fraction (0.5)",
        "  (check the buckets and prefixes; if the list is right, use --force)",
    ], dry.stdout
    assert photo.exists() and len(list(backend.s3.list_objects_v2(Bucket=THUMBS)["Contents"])) == 4  # nothing done
