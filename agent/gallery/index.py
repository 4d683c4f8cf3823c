"""What the gallery shows: the local thumbnails as a tree, newest first, with capture dates and large views.

With one thumbnail size the thumbnails folder mirrors the watch folders; with several, each size has its own
tree under ``<size>/``: the grid shows the smallest, the large view the largest. A video's poster
``clip.mov.jpg`` may have a preview ``clip.mov.mp4`` beside it. Capture dates come from the original's EXIF
while it is still in a watch folder, else from the thumbnail's (when the worker kept it), else the mtime;
they are cached per file (path, mtime, size), so a rescan only reads what changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agent.gallery.security import resolve_inside

log = logging.getLogger(__name__)

GRID_TYPES = (".jpg", ".jpeg", ".png", ".webp", ".avif")  # what the worker writes
SHOWN_ORIGINALS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".avif", ".bmp")  # what a browser can show
PREVIEW = ".mp4"
FRESH_SECONDS = 2.0  # a listing at most this old is reused (a pulled thumbnail invalidates it at once)
FULL_SECONDS = 60.0  # folders unchanged (no file added, removed or replaced): a full rescan at most this often
ITEM_SECONDS = 60.0  # an unchanged file's item (its original, larger sizes, preview) is looked up again after this
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
DATETIME = 0x0132
EXIF_SCAN_BYTES = 128 * 1024


@dataclass(frozen=True)
class Item:
    rel: str  # below the grid root, /-separated
    mtime: float
    taken: float  # capture time (EXIF, else mtime)
    thumb: str  # URLs
    large: str
    video: str | None
    original: bool  # the large view is the original in a watch folder

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]

    @property
    def folder(self) -> str:
        return self.rel.rpartition("/")[0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.rel,
            "name": self.name,
            "folder": self.folder,
            "taken": self.taken,
            "date": time.strftime("%Y-%m-%d", time.localtime(self.taken)),
            "thumb": self.thumb,
            "large": self.large,
            "video": self.video,
            "original": self.original,
        }


def file_url(area: str, rel: str) -> str:
    return f"/file/{area}/{quote(rel, safe='/')}"


def parse_exif_time(text: Any) -> float | None:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        return None
    try:
        return time.mktime(time.strptime(text.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def exif_time(path: Path) -> float | None:
    """DateTimeOriginal (else DateTime) of an image, reading only its header; None when it has none."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            head = f.read(EXIF_SCAN_BYTES)
        if head[:2] == b"\xff\xd8":  # JPEG: the APP1 Exif segment is near the start; no decoder needed
            at = head.find(b"Exif\x00\x00")
            if at < 0:
                return None
            exif = Image.Exif()
            exif.load(head[at + 6 :])
        else:
            with Image.open(path) as im:
                exif = im.getexif()
        return parse_exif_time(exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)) or parse_exif_time(exif.get(DATETIME))
    except Exception as exc:  # noqa: BLE001 - a damaged header only loses the date: the mtime stands in
        log.debug("no capture date in %s: %s", path, exc)
        return None


