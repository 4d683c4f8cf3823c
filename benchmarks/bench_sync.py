"""Benchmark of ``thumbdrop sync`` against the serial pipeline and aws-cli, idle CPU, start-up, soak and reconcile.

    python benchmarks/bench_sync.py --quick            # a few minutes on 2 busy cores
    python benchmarks/bench_sync.py                    # the issue's sizes (40 camera JPEGs, 1,000 small ones)
    python benchmarks/bench_sync.py --only idle,noop   # some stages only
    python benchmarks/bench_sync.py --agent-repo DIR   # time another checkout's agent package (a "before" figure)
    flags: --camera N (40)  --small N (1000)  --idle-seconds S (60)  --soak N (0: off; 10000 for the issue's soak)
           --reconcile N (0: off; 100000 for the issue's reconcile)
           --repeats N (3: alternating serial/sync runs of the camera stage)  --small-repeats N (1)

Everything runs against one moto server that this script starts (``python -m agent.cloud.local_server``, the
embedded backend's server) on 127.0.0.1, reset before every run. Every figure is a ratio against an anchor
measured in the same run:

* camera / small: ``thumbdrop sync`` (the command, start-up included, fresh state dir, one size 256) against the
  serial pipeline: the seed's script made to work (``upload_file`` each file; one consumer receiving up to 5
  messages with ``download_file`` / ``Image.thumbnail`` / ``upload_file`` / ``delete_message``; then a serial
  download of every thumbnail). Both see the same photos, the same server, S3 notifications to an SQS queue.
* noop: ``thumbdrop sync`` again with nothing to do, against ``aws s3 sync`` with nothing to do, both as commands.
* uploads: ``thumbdrop sync`` with roles [uploader] against ``aws s3 sync``, 1,000 files of 50 KB, both commands
  into the same plain bucket (no notifications), alternating, medians of 3; also 1-file runs of each, so the
  per-file figures show without start-up. aws-cli is the real script (a pyenv shim is resolved, not billed).
* idle: ``thumbdrop run`` on the embedded backend with nothing to do: CPU of the agent process alone and of its
  moto child, over the window, from /proc.
* startup: ``python -X importtime -m agent --help`` total import time, and the wall time of ``thumbdrop --version``.
* soak (--soak N): ``thumbdrop run`` takes N small JPEGs dropped in batches; RSS of the agent, and its CPU and the
  moto server's per image, every 500 images; throughput of the first and the last thousand.
* reconcile (--reconcile N): N local files against N objects (already uploaded; loaded through moto's backend
  API in a second moto server process, since N PUTs over HTTP take ~10 min at 100,000), the reconcile over HTTP:
  its time, CPU per file, requests (counted with a botocore event hook) and peak RSS (ru_maxrss of a child that
  does only that); run twice (empty journal, then filled).
* moto (--only moto): the moto server's CPU per PUT into a notified bucket and per receive+delete, against its
  bucket size and queue depth (--moto-growth OBJECTS:MESSAGES,...): whose is a soak's decline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pipeline import (  # noqa: E402
    DUMMY_CREDENTIALS,
    EVENTS_QUEUE,
    SOURCE_BUCKET,
    THUMBS_BUCKET,
    Admin,
    MotoServer,
    config_data,
    isolate_environment,
    proc_cpu_seconds,
    stop_process,
    write_config,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def out(line: str = "") -> None:
    print(line, flush=True)


# --- data ----------------------------------------------------------------------------------------------------------


def make_photos(folder: Path, n: int, size: tuple[int, int], quality: int = 88) -> None:
    """n different photo-like JPEGs (gradient + noise); a tile of noise keeps it fast to make at 12 MP."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    w, h = size
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    tile = rng.normal(0, 12, size=(256, 256, 3)).astype(np.float32)
    noise = np.tile(tile, (h // 256 + 1, w // 256 + 1, 1))[:h, :w]
    for i in range(n):
        tint = np.array([1.0, 0.5 + (i % 50) * 0.01, 0.6], dtype=np.float32)
        img = np.clip(200 * (0.6 * x + 0.4 * y) * tint + 25 + np.roll(noise, i * 7, axis=1), 0, 255).astype(np.uint8)
        Image.fromarray(img, "RGB").save(folder / f"img_{i:05d}.jpg", "JPEG", quality=quality)
    # Old enough to be settled for the agent (settle_seconds) without waiting.
    past = time.time() - 60
    for p in folder.iterdir():
        os.utime(p, (past, past))


# --- the serial anchor ---------------------------------------------------------------------------------------------


def serial_command(url: str, inbox: Path, thumbs: Path) -> tuple[float, float]:
    """The serial pipeline as a command of its own, like ``thumbdrop sync``: (wall, client CPU), start-up included."""
    before = os.times()
    t0 = time.monotonic()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serial-child", url, str(inbox), str(thumbs)]
    subprocess.run(argv, check=True, cwd=ROOT)
    wall = time.monotonic() - t0
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def serial_pipeline(url: str, inbox: Path, thumbs: Path, size: int = 256) -> tuple[float, float]:
    """The seed's pipeline made to work; returns (wall seconds, client CPU seconds)."""
    t0, c0 = time.monotonic(), time.process_time()
    import boto3
    import botocore.config
    from PIL import Image

    config = botocore.config.Config(s3={"addressing_style": "path"})
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=config)
    sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1", config=config)
    q_url = sqs.get_queue_url(QueueName=EVENTS_QUEUE)["QueueUrl"]
    files = sorted(f for f in inbox.iterdir() if f.suffix == ".jpg")  # not the folder marker a sync run left there
    for f in files:
        s3.upload_file(str(f), SOURCE_BUCKET, f.name)
    done = 0
    work = Path(tempfile.mkdtemp(prefix="serial-"))
    while done < len(files):
        resp = sqs.receive_message(QueueUrl=q_url, MaxNumberOfMessages=5, WaitTimeSeconds=20)
        for msg in resp.get("Messages", []):
            body = json.loads(msg["Body"])
            for rec in body.get("Records", []):
                from urllib.parse import unquote_plus

                key = unquote_plus(rec["s3"]["object"]["key"])
                local = work / key
                s3.download_file(SOURCE_BUCKET, key, str(local))
                with Image.open(local) as img:
                    img.draft("RGB", (size, size))
                    img.thumbnail((size, size))
                    img.convert("RGB").save(work / f"t_{key}", "JPEG", quality=85)
                s3.upload_file(str(work / f"t_{key}"), THUMBS_BUCKET, key)
                local.unlink()
                done += 1
            sqs.delete_message(QueueUrl=q_url, ReceiptHandle=msg["ReceiptHandle"])
    thumbs.mkdir(parents=True, exist_ok=True)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=THUMBS_BUCKET):
        for obj in page.get("Contents", []):
            s3.download_file(THUMBS_BUCKET, obj["Key"], str(thumbs / obj["Key"]))
    shutil.rmtree(work, ignore_errors=True)
    return time.monotonic() - t0, time.process_time() - c0


