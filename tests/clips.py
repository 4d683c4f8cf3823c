"""Small video clips generated with PyAV for the video tests (a second or two, low resolution: fast in CI)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

av = pytest.importorskip("av", reason="video tests need PyAV: pip install 'thumbdrop[video]'")
np = pytest.importorskip("numpy")

PIX = {"mjpeg": "yuvj420p"}


def can_encode(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - any failure means "this build cannot"
        return False
    return True


def pattern(width: int, height: int, n: int) -> np.ndarray:
    """A frame that is far from uniform: a red left third, a white top band and a moving gradient."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :, 2] = (np.arange(width)[None, :] * 255 // max(1, width - 1) + n * 3) % 256
    frame[:, : width // 3] = (220, 20, 20)
    frame[: height // 4, :] = (250, 250, 250)
    return frame


def make_clip(
    path: Path,
    codec: str = "libx264",
    *,
    size: tuple[int, int] = (96, 64),
    seconds: float = 1.0,
    fps: int = 12,
    rotation: int = 0,
    black_seconds: float = 0.0,
    audio: bool = False,
    gop: int | None = None,
    fmt: str | None = None,
) -> Path:
    """A clip of ``seconds`` whose first ``black_seconds`` are black. ``rotation``: display matrix (CCW degrees)."""
    width, height = size
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = PIX.get(codec, "yuv420p")
        if gop:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        astream = out.add_stream("aac", rate=44100) if audio else None
        frames = int(seconds * fps)
        for n in range(frames):
            data = np.zeros((height, width, 3), np.uint8) if n < black_seconds * fps else pattern(width, height, n)
            frame = av.VideoFrame.from_ndarray(data, format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            samples = int(44100 * seconds)
            tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 44100)).astype(np.float32)[None, :]
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                out.mux(astream.encode(chunk))
            out.mux(astream.encode(None))
    return path


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        astream = out.add_stream("aac", rate=44100)
        samples = int(44100 * seconds)
        silence = np.zeros((1, 1024), np.float32)
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 44100, start
            out.mux(astream.encode(chunk))
        out.mux(astream.encode(None))
    return path


def truncate(src: Path, dest: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest
