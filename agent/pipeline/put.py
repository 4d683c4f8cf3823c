"""How one file's bytes go up: its hashes (sha256 for the metadata, the ETag S3 would give it), then one
request for a small file or a resumable multipart upload (``agent.pipeline.multipart``) for a large one,
both paced through the bandwidth cap."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.model import Config
from agent.pipeline.bandwidth import limiter_for, throttle
from agent.pipeline.keys import ascii_meta
from agent.pipeline.multipart import ResumableUpload, source_of
from agent.state.journal import Journal

MIB = 1 << 20


@dataclass
class Hashes:
    sha256: str
    etag: str | None  # the S3 ETag this content would get; only worked out when there is a remote copy to compare
    data: bytes | None  # the content of a small file, read once for hashing and upload


class Putter:
    """Hashes and sends files to the source bucket; holds no per-file state (safe from any upload thread)."""

    def __init__(self, cfg: Config, journal: Journal, stop: threading.Event) -> None:
        self.bucket = cfg.source.bucket
        self.journal = journal
        self.stop = stop
        self.s3: Any = None  # set by the uploader once it has a backend
        self.threshold = cfg.transfer.multipart_threshold_mb * MIB
        self.chunk = cfg.transfer.multipart_chunksize_mb * MIB
        self.device = cfg.local.device_name or socket.gethostname()
        self.limiter = limiter_for(cfg.backend.max_bandwidth)

    def hash(self, path: Path, size: int, *, etag: bool) -> Hashes:
        """sha256 (for the metadata) and, with ``etag``, the ETag S3 would give this content (MD5, per part)."""
        sha = hashlib.sha256()
        if size <= self.threshold:
            data = path.read_bytes()
            sha.update(data)
            return Hashes(sha.hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest() if etag else None, data)
        parts = []
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(self.chunk), b""):
                sha.update(chunk)
                if etag:
                    parts.append(hashlib.md5(chunk, usedforsecurity=False).digest())
        if not etag:
            return Hashes(sha.hexdigest(), None, None)
        multipart = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest() + f"-{len(parts)}"
        return Hashes(sha.hexdigest(), multipart, None)

    def put(self, path: Path, key: str, st: os.stat_result, hashes: Hashes) -> str:
        """Send ``path`` as ``key``; returns the object's ETag."""
        from agent.cloud.errors import call

        meta = {"sha256": hashes.sha256, "mtime": f"{st.st_mtime:.6f}", "device": ascii_meta(self.device)}
        content_type = content_type_of(path.name)
        if hashes.data is not None and len(hashes.data) == st.st_size:
            # A small file goes in one request: pace it through the bandwidth cap before sending.
            throttle(self.limiter, len(hashes.data), stop=self.stop)
            out = call(
                f"upload {path}",
                self.s3.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=hashes.data,
                Metadata=meta,
                ContentType=content_type,
            )
            return str(out["ETag"]).strip('"')
        # Large files go in parts the journal remembers: a restart sends only the parts S3 does not have yet.
        resumable = ResumableUpload(
            self.s3, self.journal, self.bucket, part_size=self.chunk, limiter=self.limiter, stop=self.stop
        )
        return resumable.put(source_of(path, key, st, hashes.sha256), {"Metadata": meta, "ContentType": content_type})


_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".bmp": "image/bmp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".m4v": "video/x-m4v",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".3gp": "video/3gpp",
}


def content_type_of(name: str) -> str:
    return _TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")
