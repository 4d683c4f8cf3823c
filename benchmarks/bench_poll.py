"""Poll mode (queues.mode poll, issue 11): what it costs against the queues.

1. Drop-to-local-thumbnail latency p50 of one agent (``thumbdrop run``) in poll mode and in queue mode (sqs), in the
   same run, on the same moto server, files dropped one by one on a fixed cadence (bench_pipeline's method).
2. One listing pass of the worker over N sources with N thumbnails (default 10,000; ``--objects 100000`` for the
   issue's figure): requests, seconds, peak Python memory (tracemalloc) and the candidates found (0: all done).
   The objects are tiny bodies put with a thread pool.

    python benchmarks/bench_poll.py [--images 12] [--objects 10000] [--only latency|listing]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pipeline import (  # noqa: E402
    SETTLE_SECONDS,
    Bench,
    MotoServer,
    config_data,
    isolate_environment,
    make_jpegs,
    stop_process,
    write_config,
)


def out(line: str = "") -> None:
    print(line, flush=True)


def latency(server: MotoServer, tmp: Path, mode: str, m: int) -> list[float]:
    server.reset()
    base = tmp / f"latency-{mode}"
    inbox, thumbs, state, staging = base / "inbox", base / "thumbs", base / "state", base / "staging"
    for d in (inbox, thumbs, state):
        d.mkdir(parents=True)
    drops = make_jpegs(staging, m)
    queues: dict[str, Any] = {"mode": mode, "wait_seconds": 20}
    if mode == "poll":
        queues["poll_seconds"] = 10
    cfg = write_config(
        base / "config.yaml",
        config_data(server.url, inbox, thumbs, state, watch={"settle_seconds": SETTLE_SECONDS}, queues=queues),
    )
    log_path = base / "agent.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(cfg), "run"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            Bench._wait_running(proc, state, log_path)
            time.sleep(0.5)
            lat, _dropped = Bench._drop_and_time(proc, drops, inbox, thumbs, log_path)
        finally:
            stop_process(proc, signal.SIGTERM)
    return lat


def stage_latency(server: MotoServer, tmp: Path, m: int) -> None:
    out(f"\n== drop-to-local-thumbnail latency, one agent, {m} JPEGs dropped one by one ==")
    results: dict[str, list[float]] = {}
    for mode in ("sqs", "poll"):
        results[mode] = latency(server, tmp, mode, m)
        lat = sorted(results[mode])
        out(f"   {mode:5s} p50 {statistics.median(lat):.3f} s   min {lat[0]:.3f}   max {lat[-1]:.3f}   (n={len(lat)})")
    diff = statistics.median(results["poll"]) - statistics.median(results["sqs"])
    out(f"   poll - sqs p50: {diff:+.3f} s (target: within 0.2 s)")


def stage_listing(server: MotoServer, tmp: Path, n: int, *, inprocess: bool = False) -> None:
    import contextlib

    where = "in-process moto (mock_aws)" if inprocess else "the moto server"
    out(f"\n== one worker listing pass over {n} sources and {n} thumbnails, on {where} ==")
    mock: Any = contextlib.nullcontext()
    if inprocess:
        from moto import mock_aws

        mock = mock_aws()
    else:
        server.reset()
    with mock:
        _listing_pass(server, tmp, n, inprocess)


def _listing_pass(server: MotoServer, tmp: Path, n: int, inprocess: bool) -> None:
    import boto3
    import botocore.config

    from agent.config import parse_config
    from agent.pipeline.keys import Layout
    from agent.pipeline.poll import listing, thumb_times, worker_candidates

    data = config_data(server.url, tmp / "l-inbox", tmp / "l-thumbs", tmp / "l-state", queues={"mode": "poll"})
    cfg = parse_config(data)
    layout = Layout.of(cfg)
    conf = botocore.config.Config(
        s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32
    )
    s3 = boto3.client("s3", endpoint_url=None if inprocess else server.url, region_name="us-east-1", config=conf)
    s3.create_bucket(Bucket=cfg.source.bucket)
    s3.create_bucket(Bucket=cfg.thumbnails.bucket)
    t0 = time.monotonic()

    def put(i: int) -> None:
        rel = f"d{i % 100:02d}/img_{i:07d}.jpg"
        s3.put_object(Bucket=cfg.source.bucket, Key=layout.source_key(rel), Body=b"s")
        s3.put_object(Bucket=cfg.thumbnails.bucket, Key=layout.thumb_key(rel, layout.sizes[0]), Body=b"t")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    out(f"   created {2 * n} objects in {time.monotonic() - t0:.1f} s")

    requests = {"n": 0}
    lock = threading.Lock()

    def count(**_kw: Any) -> None:
        with lock:
            requests["n"] += 1

    s3.meta.events.register("before-send.s3", count)
    tracemalloc.start()
    t0 = time.monotonic()
    times = thumb_times(s3, cfg, layout)
    sources = listing(s3, cfg.source.bucket, layout.source_prefix, "list")
    found = sum(1 for _ in worker_candidates(layout, sources, times))
    took = time.monotonic() - t0
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out(
        f"   {requests['n']} requests, {took:.2f} s, peak Python memory {peak / 1e6:.1f} MB, "
        f"{found} candidate(s) (0 expected: every thumbnail is newer than its source)"
    )


class ListingStore:
    """A minimal S3 endpoint that serves only ListObjectsV2 over ``n`` generated keys per bucket (sources older than
    thumbnails), so a pass over 100,000 objects measures thumbdrop's side (HTTP, XML parsing, the merge), not a
    test store's own listing cost (moto re-sorts every key for every page: minutes per 100,000)."""

    def __init__(self, n: int) -> None:
        import http.server
        from urllib.parse import parse_qs, urlparse

        keys = sorted(f"d{i % 100:02d}/img_{i:07d}.jpg" for i in range(n))

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlparse(self.path)
                bucket = url.path.strip("/")
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                prefix = q.get("prefix", "")
                start = int(q.get("continuation-token", "0"))
                top = int(q.get("max-keys", "1000"))
                stamp = "2026-01-01T00:00:00.000Z" if bucket == "src" else "2026-01-01T00:00:05.000Z"
                chosen = [k for k in keys[start : start + top] if k.startswith(prefix)] if not prefix else []
                end = start + top
                body = [
                    '<?xml version="1.0" encoding="UTF-8"?>',
                    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
                    f"<Name>{bucket}</Name><Prefix>{prefix}</Prefix><KeyCount>{len(chosen)}</KeyCount>",
                    f"<MaxKeys>{top}</MaxKeys><IsTruncated>{'true' if chosen and end < len(keys) else 'false'}</IsTruncated>",
                ]
                if chosen and end < len(keys):
                    body.append(f"<NextContinuationToken>{end}</NextContinuationToken>")
                body += [
                    f"<Contents><Key>{k}</Key><LastModified>{stamp}</LastModified><ETag>&quot;{i:032x}&quot;</ETag>"
                    f"<Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>"
                    for i, k in enumerate(chosen, start)
                ]
                body.append("</ListBucketResult>")
                data = "".join(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="bench-listing-store", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.thread.join(10)
        self.httpd.server_close()


def stage_listing_fast(tmp: Path, n: int) -> None:
    import boto3
    import botocore.config

    from agent.config import parse_config
    from agent.pipeline.keys import Layout
    from agent.pipeline.poll import listing, thumb_times, worker_candidates

    out(f"\n== one worker listing pass over {n} sources and {n} thumbnails (a listing-only endpoint) ==")
    store = ListingStore(n)
    try:
        data = config_data(store.url, tmp / "f-inbox", tmp / "f-thumbs", tmp / "f-state", queues={"mode": "poll"})
        data["source"] = {"bucket": "src"}
        data["thumbnails"] = {"bucket": "thm"}
        cfg = parse_config(data)
        layout = Layout.of(cfg)
        conf = botocore.config.Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2})
        s3 = boto3.client("s3", endpoint_url=store.url, region_name="us-east-1", config=conf)
        requests = {"n": 0}
        s3.meta.events.register("before-send.s3", lambda **_kw: requests.__setitem__("n", requests["n"] + 1))
        s3.list_buckets = None  # never asked

        def one_pass() -> int:
            times = thumb_times(s3, cfg, layout)
            return sum(1 for _ in worker_candidates(layout, listing(s3, "src", "", "list"), times))

        t0, cpu0 = time.monotonic(), time.process_time()
        found = one_pass()  # timed without tracemalloc (it slows every allocation down)
        took, cpu = time.monotonic() - t0, time.process_time() - cpu0
        timed_requests = requests["n"]
        tracemalloc.start()
        one_pass()
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out(
            f"   {timed_requests} requests, {took:.2f} s ({cpu:.2f} s CPU, endpoint thread included), peak Python "
            f"memory {peak / 1e6:.1f} MB (a second pass under tracemalloc: the thumbnails' key -> time map; the "
            f"sources stream), {found} candidate(s) (0 expected)"
        )
    finally:
        store.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=12, help="images dropped per mode for the latency (default 12)")
    p.add_argument("--objects", type=int, default=10_000, help="sources (and as many thumbnails) for the listing pass")
    p.add_argument("--only", choices=("latency", "listing"))
    p.add_argument("--moto-objects", type=int, default=0, help="also a pass on moto with this many (slow to fill)")
    p.add_argument("--inprocess", action="store_true", help="listing on in-process moto (fast to fill) instead of the server")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-poll-") as d:
        tmp = Path(d)
        isolate_environment(tmp)
        server = MotoServer()
        server.start()
        try:
            if args.only in (None, "latency"):
                stage_latency(server, tmp, args.images)
            if args.only in (None, "listing"):
                stage_listing_fast(tmp, args.objects)
            if args.moto_objects:
                stage_listing(server, tmp, args.moto_objects, inprocess=args.inprocess)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
