"""Benchmark of thumbdrop's thumbnail engine against naive Pillow, the JPEG decode floor and pyvips.

    python benchmarks/bench_thumbnails.py            # ~2-3 min on 2 cores
    python benchmarks/bench_thumbnails.py --quick    # fewer runs and rounds, noisier

Needs numpy (image generation, PSNR); pyvips rows appear when ``pyvips[binary]`` is installed.

Generates its own photo-like images (gradients, hard edges, noise) in a temp dir, then for each image and
variant runs a fresh subprocess (so peak RSS, read from VmHWM, belongs to that variant alone) and reports the
median ms/image (and the fastest run: on a shared machine the minimum shows the cost without other tenants'
noise). Ratios use medians. Variants:

* naive       Image.open(); thumbnail((S, S)); save JPEG q85 (what a first version would do)
* engine      agent.imaging.make_thumbnails, JPEG q85, engine="pillow"
* engine-vips agent.imaging.make_thumbnails, engine="pyvips" (when pyvips is installed)
* vips        raw pyvips.Image.thumbnail + JPEG q85, no extra checks (when pyvips is installed)
* floor       JPEG only: decode at 1/8 DCT scale and nothing else; no JPEG thumbnailer can beat it by much
* draft       JPEG only: decode at the DCT scale the engine picks, nothing else (engine minus this = overhead)

PSNR compares the engine's output (written as lossless PNG for this) with a full-resolution decode resized
with LANCZOS to the same size, so it measures the draft/reduce shortcuts, not JPEG encoding.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import PIL
from PIL import Image, ImageOps

try:
    import numpy as np
except ImportError:
    sys.exit("bench_thumbnails.py needs numpy: pip install numpy")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.imaging import ThumbnailSpec, make_thumbnails  # noqa: E402
from agent.imaging.decode import DRAFT_MARGIN  # noqa: E402
from agent.imaging.spec import fit_size  # noqa: E402

BOUND = 256  # the default thumbnails.sizes


@dataclass(frozen=True)
class Sample:
    name: str
    file: str
    width: int
    height: int
    kind: str  # jpeg | png | webp
    orientation: int = 1
    alpha: bool = False


SAMPLES = (
    Sample("24 MP JPEG", "24mp.jpg", 6000, 4000, "jpeg"),
    Sample("2 MP JPEG", "2mp.jpg", 1632, 1224, "jpeg"),
    Sample("12 MP JPEG orient 6", "12mp-o6.jpg", 4000, 3000, "jpeg", orientation=6),
    Sample("12 MP RGBA PNG", "12mp-rgba.png", 4000, 3000, "png", alpha=True),
    Sample("17 MP WebP", "17mp.webp", 5056, 3360, "webp"),
)


# --- test images ----------------------------------------------------------------------------------------------


def photo_like(width: int, height: int, seed: int, alpha: bool = False) -> Image.Image:
    """Smooth gradients and waves, 40 hard-edged blocks and sensor-like noise: compresses like a photo."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    planes = [180 * (0.6 * x + 0.4 * y) + 35 * np.sin(2 * np.pi * (x * (4 + c) + y * (2 + c))) + 20 for c in range(3)]
    img = np.stack(planes, axis=-1)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(width // 40, width // 5)), y0 + int(rng.integers(height // 40, height // 5))
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * 0.4 + rng.uniform(0, 150, 3).astype(np.float32)
    img += rng.integers(-10, 11, size=(height, width, 1), dtype=np.int8)
    pixels = np.clip(img, 0, 255).astype(np.uint8)
    if not alpha:
        return Image.fromarray(pixels, "RGB")
    a = np.clip(1.6 - 2.2 * np.hypot(x - 0.5, y - 0.5), 0.0, 1.0) * 255
    return Image.fromarray(np.dstack([pixels, np.broadcast_to(a, (height, width)).astype(np.uint8)]), "RGBA")


def generate(folder: Path) -> None:
    for seed, s in enumerate(SAMPLES):
        path = folder / s.file
        if s.orientation in (5, 6, 7, 8):  # stored sideways, as a camera held upright writes it
            im = photo_like(s.width, s.height, seed).transpose(Image.Transpose.ROTATE_90)
        else:
            im = photo_like(s.width, s.height, seed, alpha=s.alpha)
        if s.kind == "jpeg":
            exif = Image.Exif()
            exif[0x0112] = s.orientation
            im.save(path, "JPEG", quality=90, exif=exif.tobytes())
        elif s.kind == "png":
            im.save(path, "PNG", compress_level=3)
        else:
            im.save(path, "WEBP", quality=85, method=2)


# --- variants (run in a child process) ----------------------------------------------------------------------


def _naive(path: Path, out: Path) -> None:
    im = Image.open(path)
    im.thumbnail((BOUND, BOUND))
    (im if im.mode in ("RGB", "L") else im.convert("RGB")).save(out / "naive.jpg", "JPEG", quality=85)


def _engine(path: Path, out: Path) -> None:
    make_thumbnails(path, ThumbnailSpec(sizes=(BOUND,)), out)


def _engine_vips(path: Path, out: Path) -> None:
    make_thumbnails(path, ThumbnailSpec(sizes=(BOUND,), engine="pyvips"), out)


def _vips(path: Path, out: Path) -> None:
    import pyvips

    pyvips.Image.thumbnail(str(path), BOUND, size="down").write_to_file(str(out / "vips.jpg"), Q=85)


def _floor(path: Path, out: Path) -> None:
    im = Image.open(path)
    im.draft(None, (im.width // 8, im.height // 8))
    im.load()


def _draft(path: Path, out: Path) -> None:
    im = Image.open(path)
    tw, th = fit_size(im.width, im.height, BOUND)
    im.draft(None, (math.ceil(tw * DRAFT_MARGIN), math.ceil(th * DRAFT_MARGIN)))
    im.load()


VARIANTS: dict[str, Callable[[Path, Path], None]] = {
    "naive": _naive,
    "engine": _engine,
    "engine-vips": _engine_vips,
    "vips": _vips,
    "floor": _floor,
    "draft": _draft,
    "baseline": lambda path, out: None,
}


def child(variant: str, path: Path, runs: int) -> None:
    """Run one variant `runs` times after a warm-up; print JSON with the times and this process's peak RSS."""
    if variant in ("vips", "engine-vips"):
        import pyvips

        pyvips.cache_set_max(0)  # the operation cache would serve repeated runs from memory
        pyvips.concurrency_set(1)  # one core per image, like the engine: the worker's threads use the others
    func = VARIANTS[variant]
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 1):
            start = time.perf_counter()
            func(path, Path(tmp))
            if i:
                times.append(time.perf_counter() - start)
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"times": times, "peak_kb": hwm}))


