"""Writing a thumbnail file: atomic, through the one temp naming scheme, nothing left behind on an error."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.errors import ImageError
from agent.imaging.encode import write
from agent.imaging.spec import ThumbnailSpec
from agent.state.files import TMP_MARK


def spec() -> ThumbnailSpec:
    return ThumbnailSpec(sizes=(32,), format="jpeg")


def test_the_file_is_written_through_a_temp_file_a_cleaner_can_recognise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    real_save = Image.Image.save

    def save(im: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(os.listdir(tmp_path))  # while it is written: only the temp file is there
        real_save(im, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    write(Image.new("RGB", (8, 8), (200, 10, 10)), tmp_path / "a.jpg", spec())
    assert len(seen) == 1 and len(seen[0]) == 1 and TMP_MARK in seen[0][0] and seen[0][0].startswith(".a.jpg")
    assert os.listdir(tmp_path) == ["a.jpg"]
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.format == "JPEG" and im.size == (8, 8)


def test_an_encoder_error_is_the_images_and_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.jpg").write_bytes(b"the old thumbnail")

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise ValueError("encoder error -2")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(ImageError, match=r"cannot encode jpeg thumbnail \(encoder error -2\)"):
        write(Image.new("RGB", (8, 8)), tmp_path / "a.jpg", spec())
    assert os.listdir(tmp_path) == ["a.jpg"] and (tmp_path / "a.jpg").read_bytes() == b"the old thumbnail"


def test_a_full_disk_is_not_the_images_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(OSError, match="No space left") as caught:
        write(Image.new("RGB", (8, 8)), tmp_path / "a.jpg", spec())
    assert not isinstance(caught.value, ImageError)
    assert os.listdir(tmp_path) == []
