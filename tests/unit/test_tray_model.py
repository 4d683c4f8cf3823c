"""The tray without a display: state -> icon logic, icons, the menu model driven by calling its items,
the controller against a fake agent's real control socket, notifications, backend choice, autostart.

Nothing here imports pystray (``agent.tray.app`` is the only module that does).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from agent.cli.main import main
from agent.config.model import Config
from agent.service.control_client import ControlClient
from agent.tray import autostart, icons
from agent.tray.agent_process import AgentLauncher
from agent.tray.backend import BackendChoice, NoTrayError, choose_backend
from agent.tray.controller import TrayController
from agent.tray.menu import Item, TrayView, build_menu, icon_state, status_line, tooltip
from agent.tray.notify import Notifier, summarise
from tests.unit.control_fakes import FakeAgent, make_config, serving
from tests.unit.test_gallery_boundary import modules_loaded_by

REPO = Path(__file__).resolve().parents[2]


def snapshot(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pid": 4242,
        "state": "running",
        "roles": ["uploader", "worker", "puller", "cleaner"],
        "offline_since": None,
        "offline_reason": "",
        "fatal": None,
        "counts": {"uploaded": 0, "thumbnailed": 0, "pulled": 0, "failed": 0},
        "active": {"uploading": 0, "thumbnailing": 0, "pulling": 0},
        "pending_local": 0,
        "failures": [],
        "recent_thumbnails": [],
    }
    base.update(over)
    return base


def attached(**over: Any) -> TrayView:
    return TrayView(snapshot=snapshot(**over), phase="attached", info={"pid": 4242})


# --- state -> icon ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "state"),
    [
        (attached(), "idle"),
        (attached(active={"uploading": 3, "thumbnailing": 0, "pulling": 0}), "working"),
        (attached(pending_local=2), "working"),
        (attached(state="paused", active={"uploading": 1, "thumbnailing": 0, "pulling": 0}), "paused"),
        (attached(offline_since=1.0, offline_reason="connection refused"), "offline"),
        (attached(state="starting", offline_since=1.0), "offline"),
        (attached(state="error", fatal="bucket missing"), "error"),
        (attached(state="stopping"), "stopped"),
        (TrayView(phase="connecting"), "starting"),
        (TrayView(phase="starting"), "starting"),
        (TrayView(phase="not-running"), "stopped"),
        (TrayView(phase="not-running", last_error="Missing resource: bucket"), "error"),
    ],
)
def test_icon_state(view: TrayView, state: str) -> None:
    assert icon_state(view) == state
    assert state in icons.ICON_STATES


def test_tooltip_has_live_counts() -> None:
    view = attached(
        active={"uploading": 3, "thumbnailing": 0, "pulling": 0},
        counts={"uploaded": 130, "thumbnailed": 125, "pulled": 120, "failed": 1},
    )
    assert tooltip(view) == "thumbdrop: 3 uploading, 120 done, 1 failed"
    assert tooltip(attached(counts={"pulled": 7, "failed": 0})) == "thumbdrop: Up to date — 7 done"
    assert tooltip(attached(state="paused")).startswith("thumbdrop: Paused — ")
    assert "connection refused" in tooltip(attached(offline_since=1.0, offline_reason="connection refused"))
    assert tooltip(TrayView(phase="not-running")) == "thumbdrop: Agent not running"
    # "done" follows the roles: an uploader-only agent is done once it has uploaded.
    assert "5 done" in tooltip(attached(roles=["uploader"], counts={"uploaded": 5}))


def test_status_line_words() -> None:
    assert status_line(attached()) == "Up to date"
    assert status_line(attached(state="error", fatal="x" * 200)).endswith("…")
    assert status_line(TrayView(phase="stopping")) == "Agent stopping…"
    assert status_line(TrayView(phase="not-running", last_error="no bucket")) == "Error: no bucket"


# --- icons -------------------------------------------------------------------------------------------


def _on(bg: str, icon: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", icon.size, bg)
    canvas.paste(icon, (0, 0), icon)
    return canvas


@pytest.mark.parametrize("size", [16, 22, 32])
def test_icons_are_distinct_per_state(size: int) -> None:
    rendered = {s: _on("#808080", icons.render(s, size)) for s in icons.ICON_STATES}
    for a in icons.ICON_STATES:
        for b in icons.ICON_STATES:
            if a < b:
                diff = ImageStat.Stat(ImageChops.difference(rendered[a], rendered[b])).mean
                assert sum(diff) / 3 > 6, f"{a} and {b} look alike at {size} px ({diff})"


@pytest.mark.parametrize("size", [16, 24, 32])
@pytest.mark.parametrize("bg", ["#f5f5f5", "#ffffff", "#1e1e1e", "#000000"])
def test_icons_stand_out_on_light_and_dark_panels(size: int, bg: str) -> None:
    panel = Image.new("L", (size, size), Image.new("RGB", (1, 1), bg).convert("L").getpixel((0, 0)))  # type: ignore[arg-type]
    for state in icons.ICON_STATES:
        icon = icons.render(state, size)
        assert icon.size == (size, size) and icon.mode == "RGBA"
        seen = _on(bg, icon).convert("L")
        # Pixels clearly apart from the panel's brightness: most of the tile, outline or fill.
        apart = ImageChops.difference(seen, panel).point(lambda v: 255 if v > 40 else 0)
        share = ImageStat.Stat(apart).mean[0] / 255
        assert share > 0.45, f"{state} at {size} px on {bg}: only {share:.0%} of pixels contrast"


def test_unknown_state_draws_as_offline_and_renders_are_copies() -> None:
    assert ImageChops.difference(icons.render("bogus", 32), icons.render("offline", 32)).getbbox() is None
    a = icons.render("idle", 32)
    a.putpixel((0, 0), (1, 2, 3, 255))
    assert icons.render("idle", 32).getpixel((0, 0)) != (1, 2, 3, 255)


def test_contact_sheet_shows_every_state() -> None:
    sheet = icons.contact_sheet(sizes=(16, 32))
    assert sheet.width >= len(icons.ICON_STATES) * 32


# --- the menu model -------------------------------------------------------------------------------------


class RecordingActions:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


def find(items: tuple[Item, ...], prefix: str) -> Item:
    for item in items:
        if item.text.startswith(prefix):
            return item
        if item.submenu:
            try:
                return find(item.submenu, prefix)
            except LookupError:
                pass
    raise LookupError(f"no menu item {prefix!r} in {[i.text for i in items]}")


def test_menu_layout_and_actions() -> None:
    actions = RecordingActions()
    view = attached(recent_thumbnails=[f"/t/trip/{i}.jpg" for i in range(8)], counts={"failed": 2})
    view.info.update(inbox=["/home/u/inbox"], thumbnails_dir="/home/u/thumbs")
    items = build_menu(view, actions)  # type: ignore[arg-type]
    texts = [i.text for i in items if not i.separator]
    assert texts[0] == "Up to date" and not items[0].enabled
    assert texts[1:] == [
        "Pause syncing",
        "Sync now",
        "Open inbox",
        "Open thumbnails",
        "Open gallery",
        "Recent thumbnails",
        "Failed items (2)",
        "Cleanup now…",
        "Edit settings…",
        "Start at login",
        "Quit",
    ]
    assert [i.text for i in items if i.default] == ["Open thumbnails"]
    for text in (
        "Pause syncing",
        "Sync now",
        "Open inbox",
        "Open thumbnails",
        "Open gallery",
        "Cleanup now…",
        "Edit settings…",
        "Start at login",
        "Quit",
    ):
        action = find(items, text).action
        assert action is not None
        action()
    recent = find(items, "Recent thumbnails").submenu
    assert [i.text for i in recent] == ["trip/7.jpg", "trip/6.jpg", "trip/5.jpg", "trip/4.jpg", "trip/3.jpg"]
    recent[0].action()  # type: ignore[misc]
    find(items, "Open report").action()  # type: ignore[misc]
    find(items, "Retry failed items").action()  # type: ignore[misc]
    assert [c[0] for c in actions.calls] == [
        "toggle_pause",
        "sync_now",
        "open_inbox",
        "open_thumbnails",
        "open_gallery",
        "cleanup_dry_run",
        "edit_settings",
        "toggle_autostart",
        "quit",
        "open_file",
        "open_failed_report",
        "retry_failed",
    ]
    assert ("open_inbox", ("/home/u/inbox",)) in actions.calls
    assert ("open_file", ("/t/trip/7.jpg",)) in actions.calls


def test_menu_follows_the_state() -> None:
    actions = RecordingActions()
    paused = build_menu(attached(state="paused"), actions)  # type: ignore[arg-type]
    assert find(paused, "Pause syncing").checked is True
    assert not find(paused, "Sync now").enabled
    assert find(build_menu(attached(), actions), "Pause syncing").checked is False  # type: ignore[arg-type]

    down = build_menu(TrayView(phase="not-running", fallback_inbox=["/in"], fallback_thumbnails="/th"), actions)  # type: ignore[arg-type]
    assert down[0].text == "Agent not running"
    assert find(down, "Start agent").action is not None
    assert not find(down, "Pause syncing").enabled
    assert find(down, "Open thumbnails").enabled  # from the tray's own config while no agent answers
    assert find(down, "(none yet)").enabled is False
    assert find(down, "Cleanup now…").enabled is False  # not "not available": no agent has said yet
    assert find(down, "Retry failed items").text == "Retry failed items" and not find(down, "Retry failed items").enabled

    owned = TrayView(snapshot=snapshot(), phase="attached", owned=True)
    assert build_menu(owned, actions)[-1].text == "Quit (stop the agent)"  # type: ignore[arg-type]


def test_menu_cleanup_confirmation_and_inboxes() -> None:
    actions = RecordingActions()
    view = attached()
    view.cleanup_plan = {"objects": 12, "bytes": 3_400_000}
    view.info["inbox"] = ["/a/inbox", "/b/camera"]
    items = build_menu(view, actions)  # type: ignore[arg-type]
    find(items, "Confirm cleanup (12 objects)").action()  # type: ignore[misc]
    find(items, "Cancel cleanup").action()  # type: ignore[misc]
    assert [i.text for i in find(items, "Open inbox").submenu] == ["/a/inbox", "/b/camera"]
    find(items, "/b/camera").action()  # type: ignore[misc]
    assert actions.calls == [("confirm_cleanup", ()), ("cancel_cleanup", ()), ("open_inbox", ("/b/camera",))]
    view.busy = "cleanup"
    assert not find(build_menu(view, actions), "Cleaning up").enabled  # type: ignore[arg-type]


def test_signature_ignores_actions_but_not_text() -> None:
    a = Item("Sync now", lambda: None)
    assert a.signature() == Item("Sync now", lambda: None).signature()
    assert a.signature() != Item("Sync now", lambda: None, enabled=False).signature()


# --- notifications ------------------------------------------------------------------------------------


def test_failures_are_rate_limited_and_summarised() -> None:
    sent: list[tuple[str, str]] = []
    now = [100.0]
    n = Notifier(lambda t, m: sent.append((t, m)), min_interval=30, clock=lambda: now[0])
    n.failure(["a.jpg: bad image"])
    assert sent == [("thumbdrop: 1 item failed", "a.jpg: bad image")]
    n.failure(["b.jpg: bad image"])
    n.failure(["c.jpg: x", "d.jpg: y", "e.jpg: z"])
    assert len(sent) == 1 and n.pending == 4
    n.now("thumbdrop", "an answer to a click is never held back")
    assert len(sent) == 2
    now[0] += 29
    n.flush()
    assert len(sent) == 2
    now[0] += 2
    n.flush()
    assert sent[-1][0] == "thumbdrop: 4 items failed"
    assert sent[-1][1].splitlines() == ["b.jpg: bad image", "c.jpg: x", "d.jpg: y", "and 1 more (see 'Failed items' in the menu)"]
    assert n.pending == 0


def test_summary_wording() -> None:
    assert summarise(["x: y"]) == ("thumbdrop: 1 item failed", "x: y")


# --- the controller against a fake agent's real control socket -----------------------------------------------


class FakeLauncher(AgentLauncher):
    """Starts nothing: records starts and pretends the started agent is the fake one (pid = this process)."""

    def __init__(self, state_dir: Path, agent: FakeAgent | None = None) -> None:
        super().__init__(state_dir, config=None)
        self.agent = agent
        self.starts = 0
        self.running = False
        self.code = 0

    def start(self) -> int:
        import os

        self.starts += 1
        self.running = True
        self.owned_pid = os.getpid()
        return self.owned_pid

    def alive(self) -> bool:
        return self.running

    def wait_exit(self, timeout: float) -> bool:
        self.running = False
        return True

    @property
    def exit_code(self) -> int | None:
        return None if self.running else self.code


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config_path = tmp / "thumbdrop.yaml"
        self.config_path.write_text(
            f"watch: {{folders: ['{tmp / 'inbox'}']}}\nlocal: {{thumbnails_dir: '{tmp / 'thumbs'}', state_dir: '{tmp / 'state'}'}}\n"
        )
        self.cfg: Config = make_config(tmp)
        self.state = tmp / "state"
        self.state.mkdir(mode=0o700, exist_ok=True)
        self.agent = FakeAgent(self.cfg, self.state)
        self.sent: list[tuple[str, str]] = []
        self.opened: list[str] = []
        self.launcher = FakeLauncher(self.state, self.agent)
        self.quit_called = False

    def controller(self, **kw: Any) -> TrayController:
        env = {"HOME": str(self.tmp / "home"), "XDG_CONFIG_HOME": str(self.tmp / "xdg")}
        c = TrayController(
            self.cfg,
            config_path=self.config_path,
            notifier=Notifier(lambda t, m: self.sent.append((t, m)), min_interval=30),
            opener=_Opener(self.opened),
            launcher=self.launcher,
            env=env,
            **kw,
        )
        c.on_quit = self._on_quit
        return c

    def _on_quit(self) -> None:
        self.quit_called = True


class _Opener:
    def __init__(self, record: list[str]) -> None:
        self.record = record

    def open(self, target: str) -> None:
        self.record.append(target)

    def edit(self, path: str) -> None:
        self.record.append(f"edit:{path}")


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    yield Env(tmp_path)


def test_controller_attaches_to_a_running_agent_without_starting_one(env: Env) -> None:
    c = env.controller()
    with serving(env.agent):
        c.refresh()
        view = c.view()
        assert view.phase == "attached" and view.info["pid"] == view.snapshot["pid"]  # type: ignore[index]
        assert not view.owned  # started elsewhere (no pid file): Quit must leave it running
        assert env.launcher.starts == 0
        c.toggle_pause()
        assert env.agent.status.state == "paused" and c.view().snapshot["state"] == "paused"  # type: ignore[index]
        c.toggle_pause()
        assert env.agent.status.state == "running"
        c.sync_now()
        assert env.agent.calls == ["pause", "resume", "sync-now"]
        c.quit()
        assert env.quit_called and "stop" not in env.agent.calls


def test_controller_starts_an_agent_when_none_answers_and_stops_it_on_quit(env: Env) -> None:
    c = env.controller()
    c.refresh()
    assert env.launcher.starts == 1 and c.view().phase == "starting"
    assert icon_state(c.view()) == "starting"
    with serving(env.agent):
        c.refresh()
        assert c.view().owned and c.view().phase == "attached"
        c.quit()
    assert "stop" in env.agent.calls and env.quit_called
    c.refresh()  # after quit: no second agent
    assert env.launcher.starts == 1


def test_controller_reports_an_agent_that_exits(env: Env) -> None:
    c = env.controller()
    c.refresh()
    env.launcher.running, env.launcher.code = False, 3
    (env.state / "agent-console.log").write_text("thumbdrop: Missing resource: bucket thumbdrop-source\n")
    c.refresh()
    view = c.view()
    assert view.phase == "not-running" and icon_state(view) == "error"
    assert "Missing resource" in status_line(view)
    assert env.sent and "exited (code 3)" in env.sent[-1][0]
    assert env.launcher.starts == 1  # no restart loop
    find(c.menu(), "Start agent").action()  # type: ignore[misc]
    assert env.launcher.starts == 2


def test_controller_reports_an_agent_that_was_seen_stopping_on_its_own_error(env: Env) -> None:
    # A fatal error makes the agent say "stopping" before it exits; the tray caught that state in one poll
    # and then kept quiet about the exit code, as if the user had asked for the stop.
    c = env.controller()
    c.refresh()
    with serving(env.agent):
        env.agent.status.state = "stopping"
        c.refresh()
        assert c.view().phase == "stopping"
    env.launcher.running, env.launcher.code = False, 3
    c.refresh()
    assert env.sent and "exited (code 3)" in env.sent[-1][0]
    assert icon_state(c.view()) == "error"


def test_controller_keeps_quiet_about_an_exit_it_asked_for(env: Env) -> None:
    c = env.controller()
    c.refresh()
    with serving(env.agent):
        c.refresh()
        c.quit()
    env.launcher.code = 3  # whatever the code, the tray stopped it
    c.refresh()
    assert not any("exited" in title for title, _ in env.sent)


def test_controller_notifies_new_failures_only(env: Env) -> None:
    env.agent.status.fail("old.jpg", "bad image", "worker")
    c = env.controller()
    with serving(env.agent):
        c.refresh()
        assert env.sent == []  # failures from before the tray attached are not news
        time.sleep(0.01)
        env.agent.status.fail("new.jpg", "cannot identify image file", "worker")
        c.refresh()
        assert env.sent == [("thumbdrop: 1 item failed", "new.jpg: cannot identify image file")]
        env.agent.status.fail("newer.jpg", "truncated", "worker")
        c.refresh()
        assert len(env.sent) == 1  # rate-limited: waits for the next slot
        env.agent.status.offline("connection refused")
        c.refresh()
        assert env.sent[-1] == ("thumbdrop is offline", "connection refused")
        env.agent.status.online()
        c.refresh()
        assert env.sent[-1][0] == "thumbdrop is back online"
        report = c.write_failed_report()
    text = report.read_text()
    assert report.parent == env.state
    assert "new.jpg" in text and "cannot identify image file" in text and "old.jpg" in text


def test_controller_opens_folders_files_and_the_report(env: Env) -> None:
    c = env.controller()
    thumb = env.tmp / "thumbs" / "trip" / "a.jpg"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"jpeg")
    with serving(env.agent):
        env.agent.status.pulled(str(thumb))
        c.refresh()
        find(c.menu(), "Open thumbnails").action()  # type: ignore[misc]
        find(c.menu(), "Open inbox").action()  # type: ignore[misc]
        find(c.menu(), "trip/a.jpg").action()  # type: ignore[misc]
        find(c.menu(), "Open report").action()  # type: ignore[misc]
    assert env.opened == [str(env.tmp / "thumbs"), str(env.tmp / "inbox"), str(thumb), str(env.state / "failed-items.txt")]
    assert (env.tmp / "inbox").is_dir()  # created so the file manager has something to show


def test_controller_cleanup_asks_before_deleting(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.service import control

    runs: list[bool] = []

    def fake_cleanup(target: Any, *, dry_run: bool) -> dict[str, Any]:
        runs.append(dry_run)
        return {"objects": 3, "bytes": 3_000_000, "problems": []} if dry_run else {"deleted": 3, "bytes": 3_000_000, "failed": 0}

    monkeypatch.setattr(control, "cleanup_now", fake_cleanup)
    c = env.controller()
    with serving(env.agent):
        c.refresh()
        find(c.menu(), "Cleanup now…").action()  # type: ignore[misc]
        assert runs == [True]  # a dry run first: nothing deleted yet
        assert "would delete 3 objects, 3.0 MB" in env.sent[-1][1]
        find(c.menu(), "Confirm cleanup (3 objects)").action()  # type: ignore[misc]
        assert runs == [True, False]
        assert env.sent[-1] == ("thumbdrop cleanup done", "3 deleted, 3.0 MB, 0 failed")
        assert find(c.menu(), "Cleanup now…")  # the confirmation is used up
        find(c.menu(), "Cleanup now…").action()  # type: ignore[misc]
        find(c.menu(), "Cancel cleanup").action()  # type: ignore[misc]
        assert runs == [True, False, True]
        assert find(c.menu(), "Cleanup now…")


def test_controller_cleanup_guard_is_not_offered(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.service import control

    monkeypatch.setattr(control, "cleanup_now", lambda target, *, dry_run: {"objects": 900, "problems": ["90% of thumbs/"]})
    c = env.controller()
    with serving(env.agent):
        c.refresh()
        find(c.menu(), "Cleanup now…").action()  # type: ignore[misc]
    assert "mass-delete guard" in env.sent[-1][0] and "--force" in env.sent[-1][1]
    assert c.view().cleanup_plan is None


def test_settings_edit_bad_then_good_restarts_an_owned_agent(env: Env) -> None:
    c = env.controller()
    c.refresh()  # starts (fake) agent: owned
    with serving(env.agent):
        c.refresh()
        assert c.view().owned
        find(c.menu(), "Edit settings…").action()  # type: ignore[misc]
        assert env.opened == [f"edit:{env.config_path}"]
        env.config_path.write_text("queues:\n  max_receives: 0\nthumbnails:\n  format: gif\n")
        c.check_config()
        title, message = env.sent[-1]
        assert "settings not applied (2 problems)" in title
        assert "queues.max_receives" in message and "thumbnails.format" in message
        assert "stop" not in env.agent.calls
        env.config_path.write_text(
            f"watch: {{folders: ['{env.tmp / 'inbox2'}']}}\n"
            f"local: {{thumbnails_dir: '{env.tmp / 'thumbs'}', state_dir: '{env.tmp / 'state'}'}}\n"
        )
        c.check_config()
    assert "stop" in env.agent.calls and env.launcher.starts == 2
    assert env.sent[-1][0] == "thumbdrop: settings applied"
    assert c.cfg.watch.folders == [str(env.tmp / "inbox2")]


def test_settings_saved_for_an_agent_started_elsewhere(env: Env) -> None:
    c = env.controller()
    with serving(env.agent):
        c.refresh()
        env.config_path.write_text(env.config_path.read_text() + "worker: {concurrency: 2}\n")
        c.check_config()
    assert env.sent[-1][0] == "thumbdrop: settings saved" and "systemctl --user restart" in env.sent[-1][1]
    assert "stop" not in env.agent.calls and env.launcher.starts == 0


def test_edit_settings_without_a_config_writes_a_starter(env: Env) -> None:
    c = env.controller()
    c.config_path = None
    c.edit_settings()
    path = env.tmp / "xdg" / "thumbdrop" / "config.yaml"
    assert env.opened == [f"edit:{path}"]
    assert "thumbdrop configuration" in path.read_text()
    c.check_config()
    assert env.sent == []  # writing the starter is not an edit


def test_start_at_login_toggles_the_autostart_entry(env: Env) -> None:
    c = env.controller()
    entry = env.tmp / "xdg" / "autostart" / "thumbdrop.desktop"
    assert find(c.menu(), "Start at login").checked is False
    find(c.menu(), "Start at login").action()  # type: ignore[misc]
    assert entry.exists() and find(c.menu(), "Start at login").checked is True
    text = entry.read_text()
    assert f"Exec={sys.executable} -m agent --config {env.config_path} tray" in text
    find(c.menu(), "Start at login").action()  # type: ignore[misc]
    assert not entry.exists() and find(c.menu(), "Start at login").checked is False


def test_controller_threads_start_and_stop(env: Env) -> None:
    c = env.controller(poll_interval=0.05)
    changes: list[TrayView] = []
    c.on_change = changes.append
    with serving(env.agent):
        c.start()
        try:
            deadline = time.monotonic() + 5
            while not any(v.phase == "attached" for v in changes) and time.monotonic() < deadline:
                time.sleep(0.02)
            c.toggle_pause()
            while env.agent.status.state != "paused" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert env.agent.status.state == "paused"
        finally:
            c.stop()
    assert any(v.phase == "attached" for v in changes)


# --- backend choice, autostart file, the CLI without a display --------------------------------------------


def test_backend_choice() -> None:
    yes, no = (lambda: True), (lambda: False)
    x11 = {"DISPLAY": ":0"}
    assert choose_backend("auto", env=x11, platform="linux", gtk=yes, appindicator=yes) == BackendChoice("gtk")
    assert choose_backend("auto", env=x11, platform="linux", gtk=no, appindicator=no).name == "xorg"
    assert "xorg" in choose_backend("auto", env=x11, platform="linux", gtk=no, appindicator=no).warning
    wayland = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0", "XDG_SESSION_TYPE": "wayland"}
    assert choose_backend("auto", env=wayland, platform="linux", gtk=yes, appindicator=yes).name == "appindicator"
    assert choose_backend("auto", env=wayland, platform="linux", gtk=yes, appindicator=no).name == "gtk"
    assert choose_backend("xorg", env=x11, platform="linux", gtk=yes, appindicator=yes).name == "xorg"
    assert choose_backend("auto", env={}, platform="darwin") == BackendChoice("")
    with pytest.raises(NoTrayError, match="PyGObject"):
        choose_backend("gtk", env=x11, platform="linux", gtk=no, appindicator=no)
    with pytest.raises(NoTrayError, match="AppIndicator"):
        choose_backend("appindicator", env=x11, platform="linux", gtk=yes, appindicator=no)
    with pytest.raises(NoTrayError) as err:
        choose_backend("auto", env={}, platform="linux", gtk=yes, appindicator=yes)
    assert "thumbdrop run" in err.value.hint and err.value.exit_code == 2


def test_tray_without_a_display_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(["tray"]) == 2
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "no graphical display" in err and "thumbdrop run" in err
    assert "pystray" not in sys.modules  # decided before the import that would raise Xlib's error


def test_autostart_entry_matches_the_packaged_desktop_file(tmp_path: Path) -> None:
    packaged = (REPO / "packaging" / "linux" / "thumbdrop.desktop").read_text()
    ours = autostart.desktop_entry(["thumbdrop", "tray"])
    assert ours == packaged
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert not autostart.is_enabled(env)
    path = autostart.enable(autostart.tray_command("/my configs/td.yaml", python="/usr/bin/python3"), env)
    assert path == tmp_path / "cfg" / "autostart" / "thumbdrop.desktop"
    assert "Exec=/usr/bin/python3 -m agent --config '/my configs/td.yaml' tray" in path.read_text()
    assert autostart.is_enabled(env)
    path.write_text(path.read_text() + "Hidden=true\n")  # how a desktop's settings app turns it off
    assert not autostart.is_enabled(env)
    autostart.disable(env)
    autostart.disable(env)
    assert not path.exists()


def test_launcher_command_line(tmp_path: Path) -> None:
    launcher = AgentLauncher(tmp_path, config="cfg.yaml", local=True, verbosity=1, env={}, python="/py")
    argv = launcher.command()
    assert argv[:3] == ["/py", "-m", "agent"]
    assert argv[3:5] == ["--config", str(Path("cfg.yaml").resolve())]
    assert argv[5:] == ["--local", "-v", "run", "--log-file", str(tmp_path / "agent.log")]
    assert str(REPO) in launcher.env["PYTHONPATH"].split(":")


def test_launcher_starts_a_real_detached_process_and_adopts_it(tmp_path: Path) -> None:
    launcher = AgentLauncher(tmp_path, config=None, env={"PATH": "/usr/bin:/bin"}, python=sys.executable)
    launcher.command = lambda: [sys.executable, "-c", "print('hello from the agent'); raise SystemExit(3)"]  # type: ignore[method-assign]
    pid = launcher.start()
    assert (tmp_path / "tray-agent.pid").read_text() == str(pid)
    assert launcher.wait_exit(10)
    assert launcher.exit_code == 3
    assert "hello from the agent" in launcher.console_tail()
    other = AgentLauncher(tmp_path, config=None, env={})
    assert other.adopt(pid) and not other.adopt(pid + 1)
    launcher.forget()
    assert not (tmp_path / "tray-agent.pid").exists()


def test_tray_modules_do_not_import_pystray_or_the_pipeline() -> None:
    loaded = modules_loaded_by(
        "import agent.tray.menu, agent.tray.controller, agent.tray.icons, agent.tray.backend, agent.tray.autostart\n"
        "import agent.tray.actions, agent.tray.agent_process, agent.tray.news, agent.tray.openers, agent.tray.report\n"
        "import agent.tray.settings"
    )
    assert "agent.tray.controller" in loaded
    assert [m for m in loaded if m == "pystray" or m.startswith("agent.pipeline") or m == "agent.service.agent"] == []


def test_control_client_is_what_the_tray_uses(env: Env) -> None:
    c = env.controller()
    assert isinstance(c.client, ControlClient) and c.client.path == env.state / "control.sock"


def test_recent_video_previews_are_named_after_their_video() -> None:
    from agent.tray.menu import _label

    assert _label("/t/trip/IMG_1.MOV.mp4") == "trip/IMG_1.MOV (web preview)"
    assert _label("/t/trip/IMG_1.MOV.jpg") == "trip/IMG_1.MOV.jpg"
    assert _label("/t/trip/holiday.mp4") == "trip/holiday.mp4"  # a video pulled as itself: no preview


def test_the_xorg_title_is_latin1_safe() -> None:
    # pystray's xorg backend writes the title as a Latin-1 window name: the tooltip's "…" and "—" raised there,
    # and the tray hung in "starting".
    from agent.tray.app import latin1

    view = TrayView(snapshot={"state": "running", "counts": {"pulled": 3}, "roles": ["puller"]}, phase="attached")
    text = tooltip(view)
    assert "—" in text
    safe = latin1(text)
    safe.encode("latin-1")  # does not raise
    assert safe == "thumbdrop: Up to date - 3 done"
    assert latin1("Waiting for /media/cam… (missing) ✓") == "Waiting for /media/cam... (missing) ?"