def run_child(variant: str, path: Path, runs: int) -> tuple[list[float], float]:
    """Times (s) and peak RSS (MB) of `variant` run `runs` times on `path` in a fresh interpreter."""
    cmd = [sys.executable, __file__, "--child", variant, str(path), str(runs)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return data["times"], data["peak_kb"] / 1024


def measure_all(variants: list[str], path: Path, rounds: int, runs: int) -> dict[str, tuple[float, float, float]]:
    """{variant: (median ms/image, min ms/image, peak RSS MB)}. Variants are interleaved round by round, so a slow
    spell of a shared machine hits all of them alike instead of whichever happened to run then."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    peaks: dict[str, float] = dict.fromkeys(variants, 0.0)
    for _ in range(rounds):
        for v in variants:
            t, peak = run_child(v, path, runs)
            times[v] += t
            peaks[v] = max(peaks[v], peak)
    return {v: (statistics.median(times[v]) * 1000, min(times[v]) * 1000, peaks[v]) for v in variants}


def cpu_scaling() -> float:
    """How much faster two processes finish two pure-CPU jobs than one process finishes them: this machine's
    real parallelism right now (shared hosts may give less than their core count), to read throughput against."""
    cmd = [sys.executable, "-c", "total = 0\nfor i in range(15_000_000):\n    total += i\n"]
    start = time.perf_counter()
    for _ in range(2):
        subprocess.run(cmd, check=True)
    serial = time.perf_counter() - start
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd) for _ in range(2)]
    for proc in procs:
        proc.wait()
    return serial / (time.perf_counter() - start)


# --- quality and throughput ----------------------------------------------------------------------------------


def psnr(path: Path, workdir: Path, engine: str = "pillow") -> float:
    """PSNR (dB) of the engine's lossless output vs a full-resolution LANCZOS resize to the same size.

    Compared premultiplied (RGB scaled by alpha), i.e. as it looks: the colour of a nearly transparent pixel is
    invisible and numerically unstable, and would otherwise dominate the error of an RGBA image.
    """
    thumb = make_thumbnails(path, ThumbnailSpec(sizes=(BOUND,), format="png", engine=engine), workdir)[0]
    with Image.open(thumb.path) as out_im:
        out = premultiplied(out_im.convert("RGBA"))
    with Image.open(path) as full:
        upright = ImageOps.exif_transpose(full) or full
        ref = premultiplied(upright.resize((thumb.width, thumb.height), Image.Resampling.LANCZOS).convert("RGBA"))
    mse = float(np.mean((ref - out) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def premultiplied(im: Image.Image) -> np.ndarray:
    pixels = np.asarray(im, dtype=np.float64).copy()
    pixels[..., :3] *= pixels[..., 3:4] / 255
    return pixels


def draft_scale(path: Path) -> tuple[int, tuple[int, int]]:
    """The DCT scale denominator (1, 2, 4, 8) the engine decodes a JPEG at, and the decoded size."""
    with Image.open(path) as im:
        tw, th = fit_size(im.width, im.height, BOUND)
        request = (math.ceil(tw * DRAFT_MARGIN), math.ceil(th * DRAFT_MARGIN))
        scale = min(im.width // request[0], im.height // request[1])
        denominator = next(d for d in (8, 4, 2, 1) if scale >= d)
        return denominator, (math.ceil(im.width / denominator), math.ceil(im.height / denominator))


def throughput(paths: list[Path], threads: int, workdir: Path) -> float:
    """Images per second with `threads` threads calling make_thumbnails concurrently."""

    def one(job: tuple[int, Path]) -> None:
        i, p = job
        make_thumbnails(p, ThumbnailSpec(sizes=(BOUND,)), workdir / f"t{threads}-{i}")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, enumerate(paths)))
    return len(paths) / (time.perf_counter() - start)


# --- report ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and rounds (noisier numbers)")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "PATH", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), int(args.child[2]))
        return
    rounds, runs = (2, 2) if args.quick else (4, 2)
    try:
        import pyvips

        vips_version = f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    except (ImportError, OSError):
        vips_version = ""
    vips_engine = bool(vips_version) and importlib.util.find_spec("agent.imaging.vips") is not None

    with tempfile.TemporaryDirectory(prefix="thumbdrop-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        generate(folder)
        print(f"generated {len(SAMPLES)} images in {time.perf_counter() - start:.1f} s; bound {BOUND}px, JPEG q85 out")
        print(f"Pillow {PIL.__version__}; pyvips: {vips_version or 'not installed'}; {os.cpu_count()} cores")
        _, base_mb = run_child("baseline", folder / SAMPLES[0].file, 1)
        print(f"interpreter + imports baseline peak RSS: {base_mb:.0f} MB")
        header = f"{'image':<21}{'variant':<12}{'ms/img':>8}{'(min)':>8}{'peak MB':>9}{'vs naive':>10}{'vs floor':>10}"
        print(header)
        print("-" * len(header))
        worst_naive = worst_naive_min = worst_floor = worst_draft = 0.0
        min_psnr = math.inf
        floor_notes = []
        for s in SAMPLES:
            path = folder / s.file
            variants = ["naive", "engine"]
            if vips_version:
                variants += ["vips", "engine-vips"] if vips_engine else ["vips"]
            if s.kind == "jpeg":
                variants += ["floor", "draft"]
            results = measure_all(variants, path, rounds, runs)
            naive_ms = results["naive"][0]
            floor_ms = results["floor"][0] if "floor" in results else None
            for v, (ms, fastest, mb) in results.items():
                vs_floor = f"{ms / floor_ms:.2f}x" if floor_ms else "-"
                print(f"{s.name:<21}{v:<12}{ms:>8.1f}{fastest:>8.1f}{mb:>9.0f}{ms / naive_ms:>9.2f}x{vs_floor:>10}")
            engine_ms = results["engine"][0]
            worst_naive = max(worst_naive, engine_ms / naive_ms)
            worst_naive_min = max(worst_naive_min, results["engine"][1] / results["naive"][1])
            if floor_ms:
                denominator, decoded = draft_scale(path)
                vs_draft = engine_ms / results["draft"][0]
                worst_draft = max(worst_draft, vs_draft)
                size = f"{decoded[0]}x{decoded[1]}"
                note = f"engine decodes at 1/{denominator} ({size}): {vs_draft:.2f}x that decode alone"
                if denominator == 8:
                    worst_floor = max(worst_floor, engine_ms / floor_ms)
                else:
                    note += "; 1/8 would be smaller than the thumbnail needs, so the floor is out of reach"
                    floor_notes.append(f"{s.name} {engine_ms / floor_ms:.2f}x")
                print(f"{s.name:<21}{note}")
            quality = psnr(path, folder / "psnr" / s.file)
            min_psnr = min(min_psnr, quality)
            line = f"PSNR engine vs full-res LANCZOS: {quality:.1f} dB"
            if vips_engine and s.kind in ("png", "webp"):
                line += f", engine-vips {psnr(path, folder / 'psnr-vips' / s.file, 'pyvips'):.1f} dB"
            print(f"{s.name:<21}{line}")

        jobs = [folder / s.file for s in SAMPLES] * 2
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(1 if args.quick else 2):  # interleaved, like the variants above
            for threads in (1, 2):
                rates[threads].append(throughput(jobs, threads, folder / "tp"))
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        machine = cpu_scaling()
        print(
            f"throughput ({len(jobs)} mixed images): 1 thread {one:.2f} img/s, 2 threads {two:.2f} img/s "
            f"= {two / one:.2f}x (this machine's 2-process CPU scaling right now: {machine:.2f}x)"
        )
        unreachable = f" (not counted, floor below thumbnail size: {', '.join(floor_notes)})" if floor_notes else ""
        print(
            f"SUMMARY: engine vs naive worst {worst_naive:.2f}x (by min {worst_naive_min:.2f}x); JPEG engine vs 1/8 floor worst {worst_floor:.2f}x"
            f"{unreachable}, vs its own draft decode worst {worst_draft:.2f}x; min PSNR {min_psnr:.1f} dB; "
            f"2 threads {two / one:.2f}x of 1"
        )


if __name__ == "__main__":
    main()
