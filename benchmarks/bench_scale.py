"""Scale stages of bench_sync.py: a soak of N images through ``thumbdrop run``, and a reconcile of N local files
against N objects. Run through ``bench_sync.py --soak N`` / ``--reconcile N`` (or ``--only soak --soak N``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pipeline import SOURCE_BUCKET, Admin, MotoServer, config_data, stop_process, write_config  # noqa: E402

BATCH = 250  # images moved into the inbox at once (one folder: one event, then a scan)
BACKLOG = 750  # dropped but not yet thumbnailed locally: drop more only below this


def out(line: str = "") -> None:
    print(line, flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def count_files(folder: Path) -> int:
    return sum(len(files) for _d, _s, files in os.walk(folder)) if folder.is_dir() else 0


def make_small_jpegs(folder: Path, n: int) -> None:
    """n different 160x120 JPEGs in folders of BATCH, made from one encoded image with a changed comment."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (160, 120), (120, 80, 200)).save(buf, "JPEG", quality=80)
    base = buf.getvalue()
    for i in range(n):
        sub = folder / f"batch_{i // BATCH:04d}"
        if i % BATCH == 0:
            sub.mkdir(parents=True)
        # A JPEG comment segment right after SOI: a different file (and ETag) each, decoding the same.
        note = f"img {i}".encode()
        seg = b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note
        (sub / f"img_{i:06d}.jpg").write_bytes(base[:2] + seg + base[2:])


# --- soak ----------------------------------------------------------------------------------------------------------


def stage_soak(td: Any, server: MotoServer, tmp: Path, n: int) -> None:
    out(f"\n== soak: {n} small JPEGs through thumbdrop run, in folders of {BATCH} (backlog <= {BACKLOG}) ==")
    server.reset()
    staging, inbox, thumbs = tmp / "soak-staging", tmp / "soak-inbox", tmp / "soak-thumbs"
    make_small_jpegs(staging, n)
    inbox.mkdir()
    data = config_data(server.url, inbox, thumbs, tmp / "soak-state", watch={"settle_seconds": 0.5, "rescan_seconds": 0})
    cfg = write_config(tmp / "soak.yaml", data)
    log_path = tmp / "soak.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(td.argv(cfg, "run"), cwd=td.repo, env=td.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "thumbdrop agent running" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                out("   the agent did not start:\n" + log_path.read_text(errors="replace")[-2000:])
                return
            time.sleep(0.2)
        batches = sorted(staging.iterdir())
        dropped = 0
        marks: dict[int, tuple[float, float]] = {}  # thumbnails done -> (time, agent RSS MB)
        t0 = time.monotonic()
        last_progress, last_count = time.monotonic(), -1
        while True:
            done = count_files(thumbs)
            now = time.monotonic()
            if done != last_count:
                last_progress, last_count = now, done
            for mark in range(1000, n + 1, 1000):
                if done >= mark and mark not in marks:
                    marks[mark] = (now - t0, rss_mb(proc.pid))
            if n % 1000 and done >= n and n not in marks:
                marks[n] = (now - t0, rss_mb(proc.pid))
            if done >= n:
                break
            if now - last_progress > 120 or proc.poll() is not None:
                out(f"   stalled at {done}/{n}:\n" + log_path.read_text(errors="replace")[-2000:])
                break
            while batches and dropped - done < BACKLOG:
                b = batches.pop(0)
                b.rename(inbox / b.name)
                dropped += count_files(inbox / b.name)
            time.sleep(0.25)
        for mark, (t, rss) in sorted(marks.items()):
            out(f"   {mark:6d} thumbnails at {t:7.1f} s, agent RSS {rss:6.1f} MB")
        if 1000 in marks and n in marks and n >= 2000:
            first = 1000 / marks[1000][0]
            prev = max(m for m in marks if m <= n - 1000)
            last = (n - prev) / (marks[n][0] - marks[prev][0])
            out(f"   RSS growth image 1,000 -> {n:,}: {marks[n][1] - marks[1000][1]:+.1f} MB (target < 20 MB)")
            out(f"   throughput first 1,000: {first:.1f}/s, last 1,000: {last:.1f}/s: {last / first:.2f}x (target >= 0.9x)")
    finally:
        stop_process(proc, timeout=30)


# --- reconcile -----------------------------------------------------------------------------------------------------


def stage_reconcile(td: Any, server: MotoServer, tmp: Path, n: int) -> None:
    out(f"\n== reconcile: {n:,} local files against {n:,} objects (already uploaded) ==")
    server.reset()
    admin = Admin(server.url)
    admin.s3.create_bucket(Bucket=SOURCE_BUCKET)
    folder = tmp / "rec-files"
    keys = []
    for i in range(n):
        sub = folder / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i:07d}.jpg").write_bytes(f"file {i}\n".encode() * 8)
        keys.append(f"{sub.name}/f{i:07d}.jpg")
    past = time.time() - 60
    for p in folder.rglob("*.jpg"):
        os.utime(p, (past, past))
    t0 = time.monotonic()

    def put(key: str) -> None:
        admin.s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=(folder / key).read_bytes())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    out(f"   (set-up: {n:,} objects put in {time.monotonic() - t0:.0f} s)")
    data = config_data(server.url, folder, tmp / "rec-thumbs", tmp / "rec-state", roles=["uploader"])
    data["backend"]["auto_setup"] = False
    cfg = write_config(tmp / "rec.yaml", data)
    for label in ("first (empty journal: every file hashed)", "second (journal filled)"):
        res = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--reconcile-child", str(cfg)],
            cwd=td.repo,
            env=td.env,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            out(f"   {label}: failed\n{res.stderr[-3000:]}")
            return
        r = json.loads(res.stdout.strip().splitlines()[-1])
        reqs = ", ".join(f"{op} {k}" for op, k in sorted(r["requests"].items()))
        per_key = (r["peak_mb"] - r["base_mb"]) * 1024 * 1024 / n
        out(
            f"   {label}: {r['seconds']:.1f} s, {r['uploaded']} uploaded, requests: {reqs}; peak RSS {r['peak_mb']:.0f} MB "
            f"({r['base_mb']:.0f} MB before): {per_key:.0f} bytes per key at most"
        )


def reconcile_child(cfg_path: str) -> None:
    import resource
    from collections import Counter
    from concurrent.futures import wait

    from agent.cloud.clients import Backend
    from agent.config.loader import load_config
    from agent.pipeline.uploader import Uploader
    from agent.state.journal import Journal
    from agent.state.status import Status

    cfg = load_config(Path(cfg_path))
    backend = Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)
    calls: Counter[str] = Counter()
    backend.s3.meta.events.register("before-call.*.*", lambda event_name, **_k: calls.update([event_name.rsplit(".", 1)[-1]]))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    journal = Journal(Path(cfg.local.state_dir) / "journal.sqlite3")
    uploader = Uploader(cfg, backend, Status(cfg.roles), journal)
    t0 = time.monotonic()
    futures = uploader.reconcile()
    wait(futures)
    seconds = time.monotonic() - t0
    uploaded = sum(1 for f in futures if f.result() == "uploaded")
    uploader.pool.shutdown()
    journal.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "requests": dict(calls), "base_mb": base, "peak_mb": peak, "uploaded": uploaded}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--reconcile-child":
        reconcile_child(sys.argv[2])
    else:
        raise SystemExit("run through bench_sync.py --soak N / --reconcile N")
