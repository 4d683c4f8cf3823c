"""The cleanup policy as pure selection: snapshots in, Deletions out (no backend)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cloud import dlq, lifecycle
from agent.config.cleanup_checks import policy_problems
from agent.config.loader import parse_config
from agent.config.model import Config
from agent.errors import ConfigError
from agent.pipeline import consumer
from agent.pipeline.cleaner import (
    LOCAL,
    Deletion,
    LocalStat,
    Obj,
    Snapshot,
    Upload,
    guard_problems,
    needs,
    scopes,
    select_remote,
    source_rels_of,
)
from agent.pipeline.cleaner_local import select_local
from agent.pipeline.cleanup_run import in_scope
from agent.pipeline.keys import Layout

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def cfg_of(tmp_path: Path, shared: bool = True, **cleanup: Any) -> Config:
    return parse_config(
        {
            "source": {"bucket": "photos", "prefix": "originals/"},
            "thumbnails": {"bucket": "photos" if shared else "thumbs", "prefix": "thumbs/"},
            "watch": {"folders": [str(tmp_path / "inbox")]},
            "local": {"thumbnails_dir": str(tmp_path / "th")},
            "cleanup": cleanup,
        }
    )


def obj(key: str, size: int = 10, age_days: float = 0.0) -> Obj:
    return Obj(key, size, NOW - timedelta(days=age_days))


def snap_of(*objs: Obj, local: dict[str, LocalStat] | None = None) -> Snapshot:
    s = Snapshot(local_thumbs=local or {})
    for o in objs:
        (s.thumbs if o.key.startswith("thumbs/") else s.source)[o.key] = o
    return s


def keys(ds: list[Deletion]) -> set[str]:
    return {d.key for d in ds}


def no_metadata(_key: str) -> str | None:
    return None


# --- defaults and naming ----------------------------------------------------------------------


def test_defaults_keep_everything_but_abort_old_multipart_uploads(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path)
    c = cfg.cleanup
    assert (c.mode, c.delete_originals, c.delete_pulled_thumbnails, c.thumbnails_max_age_days) == ("agent", False, False, None)
    assert (c.delete_orphans, c.inbox_after_upload, c.remove_orphan_local_thumbnails) == (False, "keep", False)
    assert c.abort_multipart_after_hours == 24.0 and c.max_delete_fraction == 0.5
    assert needs(cfg) == {"uploads"}  # the default run lists no objects at all
    s = snap_of(obj("originals/a.jpg"), obj("thumbs/a.jpg"), local={"a.jpg": LocalStat(10, NOW.timestamp())})
    s.uploads = [Upload("photos", "originals/big.tif", "u1", NOW - timedelta(hours=30))]
    out = select_remote(cfg, s, NOW, recorded_source=no_metadata)
    assert [(d.key, d.action) for d in out] == [("originals/big.tif", "abort")]


@pytest.mark.parametrize(
    ("thumb_rel", "sources"),
    [
        ("trip/a.jpg", ["trip/a", "trip/a.jpg"]),
        ("trip/a.png.jpg", ["trip/a.png", "trip/a.png.jpg"]),
        ("a.JPEG", ["a.JPEG"]),  # "a" would give "a.jpg"
        ("notes.txt", []),
        (".jpg", [".jpg"]),
    ],
)
def test_source_rels_of_inverts_the_name_rule(tmp_path: Path, thumb_rel: str, sources: list[str]) -> None:
    assert source_rels_of(Layout.of(cfg_of(tmp_path)), thumb_rel) == sources


def test_source_rels_of_with_several_sizes_needs_a_size_folder(tmp_path: Path) -> None:
    cfg = parse_config({"thumbnails": {"sizes": [256, 1024]}, "watch": {"folders": [str(tmp_path)]}})
    layout = Layout.of(cfg)
    assert source_rels_of(layout, "256/trip/a.jpg") == ["trip/a", "trip/a.jpg"]
    assert source_rels_of(layout, "512/trip/a.jpg") == []
    assert source_rels_of(layout, "trip.jpg") == []


# --- bucket rules ---------------------------------------------------------------------------------


def test_originals_go_only_when_every_thumbnail_is_newer(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, delete_originals=True)
    s = snap_of(
        obj("originals/done.jpg", age_days=2),
        obj("thumbs/done.jpg", age_days=1),
        obj("originals/stale.jpg", age_days=1),  # re-uploaded after its thumbnail was made
        obj("thumbs/stale.jpg", age_days=2),
        obj("originals/none.jpg", age_days=2),
        obj("originals/pulled.png", age_days=2),  # thumbnail pruned from the bucket, but pulled here
        local={"pulled.png.jpg": LocalStat(5, (NOW - timedelta(days=1)).timestamp())},
    )
    out = select_remote(cfg, s, NOW, recorded_source=no_metadata)
    assert keys(out) == {"originals/done.jpg", "originals/pulled.png"}
    assert all(d.bucket == "photos" and "thumbnails exist" in d.reason for d in out)


def test_originals_min_age_uses_the_injected_clock(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, delete_originals=True, originals_min_age_days=30)
    s = snap_of(obj("originals/a.jpg", age_days=29.9), obj("thumbs/a.jpg", age_days=29))
    assert select_remote(cfg, s, NOW, recorded_source=no_metadata) == []
    later = NOW + timedelta(hours=3)
    assert keys(select_remote(cfg, s, later, recorded_source=no_metadata)) == {"originals/a.jpg"}


def test_pulled_thumbnails_need_a_local_copy_of_the_same_size(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, delete_pulled_thumbnails=True)
    s = snap_of(
        obj("thumbs/same.jpg", 7),
        obj("thumbs/differs.jpg", 7),
        obj("thumbs/absent.jpg", 7),
        obj("thumbs/notes.txt", 7),  # not a name a thumbnail can have
        local={"same.jpg": LocalStat(7, 0), "differs.jpg": LocalStat(8, 0), "notes.txt": LocalStat(7, 0)},
    )
    assert keys(select_remote(cfg, s, NOW, recorded_source=no_metadata)) == {"thumbs/same.jpg"}


def test_thumbnail_age_rule(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, thumbnails_max_age_days=90)
    s = snap_of(
        obj("thumbs/old.jpg", age_days=91),
        obj("thumbs/new.jpg", age_days=89),
        obj("thumbs/.thumbdrop-failed/x.json", age_days=200),
    )
    out = select_remote(cfg, s, NOW, recorded_source=no_metadata)
    assert keys(out) == {"thumbs/old.jpg"} and "older than 90 day(s)" in out[0].reason


def test_lifecycle_mode_leaves_age_rules_to_s3_but_keeps_the_rest(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, mode="lifecycle", delete_originals=True, thumbnails_max_age_days=1, delete_pulled_thumbnails=True)
    s = snap_of(
        obj("originals/a.jpg", age_days=5), obj("thumbs/a.jpg", 3, age_days=4), local={"a.jpg": LocalStat(3, NOW.timestamp())}
    )
    s.uploads = [Upload("photos", "thumbs/x.jpg", "u", NOW - timedelta(days=9))]
    out = select_remote(cfg, s, NOW, recorded_source=no_metadata)
    assert [(d.key, d.reason) for d in out] == [("thumbs/a.jpg", "thumbnail; pulled (local copy has the same size)")]


def test_orphans_need_their_own_metadata_to_name_a_missing_source(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, delete_orphans=True)
    meta = {
        "thumbs/gone.jpg": "originals/gone.jpg",
        "thumbs/there.jpg": "originals/there.jpg",
        "thumbs/odd.jpg": "elsewhere/odd.jpg",
    }
    s = snap_of(
        obj("originals/there.jpg"),
        obj("thumbs/there.jpg"),
        obj("thumbs/gone.jpg"),
        obj("thumbs/foreign.jpg"),  # no source-key metadata: not thumbdrop's
        obj("thumbs/odd.jpg"),  # metadata names a key outside source.prefix
        obj("thumbs/.thumbdrop-failed/gone-bad.jpg.json"),
        obj("thumbs/.thumbdrop-failed/there.jpg.json"),
    )
    asked: list[str] = []

    def recorded(key: str) -> str | None:
        asked.append(key)
        return meta.get(key)

    out = select_remote(cfg, s, NOW, recorded_source=recorded)
    assert keys(out) == {"thumbs/gone.jpg", "thumbs/.thumbdrop-failed/gone-bad.jpg.json"}
    assert "thumbs/there.jpg" not in asked  # a source found by name needs no request


def test_multipart_uploads_abort_after_the_limit(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, abort_multipart_after_hours=6)
    s = Snapshot(
        uploads=[
            Upload("photos", "originals/a", "1", NOW - timedelta(hours=7)),
            Upload("photos", "thumbs/b", "2", NOW - timedelta(hours=5)),
        ]
    )
    out = select_remote(cfg, s, NOW, recorded_source=no_metadata)
    assert [(d.key, d.upload_id, d.size) for d in out] == [("originals/a", "1", 0)]
    assert select_remote(cfg_of(tmp_path, abort_multipart_after_hours=None), s, NOW, recorded_source=no_metadata) == []


# --- scope and guard ------------------------------------------------------------------------------


def test_in_scope_never_crosses_prefixes_in_a_shared_bucket(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path)
    ok = [Deletion("photos", "originals/a.jpg", "", 0), Deletion("photos", "thumbs/a.jpg", "", 0)]
    bad = [
        Deletion("photos", "backup/a.jpg", "", 0),
        Deletion("other", "originals/a.jpg", "", 0),
        Deletion(LOCAL, str(tmp_path / "elsewhere.jpg"), "", 0),
        Deletion(LOCAL, str(tmp_path / "th"), "", 0),  # the folder itself, never
    ]
    assert all(in_scope(cfg, d) for d in ok)
    assert not any(in_scope(cfg, d) for d in bad)
    assert in_scope(cfg, Deletion(LOCAL, str(tmp_path / "th" / "a.jpg"), "", 0))


def test_guard_counts_objects_under_each_prefix(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, max_delete_fraction=0.5)
    s = snap_of(*(obj(f"thumbs/{i}.jpg") for i in range(4)), *(obj(f"originals/{i}.jpg") for i in range(4)))
    two = [Deletion("photos", f"thumbs/{i}.jpg", "", 10) for i in range(2)]
    assert guard_problems(cfg, scopes(cfg, s, two, {"source", "thumbs"})) == []  # exactly half: allowed
    three = [*two, Deletion("photos", "thumbs/2.jpg", "", 10), Deletion("photos", "originals/0.jpg", "", 10)]
    problems = guard_problems(cfg, scopes(cfg, s, three, {"source", "thumbs"}))
    assert problems == [
        "would delete 3 of the 4 objects under s3://photos/thumbs/ (75%), more than cleanup.max_delete_fraction (0.5)"
    ]
    assert guard_problems(cfg_of(tmp_path, max_delete_fraction=1.0), scopes(cfg, s, three, {"source", "thumbs"})) == []


def test_contradicting_rules_are_config_errors(tmp_path: Path) -> None:
    assert policy_problems(cfg_of(tmp_path)) == []
    cases = [
        (
            {"delete_originals": True, "delete_orphans": True},
            "cleanup.delete_orphans: cannot be combined with cleanup.delete_originals",
        ),
        ({"remove_orphan_local_thumbnails": True, "inbox_after_upload": "delete"}, "inbox_after_upload: delete"),
        ({"inbox_after_upload": "move", "inbox_move_to": str(tmp_path / "inbox" / "done")}, "overlaps watch.folders[0]"),
    ]
    for rules, expected in cases:
        # Refused when the config loads, not only when a cleanup runs.
        with pytest.raises(ConfigError) as refused:
            cfg_of(tmp_path, **rules)
        assert any(expected in p for p in refused.value.problems), refused.value.problems
    with pytest.raises(ConfigError) as info:
        parse_config({"cleanup": {"mode": "cron", "thumbnails_max_age_days": 0, "max_delete_fraction": 2}})
    assert len(info.value.problems) == 3 and info.value.problems[0].startswith(
        "cleanup.mode: must be one of agent, lifecycle, both"
    )


# --- local rules ------------------------------------------------------------------------------------


def _file(path: Path, data: bytes = b"image", mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_inbox_delete_keeps_the_last_full_size_copy(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, inbox_after_upload="delete")
    done = _file(tmp_path / "inbox" / "done.jpg")
    _file(tmp_path / "inbox" / "going.jpg")  # its original is deleted by this same run
    _file(tmp_path / "inbox" / "missing.jpg")  # never reached the bucket
    _file(tmp_path / "inbox" / "fresh.jpg")  # no thumbnail yet
    later = done.stat().st_ctime + 5
    local = {n: LocalStat(3, later) for n in ("done.jpg", "going.jpg", "missing.jpg")}
    s = snap_of(obj("originals/done.jpg", 5), obj("originals/going.jpg", 5), local=local)
    remote = [Deletion("photos", "originals/going.jpg", "", 5)]
    out, notes = select_local(cfg, s, remote, uploaded_from=lambda _p: None)
    assert keys(out) == {str(done)} and notes == []
    assert out[0].stamp == done.stat().st_mtime_ns


def test_inbox_move_and_local_orphans(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, inbox_after_upload="move", inbox_move_to=str(tmp_path / "done"), remove_orphan_local_thumbnails=True)
    kept = _file(tmp_path / "inbox" / "trip" / "a.jpg")
    later = kept.stat().st_ctime + 5
    _file(tmp_path / "done" / "moved.jpg")  # moved by an earlier run: its thumbnail stays
    local = {
        "trip/a.jpg": LocalStat(3, later),
        "moved.jpg": LocalStat(3, later),
        "deleted.jpg": LocalStat(4, later),
        "foreign.jpg": LocalStat(4, later),
    }
    s = snap_of(obj("thumbs/deleted.jpg", 4), local=local)
    uploaded = {str(tmp_path / "inbox" / "deleted.jpg"): "originals/deleted.jpg"}  # the journal: only this one was ours
    out, _notes = select_local(cfg, s, [], uploaded_from=uploaded.get)
    moves = [d for d in out if d.action == "move"]
    assert [(d.key, d.move_to) for d in moves] == [(str(kept), str(tmp_path / "done" / "trip" / "a.jpg"))]
    assert {d.key for d in out if d.action == "delete"} == {str(tmp_path / "th" / "deleted.jpg"), "thumbs/deleted.jpg"}


def test_local_orphans_skipped_while_a_watch_folder_is_missing(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, remove_orphan_local_thumbnails=True)
    s = snap_of(local={"deleted.jpg": LocalStat(4, 0)})
    out, notes = select_local(cfg, s, [], uploaded_from=lambda p: "originals/deleted.jpg")
    assert out == [] and notes == [f"remove_orphan_local_thumbnails skipped for {tmp_path / 'inbox'}: it does not exist"]


# --- lifecycle and dead letters ---------------------------------------------------------------------


def test_lifecycle_rules_follow_mode_and_round_up(tmp_path: Path) -> None:
    assert lifecycle.desired_rules(cfg_of(tmp_path, delete_originals=True)) == {"photos": []}
    cfg = cfg_of(
        tmp_path,
        shared=False,
        mode="lifecycle",
        delete_originals=True,
        originals_min_age_days=0.5,
        abort_multipart_after_hours=30,
    )
    rules = lifecycle.desired_rules(cfg)
    assert [
        (r["ID"].rsplit("-", 1)[0], r["Filter"], r.get("Expiration"), r.get("AbortIncompleteMultipartUpload"))
        for r in rules["photos"]
    ] == [
        ("thumbdrop-expire-originals", {"Prefix": "originals/"}, {"Days": 1}, None),
        ("thumbdrop-abort-multipart", {"Prefix": "originals/"}, None, {"DaysAfterInitiation": 2}),
    ]
    assert [r["ID"].rsplit("-", 1)[0] for r in rules["thumbs"]] == ["thumbdrop-abort-multipart"]
    assert lifecycle.rule_id("abort-multipart", "") == "thumbdrop-abort-multipart"
    assert all(r["ID"] in lifecycle.own_ids(cfg, "photos") for r in rules["photos"])


def test_dead_letter_reasons(tmp_path: Path) -> None:
    assert (dlq.REASON_ATTR, dlq.NAME_ATTR) == (consumer.REASON_ATTR, consumer.NAME_ATTR)
    ours = {
        "MessageId": "1",
        "Body": "{}",
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        "MessageAttributes": {dlq.REASON_ATTR: {"StringValue": "Bad image: truncated"}, dlq.NAME_ATTR: {"StringValue": "a.jpg"}},
    }
    d = dlq.describe(ours, "q-dlq", 5)
    assert (d.item, d.reason, d.sent_at) == ("a.jpg", "Bad image: truncated", 1700000000.0)
    body = '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "trip/x+1.jpg"}}}]}'
    by_sqs = {"MessageId": "2", "Body": body, "Attributes": {"ApproximateReceiveCount": "6"}}
    d = dlq.describe(by_sqs, "q-dlq", 5)
    assert (d.item, d.reason, d.receives) == ("trip/x 1.jpg", "exceeded max_receives (5 receives; limit 5)", 5)
    assert "not an S3 event" in dlq.describe({"MessageId": "3", "Body": "nope"}, "q", 5).item
