"""Names and places (SPEC "Names and places"): local path <-> source key <-> thumbnail key.

Everything here is pure. ``safe_local_path`` is the one gate between a bucket
key and the local file system: a key that would land outside the thumbnails
folder is refused, never rewritten into some other path.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from agent.config.model import Config
from agent.errors import TransientError, UnsafeKeyError
from agent.imaging.spec import FORMAT_EXTENSIONS, PREVIEW_EXTENSION, is_video, preview_name
from agent.text import printable as printable  # re-exported: the pipeline names it from here

FAILED_DIR = ".thumbdrop-failed/"  # failure markers, under thumbnails.prefix
LEASE_DIR = ".thumbdrop-lease/"  # poll mode: a worker's claim on a source, under thumbnails.prefix
PROBE_MARK = ".thumbdrop-doctor-"  # doctor's short-lived permission probes: never thumbnailed, never pulled
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


def thumbnail_name(name: str, fmt: str) -> str:
    """``a.png`` -> ``a.png.jpg``; a name already ending in one of the format's extensions is kept."""
    if name.lower().endswith(FORMAT_EXTENSIONS[fmt]):
        return name
    return name + FORMAT_EXTENSIONS[fmt][0]


@dataclass(frozen=True)
class ThumbOutput:
    """One thumbnail in the bucket; ``path`` is its local file while the job that made it runs (else None)."""

    key: str
    rel: str  # under local.thumbnails_dir
    size: int
    etag: str
    path: Path | None


@dataclass(frozen=True)
class Layout:
    """Key mapping for one config."""

    source_prefix: str
    thumb_prefix: str
    sizes: tuple[int, ...]
    fmt: str
    folder_names: tuple[str, ...]  # empty when there is one watch folder
    shared_bucket: bool = False  # source and thumbnails in one bucket (disjoint prefixes)
    previews: bool = False  # video.preview: a video is done once its web preview exists too

    @classmethod
    def of(cls, cfg: Config) -> Layout:
        folders = cfg.watch.folders
        names = tuple(Path(f).name for f in folders) if len(folders) > 1 else ()
        shared = cfg.source.bucket == cfg.thumbnails.bucket
        return cls(
            cfg.source.prefix,
            cfg.thumbnails.prefix,
            tuple(cfg.thumbnails.sizes),
            cfg.thumbnails.format,
            names,
            shared,
            cfg.video.preview,
        )

    # --- source side --------------------------------------------------------

    def source_rel(self, folder_index: int, rel_path: str) -> str:
        """The key below source.prefix for a file at ``rel_path`` in watch folder ``folder_index``."""
        return f"{self.folder_names[folder_index]}/{rel_path}" if self.folder_names else rel_path

    def source_key(self, rel: str) -> str:
        return self.source_prefix + rel

    def rel_of_source_key(self, key: str) -> str | None:
        """The relative part of a source key, or None when the key is not ours."""
        if not key.startswith(self.source_prefix) or key == self.source_prefix:
            return None
        if self.shared_bucket and key.startswith(self.thumb_prefix):
            return None  # never thumbnail our own output when the buckets are shared
        rel = key[len(self.source_prefix) :]
        if is_probe(rel):
            return None
        # Not filtered by watch folder names: a worker-only host need not know the uploaders' folders.
        return rel

    def foreign_source_key(self, key: str) -> bool:
        """Outside source.prefix and not our own output: another agent's upload."""
        return not key.startswith(self.source_prefix) and not (self.shared_bucket and key.startswith(self.thumb_prefix))

    def foreign_thumb_key(self, key: str) -> bool:
        """Outside thumbnails.prefix and not a source in a shared bucket: another agent's thumbnail."""
        return not key.startswith(self.thumb_prefix) and not (self.shared_bucket and key.startswith(self.source_prefix))

    # --- thumbnail side -----------------------------------------------------

    def thumb_rel(self, rel: str, size: int) -> str:
        head, _, name = rel.rpartition("/")
        renamed = thumbnail_name(name, self.fmt)
        path = f"{head}/{renamed}" if head else renamed
        return f"{size}/{path}" if len(self.sizes) > 1 else path

    def thumb_key(self, rel: str, size: int) -> str:
        return self.thumb_prefix + self.thumb_rel(rel, size)

    def thumb_keys(self, rel: str) -> list[str]:
        return [self.thumb_key(rel, s) for s in self.sizes]

    def preview_rel(self, rel: str) -> str:
        """A video's web preview: ``clip.mov`` -> ``clip.mov.mp4``, beside its poster (outside size folders)."""
        return preview_name(rel)

    def preview_key(self, rel: str) -> str:
        return self.thumb_prefix + self.preview_rel(rel)

    def wants_preview(self, rel: str) -> bool:
        return self.previews and is_video(rel)

    def source_of_preview(self, rel: str) -> str | None:
        """The source rel whose preview is ``rel`` (relative to thumbnails.prefix), or None."""
        if rel.lower().endswith(PREVIEW_EXTENSION) and is_video(rel[: -len(PREVIEW_EXTENSION)]):
            return rel[: -len(PREVIEW_EXTENSION)]
        return None

    def rel_of_thumb_key(self, key: str) -> str | None:
        """Path below thumbnails_dir for a thumbnail key, or None when not ours (or a marker)."""
        if not key.startswith(self.thumb_prefix) or key == self.thumb_prefix:
            return None
        rel = key[len(self.thumb_prefix) :]
        if rel.startswith((FAILED_DIR, LEASE_DIR)) or is_probe(rel):
            return None
        if self.shared_bucket and key.startswith(self.source_prefix):
            return None  # an original, not a thumbnail
        return rel

    def name_problem(self, rel: str) -> str | None:
        """Why a source named ``rel`` cannot make the round trip (checked before any upload), or None.

        S3 keys are UTF-8, so a name in another encoding (an old camera, a zip, a Samba share) cannot be a key;
        a control character (newline, tab, CR, other C0, DEL) is refused on every store alike, as moto refuses it;
        and a thumbnail the puller would have to refuse (a name over 255 bytes once ``.jpg`` is added, a
        backslash) is better refused before the upload, decode and thumbnail work than after. The message names
        the folder when a folder's name is at fault.
        """
        parts = rel.split("/")
        for i, part in enumerate(parts):
            # Name the component at fault: renaming the file does not help when it is a folder's name.
            last = i == len(parts) - 1
            what, fix = ("its name", "rename the file") if last else (f"its folder '{printable(part)}'", "rename the folder")
            try:
                part.encode("utf-8")
            except UnicodeEncodeError:
                how = "convmv -f latin1 -t utf8" if last else "convmv -r -f latin1 -t utf8"
                return f"{what} is not valid UTF-8 (S3 keys must be); {fix} (e.g. {how})"
            bad = next((c for c in part if ord(c) < 0x20 or ord(c) == 0x7F), None)
            if bad is not None:
                # S3 takes such keys, but moto (the embedded backend) refuses a newline, and a thumbnail named so
                # breaks shell loops and many tools: the same refusal on every store.
                return f"{what} contains a control character ({printable(bad)}), which S3 tools and stores handle badly; {fix}"
        for size in self.sizes:
            why = unsafe_reason(self.thumb_rel(rel, size))
            if why:
                return f"its thumbnail's local path {why}; rename the file"
        return None

    def failure_key(self, rel: str) -> str:
        return f"{self.thumb_prefix}{FAILED_DIR}{rel}.json"

    def rel_of_failure_key(self, key: str) -> str | None:
        start = self.thumb_prefix + FAILED_DIR
        if key.startswith(start) and key.endswith(".json"):
            return key[len(start) : -len(".json")]
        return None


