"""Video previews (``video.preview``): H.264 (libx264) + AAC in an MP4 with ``faststart``, at most
``preview_height`` px high on screen, at ``crf``; a source that is already small H.264 (+AAC or no audio) is
remuxed, not re-encoded. Probing and the PyAV import are ``agent.imaging.video``'s.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

from agent.errors import ImageError, TransientError
from agent.imaging.video import VideoInfo, VideoSpec, av, bad_file, probe, video_stream

__all__ = ["Preview", "VideoSpec", "can_remux", "make_preview", "preview_refusal", "preview_size"]

# x264 speed/size trade-off for previews: veryfast is ~2x faster than medium for ~10 % more bytes at one CRF.
PRESET = "veryfast"


@dataclass(frozen=True)
class Preview:
    path: Path
    width: int
    height: int
    remuxed: bool  # copied packets, no re-encode


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
        raise bad_file(exc) from exc
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
        vin = video_stream(src)
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
        vin = video_stream(src)
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
