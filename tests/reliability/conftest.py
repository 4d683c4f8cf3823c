"""Reliability helpers: the agent in a subprocess behind a fault-injecting proxy, and an audit of the result.

Every test gets a sandbox (its own HOME, inbox, thumbnails, state and an ``outside`` folder that must stay
empty), a FaultProxy in front of the session's moto server (reset per test by ``moto_url``), and a config
whose ``backend.endpoint_url`` is the proxy. Only the agent's traffic crosses the proxy: S3 -> SQS event
notifications happen inside moto, and the test's own boto3 clients talk to moto directly, so a fault never
blinds the test. ``thumbdrop status`` runs with a second config that differs only in pointing straight at
moto (same state dir): it reads the status the running agent publishes, and its queue depths stay readable
while the agent's link is cut.

Generic helpers (wait_for, image makers, check_thumbnail, the agent process wrapper) come from the e2e layer.
"""

from __future__ import annotations

import colorsys
import contextlib
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import botocore.config
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.e2e.conftest import (
    AgentProcess,
    CliResult,
    child_env,
    deep_merge,
    expected_size,
    files_under,
    wait_for,
)
from tests.reliability.faultproxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]
SOURCE_BUCKET = "thumbdrop-source"
THUMB_BUCKET = "thumbdrop-thumbnails"
EVENTS_QUEUE = "thumbdrop-events"
PULL_QUEUE = "thumbdrop-pull"
EVENTS_DLQ = "thumbdrop-events-dlq"
PULL_DLQ = "thumbdrop-pull-dlq"
FAILED_PREFIX = ".thumbdrop-failed/"
TMP_MARK = ".thumbdrop-tmp-"
BOUND = 256

__all__ = [
    "BOUND",
    "EVENTS_DLQ",
    "EVENTS_QUEUE",
    "FAILED_PREFIX",
    "PULL_DLQ",
    "PULL_QUEUE",
    "SOURCE_BUCKET",
    "THUMB_BUCKET",
    "TMP_MARK",
    "AgentProcess",
    "Audit",
    "CliResult",
    "ImageCase",
    "RelEnv",
    "files_under",
    "palette",
    "summary",
    "wait_for",
]


# --- images with a known content --------------------------------------------------------------------------


def palette(n: int, seed: int = 7) -> list[tuple[int, int, int]]:
    """``n`` saturated colours, far apart (hue steps, two brightness levels), in a seeded order."""
    colours = []
    for i in range(n):
        h = (i * 0.61803398875) % 1.0  # golden-ratio hue steps stay apart for any n
        v = 0.95 if i % 2 == 0 else 0.6
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, v)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    random.Random(seed).shuffle(colours)
    return colours


@dataclass(frozen=True)
class ImageCase:
    """An image the test drops: where, how big, which colour its centre has (its thumbnail's centre must match).

    ``noise``: "rgb" puts random pixels around a flat centre patch (40% of each side), so the file is big
    and incompressible while its thumbnail's centre still shows the known colour; "bw" does the same with
    black and white pixels in a 3-colour PNG palette: a small file whose JPEG thumbnail is large.
    """

    rel: str
    size: tuple[int, int]
    colour: tuple[int, int, int]
    noise: str = ""

    @property
    def thumb_rel(self) -> str:
        low = self.rel.lower()
        return self.rel if low.endswith((".jpg", ".jpeg")) else self.rel + ".jpg"

    def render(self) -> bytes:
        w, h = self.size
        patch = (int(w * 0.3), int(h * 0.3), int(w * 0.7) + 1, int(h * 0.7) + 1)
        rng = np.random.default_rng(w * 7919 + h)
        if self.noise == "rgb":
            im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
            im.paste(self.colour, patch)
        elif self.noise == "bw":
            im = Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8), "P")
            im.putpalette([0, 0, 0, 255, 255, 255, *self.colour])
            im.paste(2, patch)
        else:
            im = Image.new("RGB", (w, h), self.colour)
        low = self.rel.lower()
        buf = io.BytesIO()
        if low.endswith(".png"):
            im.save(buf, "PNG", compress_level=1)
        elif low.endswith(".bmp"):
            im.save(buf, "BMP")
        else:
            im.save(buf, "JPEG", quality=92)
        return buf.getvalue()

    def write(self, inbox: Path) -> Path:
        """The file appears whole (written aside under a dot name, which watch.exclude skips, then renamed)."""
        path = inbox / self.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.building")
        tmp.write_bytes(self.render())
        os.replace(tmp, path)
        return path

    def write_slowly(self, inbox: Path, pieces: int = 6, pause: float = 0.1) -> Path:
        """Write the image in place, in pieces, as a slow copy does (each pause shorter than settle_seconds)."""
        data = self.render()
        path = inbox / self.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        step = len(data) // pieces + 1
        with open(path, "wb") as f:
            for i in range(0, len(data), step):
                f.write(data[i : i + step])
                f.flush()
                time.sleep(pause)
        return path


