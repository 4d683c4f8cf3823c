"""Video drops: poster thumbnails and optional H.264/AAC web previews, with PyAV (FFmpeg inside its wheel).

Poster: the same sizes, format and naming as images (``clip.mov`` -> ``clip.mov.jpg``). The frame is upright
(display-matrix side data, or an old ``rotate`` tag), and representative: we seek near 10 % of the duration, let
the decoder hand back only keyframes (``skip_frame=NONKEY``: no P/B frame is decoded while searching) and skip
nearly uniform frames (a black or faded start), trying a few later positions, then, for a clip with one long
GOP, a bounded run of frames from the start. At most a few dozen frames are ever decoded for a poster.

Preview (``video.preview``): H.264 (libx264) + AAC in an MP4 with ``faststart``, at most ``preview_height`` px
high on screen, at ``crf``; a source that is already small H.264 (+AAC or no audio) is remuxed, not re-encoded.

PyAV is an optional extra (``thumbdrop[video]``): uploader- and puller-only hosts (a Raspberry Pi by a camera)
need no 60 MB of FFmpeg. Without it every video fails with the install hint (see ``available``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

from PIL import Image, ImageStat

from agent.errors import ImageError, TransientError
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
# x264 speed/size trade-off for previews: veryfast is ~2x faster than medium for ~10 % more bytes at one CRF.
PRESET = "veryfast"


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


@dataclass(frozen=True)
class Preview:
    path: Path
    width: int
    height: int
    remuxed: bool  # copied packets, no re-encode


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
        raise _bad_file(exc) from exc
    try:
        yield container
    finally:
        container.close()


def _bad_file(exc: BaseException) -> ImageError:
    text = str(exc)
    low = text.lower()
    if "moov atom not found" in low or "end of file" in low or isinstance(exc, EOFError) or "truncat" in low:
        return ImageError(f"truncated video (the file ends early: {text}); upload the complete file again")
    if "invalid data" in low:
        return ImageError(f"not a video (no container FFmpeg recognises: {text})")
    return ImageError(f"corrupt video data ({text})")


def _video_stream(container: Any) -> Any:
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
        stream = _video_stream(container)
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
        stream = _video_stream(container)
        ctx = stream.codec_context
        check_pixels(ctx.width, ctx.height, max_pixels)
        try:
            best = _pick_frame(container, stream)
        except av.FFmpegError as exc:
            raise _bad_file(exc) from exc
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


# --- preview ------------------------------------------------------------------------------------------


def preview_refusal(info: VideoInfo, spec: VideoSpec) -> str | None:
    """Why no preview is made of this source, or None."""
    if spec.max_seconds and info.duration > spec.max_seconds:
        return f"video is {info.duration:.0f} s long, over video.max_seconds ({spec.max_seconds:.0f} s): no preview made"
    if info.width * info.height > spec.max_pixels:
        return f"video frame {info.width}x{info.height} exceeds video.max_pixels: no preview made"
    return None


def can_remux(info: VideoInfo, spec: VideoSpec) -> bool:
    """Already a small H.264 (+AAC) stream a browser plays: copy it into an MP4, no re-encode."""
    return (
        info.codec == "h264"
        and info.pix_fmt == "yuv420p"
        and info.display_size[1] <= spec.preview_height
        and info.audio_codec in (None, "aac")
    )


def preview_size(info: VideoInfo, height: int) -> tuple[int, int]:
    """Stored (unrotated) output size: the *displayed* height is at most ``height``; even sides for 4:2:0."""
    dw, dh = info.display_size
    if dh > height:
        dw, dh = max(2, round(dw * height / dh)), height
    dw, dh = dw - dw % 2 or 2, dh - dh % 2 or 2
    return (dh, dw) if info.rotation in (90, 270) else (dw, dh)


def make_preview(source: Path, dest: Path, spec: VideoSpec, *, stop: threading.Event | None = None) -> Preview:
    """Write the web preview of ``source`` to ``dest``. ImageError for a bad file or a refused job;
    TransientError when ``stop`` is set (shutdown) before it is done."""
    info = probe(source)
    refusal = preview_refusal(info, spec)
    if refusal:
        raise ImageError(refusal)
    try:
        if can_remux(info, spec):
            _remux(source, dest, stop)
            return Preview(dest, *info.display_size, remuxed=True)
        width, height = preview_size(info, spec.preview_height)
        _transcode(source, dest, info, width, height, spec, stop)
    except av.FFmpegError as exc:
        dest.unlink(missing_ok=True)
        raise _bad_file(exc) from exc
    except TransientError:
        dest.unlink(missing_ok=True)
        raise
    out_w, out_h = (height, width) if info.rotation in (90, 270) else (width, height)
    return Preview(dest, out_w, out_h, remuxed=False)


_MP4_OPTIONS = {"movflags": "+faststart"}


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise TransientError("preview interrupted by shutdown; it is made again at the next delivery")


def _remux(source: Path, dest: Path, stop: threading.Event | None = None) -> None:
    with av.open(str(source)) as src, av.open(str(dest), "w", format="mp4", options=_MP4_OPTIONS) as out:
        vin = _video_stream(src)
        ins = [vin] + ([src.streams.audio[0]] if src.streams.audio else [])
        outs = {s.index: out.add_stream_from_template(s) for s in ins}
        for packet in src.demux(ins):
            if packet.dts is None:
                continue  # demuxer flush packets
            _check_stop(stop)
            packet.stream = outs[packet.stream.index]
            out.mux(packet)


def _transcode(
    source: Path, dest: Path, info: VideoInfo, width: int, height: int, spec: VideoSpec, stop: threading.Event | None = None
) -> None:
    with av.open(str(source)) as src, av.open(str(dest), "w", format="mp4", options=_MP4_OPTIONS) as out:
        vin = _video_stream(src)
        vin.codec_context.thread_type = "AUTO"
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.codec_context.time_base = vin.time_base
        # threads: x264 keeps a lookahead of frames per thread; 2 keeps a 720p encode well inside the memory budget.
        vout.options = {"crf": str(spec.crf), "preset": PRESET, "threads": "2"}
        if info.rotation:
            vout.set_display_rotation(info.rotation)  # players turn it; re-rotating pixels would cost a copy per frame
        ain = src.streams.audio[0] if src.streams.audio else None
        aout = resampler = None
        if ain is not None:
            rate_hz = ain.codec_context.sample_rate if ain.codec_context.sample_rate in (44100, 48000) else 48000
            aout = out.add_stream("aac", rate=rate_hz)
            aout.layout = "stereo" if (ain.codec_context.layout.nb_channels or 2) >= 2 else "mono"
            aout.bit_rate = 128_000
            resampler = av.AudioResampler(format="fltp", layout=aout.layout, rate=rate_hz)
        start = vin.start_time or 0
        limit = math.ceil(spec.max_seconds / vin.time_base) + start if spec.max_seconds else None
        streams = [vin] + ([ain] if ain is not None else [])
        for packet in src.demux(streams):
            _check_stop(stop)
            try:
                frames = packet.decode()
            except av.FFmpegError:
                if packet.stream is vin:
                    raise
                continue  # a damaged audio packet: a moment of silence, not a failed preview
            for frame in frames:
                frame = cast(Any, frame)  # VideoFrame or AudioFrame by the packet's stream
                if packet.stream is vin:
                    if frame.pts is None:
                        continue
                    if limit is not None and frame.pts > limit:
                        raise ImageError(f"video runs past video.max_seconds ({spec.max_seconds:.0f} s): no preview made")
                    scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
                    scaled.pts, scaled.time_base = frame.pts - start, vin.time_base
                    # The source's frame type would be forced on x264 (an all-intra MJPEG source gave an all-keyframe
                    # preview, an ultrafast one no B-frames: twice the bytes at the same CRF): let x264 choose.
                    scaled.pict_type = av.video.frame.PictureType.NONE
                    out.mux(vout.encode(scaled))
                elif resampler is not None and aout is not None:
                    frame.pts = None
                    for chunk in resampler.resample(frame):
                        out.mux(aout.encode(chunk))
        out.mux(vout.encode(None))
        if aout is not None and resampler is not None:
            for chunk in resampler.resample(None):
                out.mux(aout.encode(chunk))
            out.mux(aout.encode(None))
