"""Which local files the uploader takes: the watch folders, the include/exclude names, and each file's key.

Owns no state that changes: built once from the config and shared by the watching and the uploading parts.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.config.model import Config
from agent.pipeline.keys import Layout

log = logging.getLogger(__name__)


class NameFilter:
    """include/exclude globs, case-insensitive; exclude also applies to every folder on the path."""

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self.include = [p.lower() for p in include]
        self.exclude = [p.lower() for p in exclude]
        # Each list as one regex: a match is fnmatchcase() against any of its globs, in one call instead of one
        # per glob (per name and folder of every file a scan of 100,000 files meets).
        self._include = _any_of(self.include)
        self._exclude = _any_of(self.exclude)

    def excluded(self, name: str) -> bool:
        return self._exclude.match(name.lower()) is not None

    def wanted(self, rel: str) -> bool:
        parts = rel.split("/")
        if any(self.excluded(p) for p in parts):
            return False
        return self._include.match(parts[-1].lower()) is not None


def _any_of(globs: list[str]) -> re.Pattern[str]:
    """A regex that matches what fnmatch.fnmatchcase matches for any of ``globs`` (nothing when there are none)."""
    if not globs:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


@dataclass(frozen=True)
class LocalFile:
    folder: int
    path: Path
    rel: str  # relative to the source prefix (folder name first when there are several)


class LocalFiles:
    """The watch folders of a config and the files in them that are ours to upload."""

    def __init__(self, cfg: Config) -> None:
        self.layout = Layout.of(cfg)
        self.folders = [Path(f) for f in cfg.watch.folders]
        self.roots = [f.resolve() for f in self.folders]
        self.filter = NameFilter(cfg.watch.include, cfg.watch.exclude)

    def local_file(self, path: Path) -> LocalFile | None:
        """The LocalFile for a path inside a watch folder, or None when it is not ours to upload."""
        for i, root in enumerate(self.folders):
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                continue
            if rel in ("", ".") or not self.filter.wanted(rel):
                return None
            return LocalFile(i, path, self.layout.source_rel(i, rel))
        return None

    def inside(self, path: Path, folder: int) -> bool:
        """Symlinks are followed only when they point inside their watch folder."""
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            return False
        root = self.roots[folder]
        return real == root or root in real.parents

    def scan(self) -> Iterator[LocalFile]:
        for root in self.folders:
            if not root.is_dir():
                # Named once, with what to do, by the command that started (service.runtime.report_missing_watch_folders).
                log.debug("watch folder %s does not exist (yet); nothing to upload from it", root)
                continue
            yield from self.walk(root, onerror=lambda e: log.warning("cannot read %s", e))

    def walk(self, folder: Path, onerror: Callable[[OSError], object] | None = None) -> Iterator[LocalFile]:
        """Our files under ``folder``, skipping excluded folders."""
        for dirpath, dirs, files in os.walk(folder, onerror=onerror):
            dirs[:] = [d for d in dirs if not self.filter.excluded(d)]
            for name in files:
                lf = self.local_file(Path(dirpath) / name)
                if lf is not None:
                    yield lf
