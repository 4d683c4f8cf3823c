"""Benchmark of thumbdrop's pipeline: upload throughput against ``aws s3 sync``, and drop-to-thumbnail latency.

    python benchmarks/bench_pipeline.py                    # ~2.5-4 min on 2 (busy) cores
    python benchmarks/bench_pipeline.py --files 300 --repeats 1 --latency-files 5    # quick look
    python benchmarks/bench_pipeline.py --profile DIR      # also py-spy one uploader run (client and server)
    flags: --files N (1000)  --repeats R (3)  --latency-files M (20)  --skip-aws  --skip-command  --skip-floor

Everything runs against a moto server that this script starts in its own process (``python -m
agent.cloud.local_server``, the embedded backend's server), on 127.0.0.1, reset before every run.

1. Upload throughput, N files of ~50 KB (random bytes named *.jpg), same files every run, empty bucket every run:

   * thumbdrop (in-process): ``Uploader(cfg, backend, status, journal).reconcile()`` with a fresh journal, timed
     from before reconcile() until every future is done: what ``thumbdrop sync`` does for uploads, without start-up.
   * thumbdrop (command): ``python -m agent --config CFG sync`` with ``roles: [uploader]``, timed from the spawn to
     its N-th "uploaded" log line (start-up included); then it is interrupted, since an uploader-only sync would wait
     for a fleet's workers to make the thumbnails. The buckets and queues are made beforehand and
     ``backend.auto_setup`` is off, so its source bucket is as plain (no notifications) as aws-cli's.
   * aws-cli: ``aws --endpoint-url URL s3 sync DIR s3://BUCKET/ --only-show-errors`` (start-up included: that is
     how it is used; no per-file output, its best case). Found next to this interpreter (no pyenv shim in the
     timing), on PATH, or installed into a throwaway venv in the temp dir.
   * boto3 put_object floor: the same client (agent.cloud.clients.Backend) and thread count as the uploader, bare
     put_object calls and nothing else: what any botocore-based uploader costs; thumbdrop / floor = its own overhead.

   Runs alternate (thumbdrop, aws, thumbdrop command, floor) R times. Printed per run: wall time, files/s, and CPU per file
   of the client process and of the moto server (CPU time is far less disturbed by a noisy machine than wall
   time). The verdict is the ratio of medians measured in this same run: thumbdrop files/s / aws files/s; also
   printed, the ratio of CPU cost per file (client + server), which is what decides once the cores are saturated.

2. Latency under ``thumbdrop run`` (all roles, settle_seconds 1.0, long polls of 20 s): M real JPEGs (1600x1200
   gradient + noise) are renamed into the inbox one at a time, 1.5 s apart; for each, the time from the rename to
   the appearance of its thumbnail in the thumbnails folder (polled every 10 ms). Target: p50 <= settle + 0.3 s.
   When the CLI has ``--log-format json`` (millisecond timestamps), each latency is also split into stages from
   the agent's "uploaded", "thumbnailed" and "pulled" log lines.

No product code is changed; the script only reads the agent package.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The test harness: the same moto child process, photos, agent process and stop as the tests use.
from tests.support import MotoProcess, deep_merge, make_photos, proc_cpu_seconds, start_agent, stop_process  # noqa: E402

MotoServer = MotoProcess  # the name bench_sync, bench_scale and bench_poll import

SOURCE_BUCKET = "bench-source"
THUMBS_BUCKET = "bench-thumbnails"
EVENTS_QUEUE = "bench-events"
PULL_QUEUE = "bench-pull"
FILE_SIZE = 50 * 1024
SETTLE_SECONDS = 1.0
LATENCY_TARGET_EXTRA = 0.3
UPLOAD_TARGET = 1.3
DROP_INTERVAL = 1.5
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "benchkey", "AWS_SECRET_ACCESS_KEY": "benchsecret", "AWS_DEFAULT_REGION": "us-east-1"}


def isolate_environment(tmp: Path) -> None:
    """Dummy credentials, no user AWS config or endpoint: both clients see the same clean environment."""
    for var in list(os.environ):
        if var.startswith("AWS_ENDPOINT_URL") or var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "THUMBDROP_CONFIG"):
            del os.environ[var]
    os.environ.update(DUMMY_CREDENTIALS)
    os.environ["AWS_CONFIG_FILE"] = str(tmp / "no-aws-config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-aws-credentials")


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Admin:
    """The benchmark's own clients, for set-up and checks (never timed)."""

    def __init__(self, url: str) -> None:
        import boto3
        import botocore.config

        config = botocore.config.Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 5})
        self.s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=config)
        self.sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1", config=config)

    def fresh(self, server: MotoProcess, *, thumbs_bucket: bool = False, queues: bool = False) -> None:
        server.reset()
        self.s3.create_bucket(Bucket=SOURCE_BUCKET)
        if thumbs_bucket:
            self.s3.create_bucket(Bucket=THUMBS_BUCKET)
        if queues:
            for name in (EVENTS_QUEUE, PULL_QUEUE):
                self.sqs.create_queue(QueueName=name)

    def notify_queue(self, bucket: str, queue: str) -> str:
        """A new queue that gets the bucket's object-created events (as auto_setup makes them); its URL."""
        url = self.sqs.create_queue(QueueName=queue)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
        )
        return url

    def count(self, bucket: str = SOURCE_BUCKET) -> int:
        n = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            n += len(page.get("Contents", []))
        return n


