"""``thumbdrop tray`` on a real X server: Xvfb, the trayer panel, the gtk backend under dbus-run-session.

The harness waits until the icon has docked and its geometry is stable, then
clicks it with xdotool, drives the menu with the keyboard, and checks every
effect through the agent's control socket (the same path the tray uses) or on
disk. Screenshots go to ``artifacts/tray/`` for a person to look at.

CI installs the tools with ``.ci/install-tray-deps.sh``; without them these
tests skip and say what is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from agent.service.control_client import AgentNotRunningError, ControlClient
from agent.tray import icons, menu
from agent.tray.backend import gtk_available
from tests.e2e.conftest import REPO, E2EEnv, files_under, make_image, wait_for

pytestmark = pytest.mark.e2e
ARTIFACTS = REPO / "artifacts" / "tray"
TOOLS = ("Xvfb", "trayer", "xdotool", "dbus-run-session")


def _missing() -> list[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not gtk_available():
        missing.append("PyGObject with GTK 3 (pip install 'PyGObject<3.51'; apt gir1.2-gtk-3.0)")
    # find_spec, not import: importing pystray without a display raises Xlib's error.
    missing += [f"python module {m}" for m in ("pystray", "Xlib") if importlib.util.find_spec(m) is None]
    return missing


# --- the X server --------------------------------------------------------------------------------------


def downs_to(label: str) -> int:
    """How many Down presses select ``label`` in an attached agent's menu (the status line is not selectable)."""
    view = menu.TrayView(snapshot={"state": "idle"}, phase="attached", info={"inbox": ["/in"], "thumbnails_dir": "/t"})
    items = [i for i in menu.build_menu(view, _NoActions())[1:] if not i.separator]
    return [i.text for i in items].index(label) + 1


class _NoActions:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


