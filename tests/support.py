"""Helpers every test layer uses (fixtures live in the conftest files), and the benchmarks too: waiting,
config merging, real images, a moto server in a child process, an agent process and how to stop one.

Plain module (no pytest): ``benchmarks/*.py`` import it to run against the same harness as the tests.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def wait_for(
    predicate: Callable[[], Any], timeout: float = 45.0, what: str = "condition", diagnose: Callable[[], str] | None = None
) -> Any:
    """Poll ``predicate`` every 0.1 s until it returns something truthy; return that, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(0.1)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --- images ----------------------------------------------------------------------------------------------


def image_bytes(
    size: tuple[int, int],
    fmt: str = "JPEG",
    *,
    color: tuple[int, int, int] = (200, 30, 30),
    noise: bool = False,
    quality: int = 90,
) -> bytes:
    """A real image: a flat colour (cheap, small) or RGB noise (big, incompressible)."""
    import numpy as np
    from PIL import Image

    if noise:
        rng = np.random.default_rng(sum(size))
        im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    else:
        im = Image.new("RGB", size, color)
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=quality)
    elif fmt == "PNG":
        im.save(buf, "PNG", compress_level=1)
    else:
        im.save(buf, fmt)
    return buf.getvalue()


def make_image(path: Path, size: tuple[int, int] = (640, 480), fmt: str | None = None, **kwargs: Any) -> Path:
    """Write a real image at ``path`` (format from the suffix unless given); parents are created."""
    if fmt is None:
        fmt = {".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF"}.get(path.suffix.lower(), "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = image_bytes(size, fmt, **kwargs)
    tmp = path.with_name(f".{path.name}.building")  # a dot file: excluded by the default watch.exclude
    tmp.write_bytes(data)
    os.replace(tmp, path)  # the image appears whole: the watcher sees one finished file
    return path


def make_photos(folder: Path, m: int) -> list[Path]:
    """Photo-sized JPEGs (1600x1200, gradient + noise), each different."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1234)
    y = np.linspace(0, 1, 1200, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, 1600, dtype=np.float32)[None, :, None]
    out = []
    for i in range(m):
        tint = np.array([1.0, 0.8 + 0.01 * i, 0.6], dtype=np.float32)
        base = 200 * (0.6 * x + 0.4 * y) * tint + 25
        noisy = base + rng.normal(0, 12, size=(1200, 1600, 3)).astype(np.float32)
        path = folder / f"drop_{i:03d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(path, "JPEG", quality=88)
        out.append(path)
    return out


# --- processes ----------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float | None:
    """user+system CPU seconds of a live process (all its threads), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Ask a child to stop, then kill it if it does not; harmless when it has already exited."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


class MotoProcess:
    """moto's server in a child process (the embedded backend's): it runs until its stdin closes."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cloud.local_server"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "PORT n", or EOF when it failed
        if not line.startswith(b"PORT "):
            self.stop()
            raise SystemExit("the moto server did not start: pip install 'moto[server]'")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float | None:
        return proc_cpu_seconds(self.pid)

    def reset(self) -> None:
        """Forget every bucket, object, queue and notification."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()


def start_agent(argv: list[str], log_path: Path, *, env: dict[str, str] | None = None) -> AgentProcess:
    """``python -m agent <argv>`` (e.g. ``--config C run``) from the repository, its output in ``log_path``."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", *argv],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return AgentProcess(proc, log_path)


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def diagnose(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"--- agent ({state}) log {self.log_path} ---\n{self.log()[-20000:]}"

    def wait_ready(self, timeout: float = 45.0, *, reconciled: bool = True) -> None:
        """Wait until the agent runs and (``reconciled``) its first reconcile of the watch folders is done."""
        marks = ("thumbdrop agent running", "reconciled ") if reconciled else ("thumbdrop agent running",)
        wait_for(
            lambda: all(m in self.log() for m in marks) or self.proc.poll() is not None,
            timeout,
            "the agent to be running",
            self.diagnose,
        )
        assert self.proc.poll() is None, self.diagnose()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds it took). Kills and fails if it outlives ``timeout``."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the agent did not exit within {timeout} s of SIGTERM\n{self.diagnose()}") from None
        return rc, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
