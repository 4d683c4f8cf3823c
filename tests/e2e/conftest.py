"""End-to-end helpers: a private HOME, a config pointing at the shared moto server, the CLI in a subprocess.

Every test gets its own temp HOME (and XDG dirs), inbox, thumbnails and state folders, and a config whose
backend is the session's moto server (reset per test by ``moto_url``). The agent runs as
``python -m agent --config C run`` in a subprocess whose output goes to a log file that is printed when the
test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
import yaml
from PIL import Image

from tests.e2e.browser import browser  # noqa: F401 - the headless Chromium fixture of the gallery tests
from tests.support import AgentProcess, deep_merge, start_agent
from tests.support import image_bytes as image_bytes  # the e2e tests import these three from here
from tests.support import make_image as make_image
from tests.support import wait_for as wait_for

REPO = Path(__file__).resolve().parents[2]
SOURCE_BUCKET = "thumbdrop-source"
THUMB_BUCKET = "thumbdrop-thumbnails"
EVENTS_QUEUE = "thumbdrop-events"
PULL_QUEUE = "thumbdrop-pull"
EVENTS_DLQ = "thumbdrop-events-dlq"
PULL_DLQ = "thumbdrop-pull-dlq"
REASON_ATTR = "thumbdrop-reason"
BOUND = 256  # the default thumbnails.sizes


# --- images ----------------------------------------------------------------------------------------------


def expected_size(width: int, height: int, bound: int = BOUND) -> tuple[int, int]:
    longest = max(width, height)
    if longest <= bound:
        return width, height
    scale = bound / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_thumbnail(
    path: Path, source_size: tuple[int, int], *, color: tuple[int, int, int] | None = None, bound: int = BOUND
) -> None:
    """The file decodes as a JPEG, fits bound x bound, keeps the aspect ratio, is never upscaled."""
    with Image.open(path) as im:
        im.load()
        assert im.format == "JPEG", f"{path}: {im.format}"
        w, h = im.size
        assert w <= bound and h <= bound, f"{path}: {w}x{h} does not fit {bound}x{bound}"
        assert w <= source_size[0] and h <= source_size[1], f"{path}: {w}x{h} upscaled from {source_size}"
        ew, eh = expected_size(*source_size, bound)
        assert abs(w - ew) <= 1 and abs(h - eh) <= 1, f"{path}: {w}x{h}, expected about {ew}x{eh} for {source_size}"
        if color is not None:
            pixel = im.convert("RGB").getpixel((w // 2, h // 2))
            assert isinstance(pixel, tuple)
            assert all(abs(a - b) <= 12 for a, b in zip(pixel, color, strict=True)), f"{path}: centre {pixel}, expected {color}"


def files_under(root: Path) -> set[str]:
    """Every regular file below ``root``, as /-separated relative paths."""
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --- the test environment -----------------------------------------------------------------------------------


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.rc}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


@dataclass
class E2EEnv:
    root: Path
    endpoint: str
    home: Path
    inbox: Path
    thumbs: Path
    state: Path
    outside: Path
    config_path: Path
    env: dict[str, str]
    agents: list[AgentProcess] = field(default_factory=list)
    _clients: dict[str, Any] = field(default_factory=dict)

    # --- config -------------------------------------------------------------------

    def base_config(self) -> dict[str, Any]:
        return {
            "backend": {"endpoint_url": self.endpoint, "addressing_style": "path", "max_attempts": 3},
            "watch": {"folders": [str(self.inbox)], "settle_seconds": 0.5},
            "local": {"thumbnails_dir": str(self.thumbs), "state_dir": str(self.state)},
            "queues": {"wait_seconds": 1, "visibility_timeout": 30},
        }

    def write_config(self, extra: dict[str, Any] | None = None) -> Path:
        data = deep_merge(self.base_config(), extra or {})
        self.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return self.config_path

    # --- the command ------------------------------------------------------------------

    def cli(self, *args: str, config: bool = True, timeout: float = 120.0) -> CliResult:
        argv = [sys.executable, "-m", "agent"] + (["--config", str(self.config_path)] if config else []) + list(args)
        proc = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, timeout=timeout, check=False)
        return CliResult(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))

    def start_agent(self, *extra_args: str) -> AgentProcess:
        log_path = self.root / f"agent-{len(self.agents) + 1}.log"
        agent = start_agent(["--config", str(self.config_path), *extra_args, "run"], log_path, env=self.env)
        self.agents.append(agent)
        return agent

    # --- the backend, seen from the test ------------------------------------------------------

    def client(self, service: str) -> Any:
        if service not in self._clients:
            cfg = botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"})
            session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
            self._clients[service] = session.client(service, endpoint_url=self.endpoint, config=cfg)  # type: ignore[call-overload]
        return self._clients[service]

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def sns(self) -> Any:
        return self.client("sns")

    def keys(self, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj
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

    def send(self, queue: str, body: str | dict[str, Any]) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.queue_url(queue), MessageBody=text)

    def receive_all(self, queue: str, expect: int, timeout: float = 45.0) -> list[dict[str, Any]]:
        """Receive (and delete) messages until ``expect`` have come or ``timeout``; returns them with their attributes."""
        url = self.queue_url(queue)
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


def s3_event(bucket: str, key: str, *, size: int = 1, etag: str = "0" * 32, name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 event notification as S3 (and moto) put it on a queue: the key URL-encoded, '+' for spaces."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-01-01T00:00:00.000Z",
                "eventName": name,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "hand-made",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe=""), "size": size, "eTag": etag, "sequencer": "0055AED6DCD90281E5"},
                },
            }
        ]
    }


def child_env(home: Path) -> dict[str, str]:
    """The environment of a thumbdrop child process: its own HOME and XDG folders, test credentials, no AWS_* leak."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "XDG_", "THUMBDROP_")) and k not in ("PYTHONPATH", "JOURNAL_STREAM")
    }
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / ".aws" / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / ".aws" / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "PYTHONIOENCODING": "utf-8",
        }
    )
    return env


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture()
def e2e(moto_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[E2EEnv]:
    home = tmp_path / "home"
    for d in (home, home / ".config", home / ".local" / "state", home / ".local" / "share", home / ".cache", home / ".run"):
        d.mkdir(parents=True, exist_ok=True)
    (home / ".run").chmod(0o700)
    env = E2EEnv(
        root=tmp_path,
        endpoint=moto_url,
        home=home,
        inbox=tmp_path / "inbox",
        thumbs=tmp_path / "thumbs",
        state=tmp_path / "state",
        outside=tmp_path / "outside",
        config_path=tmp_path / "thumbdrop.yaml",
        env={**child_env(home), "XDG_RUNTIME_DIR": str(home / ".run")},
    )
    env.inbox.mkdir()
    env.outside.mkdir()
    env.write_config()
    try:
        yield env
    finally:
        for agent in env.agents:
            agent.kill()
        failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
        if failed:
            for agent in env.agents:
                print(agent.diagnose())
        for c in env._clients.values():
            with contextlib.suppress(Exception):
                c.close()
