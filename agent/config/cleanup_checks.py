"""Rules between cleanup keys: combinations that would delete what another rule means to keep.

Kept apart from the loader so the cleaner can refuse a bad policy at run time;
the loader's cross checks may call ``policy_problems`` too (config -> config).
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.config.model import Config


def move_target(cfg: Config) -> Path:
    """``cleanup.inbox_move_to`` with '~' expanded (the loader expands '~' only in its path fields)."""
    return Path(os.path.expanduser(cfg.cleanup.inbox_move_to))


def _inside(a: Path, b: Path) -> bool:
    """a is b or lies below it (both made absolute, symlinks resolved where they exist)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def policy_problems(cfg: Config) -> list[str]:
    """Every contradiction in the cleanup policy, each as ``key.path: what is wrong``."""
    c = cfg.cleanup
    problems: list[str] = []
    if c.delete_orphans and c.delete_originals:
        problems.append(
            "cleanup.delete_orphans: cannot be combined with cleanup.delete_originals: every original it prunes "
            "would make its thumbnails orphans, and they would be deleted next"
        )
    if c.remove_orphan_local_thumbnails and c.inbox_after_upload == "delete":
        problems.append(
            "cleanup.remove_orphan_local_thumbnails: cannot be combined with cleanup.inbox_after_upload: delete "
            "(every deleted inbox file would make its thumbnails orphans); use inbox_after_upload: move"
        )
    if c.inbox_after_upload == "move":
        target = move_target(cfg)
        for i, folder in enumerate(cfg.watch.folders):
            if _inside(target, Path(folder)) or _inside(Path(folder), target):
                problems.append(
                    f"cleanup.inbox_move_to: {str(target)!r} overlaps watch.folders[{i}] {folder!r}; moved files "
                    "would be uploaded again (choose a folder outside the watch folders)"
                )
        if _inside(target, Path(cfg.local.thumbnails_dir)) or _inside(Path(cfg.local.thumbnails_dir), target):
            problems.append(f"cleanup.inbox_move_to: {str(target)!r} overlaps local.thumbnails_dir")
    return problems