def colour_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return max(abs(x - y) for x, y in zip(a, b, strict=False))


def thumbnail_problem(path: Path, case: ImageCase, others: list[tuple[int, int, int]]) -> str | None:
    """None if ``path`` is a whole, correct thumbnail of ``case``; else what is wrong with it."""
    try:
        with Image.open(path) as im:
            im.load()
            fmt, (w, h) = im.format, im.size
            pixel = im.convert("RGB").getpixel((w // 2, h // 2))
    except (OSError, SyntaxError, ValueError) as exc:
        return f"does not decode: {exc}"
    if fmt != "JPEG":
        return f"format {fmt}"
    if w > BOUND or h > BOUND:
        return f"{w}x{h} does not fit {BOUND}x{BOUND}"
    ew, eh = expected_size(*case.size)
    if abs(w - ew) > 1 or abs(h - eh) > 1:
        return f"{w}x{h}, expected {ew}x{eh} for a {case.size[0]}x{case.size[1]} source"
    assert isinstance(pixel, tuple)
    mine = colour_distance(pixel, case.colour)
    if mine > 14:
        return f"centre colour {pixel}, expected {case.colour}"
    if any(colour_distance(pixel, c) < mine for c in others if c != case.colour):
        return f"centre colour {pixel} is closer to another image's colour than to {case.colour}"
    return None


# --- the audit ----------------------------------------------------------------------------------------------


@dataclass
class Audit:
    """What the guarantees forbid, found by looking at the local folders and the buckets."""

    images: int = 0
    lost: list[str] = field(default_factory=list)  # no thumbnail locally or in the bucket
    duplicated: list[str] = field(default_factory=list)  # an extra object/file: a second thumbnail, a wrong path
    partial: list[str] = field(default_factory=list)  # temp files, half files, a half-uploaded original
    wrong: list[str] = field(default_factory=list)  # a thumbnail that is not its source's
    failed: list[str] = field(default_factory=list)  # failure markers for good images
    dead_letters: list[str] = field(default_factory=list)  # messages in the dead-letter queues

    def counts(self) -> dict[str, int]:
        return {
            "images": self.images,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "partial": len(self.partial),
            "wrong": len(self.wrong),
            "failed": len(self.failed),
            "dead_letters": len(self.dead_letters),
        }

    @property
    def clean(self) -> bool:
        return self.guarantees_hold and not self.dead_letters

    @property
    def guarantees_hold(self) -> bool:
        """Nothing lost, duplicated, half-written or wrong, and no good image marked as failed."""
        return not (self.lost or self.duplicated or self.partial or self.wrong or self.failed)

    def __str__(self) -> str:
        lines = [" ".join(f"{k}={v}" for k, v in self.counts().items())]
        for name in ("lost", "duplicated", "partial", "wrong", "failed", "dead_letters"):
            items = getattr(self, name)
            if items:
                lines.append(f"  {name}: " + "; ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        return "\n".join(lines)


# --- the environment ------------------------------------------------------------------------------------------


@dataclass
class RelEnv:
    root: Path
    moto: str  # moto, directly: the test's view
    proxy: FaultProxy  # what the agent talks to
    home: Path
    inbox: Path
    thumbs: Path
    state: Path
    outside: Path
    config_path: Path
    status_config_path: Path
    env: dict[str, str]
    agents: list[AgentProcess] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)

    # --- config ----------------------------------------------------------------------------------------

    def base_config(self) -> dict[str, Any]:
        return {
            "backend": {
                "endpoint_url": self.proxy.url,
                "addressing_style": "path",
                "connect_timeout": 2,
                "read_timeout": 5,
                "max_attempts": 2,
            },
            "watch": {"folders": [str(self.inbox)], "settle_seconds": 0.3},
            "local": {"thumbnails_dir": str(self.thumbs), "state_dir": str(self.state)},
            "queues": {"wait_seconds": 1, "visibility_timeout": 10},
            "worker": {"concurrency": 2},
            "transfer": {"concurrency": 4},
        }

    def config(self) -> dict[str, Any]:
        return deep_merge(self.base_config(), self.extra)

    def write_config(self, extra: dict[str, Any] | None = None) -> Path:
        self.extra = extra or {}
        data = self.config()
        self.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        status_data = deep_merge(data, {"backend": {"endpoint_url": self.moto}})
        self.status_config_path.write_text(yaml.safe_dump(status_data, allow_unicode=True), encoding="utf-8")
        return self.config_path

    # --- the command -------------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120.0, direct: bool = False) -> CliResult:
        """``thumbdrop ARGS`` through the proxy (or straight to moto with ``direct``)."""
        cfg = self.status_config_path if direct else self.config_path
        argv = [sys.executable, "-m", "agent", "--config", str(cfg), *args]
        proc = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, timeout=timeout, check=False)
        return CliResult(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))

    def status(self) -> dict[str, Any]:
        """``thumbdrop status --json`` (with the direct config: it never waits on a cut link)."""
        res = self.cli("status", "--json", direct=True, timeout=60)
        assert res.rc == 0, str(res)
        data = json.loads(res.stdout)
        assert isinstance(data, dict)
        return data

    def start_agent(self, *extra_args: str) -> AgentProcess:
        log_path = self.root / f"agent-{len(self.agents) + 1}.log"
        argv = [sys.executable, "-m", "agent", "--config", str(self.config_path), *extra_args, "run"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        agent = AgentProcess(proc, log_path)
        self.agents.append(agent)
        return agent

    def diagnose(self) -> str:
        parts = [a.diagnose()[-6000:] for a in self.agents[-2:]]
        return "\n".join(parts) + f"\nproxy: mode {self.proxy.mode}, {self.proxy.stats}"

    # --- the backend, seen from the test (never through the proxy) ----------------------------------------------

    def client(self, service: str) -> Any:
        if service not in self._clients:
            cfg = botocore.config.Config(
                s3={"addressing_style": "path"}, retries={"total_max_attempts": 3, "mode": "standard"}, read_timeout=30
            )
            self._clients[service] = boto3.client(  # type: ignore[call-overload]
                service,
                endpoint_url=self.moto,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=cfg,
            )
        return self._clients[service]

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    def keys(self, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    out[obj["Key"]] = obj
        except self.s3.exceptions.NoSuchBucket:
            return {}
        return out

    def queue_url(self, name: str) -> str:
        return str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])

    def depth(self, name: str) -> tuple[int, int]:
        """(visible, in flight) of a queue."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url(name),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def queues_idle(self) -> bool:
        try:
            return all(self.depth(q) == (0, 0) for q in (EVENTS_QUEUE, PULL_QUEUE))
        except self.sqs.exceptions.QueueDoesNotExist:
            return False

    def dead_letters(self, name: str) -> int:
        try:
            return self.depth(name)[0] + self.depth(name)[1]
        except self.sqs.exceptions.QueueDoesNotExist:
            return 0

    def peek_dead_letters(self, name: str, expect: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Receive (and delete) up to ``expect`` messages of a dead-letter queue, with their attributes."""
        url = self.queue_url(name)
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            resp = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"], AttributeNames=["All"]
            )
            for msg in resp.get("Messages", []):
                got.append(msg)
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
        return got

    def multipart_uploads(self) -> list[dict[str, Any]]:
        try:
            return list(self.s3.list_multipart_uploads(Bucket=SOURCE_BUCKET).get("Uploads", []))
        except self.s3.exceptions.NoSuchBucket:
            return []

    # --- what the guarantees say ----------------------------------------------------------------------------------

    def all_thumbnailed(self, cases: list[ImageCase]) -> bool:
        local = files_under(self.thumbs)
        if not all(c.thumb_rel in local for c in cases):
            return False
        remote = self.keys(THUMB_BUCKET)
        return all(c.thumb_rel in remote for c in cases)

    def temp_files(self) -> list[str]:
        return sorted(f for f in files_under(self.thumbs) if TMP_MARK in f or f.endswith(".tmp"))

    def audit(self, cases: list[ImageCase]) -> Audit:
        """Every image has exactly one correct thumbnail locally and in the bucket, and nothing else is there."""
        result = Audit(images=len(cases))
        colours = [c.colour for c in cases]
        expected = {c.thumb_rel: c for c in cases}
        local = files_under(self.thumbs)
        remote = self.keys(THUMB_BUCKET)
        sources = self.keys(SOURCE_BUCKET)
        for c in cases:
            missing = [
                where for where, present in (("local", c.thumb_rel in local), ("bucket", c.thumb_rel in remote)) if not present
            ]
            if missing:
                result.lost.append(f"{c.rel} (no thumbnail {' or '.join(missing)})")
                continue
            problem = thumbnail_problem(self.thumbs / c.thumb_rel, c, colours)
            if problem is not None:
                (result.partial if "decode" in problem else result.wrong).append(f"{c.thumb_rel}: {problem}")
            digest = hashlib.md5((self.thumbs / c.thumb_rel).read_bytes(), usedforsecurity=False).hexdigest()
            if digest != str(remote[c.thumb_rel]["ETag"]).strip('"'):
                result.partial.append(f"{c.thumb_rel}: the local file differs from the bucket's thumbnail")
            src = sources.get(c.rel)
            if src is None:
                result.lost.append(f"{c.rel} (no original in the source bucket)")
            else:
                data = (self.inbox / c.rel).read_bytes()
                if src["Size"] != len(data) or (
                    "-" not in str(src["ETag"])
                    and str(src["ETag"]).strip('"') != hashlib.md5(data, usedforsecurity=False).hexdigest()
                ):
                    result.partial.append(f"{c.rel}: the uploaded original is not the file on disk ({src['Size']} bytes)")
        for f in sorted(local):
            if TMP_MARK in f or f.endswith(".tmp") or f.endswith(".part"):
                result.partial.append(f"local temp file {f}")
            elif f not in expected:
                result.duplicated.append(f"local {f} (no image of that name)")
        for k in sorted(remote):
            if k.startswith(FAILED_PREFIX):
                result.failed.append(f"failure marker {k}")
            elif k not in expected:
                result.duplicated.append(f"bucket thumbnail {k} (no image of that name)")
        names = {c.rel for c in cases}
        for k in sorted(sources):
            if k not in names:
                result.duplicated.append(f"source object {k} (no image of that name)")
        for dlq in (EVENTS_DLQ, PULL_DLQ):
            for letter in self.describe_dead_letters(dlq):
                result.dead_letters.append(f"{dlq}: {letter}")
        return result

    def describe_dead_letters(self, name: str) -> list[str]:
        """One line per message in a dead-letter queue: its keys, and why it is there (left in the queue)."""
        try:
            url = self.queue_url(name)
        except self.sqs.exceptions.QueueDoesNotExist:
            return []
        out: list[str] = []
        for _ in range(20):
            resp = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=30,  # hidden while we look, back afterwards
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            )
            messages = resp.get("Messages", [])
            if not messages:
                break
            for m in messages:
                try:
                    keys = [r["s3"]["object"]["key"] for r in json.loads(m["Body"]).get("Records", [])]
                except (ValueError, KeyError, TypeError, AttributeError):
                    keys = [m["Body"][:60]]
                reason = m.get("MessageAttributes", {}).get("thumbdrop-reason", {}).get("StringValue")
                receives = m.get("Attributes", {}).get("ApproximateReceiveCount", "?")
                why = f"dead-lettered by the agent: {reason}" if reason else f"moved by SQS after {receives} receive(s)"
                out.append(f"{', '.join(unquote_plus(k) for k in keys)} ({why})")
        return out


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rel_rep_{report.when}", report)
    return report


