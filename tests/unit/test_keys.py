"""Names and places (SPEC): source keys, thumbnail keys, and the one gate to the local file system."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.errors import UnsafeKeyError
from agent.imaging import spec
from agent.pipeline.keys import FAILED_DIR, Layout, ascii_meta, safe_local_path, thumbnail_name, unsafe_reason


def layout(**sections: Any) -> Layout:
    sections.setdefault("watch", {"folders": ["/srv/inbox"]})
    return Layout.of(parse_config(sections))


# --- the name rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "out"),
    [
        ("IMG_1.jpg", "jpeg", "IMG_1.jpg"),
        ("a.png", "jpeg", "a.png.jpg"),
        ("IMG_2.JPG", "jpeg", "IMG_2.JPG"),
        ("IMG_3.jpeg", "jpeg", "IMG_3.jpeg"),
        ("IMG_4.JPEG", "jpeg", "IMG_4.JPEG"),
        ("IMG_5.JpEg", "jpeg", "IMG_5.JpEg"),
        ("scan.tif", "jpeg", "scan.tif.jpg"),
        ("scan.TIFF", "jpeg", "scan.TIFF.jpg"),
        ("noext", "jpeg", "noext.jpg"),
        ("a.jpg.png", "jpeg", "a.jpg.png.jpg"),
        ("a.jpg", "webp", "a.jpg.webp"),
        ("a.webp", "webp", "a.webp"),
        ("a.WEBP", "webp", "a.WEBP"),
        ("a.png", "png", "a.png"),
        ("a.jpg", "png", "a.jpg.png"),
        ("a.heic", "avif", "a.heic.avif"),
    ],
)
def test_thumbnail_name(name: str, fmt: str, out: str) -> None:
    assert thumbnail_name(name, fmt) == out


def test_name_rule_with_two_extensions_per_format(monkeypatch: pytest.MonkeyPatch) -> None:
    # SPEC's tiff example: a format with two extensions keeps either one, in any case.
    monkeypatch.setitem(spec.FORMAT_EXTENSIONS, "tiff", (".tif", ".tiff"))
    assert thumbnail_name("scan.tif", "tiff") == "scan.tif"
    assert thumbnail_name("scan.TIFF", "tiff") == "scan.TIFF"
    assert thumbnail_name("scan.png", "tiff") == "scan.png.tif"


def test_spec_examples() -> None:
    lay = layout()
    assert lay.thumb_key("trip/IMG_1.jpg", 256) == "trip/IMG_1.jpg"
    assert lay.thumb_key("trip/a.png", 256) == "trip/a.png.jpg"


def test_multi_size_top_folder() -> None:
    lay = layout(thumbnails={"sizes": [256, 1024]})
    assert lay.thumb_keys("trip/IMG_1.jpg") == ["256/trip/IMG_1.jpg", "1024/trip/IMG_1.jpg"]
    assert lay.thumb_keys("a.png") == ["256/a.png.jpg", "1024/a.png.jpg"]


def test_single_size_has_no_size_folder() -> None:
    lay = layout(thumbnails={"sizes": [512]})
    assert lay.thumb_keys("a.jpg") == ["a.jpg"]


def test_format_changes_extension() -> None:
    lay = layout(thumbnails={"format": "webp"})
    assert lay.thumb_key("trip/IMG_1.jpg", 256) == "trip/IMG_1.jpg.webp"


# --- source keys ------------------------------------------------------------------------------------


def test_single_watch_folder_key() -> None:
    lay = layout(source={"prefix": "originals/"})
    rel = lay.source_rel(0, "trip/IMG_1.jpg")
    assert rel == "trip/IMG_1.jpg"
    assert lay.source_key(rel) == "originals/trip/IMG_1.jpg"


def test_several_watch_folders_put_folder_name_first() -> None:
    lay = layout(watch={"folders": ["/srv/inbox", "/home/me/camera"]})
    assert lay.source_rel(0, "a/b.jpg") == "inbox/a/b.jpg"
    assert lay.source_rel(1, "c.jpg") == "camera/c.jpg"
    assert lay.thumb_key(lay.source_rel(1, "c.png"), 256) == "camera/c.png.jpg"


def test_prefixes_on_both_sides() -> None:
    lay = layout(source={"prefix": "up/"}, thumbnails={"prefix": "th/", "sizes": [128, 256]})
    rel = lay.rel_of_source_key("up/trip/a.png")
    assert rel == "trip/a.png"
    assert lay.thumb_keys(rel) == ["th/128/trip/a.png.jpg", "th/256/trip/a.png.jpg"]
    assert lay.rel_of_thumb_key("th/128/trip/a.png.jpg") == "128/trip/a.png.jpg"


def test_rel_of_source_key_ignores_keys_outside_prefix() -> None:
    lay = layout(source={"prefix": "originals/"})
    assert lay.rel_of_source_key("originals/a.jpg") == "a.jpg"
    assert lay.rel_of_source_key("other/a.jpg") is None
    assert lay.rel_of_source_key("originals/") is None
    assert lay.rel_of_source_key("originalsX/a.jpg") is None


def test_rel_of_source_key_ignores_own_output_in_shared_bucket() -> None:
    lay = layout(
        source={"bucket": "shared", "prefix": "originals/"},
        thumbnails={"bucket": "shared", "prefix": "thumbs/"},
    )
    assert lay.rel_of_source_key("originals/trip/a.jpg") == "trip/a.jpg"
    assert lay.rel_of_source_key("thumbs/trip/a.jpg") is None
    assert lay.rel_of_thumb_key("thumbs/trip/a.jpg") == "trip/a.jpg"
    assert lay.rel_of_thumb_key("originals/trip/a.jpg") is None


def test_separate_buckets_do_not_filter_by_the_other_prefix() -> None:
    # Different buckets: a source folder that happens to be called like thumbnails.prefix is still a source.
    lay = layout(source={"prefix": ""}, thumbnails={"prefix": "thumbs/"})
    assert lay.rel_of_source_key("thumbs/a.jpg") == "thumbs/a.jpg"
    lay = layout(source={"prefix": "photos/"}, thumbnails={"prefix": ""})
    assert lay.rel_of_thumb_key("photos/a.jpg") == "photos/a.jpg"


def test_failure_markers_are_not_thumbnails() -> None:
    lay = layout(thumbnails={"prefix": "thumbs/"})
    marker = lay.failure_key("trip/bad.jpg")
    assert marker == f"thumbs/{FAILED_DIR}trip/bad.jpg.json"
    assert lay.rel_of_thumb_key(marker) is None
    assert lay.rel_of_failure_key(marker) == "trip/bad.jpg"
    assert lay.rel_of_failure_key("thumbs/trip/bad.jpg") is None


def test_failure_markers_without_prefix() -> None:
    lay = layout()
    marker = lay.failure_key("bad.jpg")
    assert lay.rel_of_thumb_key(marker) is None
    assert lay.rel_of_failure_key(marker) == "bad.jpg"


def test_rel_of_thumb_key_outside_prefix() -> None:
    lay = layout(thumbnails={"prefix": "thumbs/"})
    assert lay.rel_of_thumb_key("elsewhere/a.jpg") is None
    assert lay.rel_of_thumb_key("thumbs/") is None


# --- safe_local_path -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "words"),
    [
        ("../escape.jpg", "'..'"),
        ("a/../../escape.jpg", "'..'"),
        ("a/./b.jpg", "'.'"),
        ("/etc/passwd", "absolute"),
        ("a\\b.jpg", "backslash"),
        ("..\\escape.jpg", "backslash"),
        ("a\x00.jpg", "NUL"),
        ("a//b.jpg", "empty"),
        ("a/", "empty"),
        ("", "empty"),
        ("x" * 256 + ".jpg", "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),
        ("/".join(["d" * 200] * 21), "longer than 4096 bytes"),
    ],
)
def test_unsafe_keys_are_refused(tmp_path: Path, rel: str, words: str) -> None:
    with pytest.raises(UnsafeKeyError) as info:
        safe_local_path(tmp_path, rel)
    assert words in info.value.message
    assert info.value.kind == "item"
    assert unsafe_reason(rel) is not None


def test_name_of_255_bytes_is_fine(tmp_path: Path) -> None:
    name = "x" * 251 + ".jpg"
    assert safe_local_path(tmp_path, name) == tmp_path / name


def test_symlinked_folder_leading_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "thumbs"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafeKeyError, match="leads outside"):
        safe_local_path(root, "link/a.jpg")
    with pytest.raises(UnsafeKeyError, match="leads outside"):
        safe_local_path(root, "link/deeper/a.jpg")


def test_symlinked_folder_inside_root_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "thumbs"
    (root / "real").mkdir(parents=True)
    os.symlink(root / "real", root / "alias")
    assert safe_local_path(root, "alias/a.jpg") == root / "alias" / "a.jpg"


def test_root_itself_behind_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "root")
    assert safe_local_path(tmp_path / "root", "a/b.jpg") == tmp_path / "root" / "a" / "b.jpg"


@pytest.mark.parametrize(
    "rel",
    ["été/plage.jpg", "My Photos/IMG 1.jpg", "line\nbreak.jpg", "日本/写真.png", "a..b.jpg", "...jpg", "~/x.jpg", "-rf.jpg"],
)
def test_acceptable_keys(tmp_path: Path, rel: str) -> None:
    path = safe_local_path(tmp_path, rel)
    assert path == tmp_path.joinpath(*rel.split("/"))
    assert tmp_path in path.parents
    assert unsafe_reason(rel) is None


# --- metadata --------------------------------------------------------------------------------------------------


def test_ascii_meta() -> None:
    assert ascii_meta("trip/IMG 1.jpg") == "trip/IMG 1.jpg"
    encoded = ascii_meta("été/plage.jpg")
    assert encoded.isascii()
    from urllib.parse import unquote

    assert unquote(encoded) == "été/plage.jpg"
    assert unquote(ascii_meta("100%.jpg")) == "100%.jpg"


# --- names refused before the upload -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        (
            "line\nbreak.jpg",
            "its name contains a control character (\\n), which S3 tools and stores handle badly; rename the file",
        ),
        ("tab\there.jpg", "its name contains a control character (\\t), which S3 tools and stores handle badly; rename the file"),
        ("cr\r.jpg", "its name contains a control character (\\r), which S3 tools and stores handle badly; rename the file"),
        (
            "bell\x07.jpg",
            "its name contains a control character (\\x07), which S3 tools and stores handle badly; rename the file",
        ),
        ("del\x7f.jpg", "its name contains a control character (\\x7f), which S3 tools and stores handle badly; rename the file"),
        (
            "trip\nday/a.jpg",
            "its folder 'trip\\nday' contains a control character (\\n), which S3 tools and stores handle badly; "
            "rename the folder",
        ),
        (
            "caf\udce9.jpg",
            "its name is not valid UTF-8 (S3 keys must be); rename the file (e.g. convmv -f latin1 -t utf8)",
        ),
        (
            "dir-\udce9/inside.jpg",
            "its folder 'dir-\\xe9' is not valid UTF-8 (S3 keys must be); rename the folder (e.g. convmv -r -f latin1 -t utf8)",
        ),
    ],
)
def test_names_that_cannot_round_trip_are_refused_naming_the_part_to_rename(rel: str, expected: str) -> None:
    assert layout().name_problem(rel) == expected


@pytest.mark.parametrize("rel", ["été/plage.jpg", "My Photos/IMG 1.jpg", "日本/写真.png", "a+b%20c.jpg", "-rf.jpg"])
def test_ordinary_names_are_not_refused(rel: str) -> None:
    assert layout().name_problem(rel) is None
