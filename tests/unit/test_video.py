"""Video posters and web previews (agent.imaging.video) on clips generated with PyAV in the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from agent.errors import ImageError
from agent.imaging import ThumbnailSpec
from agent.imaging.spec import is_video, preview_name
from agent.pipeline.cleaner import source_rels_of
from agent.pipeline.keys import Layout
from tests.clips import av, can_encode, make_audio_only, make_clip, truncate

from agent.imaging import video, video_preview  # isort: skip  (after tests.clips, which skips this module without PyAV)

RED = (220, 20, 20)


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel[:3], colour, strict=True))


def codec_or_skip(codec: str) -> str:
    if not can_encode(codec):
        pytest.skip(f"this PyAV wheel has no {codec} encoder")
    return codec


CLIPS = [
    ("h264.mp4", "libx264", None),
    ("hevc.mov", "libx265", None),
    ("vp9.webm", "libvpx-vp9", None),
    ("mjpeg.avi", "mjpeg", None),
    ("mpeg4.mkv", "mpeg4", "matroska"),
    ("phone.3gp", "libx264", "3gp"),
]


@pytest.mark.parametrize(("name", "codec", "fmt"), CLIPS)
def test_poster_of_each_codec_is_the_first_real_frame(tmp_path: Path, name: str, codec: str, fmt: str | None) -> None:
    clip = make_clip(tmp_path / name, codec_or_skip(codec), size=(96, 64), fmt=fmt)
    thumbs = video.make_poster_thumbnails(clip, ThumbnailSpec(sizes=(64, 32)), tmp_path / "out", max_pixels=10**8)
    assert [(t.size, t.width, t.height) for t in thumbs] == [(64, 64, 43), (32, 32, 21)]
    with Image.open(thumbs[0].path) as im:
        assert im.format == "JPEG" and im.size == (64, 43)
        assert near(im.getpixel((5, 30)), RED)  # the red left third of the pattern
        assert not im.info.get("exif")


def test_portrait_phone_clip_is_upright(tmp_path: Path) -> None:
    """A phone stores landscape pixels plus a 90 degree display matrix: the poster is portrait, turned the way
    FFmpeg's CLI turns it (checked against ffmpeg 5.1: the red left third ends at the bottom)."""
    clip = make_clip(tmp_path / "IMG_0001.MOV", "libx264", size=(96, 64), rotation=90)
    assert video.probe(clip).rotation == 90
    image = video.poster_frame(clip, max_pixels=10**8)
    assert image.size == (64, 96)
    assert near(image.getpixel((32, 90)), RED)
    assert not near(image.getpixel((32, 5)), RED)


def test_clip_that_starts_black_gets_a_real_poster(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "fade.mp4", "libx264", seconds=3.0, black_seconds=1.2, gop=6)
    image = video.poster_frame(clip, max_pixels=10**8)
    assert near(image.getpixel((5, 40)), RED)


def test_clip_with_one_long_gop_that_starts_black(tmp_path: Path) -> None:
    """Every seek lands on keyframe 0 (black): a bounded run of frames from the start finds the picture."""
    clip = make_clip(tmp_path / "onegop.mp4", "libx264", seconds=2.0, black_seconds=0.5, gop=300)
    image = video.poster_frame(clip, max_pixels=10**8)
    assert near(image.getpixel((5, 40)), RED)


def test_uniform_clip_still_gets_a_poster(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "black.mp4", "libx264", seconds=1.0, black_seconds=5.0)
    image = video.poster_frame(clip, max_pixels=10**8)
    assert image.size == (96, 64) and image.getpixel((40, 40))[0] < 30


