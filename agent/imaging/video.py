"""Video drops: poster thumbnails and optional H.264/AAC web previews, with PyAV (FFmpeg inside its wheel).

Poster: the same sizes, format and naming as images (``clip.mov`` -> ``clip.mov.jpg``). The frame is upright
(display-matrix side data, or an old ``rotate`` tag), and representative: we seek near 10 % of the duration, let
the decoder hand back only keyframes (``skip_frame=NONKEY``: no P/B frame is decoded while searching) and skip
nearly uniform frames (a black or faded start), trying a few later positions, then, for a clip with one long
GOP, a bounded run of frames from the start. At most a few dozen frames are ever decoded for a poster.

Preview (``video.preview``): made by ``agent.imaging.video_preview`` from what this module probes.

PyAV is an optional extra (``thumbdrop[video]``): uploader- and puller-only hosts (a Raspberry Pi by a camera)
need no 60 MB of FFmpeg. Without it every video fails with the install hint (see ``available``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat

from agent.errors import ImageError
from agent.imaging import guards
from agent.imaging.encode import for_format, write
from agent.imaging.spec import (
    PREVIEW_CONTENT_TYPE,
    PREVIEW_EXTENSION,
    VIDEO_EXTENSIONS,
    Thumbnail,
    ThumbnailSpec,
    fit_size,
    is_video,
    megapixels,
    preview_name,
)

av: Any
try:
    import av
    import av.logging
except ImportError:  # pragma: no cover - depends on the installation
    av = None
else:
    av.logging.set_level(av.logging.ERROR)  # x264/x265 chatter and per-packet warnings on damaged files

log = logging.getLogger(__name__)

INSTALL_HINT = "videos need PyAV: pip install 'thumbdrop[video]'"
__all__ = ["PREVIEW_CONTENT_TYPE", "PREVIEW_EXTENSION", "VIDEO_EXTENSIONS", "is_video", "preview_name"]

# Where the poster is looked for, as fractions of the duration: 10 % first (past fades and slates), then later.
POSTER_POSITIONS = (0.10, 0.25, 0.40, 0.55, 0.70)
# A clip with one long GOP gives keyframe 0 for every seek: then at most this many frames from the start.
FORWARD_FRAMES = 48
# A frame whose 32x32 grey thumbnail has a standard deviation below this is "nearly uniform" (black, faded).
UNIFORM_STDDEV = 6.0


def available() -> bool:
    return av is not None


@dataclass(frozen=True)
class VideoSpec:
    preview: bool = False
    preview_height: int = 720
    crf: int = 23
    max_seconds: float = 7200.0  # longer sources get a poster but no preview
    max_pixels: int = 35_389_440  # 8192 x 4320; larger frames are refused outright


@dataclass(frozen=True)
class VideoInfo:
    width: int  # stored (coded) size
    height: int
    rotation: int  # degrees counter-clockwise to display upright: 0, 90, 180 or 270
    duration: float  # seconds; 0 when the container does not say
    codec: str
    pix_fmt: str
    audio_codec: str | None  # None when there is no audio stream

    @property
    def display_size(self) -> tuple[int, int]:
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def _require_av() -> None:
    if av is None:
        raise ImageError(f"not thumbnailed: {INSTALL_HINT}")


@contextlib.contextmanager
def _opened(source: Path) -> Iterator[Any]:
    """av.open with every FFmpeg failure turned into an ImageError that says what is wrong with the file."""
    _require_av()
    guards.check_file(source)
    try:
        container = av.open(str(source), mode="r")
    except av.FFmpegError as exc:
        raise bad_file(exc) from exc
    try:
        yield container
    finally:
        container.close()


def bad_file(exc: BaseException) -> ImageError:
    text = str(exc)
    low = text.lower()
    if "moov atom not found" in low or "end of file" in low or isinstance(exc, EOFError) or "truncat" in low:
        return ImageError(f"truncated video (the file ends early: {text}); upload the complete file again")
    if "invalid data" in low:
        return ImageError(f"not a video (no container FFmpeg recognises: {text})")
    return ImageError(f"corrupt video data ({text})")


def video_stream(container: Any) -> Any:
    if container.format.name.endswith("_pipe") or container.format.name in ("image2", "gif"):
        raise ImageError(f"image-only container ({container.format.name}: a still image, not a video); rename it")
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        if container.streams.video:
            raise ImageError("image-only container (its only picture is cover art, there is no video stream)")
        if container.streams.audio:
            raise ImageError("audio only (no video stream to make a poster from)")
        raise ImageError("no video stream in the file")
    stream = streams[0]
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None or not ctx.codec.is_decoder:
        name = ctx.name if ctx is not None else "not recognised"
        raise ImageError(f"unknown video codec ({name}): the FFmpeg in PyAV has no decoder for it; convert it to H.264")
    return stream


def _rotation_of(stream: Any, frame: Any | None) -> int:
    """Counter-clockwise degrees from the display matrix, else from a legacy ``rotate`` tag (clockwise)."""
    degrees = 0.0
    if frame is not None:
        degrees = float(frame.rotation or 0)
    if not degrees:
        with contextlib.suppress(ValueError):
            degrees = -float(stream.metadata.get("rotate", "0"))
    return int(round(degrees / 90.0)) * 90 % 360


def probe(source: Path) -> VideoInfo:
    """Header facts of ``source``; decodes one frame for the display matrix. ImageError when it is not a video."""
    with _opened(source) as container:
        stream = video_stream(container)
        frame = None
        with contextlib.suppress(av.FFmpegError, StopIteration):
            frame = next(container.decode(stream))
        return _info(container, stream, frame)


def _info(container: Any, stream: Any, frame: Any | None) -> VideoInfo:
    ctx = stream.codec_context
    width, height = ctx.width, ctx.height
    if frame is not None:
        width, height = frame.width, frame.height
    duration = 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
    return VideoInfo(width, height, _rotation_of(stream, frame), duration, ctx.name, ctx.format.name if ctx.format else "", audio)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"video has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"video frame too large: {width}x{height} = {megapixels(width * height)} exceeds video.max_pixels "
            f"({megapixels(max_pixels)})"
        )


# --- poster ----------------------------------------------------------------------------------------


def _stddev(frame: Any) -> float:
    """How far from uniform the frame is (0: one flat colour), on a 32x32 grey thumbnail. Through Pillow, not
    to_ndarray(): numpy is not a dependency of the video extra."""
    small = frame.reformat(width=32, height=32, format="rgb24").to_image().convert("L")
    return float(ImageStat.Stat(small).stddev[0])


def poster_frame(source: Path, *, max_pixels: int) -> Image.Image:
    """The upright RGB poster image of ``source``. ImageError for anything wrong with the file."""
    with _opened(source) as container:
        stream = video_stream(container)
        ctx = stream.codec_context
        check_pixels(ctx.width, ctx.height, max_pixels)
        try:
            best = _pick_frame(container, stream)
        except av.FFmpegError as exc:
            raise bad_file(exc) from exc
        if best is None:
            raise ImageError("no decodable video frame (the file is truncated or its video data is corrupt)")
        check_pixels(best.width, best.height, max_pixels)
        rotation = _rotation_of(stream, best)
        image = best.to_image()  # RGB24 via swscale, honouring the stream's colour matrix
    return _upright(image, rotation)


def _pick_frame(container: Any, stream: Any) -> Any | None:
    """The first not-nearly-uniform frame among bounded candidates, else the least uniform one seen."""
    best, best_score = None, -1.0
    duration = _info(container, stream, None).duration
    ctx = stream.codec_context
    if duration > 0 and stream.time_base:
        ctx.skip_frame = "NONKEY"  # searching: only keyframes leave the decoder, the rest are never decoded
        seen_pts: set[int | None] = set()
        for fraction in POSTER_POSITIONS:
            target = int(duration * fraction / stream.time_base) + (stream.start_time or 0)
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
                ctx.flush_buffers()
                frame = next(container.decode(stream), None)
            except av.FFmpegError:
                break  # unseekable (no index): fall back to reading from the start
            if frame is None or frame.pts in seen_pts:
                continue  # the same keyframe again: the clip has fewer GOPs than positions
            seen_pts.add(frame.pts)
            score = _stddev(frame)
            if score >= UNIFORM_STDDEV:
                return frame
            if score > best_score:
                best, best_score = frame, score
        ctx.skip_frame = "DEFAULT"
        try:
            container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
            ctx.flush_buffers()
        except av.FFmpegError:
            return best
    for n, frame in enumerate(_decode_tolerant(container, stream)):
        score = _stddev(frame)
        if score >= UNIFORM_STDDEV:
            return frame
        if score > best_score:
            best, best_score = frame, score
        if n + 1 >= FORWARD_FRAMES:
            break
    return best


def _decode_tolerant(container: Any, stream: Any) -> Iterator[Any]:
    """Frames from the current position; a damaged tail ends the stream instead of failing what came before."""
    got = False
    try:
        for frame in container.decode(stream):
            got = True
            yield frame
    except av.FFmpegError:
        if not got:
            raise


def _upright(image: Image.Image, rotation: int) -> Image.Image:
    ops = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return image.transpose(ops[rotation]) if rotation in ops else image


def make_poster_thumbnails(source: Path, spec: ThumbnailSpec, out_dir: Path, *, max_pixels: int) -> list[Thumbnail]:
    """One poster frame, written at each of ``spec.sizes`` like an image's thumbnails."""
    image = poster_frame(source, max_pixels=max_pixels)
    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[int, Thumbnail] = {}
    working = image
    for bound in sorted(set(spec.sizes), reverse=True):
        target = fit_size(*image.size, bound)
        if working.size != target:
            working = working.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
        path = out_dir / f"{bound}{spec.extension}"
        write(for_format(working, spec), path, spec)
        made[bound] = Thumbnail(size=bound, path=path, width=target[0], height=target[1], content_type=spec.content_type)
    return [made[size] for size in spec.sizes]
