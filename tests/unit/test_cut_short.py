"""A file cut short is "truncated" whatever its format says, and bad-image reasons end with what to do (QA P11, P9)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from agent.errors import ImageError
from agent.imaging import ThumbnailSpec, make_thumbnails
from agent.imaging.guards import cut_short, maybe_incomplete
from agent.pipeline.worker import ThumbnailWorker
from tests.unit.test_imaging import ENGINES

FIX = "; replace or remove the file: it is tried again when it changes"


def noisy(path: Path, **params: Any) -> bytes:
    Image.effect_noise((300, 200), 50).convert("RGB").save(path, **params)
    return path.read_bytes()


def make(source: Path, tmp_path: Path, engine: str = "pillow") -> None:
    make_thumbnails(source, ThumbnailSpec(engine=engine, sizes=(100,)), tmp_path / "out")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cut_short_webp_is_truncated_not_corrupt(tmp_path: Path, engine: str) -> None:
    """libwebp says "could not create decoder object" for a WebP being written: it was dead-lettered at once as
    corrupt, and logged at ERROR for each partial version, where JPEG and PNG were retried quietly."""
    data = noisy(tmp_path / "full.webp", quality=90)
    cut = tmp_path / "cut.webp"
    cut.write_bytes(data[: len(data) // 4])
    with pytest.raises(ImageError) as caught:
        make(cut, tmp_path, engine)
    assert str(caught.value) == (
        f"truncated image data (its RIFF header declares {len(data)} bytes, the file has {len(data) // 4}){FIX}"
    )
    assert maybe_incomplete(str(caught.value))


def test_a_cut_short_avif_is_truncated(tmp_path: Path) -> None:
    data = noisy(tmp_path / "full.avif")
    cut = tmp_path / "cut.avif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as caught:
        make(cut, tmp_path)
    reason = str(caught.value)
    assert maybe_incomplete(reason), reason
    assert reason.endswith(FIX)


def box(kind: bytes, body: bytes, declared: int | None = None) -> bytes:
    return struct.pack(">I4s", declared if declared is not None else 8 + len(body), kind) + body


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"RIFF" + struct.pack("<I", 1000) + b"WEBPVP8 " + b"\0" * 100, "its RIFF header declares 1008 bytes, the file has 116"),
        (b"RIFF" + struct.pack("<I", 108) + b"WEBPVP8 " + b"\0" * 100, None),
        (
            box(b"ftyp", b"avif" + b"\0" * 8) + box(b"mdat", b"\0" * 50, declared=5000),
            "its 'mdat' box ends at byte 5020, the file has 78",
        ),
        (box(b"ftyp", b"heic" + b"\0" * 8) + box(b"mdat", b"\0" * 50), None),
        (box(b"ftyp", b"heic" + b"\0" * 8) + box(b"mdat", b"", declared=0) + b"\0" * 40, None),  # size 0: to the end
        (b"II*\x00" + struct.pack("<I", 4096) + b"\0" * 100, "its first TIFF directory is at byte 4096, the file has 108"),
        (b"MM\x00*" + struct.pack(">I", 8) + b"\0" * 100, None),
        (b"GIF89a" + b"\0" * 100, "it does not end with the GIF trailer"),
        (b"GIF89a" + b"\0" * 100 + b";", None),
        (b"\xff\xd8\xff\xe0" + b"\0" * 100, None),  # JPEG: its decoder's own verdict stands
        (b"just text, not an image at all\n", None),
    ],
)
def test_cut_short_reads_the_containers_declared_sizes(tmp_path: Path, content: bytes, expected: str | None) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    assert cut_short(path) == expected


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("fake photo.jpg", b"just text\n" * 20, "not an image (file content is not a recognised image format)"),
        ("empty.png", b"", "empty file (0 bytes)"),
    ],
)
def test_bad_image_reasons_end_with_the_fix(tmp_path: Path, engine: str, name: str, content: bytes, expected: str) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        make(source, tmp_path, engine)
    assert str(caught.value) == expected + FIX


def test_a_truncated_jpeg_reason_has_no_doubled_parentheses(tmp_path: Path) -> None:
    data = noisy(tmp_path / "full.jpg", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError) as caught:
        make(cut, tmp_path)
    reason = str(caught.value)
    # Pillow says "image file is truncated (N bytes not processed)"; it was wrapped in a second pair of parentheses.
    assert reason.startswith("truncated image data (") and reason.endswith(f" bytes not processed){FIX}"), reason
    assert "((" not in reason and "))" not in reason and "image file is truncated" not in reason


# --- the "may still be arriving" retry ------------------------------------------------------------------------


def arriving_for(uploaded_ago: float, mtime_ago: float | None) -> float | None:
    now = datetime.now(UTC).timestamp()
    head: dict[str, Any] = {"LastModified": datetime.fromtimestamp(now - uploaded_ago, tz=UTC), "Metadata": {}}
    if mtime_ago is not None:
        head["Metadata"]["mtime"] = f"{now - mtime_ago:.6f}"  # what the uploader records: the local file's mtime
    worker: Any = SimpleNamespace(incomplete_grace=20.0)
    return ThumbnailWorker._arriving_for(worker, head, "truncated image data (its RIFF header declares ...)")


def test_a_fresh_upload_of_a_file_written_moments_ago_is_waited_for() -> None:
    wait = arriving_for(uploaded_ago=1.0, mtime_ago=2.0)
    assert wait is not None and 5.0 <= wait <= 20.0


def test_a_fresh_upload_of_a_file_unchanged_for_minutes_is_reported_at_once() -> None:
    """The QA saw ~25 s of retries for a file whose mtime was minutes old: LastModified is the upload's time."""
    assert arriving_for(uploaded_ago=1.0, mtime_ago=300.0) is None


def test_without_mtime_metadata_the_upload_time_decides() -> None:
    assert arriving_for(uploaded_ago=1.0, mtime_ago=None) is not None
    assert arriving_for(uploaded_ago=60.0, mtime_ago=None) is None
