"""Scale stages of bench_sync.py: a soak of N images through ``thumbdrop run``, and a reconcile of N local files
against N objects. Run through ``bench_sync.py --soak N`` / ``--reconcile N`` (or ``--only soak --soak N``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pipeline import (  # noqa: E402
    EVENTS_QUEUE,
    PULL_QUEUE,
    SOURCE_BUCKET,
    Admin,
    MotoServer,
    config_data,
    proc_cpu_seconds,
    stop_process,
    write_config,
)

BATCH = 250  # images moved into the inbox at once (one folder: one event, then a scan)
BACKLOG = 750  # dropped but not yet thumbnailed locally: drop more only below this
STEP = 500  # a mark (time, RSS, agent and moto CPU) every STEP thumbnails


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
        # thumbnails done -> (time, agent RSS MB, agent CPU s, moto CPU s), every STEP images
        marks: dict[int, tuple[float, float, float, float]] = {}
        t0 = time.monotonic()
        last_progress, last_count = time.monotonic(), -1

        from botocore.exceptions import BotoCoreError, ClientError

        depths: dict[int, str] = {}  # the queues' depths at each mark: what moto's cost per request follows
        admin = Admin(server.url)

        def depth(queue: str) -> str:
            try:
                url = admin.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
                attrs = admin.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
                return f"{attrs[names[0]]}+{attrs[names[1]]}"  # queued + in flight (both cost moto per request)
            except (BotoCoreError, ClientError):  # a figure only: the queue is not there yet
                return "-"

        def mark(m: int, now: float) -> None:
            marks[m] = (now - t0, rss_mb(proc.pid), proc_cpu_seconds(proc.pid) or 0.0, server.cpu() or 0.0)
            depths[m] = f"{depth(EVENTS_QUEUE)}/{depth(PULL_QUEUE)}"

        mark(0, t0)
        while True:
            done = count_files(thumbs)
            now = time.monotonic()
            if done != last_count:
                last_progress, last_count = now, done
            for m in range(STEP, n + 1, STEP):
                if done >= m and m not in marks:
                    mark(m, now)
            if n % STEP and done >= n and n not in marks:
                mark(n, now)
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
        # Whose CPU grows: the agent's per image, or the moto server's (its buckets and queues grow)?
        out("   images        at       RSS   interval: images/s  agent CPU/image  moto CPU/image  events, pull: queued+in flight")
        prev = None
        for m, (t, rss, a_cpu, m_cpu) in sorted(marks.items()):
            if prev is not None:
                k = m - prev[0]
                dt, da, dm = t - prev[1], a_cpu - prev[3], m_cpu - prev[4]
                out(
                    f"   {m:6d} {t:8.1f} s {rss:6.1f} MB   {k / dt:17.1f}  {da / k * 1000:12.1f} ms  {dm / k * 1000:11.1f} ms  {depths[m]:>20}"
                )
            prev = (m, t, rss, a_cpu, m_cpu)
        if 1000 in marks and n in marks and n >= 2000:
            first = 1000 / marks[1000][0]
            before = max(m for m in marks if m <= n - 1000)
            last = (n - before) / (marks[n][0] - marks[before][0])
            out(f"   RSS growth image 1,000 -> {n:,}: {marks[n][1] - marks[1000][1]:+.1f} MB (target < 20 MB)")
            out(f"   throughput first 1,000: {first:.1f}/s, last 1,000: {last:.1f}/s: {last / first:.2f}x (target >= 0.9x)")
            # The last thousand ends with the tail (every file dropped, the backlog draining): also the steady rate
            # of the thousand before the last 500 images, which no tail flatters.
            lo, hi = max(m for m in marks if m <= n - 1500), max(m for m in marks if m <= n - 500)
            if hi > lo:
                steady = (hi - lo) / (marks[hi][0] - marks[lo][0])
                out(f"   steady rate, images {lo:,} -> {hi:,}: {steady:.1f}/s: {steady / first:.2f}x the first 1,000")
            for who, i in (("agent", 2), ("moto", 3)):
                c_first = (marks[1000][i] - marks[0][i]) / 1000
                c_last = (marks[n][i] - marks[before][i]) / (n - before)
                out(
                    f"   {who} CPU per image, first 1,000: {c_first * 1000:.1f} ms, last 1,000: {c_last * 1000:.1f} ms: {c_last / c_first:.2f}x"
                )
    finally:
        stop_process(proc, timeout=30)


# --- reconcile -----------------------------------------------------------------------------------------------------


def stage_reconcile(td: Any, server: MotoServer, tmp: Path, n: int) -> None:
    """The objects are loaded through moto's own backend API inside a second moto server process (no HTTP per object:
    100,000 PUTs over HTTP take ~10 min here); the reconcile itself talks HTTP to that server, as to any other."""
    out(f"\n== reconcile: {n:,} local files against {n:,} objects (already uploaded) ==")
    folder = tmp / "rec-files"
    for i in range(n):
        sub = folder / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i:07d}.jpg").write_bytes(f"file {i}\n".encode() * 8)
    past = time.time() - 60
    for p in folder.rglob("*.jpg"):
        os.utime(p, (past, past))
    t0 = time.monotonic()
    filled = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--filled-server", str(folder)],
        cwd=td.repo,
        env=td.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert filled.stdout is not None and filled.stdin is not None
        line = filled.stdout.readline()
        if not line.startswith(b"PORT "):
            out(f"   the filled moto server did not start: {line!r}")
            return
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        count = Admin(url).s3.list_objects_v2(Bucket=SOURCE_BUCKET, MaxKeys=1).get("KeyCount", 0)
        out(
            f"   (set-up: {n:,} objects loaded into moto's backend in its own process in {time.monotonic() - t0:.0f} s; bucket not empty: {bool(count)})"
        )
        out(f"   moto server RSS with {n:,} objects: {rss_mb(filled.pid):.0f} MB")
        data = config_data(url, folder, tmp / "rec-thumbs", tmp / "rec-state", roles=["uploader"])
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
                f"   {label}: {r['seconds']:.1f} s ({n / r['seconds']:,.0f} files/s, client CPU {r['cpu'] / n * 1e6:.0f} us/file), "
                f"{r['uploaded']} uploaded, requests: {reqs}; peak RSS {r['peak_mb']:.0f} MB ({r['base_mb']:.0f} MB before): "
                f"{per_key:.0f} bytes per key at most"
            )
    finally:
        end_child(filled)


def end_child(proc: subprocess.Popen[Any]) -> None:
    """A server child stops when its stdin closes; killed if it does not within 30 s."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def filled_server(folder: str) -> None:
    """moto's server with the source bucket holding every file under folder (same key, same bytes), put through
    moto's backend API in this process; prints PORT n and runs until stdin closes."""
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "benchkey", "AWS_SECRET_ACCESS_KEY": "benchsecret", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    backend.create_bucket(SOURCE_BUCKET, "us-east-1")
    root = Path(folder)
    for p in sorted(root.rglob("*.jpg")):
        backend.put_object(SOURCE_BUCKET, p.relative_to(root).as_posix(), p.read_bytes())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    sys.stdout.write(f"PORT {server.get_host_and_port()[1]}\n")
    sys.stdout.flush()
    while sys.stdin.buffer.read(65536):
        pass
    server.stop()


