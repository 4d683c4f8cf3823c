"""The tray's menu model and state logic, with no GUI toolkit: plain data the app turns into pystray items.

``icon_state``/``tooltip``/``status_line`` map an agent status snapshot to what the
icon shows; ``build_menu`` maps a ``TrayView`` to ``Item``s whose actions call a
``TrayActions`` object. Unit tests drive the menu by calling the items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from agent.imaging.spec import PREVIEW_EXTENSION, is_video
from agent.state.status import StatusSnapshot
from agent.state.status_words import counts_text, describe, snapshot_state

RECENT_IN_MENU = 5


@dataclass(frozen=True)
class Item:
    """One menu entry; ``separator`` entries have no text; ``submenu`` entries have no action."""

    text: str = ""
    action: Callable[[], None] | None = None
    checked: bool | None = None  # None: not a check item
    enabled: bool = True
    default: bool = False  # the left-click action where the backend has one
    submenu: tuple[Item, ...] = ()
    separator: bool = False

    def signature(self) -> tuple[Any, ...]:
        """What the user sees; equal signatures mean the menu need not be rebuilt."""
        return (self.text, self.checked, self.enabled, self.default, self.separator, tuple(i.signature() for i in self.submenu))


SEPARATOR = Item(separator=True)


class TrayActions(Protocol):
    def toggle_pause(self) -> None: ...
    def sync_now(self) -> None: ...
    def open_inbox(self, folder: str) -> None: ...
    def open_thumbnails(self) -> None: ...
    def open_gallery(self) -> None: ...
    def open_file(self, path: str) -> None: ...
    def open_failed_report(self) -> None: ...
    def retry_failed(self) -> None: ...
    def cleanup_dry_run(self) -> None: ...
    def confirm_cleanup(self) -> None: ...
    def cancel_cleanup(self) -> None: ...
    def edit_settings(self) -> None: ...
    def toggle_autostart(self) -> None: ...
    def start_agent(self) -> None: ...
    def quit(self) -> None: ...


@dataclass
class TrayView:
    """Everything the icon and menu show, captured at one moment."""

    snapshot: StatusSnapshot | None = None  # the agent's status; None when no agent answers
    info: dict[str, Any] = field(default_factory=dict)  # the agent's "info" (folders, pid)
    phase: str = "connecting"  # connecting, starting, attached, not-running, stopping
    owned: bool = False  # the tray started this agent (so Quit stops it, settings restart it)
    autostart: bool = False
    cleanup_plan: dict[str, Any] | None = None  # a dry run waiting for confirmation
    busy: str = ""  # a long action under way ("cleanup"), shown instead of its menu item
    fallback_inbox: list[str] = field(default_factory=list)  # from the tray's own config while no agent answers
    fallback_thumbnails: str = ""
    last_error: str = ""  # why the agent this tray started exited, until it is started again

    @property
    def snap(self) -> StatusSnapshot:
        """The snapshot, empty while no agent answers (every field is read with .get)."""
        return self.snapshot or cast(StatusSnapshot, {})

    @property
    def inbox(self) -> list[str]:
        folders = self.info.get("inbox")
        return [str(f) for f in folders] if isinstance(folders, list) and folders else self.fallback_inbox

    @property
    def thumbnails_dir(self) -> str:
        return str(self.info.get("thumbnails_dir") or self.fallback_thumbnails)


# --- state logic ------------------------------------------------------------------------


def icon_state(view: TrayView) -> str:
    """One of icons.ICON_STATES for this view."""
    snap = view.snapshot
    if snap is None or view.phase in ("not-running", "connecting", "starting"):
        if view.phase in ("starting", "connecting"):
            return "starting"
        return "error" if view.last_error and view.phase == "not-running" else "stopped"
    return snapshot_state(snap)


def status_line(view: TrayView) -> str:
    """The first (disabled) menu line: what the agent is doing, in words."""
    state = icon_state(view)
    if state == "starting" and view.phase == "connecting":
        return "Connecting to the agent…"
    if state == "stopped" and view.phase == "stopping":
        return "Agent stopping…"
    return describe(view.snap, state, last_error=view.last_error)


def tooltip(view: TrayView) -> str:
    """The hover text: the status in words and live counts ("3 uploading, 120 done, 1 failed")."""
    if view.snapshot is None:
        return f"thumbdrop: {status_line(view)}"
    counts = counts_text(view.snapshot)
    if icon_state(view) == "working":
        return f"thumbdrop: {counts}"
    return f"thumbdrop: {status_line(view)} — {counts}"


def cleanup_total(plan: dict[str, Any]) -> int:
    """How many objects a cleanup dry run would delete, whatever the cleaner names its counter."""
    for key in ("objects", "deleted", "count", "total"):
        value = plan.get(key)
        if isinstance(value, int):
            return value
    numbers = [v for v in plan.values() if isinstance(v, int) and not isinstance(v, bool)]
    return sum(numbers)


# --- the menu -------------------------------------------------------------------------------


def build_menu(view: TrayView, actions: TrayActions) -> tuple[Item, ...]:
    """The whole menu for ``view``; every action goes through ``actions``."""
    attached = view.snapshot is not None and view.phase == "attached"
    paused = view.snap.get("state") == "paused"
    items: list[Item] = [Item(status_line(view), enabled=False)]
    if view.phase == "not-running":
        items.append(Item("Start agent", actions.start_agent))
    items += [
        SEPARATOR,
        Item("Pause syncing", actions.toggle_pause, checked=paused, enabled=attached),
        Item("Sync now", actions.sync_now, enabled=attached and not paused),
        SEPARATOR,
        _inbox_item(view, actions),
        Item("Open thumbnails", actions.open_thumbnails, default=True, enabled=bool(view.thumbnails_dir)),
        Item("Open gallery", actions.open_gallery),
        _recent_item(view, actions),
        _failed_item(view, actions, attached),
        SEPARATOR,
        *_cleanup_items(view, actions, attached),
        Item("Edit settings…", actions.edit_settings),
        Item("Start at login", actions.toggle_autostart, checked=view.autostart),
        SEPARATOR,
        Item("Quit (stop the agent)" if view.owned and attached else "Quit", actions.quit),
    ]
    return tuple(items)


def _inbox_item(view: TrayView, actions: TrayActions) -> Item:
    folders = view.inbox
    if len(folders) <= 1:
        folder = folders[0] if folders else ""
        return Item("Open inbox", lambda: actions.open_inbox(folder), enabled=bool(folder))
    return Item("Open inbox", submenu=tuple(Item(f, _bind(actions.open_inbox, f)) for f in folders))


def _recent_item(view: TrayView, actions: TrayActions) -> Item:
    recent = list(view.snap.get("recent_thumbnails") or [])[-RECENT_IN_MENU:][::-1]
    if not recent:
        return Item("Recent thumbnails", submenu=(Item("(none yet)", enabled=False),))
    return Item("Recent thumbnails", submenu=tuple(Item(_label(p), _bind(actions.open_file, str(p))) for p in recent))


def _failed_item(view: TrayView, actions: TrayActions, attached: bool) -> Item:
    failed = int((view.snap.get("counts") or {}).get("failed") or 0)
    retry = Item("Retry failed items", actions.retry_failed, enabled=attached)
    return Item(
        f"Failed items ({failed})" if failed else "Failed items",
        submenu=(Item("Open report", actions.open_failed_report, enabled=view.snapshot is not None), retry),
    )


def _cleanup_items(view: TrayView, actions: TrayActions, attached: bool) -> list[Item]:
    if view.busy == "cleanup":
        return [Item("Cleaning up…", enabled=False)]
    if not attached:  # no agent to ask
        return [Item("Cleanup now…", enabled=False)]
    if view.cleanup_plan is not None:
        n = cleanup_total(view.cleanup_plan)
        return [
            Item(f"Confirm cleanup ({n} object{'s' if n != 1 else ''})", actions.confirm_cleanup, enabled=attached and n > 0),
            Item("Cancel cleanup", actions.cancel_cleanup),
        ]
    return [Item("Cleanup now…", actions.cleanup_dry_run, enabled=attached)]


def _label(path: str) -> str:
    # Menu labels: the file name, with its folder when short enough to help tell two apart. A video's web preview
    # (clip.mov.mp4) is named after its video, so it does not read as a second video.
    p = Path(path)
    name = p.name
    if name.lower().endswith(PREVIEW_EXTENSION) and is_video(name[: -len(PREVIEW_EXTENSION)]):
        name = f"{name[: -len(PREVIEW_EXTENSION)]} (web preview)"
    return f"{p.parent.name}/{name}" if p.parent.name else name


def _bind(fn: Callable[[str], None], arg: str) -> Callable[[], None]:
    return lambda: fn(arg)