def setup_serial(admin: Admin, server: MotoServer) -> None:
    server.reset()
    admin.s3.create_bucket(Bucket=SOURCE_BUCKET)
    admin.s3.create_bucket(Bucket=THUMBS_BUCKET)
    admin.notify_queue(SOURCE_BUCKET, EVENTS_QUEUE)


# --- thumbdrop as a command ----------------------------------------------------------------------------------------


class Thumbdrop:
    def __init__(self, repo: Path, tmp: Path) -> None:
        self.repo = repo
        self.env = dict(os.environ, PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="0")
        self.tmp = tmp

    def argv(self, cfg: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "agent", "--config", str(cfg), *args]

    def timed(self, cfg: Path, *args: str, timeout: float = 3600) -> tuple[float, float, subprocess.CompletedProcess[str]]:
        """(wall, client CPU of the command and its children) of one command."""
        before = os.times()
        t0 = time.monotonic()
        res = subprocess.run(self.argv(cfg, *args), cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=timeout)
        wall = time.monotonic() - t0
        after = os.times()
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        return wall, cpu, res


def sync_config(tmp: Path, name: str, url: str, inbox: Path, **extra: Any) -> tuple[Path, Path]:
    thumbs = tmp / f"{name}-thumbs"
    state = tmp / f"{name}-state"
    data = config_data(url, inbox, thumbs, state, **extra)
    data.setdefault("watch", {})["rescan_seconds"] = 0
    if os.environ.get("BENCH_WORKERS"):
        data["worker"] = {"concurrency": int(os.environ["BENCH_WORKERS"])}
    return write_config(tmp / f"{name}.yaml", data), thumbs