class Index:
    """The thumbnails under ``thumbs_root`` (thread-safe; rescanned when stale)."""

    def __init__(self, thumbs_root: Path, watch_folders: list[Path], sizes: list[int], fmt_exts: tuple[str, ...]) -> None:
        self.root = thumbs_root
        self.watch = watch_folders
        self.sizes = sorted(sizes)
        self.fmt_exts = fmt_exts
        self.multi_folder = len(watch_folders) > 1
        self._lock = threading.Lock()
        self._items: list[Item] = []
        self._built = 0.0
        self._full = 0.0
        self._dirs: dict[str, int] = {}  # folder -> mtime_ns at the last scan
        self._dates: dict[tuple[str, int, int], float | None] = {}
        self._cache: dict[tuple[str, int, int], tuple[Item, float]] = {}

    # --- where things are -----------------------------------------------------------------

    def _area(self, size: int) -> tuple[Path, str]:
        """(folder, URL area) of one size's tree."""
        if len(self.sizes) > 1:
            return self.root / str(size), f"t/{size}"
        return self.root, "t"

    @property
    def grid_root(self) -> Path:
        return self._area(self.sizes[0])[0]

    def original_of(self, rel: str) -> tuple[int, str, Path] | None:
        """(watch folder index, rel inside it, path) of the original of thumbnail ``rel``, if still there."""
        head, _, name = rel.rpartition("/")
        names = [name]
        for ext in self.fmt_exts:
            if name.lower().endswith(ext) and len(name) > len(ext):
                names.insert(0, name[: -len(ext)])
        index, inner_head = 0, head
        if self.multi_folder:
            first, _, rest = rel.partition("/")
            folder_names = [w.name for w in self.watch]
            if first not in folder_names or not rest:
                return None
            index = folder_names.index(first)
            inner_head = head.partition("/")[2] if "/" in head else ""
        if index >= len(self.watch):
            return None
        for candidate in names:
            inner = f"{inner_head}/{candidate}" if inner_head else candidate
            found = resolve_inside(self.watch[index], inner)
            if found is not None:
                return index, inner, found
        return None

    # --- one item -----------------------------------------------------------------------------

    def _date(self, path: Path, st: os.stat_result) -> float | None:
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self._dates:
            self._dates[key] = exif_time(path)
        return self._dates[key]

    def _item(self, rel: str, path: Path, st: os.stat_result) -> Item:
        grid_area = self._area(self.sizes[0])[1]
        large = file_url(grid_area, rel)
        for size in reversed(self.sizes[1:]):
            folder, area = self._area(size)
            if (folder / rel).is_file():
                large = file_url(area, rel)
                break
        original = self.original_of(rel)
        taken: float | None = None
        shown_original = False
        if original is not None:
            index, inner, opath = original
            try:
                taken = self._date(opath, opath.stat())
            except OSError:
                taken = None
            if opath.suffix.lower() in SHOWN_ORIGINALS:
                large = file_url(f"w/{index}", inner)
                shown_original = True
        if taken is None:
            taken = self._date(path, st)
        stem = rel
        for ext in GRID_TYPES:
            if stem.lower().endswith(ext):
                stem = stem[: -len(ext)]
                break
        # A video's web preview sits beside the size folders, not in one (pipeline.keys.Layout.preview_rel).
        video = file_url("t", stem + PREVIEW) if (self.root / (stem + PREVIEW)).is_file() else None
        return Item(rel, st.st_mtime, taken or st.st_mtime, file_url(grid_area, rel), large, video, shown_original)

    def item_for(self, path: Path) -> Item | None:
        """The item of a file just pulled (an absolute path of any size's tree), or None if it is not shown."""
        for size in self.sizes:
            folder, _ = self._area(size)
            try:
                rel = path.resolve().relative_to(folder.resolve()).as_posix()
            except (ValueError, OSError):
                continue
            grid = self.grid_root / rel
            try:
                st = grid.stat()
            except OSError:
                return None
            if not rel.lower().endswith(GRID_TYPES):
                return None
            with self._lock:
                self._built = self._full = 0.0  # the next listing includes it
                return self._item(rel, grid, st)
        return None

    # --- the whole tree -----------------------------------------------------------------------

    def invalidate(self) -> None:
        with self._lock:
            self._built = self._full = 0.0

    def items(self) -> list[Item]:
        with self._lock:
            now = time.monotonic()
            if now - self._built <= FRESH_SECONDS:
                return self._items
            # The puller renames every file into place, so a new or replaced thumbnail changes its folder's mtime.
            if self._built and now - self._full < FULL_SECONDS and not self._dirs_changed():
                self._built = now
                return self._items
            self._items = self._scan()
            self._built = self._full = time.monotonic()
            return self._items

    def _dirs_changed(self) -> bool:
        for path, mtime in self._dirs.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False

    def _scan(self) -> list[Item]:
        root = self.grid_root
        out: list[Item] = []
        seen: set[tuple[str, int, int]] = set()
        now = time.monotonic()
        self._dirs = {}
        for dirpath, dirnames, filenames in os.walk(root):
            base = Path(dirpath)
            try:
                self._dirs[dirpath] = os.stat(dirpath).st_mtime_ns
            except OSError:
                continue
            if base == self.root and len(self.sizes) > 1:
                dirnames[:] = []  # the size folders are walked as grid roots, not as content
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = base.relative_to(root).as_posix()
            for name in filenames:
                if name.startswith(".") or not name.lower().endswith(GRID_TYPES):
                    continue
                path = base / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                key = (rel, st.st_mtime_ns, st.st_size)
                hit = self._cache.get(key)
                if hit is None or now - hit[1] > ITEM_SECONDS:
                    hit = self._cache[key] = (self._item(rel, path, st), now)
                seen.add(key)
                out.append(hit[0])
        out.sort(key=lambda i: (-i.taken, i.rel))
        # Forget the items and dates of files that are gone.
        self._cache = {k: v for k, v in self._cache.items() if k in seen}
        alive = {str(self.grid_root / i.rel) for i in out}
        self._dates = {k: v for k, v in self._dates.items() if k[0] in alive or not k[0].startswith(str(self.root))}
        return out

    def listing(self, folder: str, query: str, offset: int, limit: int) -> dict[str, Any]:
        """One page of ``folder`` (its subfolders first); with ``query``, matching names anywhere below it."""
        folder = folder.strip("/")
        items = self.items()
        prefix = f"{folder}/" if folder else ""
        below = [i for i in items if i.rel.startswith(prefix)]
        folders: list[dict[str, Any]] = []
        if query:
            q = query.lower()
            shown = [i for i in below if q in i.name.lower()]
        else:
            shown = [i for i in below if i.folder == folder]
            subs: dict[str, dict[str, Any]] = {}
            for i in below:
                rest = i.rel[len(prefix) :]
                if "/" in rest:
                    name = rest.split("/", 1)[0]
                    entry = subs.setdefault(name, {"name": name, "path": prefix + name, "count": 0, "cover": i.thumb})
                    entry["count"] += 1
            folders = [subs[k] for k in sorted(subs, key=str.lower)] if offset == 0 else []
        page = shown[offset : offset + limit]
        crumbs = [{"name": "All", "path": ""}]
        parts = folder.split("/") if folder else []
        for n in range(len(parts)):
            crumbs.append({"name": parts[n], "path": "/".join(parts[: n + 1])})
        return {
            "folder": folder,
            "query": query,
            "crumbs": crumbs,
            "folders": folders,
            "items": [i.as_dict() for i in page],
            "total": len(shown),
            "offset": offset,
            "next": offset + len(page) if offset + len(page) < len(shown) else None,
        }

    def file_path(self, area: str, rel: str) -> Path | None:
        """The file behind a URL area (``t``, ``t/SIZE``, ``w/N``) and path, or None when it may not be served."""
        if area == "t":
            root = self.root
        elif area.startswith("t/") and area[2:].isdigit():
            root = self.root / area[2:]
        elif area.startswith("w/") and area[2:].isdigit() and int(area[2:]) < len(self.watch):
            root = self.watch[int(area[2:])]
        else:
            return None
        return resolve_inside(root, rel)
