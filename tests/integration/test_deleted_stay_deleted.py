"""A photo deleted locally with remove_orphan_local_thumbnails on: its thumbnails go and do not come back
(QA trial P8: the worker reconcile re-made them from the original still in the source bucket)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.pipeline.cleaner_local import journal_lookup
from agent.pipeline.cleanup_run import execute, plan_cleanup
from agent.service.agent import Agent
from agent.service.runtime import pool_size
from tests.integration.test_agent_control import drop_image
from tests.support import wait_for


def test_thumbnails_of_a_locally_deleted_photo_are_not_made_and_pulled_again(tmp_path: Path, moto_url: str) -> None:
    cfg = parse_config(
        {
            "backend": {"endpoint_url": moto_url, "addressing_style": "path", "max_attempts": 2},
            "watch": {"folders": [str(tmp_path / "inbox")], "settle_seconds": 0.2, "rescan_seconds": 0},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
            "queues": {"wait_seconds": 1, "visibility_timeout": 30},
            "roles": ["uploader", "worker", "puller"],
            "cleanup": {"remove_orphan_local_thumbnails": True, "max_delete_fraction": 1.0},
        },
        origin=str(tmp_path / "thumbdrop.yaml"),
    )
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    thumbs = tmp_path / "thumbs"
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=pool_size(cfg))
    agent = Agent(cfg, backend, state)
    agent.start()
    try:
        assert agent.ready.wait(60), "the agent did not become ready"
        for name in ("kept.jpg", "deleted.jpg", "also kept.jpg"):
            drop_image(tmp_path / "inbox" / name)
        for name in ("kept.jpg", "deleted.jpg", "also kept.jpg"):
            wait_for((thumbs / name).exists, 60, f"the thumbnail of {name}")

        (tmp_path / "inbox" / "deleted.jpg").unlink()  # the user deletes a photo
        plan = plan_cleanup(
            cfg,
            backend,
            now=datetime.now(UTC),
            uploaded_from=journal_lookup(agent.journal),
            recorded_under=agent.journal.uploads_under,
            accepted=agent.journal.folder_identity,
        )
        assert sorted(d.key for d in plan.deletions) == sorted(["deleted.jpg", str(thumbs / "deleted.jpg")]), plan.notes
        execute(plan, cfg, backend)
        assert not (thumbs / "deleted.jpg").exists()

        # What a rescan (or a change of thumbnails.sizes) does: the original is still in the source bucket.
        assert agent.worker is not None and agent.puller is not None
        assert agent.worker.reconcile(agent.stop_event) == 0
        agent.puller.reconcile()
        assert not (thumbs / "deleted.jpg").exists()
        thumb_keys = {o["Key"] for o in backend.s3.list_objects_v2(Bucket=cfg.thumbnails.bucket).get("Contents", [])}
        assert thumb_keys == {"kept.jpg", "also kept.jpg"}
        # A photo that is there but lost its thumbnail is still made again.
        (thumbs / "kept.jpg").unlink()
        backend.s3.delete_object(Bucket=cfg.thumbnails.bucket, Key="kept.jpg")
        assert agent.worker.reconcile(agent.stop_event) == 1
        agent.puller.reconcile()
        wait_for((thumbs / "kept.jpg").exists, 60, "the thumbnail of kept.jpg again")
    finally:
        agent.stop()