def count_files(folder: Path) -> int:
    return sum(len(files) for _d, _s, files in os.walk(folder)) if folder.is_dir() else 0


def stage_pipeline(
    args: argparse.Namespace,
    td: Thumbdrop,
    server: MotoServer,
    admin: Admin,
    tmp: Path,
    name: str,
    n: int,
    size: tuple[int, int],
    repeats: int = 1,
) -> dict[str, float]:
    """The serial pipeline and ``thumbdrop sync`` on the same photos, alternating ``repeats`` times; medians."""
    inbox = tmp / f"{name}-inbox"
    out(f"\n== {name}: {n} JPEGs of {size[0]}x{size[1]}, {repeats} alternating run(s) of each, medians ==")
    make_photos(inbox, n, size)
    mb = sum(p.stat().st_size for p in inbox.iterdir()) / 1e6
    out(f"   {mb:.1f} MB in all")
    serial: list[tuple[float, float, float]] = []
    synced: list[tuple[float, float, float]] = []
    cfg, thumbs = Path(), Path()
    for i in range(repeats):
        setup_serial(admin, server)
        m0 = server.cpu() or 0.0
        s_wall, s_cpu = serial_command(server.url, inbox, tmp / f"{name}-serial-thumbs-{i}")
        serial.append((s_wall, s_cpu, (server.cpu() or 0.0) - m0))
        if count_files(tmp / f"{name}-serial-thumbs-{i}") != n:
            out("   (the serial pipeline did not bring every thumbnail back)")
        server.reset()
        cfg, thumbs = sync_config(tmp, f"{name}-{i}" if i else name, server.url, inbox)
        m0 = server.cpu() or 0.0
        wall, cpu, res = td.timed(cfg, "sync")
        synced.append((wall, cpu, (server.cpu() or 0.0) - m0))
        got = count_files(thumbs)
        out(
            f"   run {i + 1}: serial {s_wall:6.2f} s, sync {wall:6.2f} s ({wall and s_wall / wall:.2f}x; "
            f"rc {res.returncode}, {got}/{n} thumbnails)"
        )
        if res.returncode != 0:
            out(res.stdout[-2000:] + res.stderr[-2000:])

    def median(rows: list[tuple[float, float, float]], k: int) -> float:
        return sorted(r[k] for r in rows)[len(rows) // 2]

    s_wall, s_cpu, s_srv = (median(serial, k) for k in range(3))
    wall, cpu, srv = (median(synced, k) for k in range(3))
    out(f"   serial pipeline : {s_wall:7.2f} s, client CPU {s_cpu / n * 1000:6.1f} ms/image, server CPU {s_srv:.1f} s")
    out(f"   thumbdrop sync  : {wall:7.2f} s, client CPU {cpu / n * 1000:6.1f} ms/image, server CPU {srv:.1f} s")
    ratio = s_wall / wall
    out(f"   ratio (serial wall / sync wall): {ratio:.2f}x; client CPU per image sync/serial: {cpu / max(s_cpu, 1e-9):.2f}x")
    total_cpu = cpu + srv
    out(
        f"   2-core arithmetic: sync used {total_cpu:.1f} CPU-s (client {cpu:.1f} + server {srv:.1f}) in {wall:.1f} s "
        f"= {total_cpu / wall:.2f} cores busy; floor on 2 cores = {total_cpu / 2:.1f} s "
        f"-> best possible ratio {s_wall / max(total_cpu / 2, 1e-9):.2f}x"
    )
    return {"serial": s_wall, "sync": wall, "ratio": ratio, "cfg": str(cfg), "thumbs": str(thumbs)}  # type: ignore[dict-item]


def stage_noop(td: Thumbdrop, server: MotoServer, tmp: Path, cfg: Path, inbox: Path) -> None:
    out("\n== no-op sync (the small set again) ==")
    walls = []
    for _ in range(3):
        wall, cpu, res = td.timed(cfg, "sync")
        walls.append(wall)
        if res.returncode != 0 or not re.search(r" 0 uploaded, 0 thumbnailed, 0 pulled", res.stdout):
            out(f"   unexpected: rc {res.returncode}: {res.stdout[-500:]} {res.stderr[-1500:]}")
    t = sorted(walls)[1]
    out(f"   thumbdrop sync (no-op): median {t:.2f} s of {[round(w, 2) for w in walls]}")
    aws = aws_binary()
    if aws is None:
        out("   aws-cli not found (pip install awscli): no anchor")
        return
    argv = [aws, "--endpoint-url", server.url, "s3", "sync", str(inbox), f"s3://{SOURCE_BUCKET}/", "--only-show-errors"]
    subprocess.run(argv, check=True, capture_output=True)  # makes it a no-op
    a_walls = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        a_walls.append(time.monotonic() - t0)
    a = sorted(a_walls)[1]
    out(f"   aws s3 sync (no-op): median {a:.2f} s of {[round(w, 2) for w in a_walls]}")
    out(f"   ratio thumbdrop / aws: {t / a:.2f}x (target <= 0.6x)")


def aws_binary() -> str | None:
    """aws-cli next to this interpreter or on PATH; a pyenv shim is resolved to the real script, so that neither the
    shim's bash nor ``pyenv exec`` (~0.1 s of CPU a call here) is billed to aws-cli."""
    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    if aws and "/shims/" in aws and shutil.which("pyenv"):
        real = subprocess.run(["pyenv", "which", "aws"], capture_output=True, text=True).stdout.strip()
        aws = real or aws
    return aws


def stage_uploads(td: Thumbdrop, server: MotoServer, admin: Admin, tmp: Path, n: int) -> None:
    """Uploads alone: ``thumbdrop sync`` with roles [uploader] (it ends once everything is up) vs ``aws s3 sync``.

    Both commands, start-up included, into the same plain bucket (no notifications: a notified moto bucket makes
    every PUT slower as its queue fills), alternating, medians of 3. Also 1-file runs of each, so that the per-file
    cost (N files minus 1 file) shows apart from start-up."""
    from bench_pipeline import make_upload_files

    out(f"\n== uploads: {n} files of 50 KB, plain bucket (no notifications), commands with start-up ==")
    folder, one = tmp / "uploads", tmp / "uploads-one"
    make_upload_files(folder, n)
    make_upload_files(one, 1)
    past = time.time() - 60
    for p in [*folder.iterdir(), *one.iterdir()]:
        os.utime(p, (past, past))
    aws = aws_binary()
    out(f"   aws-cli: {aws}")
    rows: dict[tuple[str, int], list[tuple[float, float, float]]] = {}

    def run(who: str, files: Path, count: int, i: int) -> None:
        if who == "thumbdrop":
            admin.fresh(server, thumbs_bucket=True, queues=True)
            data = config_data(server.url, files, tmp / "up-thumbs", tmp / f"up-state-{count}-{i}", roles=["uploader"])
            data["backend"]["auto_setup"] = False
            argv = td.argv(write_config(tmp / f"up-{count}-{i}.yaml", data), "sync")
        else:
            assert aws is not None
            admin.fresh(server)
            argv = [aws, "--endpoint-url", server.url, "s3", "sync", str(files), f"s3://{SOURCE_BUCKET}/", "--only-show-errors"]
        before, s0 = os.times(), server.cpu() or 0.0
        t0 = time.monotonic()
        res = subprocess.run(argv, cwd=td.repo, env=td.env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        after, s1 = os.times(), server.cpu() or 0.0
        if res.returncode != 0 or admin.count() < count:
            out(f"   {who}: rc {res.returncode}, {admin.count()}/{count} up: {res.stdout[-300:]} {res.stderr[-800:]}")
        cpu = after.children_user - before.children_user + after.children_system - before.children_system
        rows.setdefault((who, count), []).append((wall, cpu, s1 - s0))

    whos = ["thumbdrop"] + (["aws"] if aws else [])
    for i in range(3 if n <= 1000 else 1):
        for who in whos:
            run(who, folder, n, i)
            run(who, one, 1, i)

    def median(who: str, count: int) -> tuple[float, float, float]:
        runs = rows[(who, count)]
        return tuple(sorted(r[k] for r in runs)[len(runs) // 2] for k in range(3))  # type: ignore[return-value]

    for who in whos:
        wall, cpu, srv = median(who, n)
        w1, c1, _s1 = median(who, 1)
        out(
            f"   {who:<10}: median {wall:6.2f} s = {n / wall:6.0f} files/s, client CPU {cpu / n * 1000:5.2f} ms/file, "
            f"server CPU {srv / n * 1000:5.2f} ms/file; 1 file: {w1:.2f} s, client CPU {c1:.2f} s; "
            f"without start-up: {(n - 1) / max(wall - w1, 1e-3):6.0f} files/s, client CPU {(cpu - c1) / (n - 1) * 1000:5.2f} ms/file"
        )
    if aws:
        t, a = median("thumbdrop", n), median("aws", n)
        t1, a1 = median("thumbdrop", 1), median("aws", 1)
        out(f"   files/s thumbdrop / aws: {a[0] / t[0]:.2f}x (target >= 1.2x); CPU per file: {t[1] / a[1]:.2f}x (target <= 0.7x)")
        out(
            f"   without start-up (N files minus 1 file): files/s {(a[0] - a1[0]) / max(t[0] - t1[0], 1e-3):.2f}x, "
            f"CPU per file {(t[1] - t1[1]) / max(a[1] - a1[1], 1e-3):.2f}x; start-up alone: wall {t1[0] / a1[0]:.2f}x, CPU {t1[1] / a1[1]:.2f}x"
        )
    else:
        out("   aws-cli not found (pip install awscli): no anchor")


def stage_idle(td: Thumbdrop, tmp: Path, seconds: float) -> None:
    out(f"\n== idle: thumbdrop run on the embedded backend, nothing to do, {seconds:.0f} s ==")
    inbox = tmp / "idle-inbox"
    inbox.mkdir()
    data = {
        "backend": {"endpoint_url": "local"},
        "watch": {"folders": [str(inbox)]},
        "local": {"thumbnails_dir": str(tmp / "idle-thumbs"), "state_dir": str(tmp / "idle-state")},
    }
    cfg = write_config(tmp / "idle.yaml", data)
    proc = subprocess.Popen(
        td.argv(cfg, "run"), cwd=td.repo, env=td.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        ready = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "thumbdrop agent running" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120):
            out("   the agent did not start")
            return
        time.sleep(5)  # the first reconcile and set-up are done
        child = _moto_child(proc.pid)
        a0, m0 = proc_cpu_seconds(proc.pid) or 0.0, proc_cpu_seconds(child) if child else None
        w0 = _wakeups(proc.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        a1 = proc_cpu_seconds(proc.pid) or 0.0
        w1 = _wakeups(proc.pid)
        out(f"   agent process : {100 * (a1 - a0) / dt:.3f} % of a core, {(w1 - w0) / dt:.1f} wake-ups/s (target < 0.2 %)")
        if child and m0 is not None:
            m1 = proc_cpu_seconds(child) or 0.0
            out(f"   moto child    : {100 * (m1 - m0) / dt:.3f} % of a core")
    finally:
        stop_process(proc)


def _moto_child(pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def _wakeups(pid: int) -> int:
    """Context switches of every thread of ``pid`` (voluntary + not): each is a wake-up."""
    n = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
        except OSError:
            pass
    return n


def stage_startup(td: Thumbdrop) -> None:
    """Imports of a no-op ``sync`` (an empty folder: it needs no backend) and its wall time, start-up included."""
    out("\n== start-up: a no-op sync (empty watch folder) ==")
    (td.tmp / "startup-in").mkdir()
    data = config_data("http://127.0.0.1:9", td.tmp / "startup-in", td.tmp / "startup-th", td.tmp / "startup-st")
    cfg = write_config(td.tmp / "startup.yaml", data)
    totals = []
    heavy: set[str] = set()
    for _ in range(3):
        res = subprocess.run(
            [sys.executable, "-X", "importtime", *td.argv(cfg, "sync")[1:]],
            cwd=td.repo,
            env=td.env,
            capture_output=True,
            text=True,
        )
        total = 0
        for line in res.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
                name = parts[2]
                if name.startswith(" ") and not name.startswith("  "):
                    total += int(parts[1])
                if name.strip() in ("boto3", "botocore", "PIL", "watchdog"):
                    heavy.add(name.strip())
        totals.append(total)
    out(
        f"   import time (-X importtime, top-level cumulative): median {sorted(totals)[1] / 1000:.0f} ms; loads {sorted(heavy) or 'none of boto3, botocore, PIL, watchdog'}"
    )
    walls = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run(td.argv(cfg, "sync"), cwd=td.repo, env=td.env, capture_output=True)
        walls.append(time.monotonic() - t0)
    out(f"   wall time: median {sorted(walls)[1] * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--camera", type=int)
    p.add_argument("--small", type=int)
    p.add_argument("--idle-seconds", type=float)
    p.add_argument("--soak", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of the camera stage (medians)")
    p.add_argument("--small-repeats", type=int, default=1, help="alternating runs of the small stage (~2 min each)")
    p.add_argument("--reconcile", type=int, default=0)
    p.add_argument("--moto-growth", default="0:0,10000:0,10000:200,10000:1000", help="OBJECTS:MESSAGES,... (--only moto)")
    p.add_argument("--only", default="startup,camera,small,noop,uploads,idle,soak,reconcile")
    p.add_argument("--agent-repo", type=Path, default=ROOT)
    p.add_argument("--uploads", type=int)
    p.add_argument("--serial-child", nargs=3, metavar=("URL", "INBOX", "THUMBS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serial_child:
        os.environ.update(DUMMY_CREDENTIALS)
        url, inbox, thumbs = args.serial_child
        serial_pipeline(url, Path(inbox), Path(thumbs))
        return 0
    uploads = args.uploads or (300 if args.quick else 1000)
    camera = args.camera or (8 if args.quick else 40)
    small = args.small or (200 if args.quick else 1000)
    idle = args.idle_seconds or (20 if args.quick else 60)
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    isolate_environment(tmp)
    os.environ.update(DUMMY_CREDENTIALS)
    td = Thumbdrop(args.agent_repo.resolve(), tmp)
    out(f"agent package from {td.repo}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    server = MotoServer()
    server.start()
    admin = Admin(server.url)
    try:
        if "startup" in only:
            stage_startup(td)
        if "camera" in only and camera:
            stage_pipeline(args, td, server, admin, tmp, "camera", camera, (4000, 3000), repeats=args.repeats)
        if ("small" in only or "noop" in only) and small:
            r = stage_pipeline(args, td, server, admin, tmp, "small", small, (640, 480), repeats=args.small_repeats)
            if "noop" in only:
                stage_noop(td, server, tmp, Path(str(r["cfg"])), tmp / "small-inbox")
        if "uploads" in only and uploads:
            stage_uploads(td, server, admin, tmp, uploads)
        if "idle" in only:
            stage_idle(td, tmp, idle)
        if "soak" in only and args.soak:
            from bench_scale import stage_soak

            stage_soak(td, server, tmp, args.soak)
        if "reconcile" in only and args.reconcile:
            from bench_scale import stage_reconcile

            stage_reconcile(td, server, tmp, args.reconcile)
        if "moto" in only:
            from bench_scale import stage_moto_growth

            steps = [(int(a), int(b)) for a, b in (s.split(":") for s in args.moto_growth.split(","))]
            stage_moto_growth(td, steps)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
