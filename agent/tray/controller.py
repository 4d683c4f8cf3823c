"""The tray's logic, without a GUI toolkit: attach to (or start) the agent, poll it, act on menu choices.

Talks to the agent only through the control socket. Three named threads, all
joined by ``stop()``: ``tray-poll`` (status once a second), ``tray-actions``
(menu actions run here, never on the GUI thread, so a slow cleanup cannot
freeze the menu) and ``tray-config-watch`` (reload the config when it is saved).
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.config import load_config, user_config_path
from agent.config.model import Config
from agent.errors import ConfigError, ThumbdropError
from agent.service.control_client import AgentNotRunningError, ControlClient, ControlCommandError
from agent.service.runtime import state_dir
from agent.state.status import read_published
from agent.tray import autostart
from agent.tray.agent_process import LOG_FILE, AgentLauncher
from agent.tray.menu import Item, TrayView, build_menu, cleanup_total
from agent.tray.notify import Notifier

log = logging.getLogger(__name__)
REPORT_FILE = "failed-items.txt"
PLAN_TTL = 600.0  # a cleanup dry run older than this is stale: ask for a new one
STOP_WAIT = 20.0


class Opener:
    """Opens folders and files (xdg-open) and the config in an editor; $THUMBDROP_TRAY_OPENER overrides both."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env

    def _base(self) -> list[str] | None:
        override = self.env.get("THUMBDROP_TRAY_OPENER")
        if override:
            return shlex.split(override)
        if sys.platform == "darwin":
            return ["open"]
        found = shutil.which("xdg-open")
        return [found] if found else None

    def open(self, target: str) -> None:
        base = self._base()
        if base is None:
            raise ThumbdropError(f"cannot open {target}: xdg-open is not installed", hint="install xdg-utils")
        self._spawn([*base, target])

    def edit(self, path: str) -> None:
        base = self._base()
        if base is not None:
            self._spawn([*base, path])
            return
        editor = self.env.get("VISUAL") or self.env.get("EDITOR")
        if not editor:
            raise ThumbdropError(f"cannot open {path} in an editor", hint="install xdg-utils or set $VISUAL")
        terminal = shutil.which("x-terminal-emulator")
        # $VISUAL/$EDITOR are usually terminal editors; the tray has no terminal, so give them one.
        self._spawn([terminal, "-e", *shlex.split(editor), path] if terminal else [*shlex.split(editor), path])

    @staticmethod
    def _spawn(argv: list[str]) -> None:
        log.info("opening: %s", " ".join(argv))
        try:
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            raise ThumbdropError(f"cannot run {argv[0]}: {exc}") from exc