def make_env(root: Path, moto: str) -> RelEnv:
    home = root / "home"
    for d in (home, home / ".config", home / ".local" / "state", home / ".local" / "share", home / ".cache"):
        d.mkdir(parents=True, exist_ok=True)
    proxy = FaultProxy(moto)
    env = RelEnv(
        root=root,
        moto=moto,
        proxy=proxy,
        home=home,
        inbox=root / "inbox",
        thumbs=root / "thumbs",
        state=root / "state",
        outside=root / "outside",
        config_path=root / "thumbdrop.yaml",
        status_config_path=root / "thumbdrop-direct.yaml",
        env=child_env(home),
    )
    env.inbox.mkdir()
    env.outside.mkdir()
    env.write_config()
    return env


def close_env(env: RelEnv, failed: bool) -> None:
    for agent in env.agents:
        agent.kill()
    if failed:
        print(env.diagnose())
    env.proxy.stop()
    for c in env._clients.values():
        with contextlib.suppress(Exception):
            c.close()


@pytest.fixture()
def rel(moto_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RelEnv]:
    env = make_env(tmp_path, moto_url)
    try:
        yield env
    finally:
        failed = any(getattr(getattr(request.node, f"rel_rep_{w}", None), "failed", False) for w in ("setup", "call"))
        close_env(env, failed)


# --- tables printed at the end of the run ------------------------------------------------------------------------

# title -> rows; tests append to it, the terminal summary prints it (so it shows in CI output without -s).
SUMMARY: dict[str, list[str]] = {}


def summary(title: str, line: str) -> None:
    SUMMARY.setdefault(title, []).append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for title, lines in SUMMARY.items():
        terminalreporter.write_sep("-", title)
        for line in lines:
            terminalreporter.write_line(line)