# --- moto's cost per request against its state --------------------------------------------------------------------

GROW_BUCKET, GROW_QUEUE = "grow-source", "grow-events"


def stage_moto_growth(td: Any, steps: list[tuple[int, int]], puts: int = 200, receives: int = 50) -> None:
    """Whose is a soak's decline? moto's server CPU per request, measured at a given bucket size and queue depth.

    A moto server in a child process holds a bucket whose PUTs notify a queue (as the soak's source bucket does). Its
    objects and queued messages are added through moto's backend API in that process (no HTTP per object); then
    ``puts`` PutObject of 2 KB and ``receives`` ReceiveMessage (10) + DeleteMessageBatch go over HTTP, and the
    server's CPU (from /proc) is divided by the requests."""
    out(f"\n== moto server CPU per request against its state ({puts} PUTs into a notified bucket, {receives} receive+delete) ==")
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--growing-server"],
        cwd=td.repo,
        env=td.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        url = f"http://127.0.0.1:{int(child.stdout.readline().split()[1])}"
        admin = Admin(url)
        admin.s3.create_bucket(Bucket=GROW_BUCKET)
        q_url = admin.notify_queue(GROW_BUCKET, GROW_QUEUE)
        body = os.urandom(2048)
        out("   objects  queued msgs   server CPU per PUT   per receive+delete")
        for objects, messages in steps:
            attrs = admin.sqs.get_queue_attributes(QueueUrl=q_url, AttributeNames=["ApproximateNumberOfMessages"])
            queued = int(attrs["Attributes"]["ApproximateNumberOfMessages"])
            child.stdin.write(f"fill {objects} {max(0, messages - queued)}\n")  # PurgeQueue: once a minute only
            child.stdin.flush()
            child.stdout.readline()
            attrs = admin.sqs.get_queue_attributes(QueueUrl=q_url, AttributeNames=["ApproximateNumberOfMessages"])
            messages = int(attrs["Attributes"]["ApproximateNumberOfMessages"])
            c0 = proc_cpu_seconds(child.pid) or 0.0
            for i in range(puts):
                admin.s3.put_object(Bucket=GROW_BUCKET, Key=f"probe/{objects}/{i:05d}.jpg", Body=body)
            c1 = proc_cpu_seconds(child.pid) or 0.0
            for _ in range(receives):
                got = admin.sqs.receive_message(QueueUrl=q_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
                if got:
                    entries: list[Any] = [{"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(got)]
                    admin.sqs.delete_message_batch(QueueUrl=q_url, Entries=entries)
            c2 = proc_cpu_seconds(child.pid) or 0.0
            out(
                f"   {objects:7,d}  {messages:11,d}   {(c1 - c0) / puts * 1000:15.1f} ms   {(c2 - c1) / receives * 1000:15.1f} ms"
            )
    finally:
        end_child(child)


def growing_server() -> None:
    """moto's server; on "fill OBJECTS MESSAGES" (stdin) its grow bucket gets objects and its queue messages through
    moto's backend API (no notifications for these) up to those counts, then "ok"."""
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "benchkey", "AWS_SECRET_ACCESS_KEY": "benchsecret", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer
    from moto.sqs.models import sqs_backends

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"PORT {server.get_host_and_port()[1]}", flush=True)
    s3 = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    sqs = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    filled = 0
    for line in sys.stdin:
        _cmd, objects, messages = line.split()
        while filled < int(objects):
            s3.put_object(GROW_BUCKET, f"fill/{filled:07d}.jpg", b"x" * 2048, disable_notification=True)
            filled += 1
        for i in range(int(messages)):
            sqs.send_message(GROW_QUEUE, f'{{"fill": {i}}}')
        print("ok", flush=True)
    server.stop()


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child started from a
    big parent (this script after the soak) would report the parent's size."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reconcile_child(cfg_path: str) -> None:
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
    base = peak_rss_mb()
    journal = Journal(Path(cfg.local.state_dir) / "journal.sqlite3")
    uploader = Uploader(cfg, backend, Status(cfg.roles), journal)
    trace = os.environ.get("BENCH_TRACEMALLOC") == "1"  # where the per-key bytes go (slow: for a look, not a figure)
    if trace:
        import tracemalloc

        tracemalloc.start()
    t0, c0 = time.monotonic(), time.process_time()
    futures = uploader.reconcile()
    if trace:
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:15]:
            print(f"   {stat.size / len(futures or [0]):7.0f} B/key  {stat}", file=sys.stderr)
        tracemalloc.stop()
    wait(futures)
    seconds, cpu = time.monotonic() - t0, time.process_time() - c0
    uploaded = sum(1 for f in futures if f.result() == "uploaded")
    uploader.pool.shutdown()
    journal.close()
    peak = peak_rss_mb()
    print(
        json.dumps(
            {"seconds": seconds, "cpu": cpu, "requests": dict(calls), "base_mb": base, "peak_mb": peak, "uploaded": uploaded}
        )
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--reconcile-child":
        reconcile_child(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "--growing-server":
        growing_server()
    elif len(sys.argv) == 3 and sys.argv[1] == "--filled-server":
        filled_server(sys.argv[2])
    else:
        raise SystemExit("run through bench_sync.py --soak N / --reconcile N")
