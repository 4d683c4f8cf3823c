"""The tray's logic, without a GUI toolkit: attach to (or start) the agent, poll it, act on menu choices.

Talks to the agent only through the control socket. Three named threads, all
joined by ``stop()``: ``tray-poll`` (status once a second), ``tray-actions``
(menu actions, see ``actions``) and ``tray-config-watch`` (reload the config
when it is saved). Beside it: ``agent_process`` (the agent the tray starts and
stops), ``openers``, ``report``, ``news`` (what to notify), ``settings`` and
``autostart``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from agent.config import load_config
from agent.config.model import Config
from agent.errors import ConfigError, ThumbdropError
from agent.service.control_client import AgentNotRunningError, ControlClient, ControlCommandError
from agent.service.runtime import state_dir
from agent.state.status import StatusSnapshot
from agent.tray import autostart
from agent.tray.actions import ActionRunner
from agent.tray.agent_process import AgentLauncher
from agent.tray.menu import Item, TrayView, build_menu, cleanup_total
from agent.tray.news import News
from agent.tray.notify import Notifier
from agent.tray.openers import Opener, open_dir
from agent.tray.report import describe, write_failed_report
from agent.tray.settings import ConfigWatch, not_applied

log = logging.getLogger(__name__)
PLAN_TTL = 600.0  # a cleanup dry run older than this is stale: ask for a new one


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
        self.settings = ConfigWatch(config_path)
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
        self.news = News(notifier)
        self._exit_reported = False
        self._stop_requested = False  # the tray itself stopped its agent (Quit, new settings): an exit is no news
        self._tried_start = False
        self._stop = threading.Event()
        self.actions = ActionRunner(notifier, self._stop, on_no_agent=self.refresh)
        self._threads: list[threading.Thread] = []

    @property
    def config_path(self) -> Path | None:
        return self.settings.path

    @config_path.setter
    def config_path(self, path: Path | None) -> None:
        self.settings.path = path

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._threads.append(self.actions.start())
        for name, target in (("tray-poll", self._poll_loop), ("tray-config-watch", self._watch_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.actions.wake()
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
        snap = cast(StatusSnapshot, snap)
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
                self.news.attached(snap)
                self._exit_reported = False
        if view.cleanup_plan is not None and time.monotonic() - self._plan_at > PLAN_TTL:
            changes["cleanup_plan"] = None
        self.news.notify(snap)
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
                reason = self.launcher.exit_reason(code)
                log.warning("the agent exited (code %s): %s", code, reason)
                if not self.news.told_error:  # else the user was just told, by the same words
                    self.notifier.now(f"thumbdrop: the agent exited (code {code})", reason)
                self._update(last_error=reason)
            self.launcher.forget()
        if self.start_agent_if_none and not self._tried_start and not self._stop.is_set():
            self._tried_start = True
            self._start_agent()
            return
        self._update(snapshot=None, phase="not-running", owned=False, info={})

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

    # --- menu actions (menu.TrayActions) ------------------------------------------------------

    def toggle_pause(self) -> None:
        def act() -> None:
            paused = self.view().snap.get("state") == "paused"
            self.client.call("resume" if paused else "pause")
            self.refresh()

        self.actions.submit("pause/resume", act)

    def sync_now(self) -> None:
        self.actions.submit("sync now", lambda: self.client.call("sync-now"))

    def open_inbox(self, folder: str) -> None:
        def act() -> None:
            missing = {str(m.get("folder")) for m in self.view().snap.get("missing_folders") or []}
            if folder in missing and not Path(folder).expanduser().is_dir():
                # Never make an empty stand-in for an unplugged drive: the agent waits for the real one.
                self.notifier.now("thumbdrop", f"{folder} is missing (an unplugged drive?); thumbdrop waits for it")
                return
            open_dir(self.opener, folder)

        self.actions.submit("open inbox", act)

    def open_thumbnails(self) -> None:
        self.actions.submit("open thumbnails", lambda: open_dir(self.opener, self.view().thumbnails_dir))

    def open_gallery(self) -> None:
        def act() -> None:
            from agent.gallery.launch import GalleryNotRunningError, entry_url

            try:
                url = entry_url(self.state_dir)
            except GalleryNotRunningError as exc:
                self.notifier.now("thumbdrop: the gallery is off", exc.hint or exc.message)
                return
            self.opener.open(url)

        self.actions.submit("open gallery", act)

    def open_file(self, path: str) -> None:
        def act() -> None:
            if not Path(path).exists():
                self.notifier.now("thumbdrop", f"{path} is no longer there")
                return
            self.opener.open(path)

        self.actions.submit("open thumbnail", act)

    def open_failed_report(self) -> None:
        self.actions.submit("failed items report", lambda: self.opener.open(str(self.write_failed_report())))

    def write_failed_report(self) -> Path:
        return write_failed_report(self.view(), self.state_dir)

    def retry_failed(self) -> None:
        def act() -> None:
            result = self.client.call("dlq-redrive", timeout=120.0)
            self.notifier.now("thumbdrop: retrying failed items", describe(result))

        self.actions.submit("retry failed items", act)

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
                f"would delete {describe(plan)}.\nChoose 'Confirm cleanup ({n} objects)' in the menu to delete them.",
            )

        self.actions.submit("cleanup dry run", act)

    def confirm_cleanup(self) -> None:
        def act() -> None:
            self._update(busy="cleanup", cleanup_plan=None)
            try:
                result = self.client.call("cleanup-now", dry_run=False, timeout=3600.0)
            finally:
                self._update(busy="")
            self.notifier.now("thumbdrop cleanup done", describe(result))

        self.actions.submit("cleanup", act)

    def cancel_cleanup(self) -> None:
        self._update(cleanup_plan=None)

    def edit_settings(self) -> None:
        def act() -> None:
            known = self.config_path is not None
            path = self.settings.editable()
            if not known:  # a starter config, just written: the agent this tray starts reads it too
                self.launcher.config = str(path)
            self.opener.edit(str(path))

        self.actions.submit("edit settings", act)

    def toggle_autostart(self) -> None:
        def act() -> None:
            config = str(self.config_path) if self.config_path else None
            self._update(autostart=autostart.toggle(config, local=self.local, env=self.env))

        self.actions.submit("start at login", act)

    def start_agent(self) -> None:
        self.actions.submit("start agent", self._start_agent)

    def quit(self) -> None:
        def act() -> None:
            view = self.view()
            if view.owned and (view.snapshot is not None or self.launcher.alive()):
                self._stop_owned_agent()
            self._stop.set()
            if self.on_quit is not None:
                self.on_quit()

        self.actions.submit("quit", act)

    def _stop_owned_agent(self) -> None:
        self._stop_requested = True  # an exit the tray asked for is no news
        self._update(phase="stopping")
        self.launcher.stop(self.client)

    # --- settings reload ----------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stop.wait(1.0):
            self.check_config()

    def check_config(self) -> None:
        """Reload the config if it changed since the last look (an editor saved it)."""
        path = self.settings.saved()
        if path is not None:  # None also while deleted or mid-save: the next save will show up
            self.actions.submit("apply settings", lambda: self._apply_config(path))

    def _apply_config(self, path: Path) -> None:
        try:
            cfg = load_config(path, local=self.local)
        except ConfigError as exc:
            self.notifier.now(*not_applied(exc, path))
            return
        self.cfg = cfg
        if self.config_path is None:
            self.config_path = path
            self.launcher.config = str(path)
        view = self.view()
        if view.owned and view.snapshot is not None:
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