class TrayController:
    """Implements menu.TrayActions; the app calls ``on_change`` hooks to redraw and ``on_quit`` to leave."""

    def __init__(
        self,
        cfg: Config,
        *,
        config_path: Path | None,
        local: bool = False,
        verbosity: int = 0,
        notifier: Notifier,
        opener: Opener | None = None,
        launcher: AgentLauncher | None = None,
        start_agent: bool = True,
        poll_interval: float = 1.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.local = local
        self.env = os.environ if env is None else env
        self.notifier = notifier
        self.opener = opener or Opener(self.env)
        self.state_dir = state_dir(cfg)
        self.client = ControlClient(self.state_dir, timeout=5.0)
        self.launcher = launcher or AgentLauncher(
            self.state_dir, config=str(config_path) if config_path else None, local=local, verbosity=verbosity
        )
        self.start_agent_if_none = start_agent
        self.poll_interval = poll_interval
        self.on_change: Callable[[TrayView], None] | None = None
        self.on_quit: Callable[[], None] | None = None

        self._lock = threading.Lock()
        self._view = TrayView(
            autostart=autostart.is_enabled(self.env),
            fallback_inbox=list(cfg.watch.folders),
            fallback_thumbnails=cfg.local.thumbnails_dir,
        )
        self._plan_at = 0.0
        self._seen_failure_at: float | None = None
        self._last_problem = ""
        self._exit_reported = False
        self._stop_requested = False  # the tray itself stopped its agent (Quit, new settings): an exit is no news
        self._tried_start = False
        self._stop = threading.Event()
        self._actions: queue.Queue[tuple[str, Callable[[], None]] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._config_stamp = _stamp(self._watched_config())

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (
            ("tray-actions", self._action_loop),
            ("tray-poll", self._poll_loop),
            ("tray-config-watch", self._watch_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._actions.put(None)  # the sentinel wakes the action thread
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.1, deadline - time.monotonic()))

    def view(self) -> TrayView:
        with self._lock:
            return replace(self._view)

    def menu(self) -> tuple[Item, ...]:
        return build_menu(self.view(), self)

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._view = replace(self._view, **changes)
            view = replace(self._view)
        if self.on_change is not None:
            self.on_change(view)

    def _submit(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the action thread (inline before start(): what unit tests use)."""
        if not self._threads:
            self._run_action(name, fn)
        elif not self._stop.is_set():
            self._actions.put((name, fn))

    def _action_loop(self) -> None:
        while True:
            job = self._actions.get()
            if job is None:
                return
            self._run_action(*job)

    def _run_action(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except AgentNotRunningError:
            self.notifier.now("thumbdrop", f"{name}: no agent is running")
            self.refresh()
        except (ThumbdropError, OSError) as exc:  # one failed action must not end the action thread
            log.warning("%s failed: %s", name, exc)
            self.notifier.now(f"thumbdrop: {name} failed", str(exc))

    # --- polling ---------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except (ThumbdropError, OSError) as exc:  # one bad round must not end the polling
                log.warning("status poll failed: %s", exc)
            self._stop.wait(self.poll_interval)

    def refresh(self) -> None:
        """One poll: read the agent's status (starting an agent when none runs), notify about news, redraw."""
        try:
            snap = self.client.call("status", timeout=3.0)
        except AgentNotRunningError:
            self._no_agent()
            return
        except ControlCommandError as exc:
            log.warning("the agent did not answer its status: %s", exc)
            return
        if not isinstance(snap, dict):
            return
        view = self.view()
        changes: dict[str, Any] = {"snapshot": snap, "phase": "stopping" if snap.get("state") == "stopping" else "attached"}
        # A new agent (or the same process after a config reload: a new Agent, a new started_at): read its info again.
        if (snap.get("pid"), snap.get("started_at")) != (view.info.get("pid"), view.info.get("started_at")):
            try:
                info = self.client.call("info", timeout=3.0)
            except ThumbdropError as exc:
                log.warning("the agent did not answer 'info': %s", exc)
                info = {}
            if isinstance(info, dict):
                changes["info"] = {**info, "started_at": snap.get("started_at")}
                owned = self.launcher.adopt(int(snap.get("pid") or 0))
                changes["owned"] = owned
                log.info(
                    "attached to the agent (pid %s, %s)", snap.get("pid"), "started by the tray" if owned else "started elsewhere"
                )
                self._seen_failure_at = max((float(f.get("at") or 0) for f in snap.get("failures") or []), default=0.0)
                self._exit_reported = False
        if view.cleanup_plan is not None and time.monotonic() - self._plan_at > PLAN_TTL:
            changes["cleanup_plan"] = None
        self._notify_news(snap)
        self.notifier.flush()
        self._update(**changes)

    def _no_agent(self) -> None:
        view = self.view()
        if self.launcher.alive():
            # Between closing its socket and exiting, a stopping agent must not look like one starting.
            self._update(snapshot=None, phase="stopping" if view.phase == "stopping" else "starting")
            return
        if self.launcher.owned_pid is not None and not self._exit_reported:
            self._exit_reported = True
            code = self.launcher.exit_code
            # The agent's own "stopping" (on a fatal error) is not a stop the user asked for: report its exit.
            if not self._stop_requested and code not in (0, None):
                reason = self._exit_reason(code)
                log.warning("the agent exited (code %s): %s", code, reason)
                if not self._last_problem.startswith("error"):  # else the user was just told, by the same words
                    self.notifier.now(f"thumbdrop: the agent exited (code {code})", reason)
                self._update(last_error=reason)
            self.launcher.forget()
        if self.start_agent_if_none and not self._tried_start and not self._stop.is_set():
            self._tried_start = True
            self._start_agent()
            return
        self._update(snapshot=None, phase="not-running", owned=False, info={})

    def _exit_reason(self, code: int) -> str:
        """Why the agent this tray started is gone: its last fatal error, else what it printed, else the code."""
        published = read_published(self.state_dir)
        if published is not None and published.get("fatal"):
            return str(published["fatal"])
        tail = self.launcher.console_tail(lines=3)
        return tail or f"exit code {code}; see {self.state_dir / LOG_FILE}"

    def _start_agent(self) -> None:
        try:
            self.launcher.start()
        except OSError as exc:
            self.notifier.now("thumbdrop: cannot start the agent", str(exc))
            self._update(snapshot=None, phase="not-running")
            return
        self._exit_reported = False
        self._stop_requested = False
        self._update(snapshot=None, phase="starting", owned=True, last_error="")

    def _notify_news(self, snap: dict[str, Any]) -> None:
        """New failures (rate-limited) and changes to offline / error (once per change)."""
        failures = [f for f in snap.get("failures") or [] if isinstance(f, dict)]
        seen = self._seen_failure_at or 0.0
        new = [f for f in failures if float(f.get("at") or 0) > seen]
        if new:
            self._seen_failure_at = max(float(f.get("at") or 0) for f in new)
            self.notifier.failure([f"{f.get('name')}: {f.get('reason')}" for f in new])
        problem = ""
        if snap.get("state") == "error" or snap.get("fatal"):
            problem = f"error: {snap.get('fatal') or 'the agent stopped'}"
        elif snap.get("offline_since"):
            problem = f"offline: {snap.get('offline_reason') or 'backend unreachable'}"
        kind = problem.split(":", 1)[0]
        if kind and kind != self._last_problem.split(":", 1)[0]:
            title = "thumbdrop stopped on an error" if kind == "error" else "thumbdrop is offline"
            self.notifier.now(title, problem.split(": ", 1)[1])
        elif not kind and self._last_problem.startswith("offline"):
            self.notifier.now("thumbdrop is back online", "syncing resumes")
        self._last_problem = problem

    # --- menu actions (menu.TrayActions) ------------------------------------------------------

    def toggle_pause(self) -> None:
        def act() -> None:
            paused = self.view().snap.get("state") == "paused"
            self.client.call("resume" if paused else "pause")
            self.refresh()

        self._submit("pause/resume", act)

    def sync_now(self) -> None:
        self._submit("sync now", lambda: self.client.call("sync-now"))

    def open_inbox(self, folder: str) -> None:
        def act() -> None:
            missing = {str(m.get("folder")) for m in self.view().snap.get("missing_folders") or []}
            if folder in missing and not Path(folder).expanduser().is_dir():
                # Never make an empty stand-in for an unplugged drive: the agent waits for the real one.
                self.notifier.now("thumbdrop", f"{folder} is missing (an unplugged drive?); thumbdrop waits for it")
                return
            self._open_dir(folder)

        self._submit("open inbox", act)

    def open_thumbnails(self) -> None:
        self._submit("open thumbnails", lambda: self._open_dir(self.view().thumbnails_dir))

    def open_gallery(self) -> None:
        def act() -> None:
            from agent.gallery.launch import GalleryNotRunningError, entry_url

            try:
                url = entry_url(self.state_dir)
            except GalleryNotRunningError as exc:
                self.notifier.now("thumbdrop: the gallery is off", exc.hint or exc.message)
                return
            self.opener.open(url)

        self._submit("open gallery", act)

    def _open_dir(self, folder: str) -> None:
        path = Path(folder).expanduser()
        path.mkdir(parents=True, exist_ok=True)  # the puller creates it on first pull; open it even before
        self.opener.open(str(path))

    def open_file(self, path: str) -> None:
        def act() -> None:
            if not Path(path).exists():
                self.notifier.now("thumbdrop", f"{path} is no longer there")
                return
            self.opener.open(path)

        self._submit("open thumbnail", act)

    def open_failed_report(self) -> None:
        self._submit("failed items report", lambda: self.opener.open(str(self.write_failed_report())))

    def write_failed_report(self) -> Path:
        """A plain-text list of the agent's recent failures, in the state dir."""
        view = self.view()
        snap = view.snap
        failures = [f for f in snap.get("failures") or [] if isinstance(f, dict)]
        lines = [
            "thumbdrop: failed items",
            f"written {time.strftime('%Y-%m-%d %H:%M:%S')} from the agent (pid {snap.get('pid', '?')}, config {view.info.get('config', '?')})",
            f"{int((snap.get('counts') or {}).get('failed') or 0)} failure(s) since the agent started; the last {len(failures)} below.",
            "",
        ]
        for f in reversed(failures):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(f.get("at") or 0)))
            lines.append(f"{when}  {f.get('role', '?'):<8} {f.get('name')}")
            lines.append(f"    {f.get('reason')}")
        if not failures:
            lines.append("(no failures)")
        lines += ["", "Fix or remove the files; 'Retry failed items' in the tray menu (or 'thumbdrop dlq redrive') tries again."]
        path = Path(str(view.info.get("state_dir") or self.state_dir)) / REPORT_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def retry_failed(self) -> None:
        def act() -> None:
            result = self.client.call("dlq-redrive", timeout=120.0)
            self.notifier.now("thumbdrop: retrying failed items", _describe(result))

        self._submit("retry failed items", act)

    def cleanup_dry_run(self) -> None:
        def act() -> None:
            self._update(busy="cleanup")
            try:
                plan = self.client.call("cleanup-now", dry_run=True, timeout=600.0)
            finally:
                self._update(busy="")
            plan = plan if isinstance(plan, dict) else {"result": plan}
            n = cleanup_total(plan)
            problems = [str(p) for p in plan.get("problems") or []]
            if problems:
                # The tray never forces past the mass-delete guard: that takes a person at a terminal.
                self.notifier.now(
                    "thumbdrop cleanup: stopped by the mass-delete guard",
                    "\n".join(problems[:3]) + "\nIf this is intended: thumbdrop cleanup --force (in a terminal)",
                )
                self._update(cleanup_plan=None)
                return
            if n == 0:
                self.notifier.now("thumbdrop cleanup", "nothing to clean up: the cleanup policy would delete nothing")
                self._update(cleanup_plan=None)
                return
            self._plan_at = time.monotonic()
            self._update(cleanup_plan=plan)
            self.notifier.now(
                "thumbdrop cleanup (dry run)",
                f"would delete {_describe(plan)}.\nChoose 'Confirm cleanup ({n} objects)' in the menu to delete them.",
            )

        self._submit("cleanup dry run", act)

    def confirm_cleanup(self) -> None:
        def act() -> None:
            self._update(busy="cleanup", cleanup_plan=None)
            try:
                result = self.client.call("cleanup-now", dry_run=False, timeout=3600.0)
            finally:
                self._update(busy="")
            self.notifier.now("thumbdrop cleanup done", _describe(result))

        self._submit("cleanup", act)

    def cancel_cleanup(self) -> None:
        self._update(cleanup_plan=None)

    def edit_settings(self) -> None:
        def act() -> None:
            path = self._editable_config()
            self.opener.edit(str(path))

        self._submit("edit settings", act)

    def _editable_config(self) -> Path:
        """The file to edit: the tray's config; with none, a starter config written where it will be found."""
        if self.config_path is not None:
            return self.config_path
        from agent.config.example import render_example

        path = user_config_path()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(render_example(), encoding="utf-8")
            os.replace(tmp, path)
            log.info("wrote a starter config to %s", path)
        self.config_path = path
        self.launcher.config = str(path)
        self._config_stamp = _stamp(path)  # creating it is not an edit: nothing to reload yet
        return path

    def toggle_autostart(self) -> None:
        def act() -> None:
            if autostart.is_enabled(self.env):
                autostart.disable(self.env)
            else:
                config = str(self.config_path) if self.config_path else None
                path = autostart.enable(autostart.tray_command(config, local=self.local), self.env)
                log.info("start at login: wrote %s", path)
            self._update(autostart=autostart.is_enabled(self.env))

        self._submit("start at login", act)

    def start_agent(self) -> None:
        self._submit("start agent", self._start_agent)

    def quit(self) -> None:
        def act() -> None:
            view = self.view()
            if view.owned and (view.snapshot is not None or self.launcher.alive()):
                self._stop_requested = True
                self._update(phase="stopping")
                self._stop_owned_agent()
            self._stop.set()
            if self.on_quit is not None:
                self.on_quit()

        self._submit("quit", act)

    def _stop_owned_agent(self) -> None:
        log.info("stopping the agent this tray started")
        try:
            self.client.call("stop")
        except AgentNotRunningError:
            self.launcher.terminate()  # still starting (no socket yet), or its socket is gone: a signal does it
        if not self.launcher.wait_exit(STOP_WAIT):
            log.warning("the agent did not stop within %.0f s; killing it", STOP_WAIT)
            self.launcher.kill()
        self.launcher.forget()

    # --- settings reload ----------------------------------------------------------------

    def _watched_config(self) -> Path | None:
        return self.config_path if self.config_path is not None else user_config_path()

    def _watch_loop(self) -> None:
        while not self._stop.wait(1.0):
            self.check_config()

    def check_config(self) -> None:
        """Reload the config if it changed since the last look (an editor saved it)."""
        path = self._watched_config()
        stamp = _stamp(path)
        if stamp == self._config_stamp or path is None:
            return
        self._config_stamp = stamp
        if stamp is None:
            return  # deleted, or mid-save by an editor that renames: the next save will show up
        self._submit("apply settings", lambda: self._apply_config(path))

    def _apply_config(self, path: Path) -> None:
        try:
            cfg = load_config(path, local=self.local)
        except ConfigError as exc:
            shown = exc.problems[:6]
            more = len(exc.problems) - len(shown)
            self.notifier.now(
                f"thumbdrop: settings not applied ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''})",
                "\n".join(shown) + (f"\nand {more} more" if more else "") + f"\nin {path}",
            )
            return
        self.cfg = cfg
        if self.config_path is None:
            self.config_path = path
            self.launcher.config = str(path)
        view = self.view()
        if view.owned and view.snapshot is not None:
            self._stop_requested = True
            self._update(phase="stopping")
            self._stop_owned_agent()
            self._use_state_dir(state_dir(cfg))
            self._start_agent()
            self.notifier.now("thumbdrop: settings applied", "the agent restarted with the new settings")
        elif view.snapshot is not None:
            self.notifier.now(
                "thumbdrop: settings saved",
                "the running agent was not started by this tray: restart it to apply them "
                "(for a systemd service: systemctl --user restart thumbdrop)",
            )
        else:
            self._use_state_dir(state_dir(cfg))
            self.notifier.now("thumbdrop: settings saved", "they apply when the agent starts")
        self._update(fallback_inbox=list(cfg.watch.folders), fallback_thumbnails=cfg.local.thumbnails_dir)

    def _use_state_dir(self, path: Path) -> None:
        if path == self.state_dir:
            return
        self.state_dir = path
        self.client = ControlClient(path, timeout=self.client.timeout)
        self.launcher.state_dir = path


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _describe(result: Any) -> str:
    """A short human line for a result dict from the agent ('12 objects, 3.4 MB')."""
    if not isinstance(result, dict):
        return str(result)
    parts = []
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if "bytes" in key:
            parts.append(f"{value / 1e6:.1f} MB")
        else:
            parts.append(f"{value} {key.replace('_', ' ')}")
    return ", ".join(parts) or str(result)
