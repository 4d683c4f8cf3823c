"""S3 implementations started by the tests themselves: moto (in-process server, or a process of its own),
LocalStack (from .venv-localstack) and s3rver (from .ci/stores/node_modules), each on a free loopback port.

``.ci/install-stores.sh`` installs LocalStack and s3rver. In CI (``CI=true``) a store that is not installed or does
not start FAILS its tests; a local run without it skips them and says why. One instance of each per session;
every test uses buckets and queues of its own (unique names), so no store needs a reset between tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
LOCALSTACK_PY = REPO / ".venv-localstack" / "bin" / "python"
S3RVER_BIN = REPO / ".ci" / "stores" / "node_modules" / ".bin" / "s3rver"
INSTALL_HINT = "install it with 'bash .ci/install-stores.sh'"
START_TIMEOUT = 90.0  # LocalStack is ready in 2-7 s on an idle machine; CI shares 2 cores


@dataclass
class Store:
    """One running S3 implementation, seen from the tests."""

    name: str  # moto, localstack, s3rver
    endpoint: str
    key: str = "testing"
    secret: str = "testing"
    queues: bool = True  # serves SQS and SNS, with bucket notifications delivered to them
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            cfg = botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"})
            session = boto3.Session(aws_access_key_id=self.key, aws_secret_access_key=self.secret, region_name="us-east-1")
            self._clients[service] = session.client(service, endpoint_url=self.endpoint, config=cfg)  # type: ignore[call-overload]
        return self._clients[service]

    def names(self) -> dict[str, str]:
        """Bucket, queue and topic names no other test uses (stores are shared by the session, never reset)."""
        tag = uuid.uuid4().hex[:8]
        return {
            "source": f"td-src-{tag}",
            "thumbs": f"td-thumbs-{tag}",
            "events": f"td-events-{tag}",
            "pull": f"td-pull-{tag}",
            "events_topic": f"td-events-t-{tag}",
            "pull_topic": f"td-pull-t-{tag}",
        }

    def close(self) -> None:
        for c in self._clients.values():
            with contextlib.suppress(Exception):
                c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(what: str) -> None:
    """CI must run every store: fail there; a developer's machine may lack one: skip, saying why."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {what}", pytrace=False)
    pytest.skip(what)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, ok: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(requests.RequestException):
            if ok(requests.get(url, timeout=2)):
                return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    _stop(proc)
    unavailable(f"the store at {url} did not start within {START_TIMEOUT:.0f} s (exit {proc.poll()}):\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_store(moto_server: str) -> Iterator[Store]:
    store = Store("moto", moto_server)
    yield store
    store.close()


@pytest.fixture(scope="session")
def moto_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A second moto in a process of its own: in-process moto servers share one state."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto-proc") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/moto-api/", proc, log, lambda r: r.status_code < 500)
    store = Store("moto (second process)", url)
    yield store
    store.close()
    _stop(proc)


@pytest.fixture(scope="session")
def localstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    if not LOCALSTACK_PY.exists():
        unavailable(f"LocalStack is not installed ({LOCALSTACK_PY} missing): {INSTALL_HINT}")
    port = free_port()
    root = tmp_path_factory.mktemp("localstack")
    log = root / "localstack.log"
    # LocalStack keeps S3 data in a fixed 'localstack-s3-storage' folder under the temp dir, whatever
    # FILESYSTEM_ROOT says: a TMPDIR of its own keeps parallel sessions (and their leftovers) apart.
    (root / "tmp").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCALSTACK_"))},
        "OVERRIDE_IN_DOCKER": "0",
        "SERVICES": "s3,sqs,sns",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "LOCALSTACK_HOST": f"127.0.0.1:{port}",
        "PERSISTENCE": "0",
        "SQS_ENDPOINT_STRATEGY": "off",
        "DNS_ADDRESS": "0",  # no DNS server of its own
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "DISABLE_EVENTS": "1",  # no analytics calls home
        "TMPDIR": str(root / "tmp"),
        "FILESYSTEM_ROOT": str(root / "fs"),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(LOCALSTACK_PY), "-m", "localstack.runtime.main"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=root,
        )
    url = f"http://127.0.0.1:{port}"

    def ready(resp: requests.Response) -> bool:
        services = resp.json().get("services", {}) if resp.ok else {}
        return all(services.get(s) in ("available", "running") for s in ("s3", "sqs", "sns"))

    _wait_http(f"{url}/_localstack/health", proc, log, ready)
    store = Store("localstack", url, key="test", secret="test")
    yield store
    store.close()
    _stop(proc)
    shutil.rmtree(root / "tmp", ignore_errors=True)