@dataclass
class XServer:
    display: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True, timeout: float = 10) -> str:
        result = subprocess.run(
            argv, env={**os.environ, "DISPLAY": self.display}, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def screenshot(self) -> Image.Image:
        from Xlib import X, display

        d = display.Display(self.display)
        try:
            root = d.screen().root
            geo = root.get_geometry()
            raw = root.get_image(0, 0, geo.width, geo.height, X.ZPixmap, 0xFFFFFFFF)
            return Image.frombytes("RGB", (geo.width, geo.height), raw.data, "raw", "BGRX")
        finally:
            d.close()

    def popup_open(self) -> bool:
        """Whether a menu is showing: GTK menus are mapped override-redirect windows of some size."""
        from Xlib import X, display, error

        d = display.Display(self.display)
        try:
            for w in d.screen().root.query_tree().children:
                try:
                    attrs = w.get_attributes()
                    if attrs.map_state == X.IsViewable and attrs.override_redirect:
                        geo = w.get_geometry()
                        if geo.width > 60 and geo.height > 60:
                            return True
                except (error.BadWindow, error.BadDrawable):
                    continue  # destroyed between query_tree and the request: a menu that just closed
            return False
        finally:
            d.close()


@pytest.fixture(scope="module")
def xserver() -> Iterator[XServer]:
    missing = _missing()
    if missing:
        pytest.skip(f"the tray e2e tests need {', '.join(missing)}; CI installs them with .ci/install-tray-deps.sh")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "640x400x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as r:
        number = r.readline().strip()  # Xvfb writes the display number it found free, once it accepts clients
    if not number:
        xvfb.kill()
        xvfb.wait(10)
        pytest.fail("Xvfb did not start (no display number on -displayfd)")
    server = XServer(f":{number}", [xvfb])
    trayer = subprocess.Popen(
        ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "32"]
        + ["--SetDockType", "true", "--transparent", "false", "--tint", "0xdddddd", "--expand", "true"],
        env={**os.environ, "DISPLAY": server.display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.procs.append(trayer)
    try:
        wait_for(lambda: "panel" in server.run("xwininfo", "-root", "-tree", check=False), 15, "the trayer panel")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield server
    finally:
        for p in reversed(server.procs):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


# --- the tray under test -----------------------------------------------------------------------------------


@dataclass
class Tray:
    x: XServer
    e2e: E2EEnv
    proc: subprocess.Popen[bytes]
    out_path: Path
    opened_path: Path
    window: int = 0
    geometry: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def state_dir(self) -> Path:
        return self.e2e.state

    def log(self) -> str:
        parts = []
        for path in (
            self.out_path,
            self.state_dir / "tray.log",
            self.state_dir / "agent.log",
            self.state_dir / "agent-console.log",
        ):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    def client(self) -> ControlClient:
        return ControlClient(self.state_dir, timeout=5)

    def agent_state(self) -> str | None:
        try:
            return str(self.client().call("status")["state"])
        except AgentNotRunningError:
            return None

    def opened(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return self.opened_path.read_text().splitlines()
        return []

    # --- the icon -------------------------------------------------------------------------

    def find_icon(self) -> int | None:
        out = self.x.run("xdotool", "search", "--name", "^thumbdrop", check=False)
        ids = [int(v) for v in out.split()]
        assert len(ids) <= 1, f"{len(ids)} thumbdrop icons on the panel: a tray from an earlier test is still running"
        return ids[0] if ids else None

    def wait_icon(self, timeout: float = 30) -> None:
        """Until the icon has docked and its geometry stayed the same for three looks in a row."""
        seen: list[tuple[int, int, int, int]] = []

        def stable() -> bool:
            wid = self.find_icon()
            if wid is None:
                seen.clear()
                return False
            out = self.x.run("xdotool", "getwindowgeometry", "--shell", str(wid), check=False)
            values = dict(line.split("=", 1) for line in out.split() if "=" in line)
            try:
                geo = (int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"]))
            except (KeyError, ValueError):
                return False
            seen.append(geo)
            self.window = wid
            self.geometry = geo
            return len(seen) >= 3 and len(set(seen[-3:])) == 1 and geo[2] >= 16 and geo[3] >= 16 and geo[1] >= 0

        wait_for(stable, timeout, "the tray icon to dock", self.log)

    def title(self) -> str:
        return self.x.run("xdotool", "getwindowname", str(self.window), check=False).strip()

    def wait_title(self, pattern: str, timeout: float = 30) -> str:
        return str(
            wait_for(lambda: re.search(pattern, self.title()) and self.title(), timeout, f"icon title ~ {pattern!r}", self.log)
        )

    def click(self, button: int) -> None:
        x, y, w, h = self.geometry
        # No --sync: it waits for a pointer motion that never comes when the pointer is already there.
        self.x.run("xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", str(button))

    def choose(self, *keys: str, shot: str | None = None) -> None:
        """Right-click, wait for the menu, press ``keys`` (the last is usually Return)."""
        self.click(3)
        wait_for(self.x.popup_open, 10, "the menu to open", self.log)
        if shot:
            self.save(self.x.screenshot(), shot)
        self.x.run("xdotool", "key", "--delay", "60", *keys)
        wait_for(lambda: not self.x.popup_open(), 10, "the menu to close", self.log)

    def icon_image(self) -> Image.Image:
        x, y, w, h = self.geometry
        return self.x.screenshot().crop((x, y, x + w, y + h))

    def wait_pixels(self, state: str, name: str, timeout: float = 10) -> Image.Image:
        """Until the icon on screen looks like ``state`` (the panel repaints after the title changes); saved as ``name``."""
        wait_for(lambda: closest_state(self.icon_image()) == state, timeout, f"the icon to show {state!r}", self.log)
        return self.snap_state(name)

    def snap_state(self, name: str) -> Image.Image:
        """The whole screen and the icon (8x) under artifacts/tray/."""
        screen = self.x.screenshot()
        self.save(screen, f"{name}.png")
        x, y, w, h = self.geometry
        icon = screen.crop((x, y, x + w, y + h))
        self.save(icon.resize((w * 8, h * 8), Image.Resampling.NEAREST), f"{name}-icon-8x.png")
        return icon

    @staticmethod
    def save(image: Image.Image, name: str) -> None:
        image.save(ARTIFACTS / name)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the tray did not exit within {timeout} s\n{self.log()}") from None


def start_tray(x: XServer, e2e: E2EEnv, name: str = "tray") -> Tray:
    opened = e2e.root / f"{name}-opened.log"
    opener = e2e.root / "opener.sh"
    # xdg-open stand-in: records what the tray asked to open, so a click can be checked on disk.
    opener.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$THUMBDROP_TEST_OPENED"\n')
    opener.chmod(0o755)
    env = {
        **e2e.env,
        "DISPLAY": x.display,
        "THUMBDROP_TRAY_OPENER": str(opener),
        "THUMBDROP_TEST_OPENED": str(opened),
        "NO_AT_BRIDGE": "1",  # no accessibility bus in a bare dbus session: keep GTK quiet
    }
    env.pop("WAYLAND_DISPLAY", None)
    out = e2e.root / f"{name}.out"
    argv = ["dbus-run-session", "--", sys.executable, "-m", "agent", "--config", str(e2e.config_path), "tray", "--backend", "gtk"]
    with open(out, "wb") as f:
        # Its own process group: dbus-run-session does not pass SIGTERM on, so cleanup signals the group.
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return Tray(x, e2e, proc, out, opened)


@pytest.fixture()
def trays(xserver: XServer, e2e: E2EEnv) -> Iterator[list[Tray]]:
    started: list[Tray] = []
    yield started
    for t in started:
        # The tray quits on SIGTERM (stopping an agent it started); the group also holds its dbus-daemon.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(t.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            t.proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(t.proc.pid, signal.SIGKILL)
        t.proc.wait(5)
        # An agent the tray started lives in its own session: if one outlived the tray, stop it.
        with contextlib.suppress(OSError, ValueError):
            pid = int((t.state_dir / "tray-agent.pid").read_text())
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                wait_for(lambda pid=pid: not _pid_alive(pid), 30, "the tray's agent to stop")


def tray_config(e2e: E2EEnv, **extra: Any) -> None:
    base: dict[str, Any] = {"watch": {"rescan_seconds": 3600}, "tray": {"backend": "gtk"}}
    for k, v in extra.items():
        base[k] = {**base.get(k, {}), **v}
    e2e.write_config(base)


def mean_rgb(image: Image.Image) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(image.convert("RGB")).mean)


def closest_state(icon: Image.Image) -> str:
    """Which drawn state a screenshot of the icon looks most like."""
    w, h = icon.size
    best, best_diff = "", float("inf")
    for state in icons.ICON_STATES:
        ref = Image.new("RGB", (w, h), "#dddddd")
        drawn = icons.render(state, min(w, h))
        ref.paste(drawn, ((w - drawn.width) // 2, (h - drawn.height) // 2), drawn)
        diff = sum(ImageStat.Stat(ImageChops.difference(ref, icon.convert("RGB"))).mean)
        if diff < best_diff:
            best, best_diff = state, diff
    return best


# --- the tests ---------------------------------------------------------------------------------------------


def test_tray_starts_the_agent_and_its_menu_drives_it(xserver: XServer, e2e: E2EEnv, trays: list[Tray]) -> None:
    tray_config(e2e, watch={"settle_seconds": 1.5})
    make_image(e2e.inbox / "trip" / "a.jpg", (640, 480), color=(30, 90, 200))
    started = time.monotonic()
    tray = start_tray(xserver, e2e)
    trays.append(tray)
    tray.wait_icon()
    docked = time.monotonic() - started

    # The tray started an agent of its own, detached, logging to the state dir.
    wait_for(lambda: tray.agent_state() == "running", 60, "the agent the tray started", tray.log)
    info = tray.client().call("info")
    assert info["pid"] != tray.proc.pid
    assert (e2e.state / "tray-agent.pid").read_text() == str(info["pid"])
    wait_for(lambda: "trip/a.jpg" in files_under(e2e.thumbs), 60, "the first thumbnail", tray.log)
    tray.wait_title(r"^thumbdrop: Up to date — 1 done")
    assert "thumbdrop agent running" in (e2e.state / "agent.log").read_text()
    idle = tray.wait_pixels("idle", "01-idle")

    # A burst of images: the icon shows "working" while they settle, go up and come back.
    for i in range(40):
        make_image(e2e.inbox / "burst" / f"{i:02d}.jpg", (320, 240), color=(200, 120 + i, 40))
    tray.wait_title(r"^thumbdrop: \d+ (uploading|thumbnailing|pulling|waiting)", timeout=20)
    tray.wait_pixels("working", "01b-working")  # settle_seconds (1.5) keeps it working longer than one tray poll
    wait_for(lambda: len(files_under(e2e.thumbs)) == 41, 120, "the burst's thumbnails", tray.log)
    tray.wait_title(r"^thumbdrop: Up to date — \d+ done", timeout=60)

    # Left click: the default action opens the thumbnails folder.
    tray.click(1)
    wait_for(lambda: str(e2e.thumbs) in tray.opened(), 10, "the thumbnails folder to open", tray.log)

    # Right click, first item: Pause. The agent says paused; the icon changes.
    cycle = time.monotonic()
    tray.choose("Down", "Return", shot="02-menu.png")
    wait_for(lambda: tray.agent_state() == "paused", 10, "the agent to pause", tray.log)
    cycle = time.monotonic() - cycle
    tray.wait_title(r"^thumbdrop: Paused")
    paused = tray.wait_pixels("paused", "03-paused")
    assert sum(ImageStat.Stat(ImageChops.difference(idle.convert("RGB"), paused.convert("RGB"))).mean) > 30
    assert mean_rgb(paused)[2] < mean_rgb(paused)[0] - 40  # amber, where idle is green

    # The checked Pause item again: resume.
    tray.choose("Down", "Return", shot="04-menu-paused.png")
    wait_for(lambda: tray.agent_state() == "running", 10, "the agent to resume", tray.log)
    tray.wait_title(r"^thumbdrop: Up to date")

    # Sync now (second item) re-pulls a thumbnail deleted by hand, long before the hourly rescan.
    done = int(re.findall(r"(\d+) done", tray.title())[0])
    (e2e.thumbs / "trip" / "a.jpg").unlink()
    tray.choose(*["Down"] * downs_to("Sync now"), "Return")
    wait_for(lambda: "trip/a.jpg" in files_under(e2e.thumbs), 30, "sync now to pull the thumbnail back", tray.log)
    tray.wait_title(rf"— {done + 1} done")  # the tray has seen that pull: it is now the newest recent thumbnail

    # Recent thumbnails -> its submenu -> the newest: opens that file. The key presses come from the menu model,
    # so a new item above it moves the presses, not the test's meaning.
    tray.choose(*["Down"] * downs_to("Recent thumbnails"), "Right", "Return")
    wait_for(lambda: str(e2e.thumbs / "trip" / "a.jpg") in tray.opened(), 10, "the recent thumbnail to open", tray.log)

    # Quit (the last item) stops the agent the tray started, through the control socket.
    agent_pid = int(info["pid"])
    quit_started = time.monotonic()
    tray.choose("Up", "Return")
    assert tray.wait_exit() == 0, tray.log()
    quit_took = time.monotonic() - quit_started
    wait_for(lambda: not _pid_alive(agent_pid), 10, "the agent process to exit", tray.log)
    assert not (e2e.state / "control.sock").exists()
    assert "stop requested through the control interface" in (e2e.state / "agent.log").read_text()
    print(f"tray timings: docked {docked:.1f} s, pause click->paused {cycle:.2f} s, quit {quit_took:.1f} s")


def test_tray_attaches_to_an_agent_that_is_already_running(xserver: XServer, e2e: E2EEnv, trays: list[Tray]) -> None:
    tray_config(e2e)
    agent = e2e.start_agent()
    agent.wait_ready()
    tray = start_tray(xserver, e2e)
    trays.append(tray)
    tray.wait_icon()
    tray.wait_title(r"^thumbdrop: Up to date")
    assert tray.client().call("info")["pid"] == agent.proc.pid
    assert "started elsewhere" in (e2e.state / "tray.log").read_text()
    assert not (e2e.state / "agent.log").exists(), "the tray started a second agent"

    tray.choose("Down", "Return")
    wait_for(lambda: tray.agent_state() == "paused", 10, "the agent to pause", tray.log)
    # Quit leaves an agent it did not start running (e.g. the systemd service's).
    tray.choose("Up", "Return")
    assert tray.wait_exit() == 0, tray.log()
    assert agent.alive() and tray.agent_state() == "paused"
    rc, _ = agent.terminate()
    assert rc == 0


def test_tray_shows_offline_while_the_backend_is_unreachable(xserver: XServer, e2e: E2EEnv, trays: list[Tray]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: connections to it are refused
    tray_config(e2e, backend={"endpoint_url": f"http://127.0.0.1:{port}", "max_attempts": 1})
    tray = start_tray(xserver, e2e)
    trays.append(tray)
    tray.wait_icon()
    tray.wait_title(r"^thumbdrop: Offline", timeout=60)
    tray.wait_pixels("offline", "05-offline")
    tray.choose("Up", "Return")
    assert tray.wait_exit() == 0, tray.log()


def test_tray_shows_an_error_when_its_agent_cannot_run(xserver: XServer, e2e: E2EEnv, trays: list[Tray]) -> None:
    tray_config(e2e, backend={"auto_setup": False})  # and the moto server is empty: the buckets are missing
    tray = start_tray(xserver, e2e)
    trays.append(tray)
    tray.wait_icon()
    title = tray.wait_title(r"^thumbdrop: Error", timeout=60)
    assert "missing" in title.lower(), title
    tray.wait_pixels("error", "06-error")
    wait_for(lambda: "the agent exited (code 3)" in (e2e.state / "tray.log").read_text(), 20, "the exit to be noticed", tray.log)
    # The menu offers to start it again (first item after the status line); it fails the same way.
    tray.choose("Down", "Return", shot="07-menu-error.png")
    wait_for(lambda: (e2e.state / "tray.log").read_text().count("starting the agent") >= 2, 10, "a second start", tray.log)
    second = int((e2e.state / "tray-agent.pid").read_text())
    # Quit at once, whether that agent is still starting (no control socket yet) or has failed again:
    # it must not outlive the tray.
    tray.choose("Up", "Return")
    assert tray.wait_exit() == 0, tray.log()
    wait_for(lambda: not _pid_alive(second), 30, "the second agent to be stopped by Quit", tray.log)


def test_tray_without_a_display_suggests_run(e2e: E2EEnv) -> None:
    env = {k: v for k, v in e2e.env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    argv = [sys.executable, "-m", "agent", "--config", str(e2e.config_path), "tray"]
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result
    assert "no graphical display" in result.stderr and "thumbdrop run" in result.stderr
    assert "Traceback" not in result.stderr


def test_icon_contact_sheet_artifact() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    sheet = icons.contact_sheet()
    sheet.resize((sheet.width * 3, sheet.height * 3), Image.Resampling.NEAREST).save(
        ARTIFACTS / "00-icons-16-48px-light-dark.png"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent, the tray, may have exited without reaping it).
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True