# --- data ----------------------------------------------------------------------------------------------------------


def make_upload_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"img_{i:05d}.jpg").write_bytes(os.urandom(FILE_SIZE))


# --- configs -------------------------------------------------------------------------------------------------------


def config_data(url: str, inbox: Path, thumbs: Path, state: Path, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "backend": {"endpoint_url": url, "addressing_style": "path", "region": "us-east-1"},
        "source": {"bucket": SOURCE_BUCKET},
        "thumbnails": {"bucket": THUMBS_BUCKET},
        "queues": {"events": EVENTS_QUEUE, "pull": PULL_QUEUE},
        "watch": {"folders": [str(inbox)]},
        "local": {"thumbnails_dir": str(thumbs), "state_dir": str(state)},
    }
    return deep_merge(data, extra)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# --- upload runs ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    who: str
    files: int
    seconds: float
    client_cpu: float | None  # seconds, whole client process
    server_cpu: float | None  # seconds, moto server

    @property
    def rate(self) -> float:
        return self.files / self.seconds

    def line(self, i: int) -> str:
        def per_file(cpu: float | None) -> str:
            return f"{1000 * cpu / self.files:5.2f}" if cpu is not None else "  n/a"

        return (
            f"  run {i}  {self.who:<22} {self.files:5d} files {self.seconds:7.2f} s {self.rate:8.1f} files/s"
            f"   CPU ms/file: client {per_file(self.client_cpu)}, server {per_file(self.server_cpu)}"
        )


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, server: MotoProcess) -> None:
        self.args = args
        self.tmp = tmp
        self.server = server
        self.admin = Admin(server.url)
        self.data = tmp / "upload-files"
        self.no_thumbs = tmp / "no-thumbnails"
        self.no_thumbs.mkdir(exist_ok=True)
        self.aws: list[str] | None = None

    def _state_dir(self, what: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"state-{what}-", dir=self.tmp))

    def _server_cpu(self) -> float | None:
        return self.server.cpu()

    def _check(self, who: str, n: int) -> None:
        got = self.admin.count()
        if got != n:
            raise SystemExit(f"{who}: the bucket holds {got} objects after the run, expected {n}")

    # thumbdrop, in-process: the uploader alone
    def thumbdrop_inprocess(self, n: int, around: Callable[[], Any] | None = None) -> Run:
        from agent.cloud.clients import Backend
        from agent.config.loader import parse_config
        from agent.pipeline.uploader import Uploader
        from agent.service.runtime import pool_size
        from agent.state.journal import Journal
        from agent.state.status import Status

        self.admin.fresh(self.server)
        state = self._state_dir("inproc")
        cfg = parse_config(config_data(self.server.url, self.data, self.no_thumbs, state, roles=["uploader"]))
        backend = Backend(cfg.backend, endpoint_url=self.server.url, local=False, pool_size=pool_size(cfg))
        journal = Journal(state / "journal.sqlite3")
        uploader = Uploader(cfg, backend, status=Status(["uploader"]), journal=journal)
        try:
            ctx = around() if around else None
            cpu0, srv0 = time.process_time(), self._server_cpu()
            t0 = time.perf_counter()
            futures = uploader.reconcile()
            wait(futures)
            seconds = time.perf_counter() - t0
            cpu1, srv1 = time.process_time(), self._server_cpu()
            if ctx is not None:
                ctx.close()
            outcomes = collections.Counter(f.result() for f in futures)
        finally:
            uploader.pool.shutdown(wait=True)
            journal.close()
        if outcomes.get("uploaded", 0) != n:
            raise SystemExit(f"thumbdrop uploader: outcomes {dict(outcomes)}, expected {n} uploaded")
        self._check("thumbdrop", n)
        server = srv1 - srv0 if srv0 is not None and srv1 is not None else None
        return Run("thumbdrop (in-process)", n, seconds, cpu1 - cpu0, server)

    # the floor: bare put_object calls on the same client, same thread count, no thumbdrop code around them
    def boto3_floor(self, n: int) -> Run:
        from concurrent.futures import ThreadPoolExecutor

        from agent.cloud.clients import Backend
        from agent.config.loader import parse_config
        from agent.service.runtime import pool_size

        self.admin.fresh(self.server)
        state = self._state_dir("floor")
        cfg = parse_config(config_data(self.server.url, self.data, self.no_thumbs, state, roles=["uploader"]))
        s3 = Backend(cfg.backend, endpoint_url=self.server.url, local=False, pool_size=pool_size(cfg)).s3
        paths = sorted(self.data.iterdir())

        def put(path: Path) -> None:
            s3.put_object(Bucket=SOURCE_BUCKET, Key=path.name, Body=path.read_bytes(), ContentType="image/jpeg")

        with ThreadPoolExecutor(cfg.transfer.concurrency) as pool:
            cpu0, srv0 = time.process_time(), self._server_cpu()
            t0 = time.perf_counter()
            for f in [pool.submit(put, p) for p in paths]:
                f.result()
            seconds = time.perf_counter() - t0
            cpu1, srv1 = time.process_time(), self._server_cpu()
        self._check("boto3 floor", n)
        server = srv1 - srv0 if srv0 is not None and srv1 is not None else None
        return Run("boto3 put_object floor", n, seconds, cpu1 - cpu0, server)

    # thumbdrop sync, roles [uploader]: start-up included
    def thumbdrop_command(self, n: int) -> Run:
        self.admin.fresh(self.server, thumbs_bucket=True, queues=True)
        state = self._state_dir("cmd")
        cfg = write_config(
            state / "config.yaml",
            config_data(self.server.url, self.data, self.no_thumbs, state, roles=["uploader"], backend={"auto_setup": False}),
        )
        done = threading.Event()
        seen = [0]
        tail: collections.deque[str] = collections.deque(maxlen=20)
        srv0 = self._server_cpu()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(cfg), "sync"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        stamp: list[float] = []
        client_cpu: list[float | None] = []

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                tail.append(line.rstrip())
                if " uploaded " in line and "-> s3://" in line:
                    seen[0] += 1
                    if seen[0] == n:
                        stamp.append(time.perf_counter())
                        client_cpu.append(proc_cpu_seconds(proc.pid))
                        done.set()

        reader = threading.Thread(target=read, name="sync-stderr", daemon=True)
        reader.start()
        try:
            while not done.wait(0.1):
                if proc.poll() is not None or time.perf_counter() - t0 > 600:
                    break
            srv1 = self._server_cpu()
        finally:
            stop_process(proc, signal.SIGINT)
            reader.join(timeout=10)
        if not stamp:
            text = "\n    ".join(tail)
            raise SystemExit(
                f"thumbdrop sync uploaded {seen[0]} of {n} files (exit {proc.returncode}); its last lines:\n    {text}"
            )
        self._check("thumbdrop sync", n)
        server = srv1 - srv0 if srv0 is not None and srv1 is not None else None
        return Run("thumbdrop sync (cmd)", n, stamp[0] - t0, client_cpu[0], server)

    # aws-cli
    def find_aws(self) -> list[str] | None:
        """aws next to this interpreter (no pyenv shim in the timing), else on PATH, else a throwaway venv."""
        sibling = Path(sys.executable).parent / "aws"
        if sibling.exists():
            return [str(sibling)]
        on_path = shutil.which("aws")
        if on_path:
            return [on_path]
        venv = self.tmp / "awscli-venv"
        print(f"aws-cli not found: installing awscli into a throwaway venv ({venv}) ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "awscli"], check=True, capture_output=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            print(f"could not install awscli ({exc}); install it with 'pip install awscli' or pass --skip-aws", file=sys.stderr)
            return None
        return [str(venv / "bin" / "aws")]

    def aws_version(self) -> str:
        assert self.aws is not None
        out = subprocess.run([*self.aws, "--version"], capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip()

    def aws_sync(self, n: int) -> Run:
        assert self.aws is not None
        self.admin.fresh(self.server)
        cmd = [
            *self.aws,
            "--endpoint-url",
            self.server.url,
            "--region",
            "us-east-1",
            "s3",
            "sync",
            str(self.data),
            f"s3://{SOURCE_BUCKET}/",
            "--only-show-errors",
        ]
        cpu0, srv0 = children_cpu_seconds(), self._server_cpu()
        t0 = time.perf_counter()
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - t0
        cpu1, srv1 = children_cpu_seconds(), self._server_cpu()
        if out.returncode != 0:
            raise SystemExit(f"aws s3 sync failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
        self._check("aws s3 sync", n)
        server = srv1 - srv0 if srv0 is not None and srv1 is not None else None
        return Run("aws s3 sync", n, seconds, cpu1 - cpu0, server)

    def aws_startup(self) -> float:
        """aws start-up plus one request (listing an empty bucket): the fixed cost inside every aws run."""
        assert self.aws is not None
        self.admin.fresh(self.server)
        t0 = time.perf_counter()
        subprocess.run(
            [*self.aws, "--endpoint-url", self.server.url, "s3", "ls", f"s3://{SOURCE_BUCKET}/"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=True,
        )
        return time.perf_counter() - t0

    # --- latency ---------------------------------------------------------------------------------------------------

    def latency(self, m: int) -> tuple[list[float], dict[str, list[float]]]:
        """Each file's drop-to-thumbnail time, and (with JSON logs) the time spent in each stage."""
        self.server.reset()  # `run` provisions everything itself (auto_setup)
        base = self.tmp / "latency"
        inbox, thumbs, state, staging = base / "inbox", base / "thumbs", base / "state", base / "staging"
        for d in (inbox, thumbs, state):
            d.mkdir(parents=True)
        drops = make_photos(staging, m)
        cfg = write_config(
            base / "config.yaml",
            config_data(
                self.server.url, inbox, thumbs, state, watch={"settle_seconds": SETTLE_SECONDS}, queues={"wait_seconds": 20}
            ),
        )
        log_path = base / "agent.log"
        # JSON logs carry millisecond timestamps: enough to split each latency into stages.
        helptext = subprocess.run([sys.executable, "-m", "agent", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
        json_logs = ["--log-format", "json"] if "--log-format" in helptext else []
        proc = start_agent([*json_logs, "--config", str(cfg), "run"], log_path).proc
        try:
            self._wait_running(proc, state, log_path)
            time.sleep(0.5)  # let the first (empty) reconcile and the first long polls begin
            latencies, dropped_at = self._drop_and_time(proc, drops, inbox, thumbs, log_path)
        finally:
            stop_process(proc, signal.SIGTERM)
        return latencies, stages_from_log(log_path, dropped_at) if json_logs else {}

    @staticmethod
    def _wait_running(proc: subprocess.Popen[Any], state: Path, log_path: Path) -> None:
        import json

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"thumbdrop run exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if json.loads((state / "status.json").read_text()).get("state") == "running":
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise SystemExit(f"thumbdrop run was not running after 90 s:\n{log_path.read_text()[-3000:]}")

    @staticmethod
    def _drop_and_time(
        proc: subprocess.Popen[Any], drops: list[Path], inbox: Path, thumbs: Path, log_path: Path
    ) -> tuple[list[float], dict[str, float]]:
        """Rename each file in on a fixed 1.5 s cadence; poll every 10 ms for the thumbnails."""
        outstanding: dict[Path, float] = {}
        dropped_at: dict[str, float] = {}  # wall clock, to line up with the agent's log
        latencies: list[float] = []
        start = time.perf_counter()
        next_drop = 0
        last_progress = start
        while next_drop < len(drops) or outstanding:
            now = time.perf_counter()
            if next_drop < len(drops) and now >= start + next_drop * DROP_INTERVAL:
                src = drops[next_drop]
                dropped_at[src.name] = time.time()
                t = time.perf_counter()
                os.rename(src, inbox / src.name)
                outstanding[thumbs / src.name] = t  # the name rule keeps "x.jpg" as "x.jpg"
                next_drop += 1
            for thumb, t in list(outstanding.items()):
                if thumb.exists():
                    latencies.append(time.perf_counter() - t)
                    del outstanding[thumb]
                    last_progress = time.perf_counter()
            if outstanding and time.perf_counter() - max(last_progress, max(outstanding.values())) > 60:
                missing = ", ".join(sorted(p.name for p in outstanding))
                raise SystemExit(f"no thumbnail after 60 s for {missing}; agent log:\n{log_path.read_text()[-4000:]}")
            if proc.poll() is not None:
                raise SystemExit(f"thumbdrop run exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.01)
        return latencies, dropped_at


STAGES = (
    ("drop -> uploaded (settle + upload)", "dropped", "uploaded"),
    ("uploaded -> thumbnailed (event + worker)", "uploaded", "thumbnailed"),
    ("thumbnailed -> pulled (event + puller)", "thumbnailed", "pulled"),
)


def stages_from_log(log_path: Path, dropped_at: dict[str, float]) -> dict[str, list[float]]:
    """Per-stage durations from the agent's JSON log lines ("uploaded P -> ...", "thumbnailed K ...", "pulled K -> P")."""
    import json
    from datetime import datetime

    seen: dict[str, dict[str, float]] = {name: {"dropped": t} for name, t in dropped_at.items()}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
            words = str(doc["message"]).split()
            ts = datetime.fromisoformat(str(doc["ts"])).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if len(words) >= 2 and words[0] in ("uploaded", "thumbnailed", "pulled"):
            name = words[1].replace("\\", "/").rsplit("/", 1)[-1]
            if name in seen:
                seen[name].setdefault(words[0], ts)
    out: dict[str, list[float]] = {}
    for label, a, b in STAGES:
        out[label] = [e[b] - e[a] for e in seen.values() if a in e and b in e]
    return out


# --- profiling (optional) --------------------------------------------------------------------------------------------


def find_py_spy() -> str | None:
    sibling = Path(sys.executable).parent / "py-spy"
    return str(sibling) if sibling.exists() else shutil.which("py-spy")


class _PySpy:
    """py-spy record on the benchmark process and on the moto server, stopped by close()."""

    def __init__(self, exe: str, out: Path, server_pid: int) -> None:
        self.files = {"client": out / "uploader-client.txt", "server": out / "uploader-server.txt"}
        pids = {"client": os.getpid(), "server": server_pid}
        self.procs = [
            subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pids[k]),
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--gil",
                    "-o",
                    str(f),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for k, f in self.files.items()
        ]
        time.sleep(1.0)  # attached

    def close(self) -> None:
        for p in self.procs:
            stop_process(p, signal.SIGINT, timeout=30)


# py-spy samples with --gil: only the thread holding the GIL, i.e. where each process's serial Python time goes (work
# done with the GIL released, such as hashing or socket syscalls, is under-counted). Its idle-thread detection does not
# work on every kernel (it did not on the VM this was written on), so samples whose deepest frame is one of these
# blocking waits are counted as idle and left out of the shares.
IDLE_LEAVES = (
    "do_poll (urllib3/util/wait.py",
    "SocketIO.readinto (socket.py",
    "select (selectors.py",
    "Condition.wait (threading.py",
    "main (agent/cloud/local_server.py",
    "Event.wait (threading.py",
    "_worker (concurrent/futures/thread.py",
)
CLIENT_CATEGORIES = (  # (label, substrings of a frame), matched from the deepest frame upwards
    ("thumbdrop hashing (sha256+md5 of the file)", ("hash (agent/pipeline/put.py",)),
    ("journal (sqlite)", ("agent/state/journal.py",)),
    ("botocore signing (SigV4, incl. payload sha256 over http)", ("botocore/auth.py", "botocore/signers.py")),
    ("botocore checksums (CRC32)", ("botocore/httpchecksum.py", "botocore/checksums.py")),
    (
        "HTTP (connect, send, read, close)",
        ("http/client.py", "urllib3/", "socket.py", "botocore/awsrequest.py", "botocore/httpsession.py"),
    ),
    ("botocore response parsing", ("botocore/parsers.py",)),
    ("botocore request building (validate, serialize, endpoint rules, hooks)", ("botocore/",)),
    ("boto3 / s3transfer", ("boto3/", "s3transfer/")),
    ("thumbdrop uploader (stat, paths, status)", ("agent/",)),
    ("thread pool / threading", ("concurrent/futures", "threading.py", "queue.py")),
)
SERVER_CATEGORIES = (
    ("request logging (werkzeug log line, colorama)", ("colorama/", "log_request (werkzeug", "logging/__init__.py")),
    ("moto S3 model + responses", ("moto/s3/",)),
    ("moto dispatch (backend lookup per request)", ("moto/moto_server/", "moto/backends.py")),
    ("moto core (auth, response building)", ("moto/core/", "moto/")),
    (
        "flask routing / werkzeug Request+Response",
        ("flask/", "werkzeug/routing", "werkzeug/wrappers", "werkzeug/datastructures", "werkzeug/sansio"),
    ),
    (
        "HTTP server (werkzeug serving, http.server, socket, thread per connection)",
        ("werkzeug/", "http/server.py", "socketserver.py", "socket.py", "threading.py"),
    ),
)


def summarise_profile(path: Path, categories: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[list[tuple[str, float]], float]:
    """Shares of the busy samples by category, and the share of samples that were idle waits."""
    totals: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(leaf in frames[-1] for leaf in IDLE_LEAVES):
            idle += int(count)
            continue
        totals[categorise(frames, categories)] += int(count)
    busy = sum(totals.values()) or 1
    return [(k, 100.0 * v / busy) for k, v in totals.most_common()], 100.0 * idle / (busy + idle)


def categorise(frames: list[str], categories: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    for frame in reversed(frames):
        for label, needles in categories:
            if any(s in frame for s in needles):
                return label
    return "other (interpreter, stdlib)"


def profile_stage(bench: Bench, out: Path) -> None:
    exe = find_py_spy()
    if exe is None:
        print("--profile: py-spy not found (pip install py-spy); no profile taken")
        return
    out.mkdir(parents=True, exist_ok=True)
    spies: list[_PySpy] = []

    def start() -> _PySpy:
        spy = _PySpy(exe, out, bench.server.pid)
        spies.append(spy)
        return spy

    try:
        run = bench.thumbdrop_inprocess(bench.args.files, around=start)
    finally:
        for spy in spies:
            spy.close()
    print(f"\nprofile (py-spy --gil, one extra in-process uploader run: {run.rate:.1f} files/s; raw stacks in {out}):")
    for name, categories in (("client", CLIENT_CATEGORIES), ("server", SERVER_CATEGORIES)):
        path = spies[0].files[name]
        if not path.exists():
            print(f"  {name}: no samples (py-spy could not attach?)")
            continue
        shares, idle = summarise_profile(path, categories)
        print(f"  {name}: share of GIL-holding samples ({idle:.0f}% were idle waits, left out):")
        for label, share in shares:
            if share >= 0.5:
                print(f"    {share:5.1f}%  {label}")


# --- main --------------------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def upload_stage(bench: Bench) -> tuple[float | None, float | None]:
    args = bench.args
    n = args.files
    print(f"== 1. upload throughput: {n} files x {FILE_SIZE // 1024} KB, {args.repeats} repeat(s), empty bucket each run ==")
    make_upload_files(bench.data, n)
    if not args.skip_aws:
        bench.aws = bench.find_aws()
        if bench.aws is not None:
            print(f"aws-cli: {bench.aws[0]} ({bench.aws_version()})")
    runs: dict[str, list[Run]] = collections.defaultdict(list)
    steps: list[tuple[str, Callable[[int], Run]]] = [("td", bench.thumbdrop_inprocess)]
    if bench.aws is not None:
        steps.append(("aws", bench.aws_sync))
    if not args.skip_command:
        steps.append(("cmd", bench.thumbdrop_command))
    if not args.skip_floor:
        steps.append(("floor", bench.boto3_floor))
    startups: list[float] = []
    i = 0
    for _ in range(args.repeats):
        for key, fn in steps:
            i += 1
            run = fn(n)
            runs[key].append(run)
            print(run.line(i), flush=True)
        if bench.aws is not None:
            startups.append(bench.aws_startup())

    def med(key: str) -> float | None:
        return statistics.median(r.rate for r in runs[key]) if runs[key] else None

    def med_cpu(key: str, attr: str) -> str:
        vals = [getattr(r, attr) for r in runs[key] if getattr(r, attr) is not None]
        return f"{1000 * statistics.median(vals) / n:.2f}" if vals else "n/a"

    print("medians:")
    labels = {
        "td": "thumbdrop (in-process)",
        "aws": "aws s3 sync",
        "cmd": "thumbdrop sync (cmd)",
        "floor": "boto3 put_object floor",
    }
    for key in ("td", "aws", "cmd", "floor"):
        rate = med(key)
        if rate is not None:
            print(
                f"  {labels[key]:<22} {rate:8.1f} files/s   CPU ms/file: client {med_cpu(key, 'client_cpu')}, "
                f"server {med_cpu(key, 'server_cpu')}"
            )
    if startups:
        print(f"  aws start-up + 1 request (s3 ls of an empty bucket), median: {statistics.median(startups):.2f} s")
    td, aws, cmd, floor = med("td"), med("aws"), med("cmd"), med("floor")
    ratio = td / aws if td and aws else None
    cmd_ratio = cmd / aws if cmd and aws else None
    if ratio is not None:
        verdict = "meets" if ratio >= UPLOAD_TARGET else "BELOW"
        print(f"ratio thumbdrop (in-process) / aws-cli: {ratio:.2f}x  ({verdict} the {UPLOAD_TARGET}x target)")
    if cmd_ratio is not None:
        print(f"ratio thumbdrop sync command / aws-cli (both with start-up): {cmd_ratio:.2f}x")
    if td and floor:
        print(f"ratio thumbdrop (in-process) / bare boto3 put_object floor: {td / floor:.2f}x  (1.00x = no overhead of its own)")

    def cpu_cost(key: str) -> float | None:
        """Median client + server CPU seconds per file: what a file costs once the cores are the limit."""
        vals = [
            (r.client_cpu + r.server_cpu) / r.files for r in runs[key] if r.client_cpu is not None and r.server_cpu is not None
        ]
        return statistics.median(vals) if vals else None

    td_cost, aws_cost = cpu_cost("td"), cpu_cost("aws")
    if td_cost and aws_cost:
        print(
            f"CPU cost per file, client + server: thumbdrop {1000 * td_cost:.2f} ms, aws-cli {1000 * aws_cost:.2f} ms (start-up "
            f"included) -> {aws_cost / td_cost:.2f}x, the ratio to expect when the machine's cores are the limit"
        )
    return ratio, cmd_ratio


def latency_stage(bench: Bench) -> float | None:
    m = bench.args.latency_files
    if m <= 0:
        return None
    target = SETTLE_SECONDS + LATENCY_TARGET_EXTRA
    print(
        f"\n== 2. drop-to-local-thumbnail latency under 'thumbdrop run': {m} JPEGs 1600x1200, one every {DROP_INTERVAL} s, "
        f"settle_seconds {SETTLE_SECONDS} =="
    )
    lat, stages = bench.latency(m)
    print("  each (s): " + " ".join(f"{v:.2f}" for v in lat))
    for label, values in stages.items():
        if values:
            print(f"  stage {label:<42} median {1000 * statistics.median(values):5.0f} ms, max {1000 * max(values):5.0f} ms")
    p50, p95 = percentile(lat, 50), percentile(lat, 95)
    print(f"  p50 {p50:.2f} s   p95 {p95:.2f} s   max {max(lat):.2f} s   min {min(lat):.2f} s")
    verdict = "meets" if p50 <= target else "MISSES"
    print(f"  target p50 <= settle + {LATENCY_TARGET_EXTRA} = {target:.2f} s: p50 / target = {p50 / target:.2f}x ({verdict})")
    return p50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, metavar="N", help="files to upload per run (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, metavar="R", help="runs of each uploader (default 3)")
    parser.add_argument(
        "--latency-files", type=int, default=20, metavar="M", help="JPEGs dropped for the latency test (default 20)"
    )
    parser.add_argument("--skip-aws", action="store_true", help="do not run (or install) aws-cli")
    parser.add_argument("--skip-command", action="store_true", help="do not time the 'thumbdrop sync' command")
    parser.add_argument("--skip-floor", action="store_true", help="do not time bare boto3 put_object calls (the floor)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="also py-spy one in-process upload run (client + server)")
    args = parser.parse_args(argv)
    if args.files < 1 or args.repeats < 1 or args.latency_files < 0:
        parser.error("--files and --repeats must be >= 1, --latency-files >= 0")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM (and SIGINT even where a background shell ignores it) unwinds through the finally blocks that stop
    # every child: the moto server, a running agent, a sync command, py-spy.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thumbdrop-bench-") as tmpname:
        tmp = Path(tmpname)
        isolate_environment(tmp)
        server = MotoProcess()
        try:
            server.start()
            print(
                f"moto server {server.url} (pid {server.pid}); python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), "
                f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
            )
            bench = Bench(args, tmp, server)
            ratio, _cmd_ratio = upload_stage(bench)
            if args.profile is not None:
                profile_stage(bench, args.profile)
            p50 = latency_stage(bench)
        finally:
            server.stop()
    target = SETTLE_SECONDS + LATENCY_TARGET_EXTRA
    up = f"upload {ratio:.2f}x aws-cli (target {UPLOAD_TARGET}x)" if ratio is not None else "upload n/a (aws-cli skipped)"
    lat = (
        f"latency p50 {p50:.2f} s = {p50 / target:.2f}x of target (settle+{LATENCY_TARGET_EXTRA} s)"
        if p50 is not None
        else "latency n/a"
    )
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    print(f"summary: {up}; {lat}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({exc or 'SIGINT'}); every child process was stopped", file=sys.stderr)
        sys.exit(130)