# s3rver accepts only keys its account model knows: the built-in pair.
S3RVER_KEY = "S3RVER"


@pytest.fixture(scope="session")
def s3rver() -> Iterator[Store]:
    if not S3RVER_BIN.exists():
        unavailable(f"s3rver is not installed ({S3RVER_BIN} missing): {INSTALL_HINT}")
    if shutil.which("node") is None:
        unavailable("s3rver needs Node.js ('node' is not on PATH)")
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="s3rver-"))
    log = root / "s3rver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(S3RVER_BIN), "-d", str(root / "data"), "-a", "127.0.0.1", "-p", str(port), "--silent"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/", proc, log, lambda r: r.status_code < 500)
    store = Store("s3rver", url, key=S3RVER_KEY, secret=S3RVER_KEY, queues=False)
    yield store
    store.close()
    _stop(proc)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["moto", "localstack"])
def queue_store(request: pytest.FixtureRequest, moto_store: Store) -> Store:
    """Each store that serves S3 with notifications to SQS and SNS (the queue modes).

    moto is asked for statically: its server thread must start before the thread-leak guard looks."""
    if request.param == "moto":
        return moto_store
    return request.getfixturevalue("localstack")  # type: ignore[no-any-return]


@pytest.fixture(params=["moto", "s3rver"])
def poll_store(request: pytest.FixtureRequest, moto_store: Store) -> Store:
    """Each store poll mode is tested on: moto, and s3rver (S3 only: no notifications, no If-None-Match)."""
    if request.param == "moto":
        return moto_store
    return request.getfixturevalue("s3rver")  # type: ignore[no-any-return]


def agent_env(store: Store, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """An E2EEnv (tests/e2e) pointed at ``store``, with its credentials in the children's environment."""
    from tests.e2e.conftest import E2EEnv, child_env

    home = tmp_path / "home"
    for d in (home, home / ".config", home / ".local" / "state", home / ".local" / "share", home / ".cache", home / ".run"):
        d.mkdir(parents=True, exist_ok=True)
    (home / ".run").chmod(0o700)
    env = {**child_env(home), "XDG_RUNTIME_DIR": str(home / ".run")}
    env.update({"AWS_ACCESS_KEY_ID": store.key, "AWS_SECRET_ACCESS_KEY": store.secret})
    e = E2EEnv(
        root=tmp_path,
        endpoint=store.endpoint,
        home=home,
        inbox=tmp_path / "inbox",
        thumbs=tmp_path / "thumbs",
        state=tmp_path / "state",
        outside=tmp_path / "outside",
        config_path=tmp_path / "thumbdrop.yaml",
        env=env,
    )
    for service in ("s3", "sqs", "sns"):
        e._clients[service] = store.client(service)  # the store's credentials; closed with the store
    e.inbox.mkdir()
    e.outside.mkdir()
    request.addfinalizer(lambda: _stop_agents(e, request))
    return e


def _stop_agents(e: Any, request: pytest.FixtureRequest) -> None:
    for agent in e.agents:
        agent.kill()
    if any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call")):
        for agent in e.agents:
            print(agent.diagnose())
    e._clients.clear()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
