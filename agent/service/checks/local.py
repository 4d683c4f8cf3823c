"""This host: the watch folders, inotify watches, free disk for the thumbnails, video support."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agent.config.cleanup_checks import move_target
from agent.config.model import Config
from agent.imaging import video
from agent.service.checks import FAIL, PASS, WARN, Check
from agent.service.runtime import state_dir
from agent.state.journal import JOURNAL_FILE, Journal
from agent.state.watch_folders import MISSING, NEW, OK, WatchFolder, check_folders

DISK_WARN = 1 << 30
DISK_FAIL = 100 << 20
WATCHES_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
SYSCTL_FIX = "echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-thumbdrop.conf && sudo sysctl --system"


def local_checks(cfg: Config) -> list[Check]:
    out: list[Check] = []
    if "uploader" in cfg.roles:
        folders = watch_folder_states(cfg)
        out.append(watch_folders_check(folders))
        out.append(inotify_check(cfg, folders=folders))
    if "puller" in cfg.roles:
        out.append(disk_check("disk thumbnails", Path(cfg.local.thumbnails_dir)))
    if "worker" in cfg.roles:
        out.append(video_check(cfg))
    return out


def video_check(cfg: Config) -> Check:
    """Video patterns are in watch.include by default; a worker without PyAV fails every video."""
    if video.available():
        return Check(
            "video", PASS, f"PyAV {video.av.__version__}: video posters" + (" and previews" if cfg.video.preview else "")
        )
    videos = [p for p in cfg.watch.include if video.is_video(p.replace("*", "x"))]
    if not videos and not cfg.video.preview:
        return Check("video", PASS, "PyAV not installed; no video patterns in watch.include")
    return Check(
        "video",
        WARN,
        f"PyAV is not installed: videos ({', '.join(videos) or 'video.preview'}) fail with a reason",
        "pip install 'thumbdrop[video]', or take the video patterns out of watch.include",
    )


def count_watch_dirs(cfg: Config) -> int:
    """Directories the watcher needs an inotify watch for: every one, excluded names too (watchdog watches whole trees)."""
    return sum(1 for folder in cfg.watch.folders for _ in os.walk(folder))


def watch_folder_states(cfg: Config) -> list[WatchFolder]:
    """Each watch folder as the agent will see it, with the journal's record of uploads (read, never created)."""
    path = state_dir(cfg) / JOURNAL_FILE
    if not path.exists():
        return check_folders(cfg.watch.folders, lambda _f: [])
    journal = Journal(path)
    try:
        return check_folders(
            cfg.watch.folders,
            lambda f: list(journal.uploads_under(f)),
            moved_to=_moved_to(cfg),
            accepted=journal.folder_identity,
        )
    finally:
        journal.close()


def _moved_to(cfg: Config) -> Path | None:
    return move_target(cfg) if cfg.cleanup.inbox_after_upload == "move" else None


def watch_folders_check(folders: list[WatchFolder]) -> Check:
    """A folder files were uploaded from that is missing, came back empty or is another drive: cleanup skips it."""
    untrusted = [f for f in folders if f.state not in (OK, NEW)]
    if untrusted:
        fixes = list(dict.fromkeys(f.fix() for f in untrusted))
        return Check("watch folders", WARN, "; ".join(f.describe() for f in untrusted), "; ".join(fixes))
    new = [f.path for f in folders if f.state == NEW]
    text = f"{len(folders) - len(new)} of {len(folders)} there"
    if new:
        text += f"; {', '.join(new)} does not exist yet (the agent creates it)"
    return Check("watch folders", PASS, text)


def inotify_check(cfg: Config, *, limit_file: Path = WATCHES_FILE, folders: list[WatchFolder] | None = None) -> Check:
    if folders is None:
        folders = check_folders(cfg.watch.folders, lambda _f: [])
    new = [f.path for f in folders if f.state == NEW]
    lost = [f.path for f in folders if f.state == MISSING]
    need = count_watch_dirs(cfg)
    try:
        limit = int(limit_file.read_text().strip())
    except (OSError, ValueError):
        return Check("inotify", PASS, f"{need} folder(s) to watch (no inotify limit to compare with on this system)")
    text = f"{need} watch(es) needed for {len(cfg.watch.folders)} folder tree(s); the limit is {limit}"
    if new:
        text += f"; {', '.join(new)} does not exist yet (the agent creates it)"
    if lost:
        text += f"; {', '.join(lost)} is missing (the agent waits for it)"
    if need > limit:
        return Check("inotify", FAIL, text + ": new files in the rest would be missed until a rescan", SYSCTL_FIX)
    if need > limit // 2:
        return Check("inotify", WARN, text + " (other programs use watches too)", SYSCTL_FIX)
    return Check("inotify", PASS, text)


def disk_check(name: str, folder: Path) -> Check:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the folder may not exist yet: its file system is what counts
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return Check(name, WARN, f"cannot measure free space for {folder}: {exc.strerror or exc}")
    text = f"{_size(free)} free for {folder}"
    if free < DISK_FAIL:
        return Check(name, FAIL, text, "free some space, or move local.thumbnails_dir to a larger disk")
    if free < DISK_WARN:
        return Check(name, WARN, text, "free some space, or move local.thumbnails_dir to a larger disk")
    return Check(name, PASS, text)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
