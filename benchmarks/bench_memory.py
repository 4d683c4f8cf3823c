"""Peak memory of the thumbnail worker with and without admission against worker.max_memory_mb (issue 14, item 16).

    python benchmarks/bench_memory.py                  # ~1-2 min on 2 cores; needs ~1.5 GB free
    python benchmarks/bench_memory.py --budget-mb 768  # the admission budget to test (default 768)

Generates its own images in a temp dir: 100 MP PNGs (10000 x 10000, RGB gradients with noise) and 24 MP JPEGs
(6000 x 4000), interleaved. Each variant runs in a fresh subprocess (so VmHWM, the peak RSS, is that variant's
alone) with 2 worker threads taking jobs from one list, as the worker with ``concurrency: 2`` does:

* single-png   one 100 MP PNG alone: the measured cost of one big job, next to its estimate
* single-jpeg  one 24 MP JPEG alone
* unbounded    the mix with no admission (what the agent did before)
* admitted     the mix admitted against --budget-mb (agent.pipeline.admission.make_admitted)

Reported: peak RSS, its growth over the process's baseline (imports done, before the first job), wall time,
and the ratio admitted / unbounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.imaging import ThumbnailSpec  # noqa: E402
from agent.imaging.memory import MIB, estimate  # noqa: E402
from agent.pipeline.admission import MemoryBudget, make_admitted  # noqa: E402

SPEC = ThumbnailSpec(sizes=(256,))
PNG_SIZE = (10_000, 10_000)
JPEG_SIZE = (6000, 4000)


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_images(folder: Path, pngs: int, jpegs: int) -> list[Path]:
    """``pngs`` 100 MP PNGs and ``jpegs`` 24 MP JPEGs (copies of one of each: same cost, quicker to make)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(14)

    def photo(w: int, h: int) -> Image.Image:
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
        r = (x * 0.7 + y * 0.3).astype(np.uint8)
        g = ((x + y) / 2).astype(np.uint8)
        b = np.broadcast_to((255 - x).astype(np.uint8), (h, w))
        rgb = np.dstack([np.broadcast_to(r, (h, w)), np.broadcast_to(g, (h, w)), b])
        rgb[:: max(1, h // 400)] ^= rng.integers(0, 32, (len(range(0, h, max(1, h // 400))), w, 3), dtype=np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb), "RGB")

    png = folder / "big-0.png"
    photo(*PNG_SIZE).save(png, "PNG", compress_level=1)
    jpg = folder / "photo-0.jpg"
    photo(*JPEG_SIZE).save(jpg, "JPEG", quality=88)
    out = []
    for i in range(max(pngs, jpegs)):
        if i < pngs:
            p = folder / f"big-{i}.png"
            if not p.exists():
                shutil.copyfile(png, p)
            out.append(p)
        if i < jpegs:
            j = folder / f"photo-{i}.jpg"
            if not j.exists():
                shutil.copyfile(jpg, j)
            out.append(j)
    return out


def child(mode: str, files: list[Path], budget_mb: int, out_dir: Path) -> dict[str, float]:
    """Run the jobs on 2 threads; return peak and baseline RSS (MB) and the wall time."""
    budget = MemoryBudget(budget_mb * MIB) if mode == "admitted" else None
    jobs = list(files)
    lock = threading.Lock()
    baseline = rss_kb("VmRSS") / 1024
    started = time.monotonic()

    def worker(n: int) -> None:
        while True:
            with lock:
                if not jobs:
                    return
                src = jobs.pop(0)
            make_admitted(budget, src, SPEC, out_dir / f"{n}-{src.stem}", src.name)

    threads = [threading.Thread(target=worker, args=(n,), name=f"bench-worker-{n}") for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "peak_mb": rss_kb("VmHWM") / 1024,
        "baseline_mb": baseline,
        "seconds": time.monotonic() - started,
        "budget_peak_mb": (budget.peak / MIB) if budget else 0.0,
    }


def run_child(mode: str, files: list[Path], budget_mb: int, tmp: Path) -> dict[str, float]:
    out = tmp / f"out-{mode}"
    out.mkdir(parents=True)
    argv = [sys.executable, __file__, "--child", mode, "--budget-mb", str(budget_mb), "--out", str(out), *map(str, files)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-mb", type=int, default=768)
    parser.add_argument("--pngs", type=int, default=3)
    parser.add_argument("--jpegs", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, [Path(f) for f in args.files], args.budget_mb, Path(args.out))))
        return

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as name:
        tmp = Path(name)
        t0 = time.monotonic()
        files = make_images(tmp, args.pngs, args.jpegs)
        print(f"made {args.pngs} x 100 MP PNG and {args.jpegs} x 24 MP JPEG in {time.monotonic() - t0:.0f} s (pid {os.getpid()})")
        png = next(f for f in files if f.suffix == ".png")
        jpg = next(f for f in files if f.suffix == ".jpg")
        for f in (png, jpg):
            est = estimate(f, SPEC)
            print(f"estimate {f.name}: {est.describe() if est else '?'}")
        rows = [
            ("single-png", [png]),
            ("single-jpeg", [jpg]),
            ("unbounded", files),
            ("admitted", files),
        ]
        results = {}
        print(f"\n{'variant':<12} {'jobs':>4} {'peak RSS':>9} {'growth':>8} {'time':>7}  budget")
        for mode, jobs in rows:
            r = results[mode] = run_child(mode if mode == "admitted" else "unbounded", jobs, args.budget_mb, tmp / mode)
            budget = f"{args.budget_mb} MB (most admitted {r['budget_peak_mb']:.0f} MB)" if mode == "admitted" else "-"
            print(
                f"{mode:<12} {len(jobs):>4} {r['peak_mb']:>6.0f} MB {r['peak_mb'] - r['baseline_mb']:>5.0f} MB "
                f"{r['seconds']:>6.1f}s  {budget}"
            )
        ratio = results["admitted"]["peak_mb"] / results["unbounded"]["peak_mb"]
        growth = (results["admitted"]["peak_mb"] - results["admitted"]["baseline_mb"]) / (
            results["unbounded"]["peak_mb"] - results["unbounded"]["baseline_mb"]
        )
        slower = results["admitted"]["seconds"] / results["unbounded"]["seconds"]
        print(f"\nadmitted / unbounded: peak RSS x{ratio:.2f}, growth x{growth:.2f}, time x{slower:.2f}")


if __name__ == "__main__":
    main()
