"""Benchmark of video posters and previews (agent.imaging.video) against the FFmpeg command line.

    python benchmarks/bench_video.py                 # ~3-5 min on 2 busy cores
    python benchmarks/bench_video.py --quick         # smaller clips, one repeat
    flags: --repeats R (3)  --large-seconds S (40)  --keep DIR (keep the generated clips there)

Needs PyAV (pip install 'thumbdrop[video]') and, as the anchor only, ``ffmpeg`` on PATH (Debian: apt-get
install ffmpeg). Clips are generated first with PyAV (x264/x265 ultrafast, VP9 realtime, MJPEG), with moving
noise so they are not trivially compressible.

1. Poster time per clip: ``make_poster_thumbnails(clip, ThumbnailSpec(sizes=(256,)))`` in-process, against
   ``ffmpeg -ss <10 %> -i clip -frames:v 1 -vf scale=256:256:force_original_aspect_ratio=decrease out.jpg``
   (input seeking: the same keyframe seek; the CLI's start-up is included in its figure, so its in-process
   cost is lower; ``-version`` start-up is printed to subtract). Median of R.
2. Preview encode speed of the 1080p H.264 clip to 720p (crf 23, x264 veryfast, AAC 128k, faststart) as a
   multiple of real time, against ``ffmpeg -i clip -vf scale=-2:720 -c:v libx264 -preset veryfast -crf 23
   -c:a aac -b:a 128k -movflags +faststart``. Median of R.
3. Peak RSS of a child process that makes a 1080p poster and a 720p preview, for the small 1080p clip and for
   a large one (--large-seconds of 1080p at high bitrate): memory does not grow with the file (the source is
   read packet by packet), so the large figure stands for a 2 GB source too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.imaging import ThumbnailSpec  # noqa: E402
from agent.imaging.video import VideoSpec, make_poster_thumbnails, probe  # noqa: E402
from agent.imaging.video_preview import make_preview  # noqa: E402

av.logging.set_level(av.logging.ERROR)


def generate(
    path: Path,
    codec: str,
    size: tuple[int, int],
    seconds: float,
    *,
    fps: int = 30,
    options: dict[str, str] | None = None,
    rotation: int = 0,
    audio: bool = False,
) -> Path:
    width, height = size
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 48, (height // 4, width // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    base = np.zeros((height, width, 3), np.uint8)
    base[:, :, 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
    base[:, :, 1] = np.linspace(0, 200, height, dtype=np.uint8)[:, None]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.options = dict(options or {})
        if rotation:
            stream.set_display_rotation(rotation)
        astream = out.add_stream("aac", rate=48000) if audio else None
        for n in range(int(seconds * fps)):
            frame_data = base + np.roll(noise, n * 7, axis=1)
            frame = av.VideoFrame.from_ndarray(frame_data, format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            samples = int(48000 * seconds)
            tone = (0.1 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000)).astype(np.float32)[None, :]
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 48000, start
                out.mux(astream.encode(chunk))
            out.mux(astream.encode(None))
    return path


def median_time(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-nostdin", *args], check=True)


CHILD = """
import json, sys, time
from pathlib import Path
from agent.imaging import ThumbnailSpec
from agent.imaging.video import VideoSpec, make_poster_thumbnails
from agent.imaging.video_preview import make_preview
src, out = Path(sys.argv[1]), Path(sys.argv[2])
t = time.perf_counter()
make_poster_thumbnails(src, ThumbnailSpec(sizes=(1080, 256)), out, max_pixels=10**9)
poster = time.perf_counter() - t
t = time.perf_counter()
p = make_preview(src, out / "preview.mp4", VideoSpec(preview=True, preview_height=720))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent (this script, with its clips).
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"poster": poster, "preview": time.perf_counter() - t, "remuxed": p.remuxed, "maxrss_mb": hwm / 1024}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-seconds", type=float, default=40.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.large_seconds = 1, 10.0
    if shutil.which("ffmpeg") is None:
        print("ffmpeg not on PATH (apt-get install ffmpeg): it is the anchor of this benchmark", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-video-"))
    work.mkdir(parents=True, exist_ok=True)
    secs = 4.0 if args.quick else 10.0
    print(f"PyAV {av.__version__} (FFmpeg libavcodec {av.library_versions['libavcodec']}); CLI: ", end="")
    print(subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0])
    fast = {"preset": "ultrafast", "crf": "18"}
    specs: dict[str, tuple[str, tuple[int, int], float, dict[str, Any]]] = {
        "h264-1080p.mp4": ("libx264", (1920, 1080), secs, {"options": fast, "audio": True}),
        "hevc-1080p.mov": ("libx265", (1920, 1080), secs / 2, {"options": {**fast, "x265-params": "log-level=error"}}),
        "vp9-720p.webm": ("libvpx-vp9", (1280, 720), secs / 2, {"options": {"deadline": "realtime", "cpu-used": "8"}}),
        "mjpeg-720p.avi": ("mjpeg", (1280, 720), secs / 2, {}),
        "phone-portrait-1080p.mov": ("libx264", (1920, 1080), secs / 2, {"options": fast, "rotation": 90}),
    }
    clips = {}
    t0 = time.perf_counter()
    for name, (codec, size, seconds, kw) in specs.items():
        clips[name] = generate(work / name, codec, size, seconds, **kw)
    print(f"generated {len(clips)} clips in {time.perf_counter() - t0:.0f} s in {work}\n")

    start_up = median_time(lambda: subprocess.run(["ffmpeg", "-version"], capture_output=True, check=True), 5)
    print(f"1. Poster (256 px, seek to 10 %), median of {args.repeats}; ffmpeg CLI start-up alone: {start_up * 1000:.0f} ms")
    print(f"   {'clip':28} {'size':>8} {'thumbdrop':>10} {'ffmpeg CLI':>11}")
    spec = ThumbnailSpec(sizes=(256,))
    for name, clip in clips.items():
        info = probe(clip)
        out = work / "out"
        ours = median_time(lambda c=clip, o=out: make_poster_thumbnails(c, spec, o, max_pixels=10**9), args.repeats)
        cli_poster = ["-ss", f"{info.duration * 0.10:.3f}", "-i", str(clip), "-frames:v", "1"]
        cli_poster += ["-vf", "scale=256:256:force_original_aspect_ratio=decrease", str(work / "p.jpg")]
        cli = median_time(lambda a=cli_poster: ffmpeg(*a), args.repeats)
        mb = clip.stat().st_size / 1e6
        print(f"   {name:28} {mb:6.1f}MB {ours * 1000:8.0f}ms {cli * 1000:9.0f}ms")

    src = clips["h264-1080p.mp4"]
    duration = probe(src).duration
    vspec = VideoSpec(preview=True, preview_height=720, crf=23)
    ours = median_time(lambda: make_preview(src, work / "ours.mp4", vspec), args.repeats)
    cli_args = ["-i", str(src), "-vf", "scale=-2:720", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23"]
    cli_args += ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(work / "cli.mp4")]
    cli = median_time(lambda: ffmpeg(*cli_args), args.repeats)
    print(f"\n2. Preview 1080p H.264 -> 720p (crf 23, veryfast), {duration:.0f} s clip, median of {args.repeats}")
    print(f"   thumbdrop: {ours:.2f} s = {duration / ours:.2f}x real time ({(work / 'ours.mp4').stat().st_size / 1e6:.1f} MB)")
    print(f"   ffmpeg CLI: {cli:.2f} s = {duration / cli:.2f}x real time ({(work / 'cli.mp4').stat().st_size / 1e6:.1f} MB)")

    large = generate(
        work / "large-1080p.mp4",
        "libx264",
        (1920, 1080),
        args.large_seconds,
        options={"preset": "ultrafast", "crf": "8"},
        audio=True,
    )
    print("\n3. Peak RSS of a child making a 1080p + 256 px poster and a 720p preview")
    for label, clip in (("small", src), ("large", large)):
        out = work / f"rss-{label}"
        out.mkdir(exist_ok=True)
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(clip), str(out)], capture_output=True, text=True, check=True, cwd=REPO
        )
        got = json.loads(res.stdout.strip().splitlines()[-1])
        mb = clip.stat().st_size / 1e6
        print(
            f"   {label:5} {mb:7.0f} MB, {probe(clip).duration:4.0f} s: peak RSS {got['maxrss_mb']:.0f} MB "
            f"(poster {got['poster']:.2f} s, preview {got['preview']:.1f} s)"
        )
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
