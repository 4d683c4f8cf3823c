"""cleanup.remove_unlisted_sizes against moto over HTTP: thumbnails of sizes taken out of thumbnails.sizes."""

from __future__ import annotations

from pathlib import Path

from agent.pipeline.cleanup_run import execute, plan_cleanup
from tests.integration.cleanup_support import (
    SOURCE,
    THUMBS,
    backend_for,
    keys_in,
    local_thumbnail,
    make_buckets,
    make_config,
    put,
)
from tests.integration.test_cleanup import soon


def local_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_sizes_taken_out_are_pruned_locally_and_in_the_bucket(moto_url: str, tmp_path: Path) -> None:
    # Was sizes [256, 1024] (then [2048] once, locally); now one size: thumbnails have no size folder.
    cfg = make_config(moto_url, tmp_path, remove_unlisted_sizes=True, max_delete_fraction=1.0)
    assert cfg.thumbnails.sizes == [256]
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    for key in ("originals/trip/a.jpg", "originals/1024/x.jpg", "originals/b.jpg"):
        put(backend, SOURCE, key)
    bucket = {
        "thumbs/trip/a.jpg": "originals/trip/a.jpg",  # current
        "thumbs/256/trip/a.jpg": "originals/trip/a.jpg",  # old layout: goes
        "thumbs/1024/trip/a.jpg": "originals/trip/a.jpg",  # old size: goes
        "thumbs/1024/x.jpg": "originals/1024/x.jpg",  # current thumbnail of a source in a folder named 1024: stays
        "thumbs/512/b.jpg": "originals/b.jpg",  # old size, but b.jpg has no current thumbnail yet: stays
        "thumbs/512/c.jpg": None,  # no metadata naming its source: not provably thumbdrop's, stays
    }
    for key, source in bucket.items():
        put(backend, THUMBS, key, source=source)
    for rel in ("trip/a.jpg", "256/trip/a.jpg", "1024/trip/a.jpg", "2048/trip/a.jpg", "1024/x.jpg", "512/b.jpg"):
        local_thumbnail(cfg, rel)
    plan = plan_cleanup(cfg, backend, now=soon())
    root = Path(cfg.local.thumbnails_dir)
    assert sorted((d.bucket, d.key, d.reason) for d in plan.deletions) == sorted(
        [
            ("(local)", str(root / "1024/trip/a.jpg"), "local thumbnail of size 1024, no longer in thumbnails.sizes"),
            ("(local)", str(root / "2048/trip/a.jpg"), "local thumbnail of size 2048, no longer in thumbnails.sizes"),
            ("(local)", str(root / "256/trip/a.jpg"), "local thumbnail of size 256, no longer in thumbnails.sizes"),
            (THUMBS, "thumbs/1024/trip/a.jpg", "thumbnail of size 1024, no longer in thumbnails.sizes"),
            (THUMBS, "thumbs/256/trip/a.jpg", "thumbnail of size 256, no longer in thumbnails.sizes"),
        ]
    )
    outcome = execute(plan, cfg, backend)
    assert outcome.errors == []
    assert keys_in(backend, THUMBS) == {"thumbs/trip/a.jpg", "thumbs/1024/x.jpg", "thumbs/512/b.jpg", "thumbs/512/c.jpg"}
    assert local_files(root) == {"trip/a.jpg", "1024/x.jpg", "512/b.jpg"}
    assert plan_cleanup(cfg, backend, now=soon()).deletions == []


def test_going_from_one_size_to_several_prunes_the_single_size_layout(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path, remove_unlisted_sizes=True, max_delete_fraction=1.0)
    cfg.thumbnails.sizes = [256, 1024]
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    put(backend, SOURCE, "originals/trip/a.jpg")
    for key in ("thumbs/trip/a.jpg", "thumbs/256/trip/a.jpg", "thumbs/1024/trip/a.jpg", "thumbs/512/trip/a.jpg"):
        put(backend, THUMBS, key, source="originals/trip/a.jpg")
    plan = plan_cleanup(cfg, backend, now=soon())
    assert sorted((d.key, d.reason) for d in plan.deletions) == [
        ("thumbs/512/trip/a.jpg", "thumbnail of size 512, no longer in thumbnails.sizes"),
        ("thumbs/trip/a.jpg", "thumbnail of the single-size layout (thumbnails.sizes now lists several)"),
    ]
    execute(plan, cfg, backend)
    assert keys_in(backend, THUMBS) == {"thumbs/256/trip/a.jpg", "thumbs/1024/trip/a.jpg"}


def test_the_rule_is_off_by_default(moto_url: str, tmp_path: Path) -> None:
    cfg = make_config(moto_url, tmp_path)
    backend = backend_for(cfg)
    make_buckets(backend, cfg)
    put(backend, SOURCE, "originals/a.jpg")
    put(backend, THUMBS, "thumbs/a.jpg", source="originals/a.jpg")
    put(backend, THUMBS, "thumbs/1024/a.jpg", source="originals/a.jpg")
    assert plan_cleanup(cfg, backend, now=soon()).deletions == []