def test_poster_decodes_only_a_few_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_clip(tmp_path / "long.mp4", "libx264", seconds=20.0, fps=12, gop=24)  # 240 frames
    decoded = []
    original = video._stddev
    monkeypatch.setattr(video, "_stddev", lambda f: decoded.append(f.time) or original(f))
    video.poster_frame(clip, max_pixels=10**8)
    assert len(decoded) == 1  # the keyframe near 10 % (2 s) is not uniform: taken at once
    assert 1.0 <= decoded[0] <= 2.0  # the keyframe at or before 2 s (keyframes every 2 s)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: (d / "empty.mov").write_bytes(b"") and None or d / "empty.mov", "empty file"),
        (lambda d: make_audio_only(d / "voice.m4v"), "audio only"),
        (lambda d: truncate(make_clip(d / "full.mp4", "libx264"), d / "cut.mp4", 0.5), "truncated"),
        (lambda d: _write(d / "noise.mkv", bytes(range(256)) * 40), "not a video"),
        (lambda d: _still_png(d / "still.mp4"), "image-only container"),
        (lambda d: _unknown_codec(d), "unknown video codec"),
    ],
    ids=["zero-length", "audio-only", "truncated", "corrupt", "image-only", "unknown-codec"],
)
def test_bad_input_is_refused_with_a_reason(tmp_path: Path, make: object, words: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ImageError) as info:
        video.make_poster_thumbnails(path, ThumbnailSpec(sizes=(64,)), tmp_path / "out", max_pixels=10**8)
    assert words in str(info.value)


