"""Resumable multipart uploads: a big file on a slow link survives a crash or restart.

The journal keeps each upload's UploadId, part size and the parts S3 confirmed (number and ETag). A later
attempt at the same file asks S3 (``ListParts``) what it holds and sends only the parts missing, so a kill
costs at most the parts that were in flight. A file that changed since (size, mtime or sha256) has its old
upload aborted and starts again; an UploadId S3 no longer knows (aborted by a lifecycle rule or by hand,
completed by another run) is forgotten and the upload starts fresh. ``abort_stale`` aborts the uploads a crash
left behind that no later attempt will resume.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.cloud.capabilities import degrade
from agent.cloud.errors import call, translate
from agent.errors import ObjectGoneError, TransientError, UnsupportedError
from agent.pipeline.bandwidth import ThrottledReader, TokenBucket
from agent.state.journal import Journal, MultipartRecord

log = logging.getLogger(__name__)
MAX_PARTS = 10_000  # S3's limit: a larger file gets larger parts
PARTS_IN_FLIGHT = 4
# Under backend.max_bandwidth the cap, not latency, sets the pace: parts in parallel would only share it, and a
# crash would lose all of them half-sent. One at a time loses at most one part.
PARTS_IN_FLIGHT_CAPPED = 1


@dataclass(frozen=True)
class Source:
    path: Path
    key: str
    size: int
    mtime_ns: int
    sha256: str


class ResumableUpload:
    """Uploads one file in parts, resuming what a previous run left (see the module docstring)."""

    def __init__(
        self,
        s3: Any,
        journal: Journal,
        bucket: str,
        *,
        part_size: int,
        limiter: TokenBucket | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.s3 = s3
        self.journal = journal
        self.bucket = bucket
        self.part_size = part_size
        self.limiter = limiter
        self.stop = stop or threading.Event()

    def put(self, src: Source, extra: dict[str, Any]) -> str:
        """Upload ``src`` (``extra``: Metadata and ContentType); returns the object's ETag."""
        rec = self._resumable(src)
        if rec is None:
            # A new upload holds no parts yet: nothing to ask S3 (a store may not even serve ListParts).
            rec = self._start(src, extra)
            done: dict[int, str] | None = {}
        else:
            done = self._confirmed_parts(rec, src)
        if done is None:
            # S3 no longer knows the upload: completed (killed before the journal heard of it), or aborted.
            finished = self._already_there(src)
            if finished is not None:
                log.info("the upload of %s was finished by an earlier run", src.path)
                return finished
            rec = self._start(src, extra)
            done = {}
        count = part_count(src.size, rec.part_size)
        missing = [n for n in range(1, count + 1) if n not in done]
        if done:
            log.info(
                "resuming the upload of %s: %d of %d part(s) already in S3, sending %d",
                src.path,
                len(done),
                count,
                len(missing),
            )
        try:
            done.update(self._send(src, rec, missing))
        except ObjectGoneError:
            self.journal.forget_multipart(str(src.path))
            raise TransientError(
                f"the unfinished upload of {src.path} was aborted in S3 while its parts were sent; it starts again"
            ) from None
        parts = [{"PartNumber": n, "ETag": done[n]} for n in range(1, count + 1)]
        try:
            out = call(
                f"finish the upload of {src.path}",
                self.s3.complete_multipart_upload,
                Bucket=self.bucket,
                Key=src.key,
                UploadId=rec.upload_id,
                MultipartUpload={"Parts": parts},
            )
        except ObjectGoneError:
            self.journal.forget_multipart(str(src.path))
            raise TransientError(f"the multipart upload of {src.path} vanished before it was finished; it starts again") from None
        self.journal.forget_multipart(str(src.path))
        return str(out["ETag"]).strip('"')

    # --- the record ------------------------------------------------------------------------

    def _resumable(self, src: Source) -> MultipartRecord | None:
        """The journal's unfinished upload of this very content, or None (a changed file's is aborted)."""
        rec = self.journal.multipart(str(src.path))
        if rec is None:
            return None
        same = (rec.key, rec.size, rec.mtime_ns, rec.sha256) == (src.key, src.size, src.mtime_ns, src.sha256)
        if same:
            return rec
        log.info("%s changed since its unfinished upload began: that upload is aborted and it starts again", src.path)
        self.abort(rec)
        return None

    def abort(self, rec: MultipartRecord) -> None:
        try:
            call(
                f"abort the unfinished upload of {rec.path}",
                self.s3.abort_multipart_upload,
                Bucket=self.bucket,
                Key=rec.key,
                UploadId=rec.upload_id,
            )
        except ObjectGoneError:
            pass  # already gone: nothing to abort
        except UnsupportedError:
            degrade("multipart abort (AbortMultipartUpload)", "parts of interrupted uploads stay in the store")
        self.journal.forget_multipart(rec.path)

    def _start(self, src: Source, extra: dict[str, Any]) -> MultipartRecord:
        part = max(self.part_size, -(-src.size // MAX_PARTS))
        out = call(f"start the upload of {src.path}", self.s3.create_multipart_upload, Bucket=self.bucket, Key=src.key, **extra)
        rec = MultipartRecord(str(src.path), src.key, str(out["UploadId"]), part, src.size, src.mtime_ns, src.sha256)
        self.journal.start_multipart(rec)
        return rec

    def _confirmed_parts(self, rec: MultipartRecord, src: Source) -> dict[int, str] | None:
        """Part number -> ETag of the parts S3 holds for this upload; None when S3 does not know the UploadId.

        A part S3 lists that the journal lacks (killed between S3's answer and the journal write) is kept if
        its ETag is the MD5 of our bytes; a part of the wrong size or content is sent again.
        """
        journaled = self.journal.multipart_parts(rec.upload_id)
        listed: dict[int, tuple[str, int]] = {}
        try:
            with translate(f"list the parts of the unfinished upload of {src.path}"):
                paginator = self.s3.get_paginator("list_parts")
                for page in paginator.paginate(Bucket=self.bucket, Key=rec.key, UploadId=rec.upload_id):
                    for p in page.get("Parts", []):
                        listed[int(p["PartNumber"])] = (str(p["ETag"]).strip('"'), int(p["Size"]))
        except ObjectGoneError:
            log.info("S3 no longer knows the unfinished upload of %s (finished, aborted or expired)", src.path)
            self.journal.forget_multipart(rec.path)
            return None
        except UnsupportedError:
            # The store cannot list parts: trust the journal, which records a part only once S3 has taken it. A
            # stale upload id then fails at completion, and the upload starts again.
            degrade("multipart listing (ListParts)", "an interrupted upload resumes from the journal's record of its parts")
            return dict(journaled)
        good: dict[int, str] = {}
        count = part_count(rec.size, rec.part_size)
        for n, (etag, size) in listed.items():
            if n > count or size != part_length(rec.size, rec.part_size, n):
                continue
            if journaled.get(n) == etag or _md5_of_part(src.path, rec.part_size, n, size) == etag:
                good[n] = etag
                if n not in journaled:
                    self.journal.record_part(rec.upload_id, n, etag)
        return good

    def _already_there(self, src: Source) -> str | None:
        """The ETag of the object if it holds this very content (same size and sha256 metadata), else None."""
        try:
            head = call(f"read {src.key}", self.s3.head_object, Bucket=self.bucket, Key=src.key)
        except ObjectGoneError:
            return None
        if int(head.get("ContentLength", -1)) == src.size and head.get("Metadata", {}).get("sha256") == src.sha256:
            return str(head["ETag"]).strip('"')
        return None

    # --- sending ------------------------------------------------------------------------------

    def _send(self, src: Source, rec: MultipartRecord, numbers: list[int]) -> dict[int, str]:
        """Send parts ``numbers``, a few at a time; each is journaled as soon as S3 confirms it."""
        sent: dict[int, str] = {}
        if not numbers:
            return sent
        in_flight = PARTS_IN_FLIGHT_CAPPED if self.limiter is not None else PARTS_IN_FLIGHT
        with ThreadPoolExecutor(min(in_flight, len(numbers)), thread_name_prefix="uploader-part") as pool:
            pending: set[Future[tuple[int, str]]] = set()
            for n in numbers:
                while len(pending) >= in_flight:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    self._collect(finished, sent, pending)
                pending.add(pool.submit(self._send_part, src, rec, n))
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                self._collect(finished, sent, pending)
        return sent

    @staticmethod
    def _collect(finished: set[Future[tuple[int, str]]], sent: dict[int, str], pending: set[Future[Any]]) -> None:
        for fut in finished:
            exc = fut.exception()
            if exc is not None:
                for other in pending:
                    other.cancel()
                raise exc
            n, etag = fut.result()
            sent[n] = etag

    def _send_part(self, src: Source, rec: MultipartRecord, n: int) -> tuple[int, str]:
        if self.stop.is_set():
            raise TransientError(f"upload of {src.path} interrupted by shutdown; it resumes at the next start")
        length = part_length(rec.size, rec.part_size, n)
        with open(src.path, "rb") as f:
            f.seek((n - 1) * rec.part_size)
            data = f.read(length)
        if len(data) != length:
            raise TransientError(f"{src.path} shrank during its upload; it goes up again once it settles")

        def send() -> Any:
            body: Any = io.BytesIO(data)
            if self.limiter is not None:
                body = ThrottledReader(body, self.limiter, stop=self.stop)  # seekable: botocore's retries re-read it
            return self.s3.upload_part(Bucket=self.bucket, Key=rec.key, UploadId=rec.upload_id, PartNumber=n, Body=body)

        out = call(f"upload part {n} of {src.path}", send)
        etag = str(out["ETag"]).strip('"')
        self.journal.record_part(rec.upload_id, n, etag)
        return n, etag


def part_count(size: int, part_size: int) -> int:
    return max(1, -(-size // part_size))


def part_length(size: int, part_size: int, n: int) -> int:
    return min(part_size, size - (n - 1) * part_size)


def _md5_of_part(path: Path, part_size: int, n: int, length: int) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek((n - 1) * part_size)
            data = f.read(length)
    except OSError:
        return None
    return hashlib.md5(data, usedforsecurity=False).hexdigest() if len(data) == length else None


def source_of(path: Path, key: str, st: os.stat_result, sha256: str) -> Source:
    return Source(path, key, st.st_size, st.st_mtime_ns, sha256)


def abort_stale(
    s3: Any,
    journal: Journal,
    bucket: str,
    prefix: str,
    *,
    ours: set[str],
    busy: Callable[[], set[str]],
    older_than: float,
) -> int:
    """Abort multipart uploads a crash left behind: of ``ours`` (keys of our files) or older than ``older_than``.

    A killed upload leaves parts that cost storage and never complete. Uploads the journal remembers are kept
    while their file is there (the reconcile that follows resumes them), and so are the keys ``busy()`` names
    (uploading now). Returns how many were aborted.
    """
    resumable = set()
    for rec in journal.multiparts():
        if Path(rec.path).is_file():
            resumable.add(rec.upload_id)
        else:
            journal.forget_multipart(rec.path)  # its file is gone: aborted below like any other
    now = time.time()
    aborted = 0
    paginator = s3.get_paginator("list_multipart_uploads")
    try:
        with translate("list unfinished multipart uploads"):
            pages = list(paginator.paginate(Bucket=bucket, Prefix=prefix))
    except UnsupportedError:
        degrade(
            "multipart listing (ListMultipartUploads)",
            "parts of interrupted uploads are not found, so not aborted (the files themselves are uploaded again)",
        )
        return 0
    in_hand = busy()
    for page in pages:
        for up in page.get("Uploads", []):
            key, initiated = up["Key"], up["Initiated"].timestamp()
            if up["UploadId"] in resumable or key in in_hand or (key not in ours and now - initiated < older_than):
                continue
            try:
                call("abort a stale multipart upload", s3.abort_multipart_upload, Bucket=bucket, Key=key, UploadId=up["UploadId"])
            except UnsupportedError:
                degrade("multipart abort (AbortMultipartUpload)", "parts of interrupted uploads stay in the store")
                return aborted
            aborted += 1
    if aborted:
        log.info("aborted %d unfinished multipart upload(s) left by an earlier run", aborted)
    return aborted