def not_ours(key: str, setting: str, prefix: str, queue_key: str) -> TransientError:
    """Another agent's event on our queue: left there (released, never consumed), it reaches its owner or,
    after queues.max_receives, the dead-letter queue, where 'thumbdrop dlq' shows it."""
    return TransientError(
        f"event for {key} is outside {setting} {prefix!r}: another agent's work, left on the queue for it",
        hint=f"give each agent its own {queue_key}; 'thumbdrop setup' then routes each prefix to its queue",
    )


def is_probe(rel: str) -> bool:
    """A ``thumbdrop doctor`` probe object (written, read and deleted within a second)."""
    return rel.rpartition("/")[2].startswith(PROBE_MARK)


def safe_local_path(root: Path, rel: str) -> Path:
    """``root / rel`` if and only if it stays inside ``root``; else UnsafeKeyError."""
    why = unsafe_reason(rel)
    if why:
        escapes = not why.startswith(("has a name longer", "is longer"))
        hint = "the key would write outside the thumbnails folder" if escapes else "the local file system cannot hold it"
        raise UnsafeKeyError(f"refused key {rel!r}: {why}", hint=hint)
    path = root.joinpath(*rel.split("/"))
    resolved_root = root.resolve()
    parent = path.parent.resolve()  # follows symlinked folders inside root: they must not lead out
    if parent != resolved_root and resolved_root not in parent.parents:
        raise UnsafeKeyError(f"refused key {rel!r}: a folder on its path leads outside the thumbnails folder")
    return path


def unsafe_reason(rel: str) -> str | None:
    if not rel:
        return "empty path"
    if "\x00" in rel:
        return "contains a NUL byte"
    if "\\" in rel:
        return "contains a backslash"
    # "C:/x" is a plain relative name on POSIX (a folder called "C:"): it stays inside the root.
    if rel.startswith("/") or posixpath.isabs(rel):
        return "is an absolute path"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' path component"
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    if len(rel.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    return None


def ascii_meta(value: str) -> str:
    """S3 user metadata must be ASCII: percent-encode anything else (reversible with unquote)."""
    return quote(value, safe="/ !#$&'()*+,:;=?@[]~-_.")