def test_corrupt_middle_still_gives_a_poster_or_a_reason(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", "libx264", seconds=2.0)
    data = bytearray(clip.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = b"\xff" * 200
    clip.write_bytes(bytes(data))
    try:
        image = video.poster_frame(clip, max_pixels=10**8)
    except ImageError as exc:
        assert "video" in str(exc)
    else:
        assert image.size == (96, 64)


def test_too_many_pixels_is_refused(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", "libx264", size=(96, 64))
    with pytest.raises(ImageError, match=r"96x64 .* exceeds video.max_pixels"):
        video.poster_frame(clip, max_pixels=96 * 64 - 1)


# --- previews --------------------------------------------------------------------------------


def _read(path: Path) -> tuple[str, int, int, str | None, float, int]:
    info = video.probe(path)
    return info.codec, info.width, info.height, info.audio_codec, info.duration, info.rotation


def _moov_first(path: Path) -> bool:
    head = path.read_bytes()[:4096]
    return 0 <= head.find(b"moov") < (head.find(b"mdat") if b"mdat" in head else len(head))


def test_small_h264_is_remuxed(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mov", "libx264", size=(96, 64), audio=True)
    made = video_preview.make_preview(clip, tmp_path / "a.mov.mp4", video.VideoSpec(preview=True, preview_height=720))
    assert made.remuxed and (made.width, made.height) == (96, 64)
    codec, w, h, audio, duration, _rot = _read(made.path)
    assert (codec, w, h, audio) == ("h264", 96, 64, "aac")
    assert duration == pytest.approx(1.0, abs=0.1)
    assert _moov_first(made.path)


@pytest.mark.parametrize(("codec", "name"), [("libx265", "h.mov"), ("libvpx-vp9", "v.webm"), ("mjpeg", "m.avi")])
def test_other_codecs_are_encoded_to_h264(tmp_path: Path, codec: str, name: str) -> None:
    clip = make_clip(tmp_path / name, codec_or_skip(codec), size=(96, 64))
    made = video_preview.make_preview(clip, tmp_path / "out.mp4", video.VideoSpec(preview=True))
    assert not made.remuxed
    codec_out, w, h, audio, duration, _ = _read(made.path)
    assert (codec_out, w, h, audio) == ("h264", 96, 64, None)
    assert duration == pytest.approx(1.0, abs=0.15)
    assert _moov_first(made.path)


def test_preview_frame_types_are_the_encoders_choice(tmp_path: Path) -> None:
    """Every frame of an MJPEG source is a keyframe; the preview must not inherit that (it doubled sizes)."""
    clip = make_clip(tmp_path / "m.avi", "mjpeg", size=(96, 64), seconds=2.0)
    made = video_preview.make_preview(clip, tmp_path / "m.mp4", video.VideoSpec(preview=True))
    with av.open(str(made.path)) as c:
        keys = sum(1 for p in c.demux(c.streams.video[0]) if p.size and p.is_keyframe)
    assert keys == 1  # was 24: one per source frame


def test_preview_is_scaled_to_the_displayed_height_and_keeps_rotation(tmp_path: Path) -> None:
    """A portrait clip 240 px high on screen (stored 240x160 turned 90 degrees), limited to 144: 96x144 shown."""
    clip = make_clip(tmp_path / "p.mov", "mpeg4", size=(240, 160), rotation=90, audio=True)
    made = video_preview.make_preview(clip, tmp_path / "p.mp4", video.VideoSpec(preview=True, preview_height=144))
    assert (made.width, made.height, made.remuxed) == (96, 144, False)
    codec, w, h, audio, _, rotation = _read(made.path)
    assert (codec, w, h, audio, rotation) == ("h264", 144, 96, "aac", 90)


def test_tall_h264_is_encoded_not_remuxed(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "t.mp4", "libx264", size=(320, 240))
    made = video_preview.make_preview(clip, tmp_path / "t.mp4.mp4", video.VideoSpec(preview=True, preview_height=144))
    assert not made.remuxed
    assert _read(made.path)[1:3] == (192, 144)


def test_shutdown_interrupts_a_preview(tmp_path: Path) -> None:
    import threading

    from agent.errors import TransientError

    clip = make_clip(tmp_path / "h.mov", codec_or_skip("libx265"), size=(96, 64))
    stop = threading.Event()
    stop.set()
    with pytest.raises(TransientError, match="interrupted by shutdown"):
        video_preview.make_preview(clip, tmp_path / "h.mp4", video.VideoSpec(preview=True), stop=stop)
    assert not (tmp_path / "h.mp4").exists()


def test_long_source_is_refused_a_preview(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", "libx264", seconds=3.0)
    with pytest.raises(ImageError, match=r"3 s long, over video.max_seconds \(2 s\)"):
        video_preview.make_preview(clip, tmp_path / "x.mp4", video.VideoSpec(preview=True, max_seconds=2))
    assert not (tmp_path / "x.mp4").exists()


def test_names_and_cleanup_rules_know_previews() -> None:
    assert is_video("IMG_1.MOV") and is_video("a.webm") and not is_video("a.jpg")
    assert preview_name("clip.mov") == "clip.mov.mp4"
    layout = Layout("", "", (256,), "jpeg", ())
    assert layout.preview_key("d/clip.mov") == "d/clip.mov.mp4"
    assert source_rels_of(layout, "d/clip.mov.mp4") == ["d/clip.mov"]
    assert "d/clip.mov" in source_rels_of(layout, "d/clip.mov.jpg")
    several = Layout("", "t/", (256, 1024), "jpeg", ())
    assert source_rels_of(several, "clip.mov.mp4") == ["clip.mov"]  # previews sit outside the size folders
    assert source_rels_of(layout, "d/notes.txt.mp4") == []


def test_with_previews_on_an_original_is_kept_until_its_preview_exists() -> None:
    from datetime import UTC, datetime

    from agent.pipeline.cleaner import Obj, Snapshot, thumbnails_done

    t = datetime(2026, 1, 1, tzinfo=UTC)
    src = Obj("v.mov", 10, t)
    snap = Snapshot(source={"v.mov": src}, thumbs={"v.mov.jpg": Obj("v.mov.jpg", 1, t)})
    assert thumbnails_done(Layout("", "", (256,), "jpeg", ()), snap, "v.mov", src)
    with_previews = Layout("", "", (256,), "jpeg", (), previews=True)
    assert not thumbnails_done(with_previews, snap, "v.mov", src)  # was: deleted before its preview was made
    snap.thumbs["v.mov.mp4"] = Obj("v.mov.mp4", 5, t)
    assert thumbnails_done(with_previews, snap, "v.mov", src)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _still_png(path: Path) -> Path:
    Image.new("RGB", (64, 48), (10, 200, 10)).save(path, "PNG")
    return path


def _unknown_codec(d: Path) -> Path:
    """An AVI whose video FourCC no decoder knows (MJPG patched to ZZZZ)."""
    clip = make_clip(d / "odd.avi", "mjpeg")
    data = clip.read_bytes().replace(b"MJPG", b"ZZZZ")
    return _write(clip, data)


assert av is not None


def test_posters_need_no_numpy(tmp_path: Path) -> None:
    """numpy is in the test extra but not in the video one: a user's poster must not import it (it did, for the
    uniform-frame check, and every video failed with "No module named 'numpy'")."""
    import subprocess
    import sys

    clip = make_clip(tmp_path / "c.mp4", "libx264", size=(96, 64))
    code = (
        "import sys; sys.modules['numpy'] = None\n"  # an import of numpy now raises ImportError
        "from pathlib import Path\n"
        "from agent.imaging.video import poster_frame\n"
        f"print(poster_frame(Path({str(clip)!r}), max_pixels=10**9).size)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(96, 64)"
