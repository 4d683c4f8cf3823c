"""Resumable multipart uploads (agent.pipeline.multipart) against the moto server over HTTP."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.errors import TransientError
from agent.pipeline.multipart import ResumableUpload, source_of
from agent.state.journal import Journal

MB = 1 << 20
PART = 5 * MB
BUCKET = "resume-src"


class Counting:
    """The real client, counting (and optionally failing) upload_part calls."""

    def __init__(self, s3: Any, fail_after: int | None = None) -> None:
        self._s3 = s3
        self.parts: list[int] = []
        self.fail_after = fail_after
        self._lock = threading.Lock()  # parts go up from several threads

    def upload_part(self, **kw: Any) -> Any:
        with self._lock:
            if self.fail_after is not None and len(self.parts) >= self.fail_after:
                raise TransientError("link down (test)")
            self.parts.append(kw["PartNumber"])
        return self._s3.upload_part(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


@pytest.fixture()
def s3(moto_url: str) -> Any:
    cfg = parse_config({"backend": {"endpoint_url": moto_url, "addressing_style": "path", "max_attempts": 1}})
    client = Backend(cfg.backend, endpoint_url=moto_url, local=False).s3
    client.create_bucket(Bucket=BUCKET)
    return client


def big_file(path: Path, size: int = 4 * PART + 123) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def put(s3: Any, journal: Journal, path: Path, key: str = "big.bin") -> str:
    st = path.stat()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    up = ResumableUpload(s3, journal, BUCKET, part_size=PART)
    return up.put(source_of(path, key, st, sha), {"Metadata": {"sha256": sha}, "ContentType": "video/mp4"})


def stored(s3: Any, key: str = "big.bin") -> bytes:
    return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def unfinished(s3: Any) -> list[str]:
    return [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def test_a_broken_upload_resumes_with_the_missing_parts_only(s3: Any, tmp_path: Path) -> None:
    path = big_file(tmp_path / "big.bin")  # 5 parts
    journal = Journal(tmp_path / "j.sqlite3")
    first = Counting(s3, fail_after=2)
    with pytest.raises(TransientError):
        put(first, journal, path)
    rec = journal.multipart(str(path))
    assert rec is not None and rec.part_size == PART
    kept = journal.multipart_parts(rec.upload_id)
    assert len(kept) == len(first.parts) == 2
    second = Counting(s3)
    etag = put(second, journal, path)
    assert sorted(second.parts) == sorted({1, 2, 3, 4, 5} - set(kept))  # nothing sent twice
    assert etag.endswith("-5")
    assert stored(s3) == path.read_bytes()
    assert journal.multipart(str(path)) is None and journal.multipart_parts(rec.upload_id) == {}
    assert unfinished(s3) == []
    journal.close()


def test_a_part_s3_has_but_the_journal_missed_is_not_sent_again(s3: Any, tmp_path: Path) -> None:
    """Killed between S3's answer and the journal write: ListParts plus the part's MD5 recover it."""
    path = big_file(tmp_path / "big.bin", 2 * PART + 7)
    journal = Journal(tmp_path / "j.sqlite3")
    first = Counting(s3, fail_after=1)
    with pytest.raises(TransientError):
        put(first, journal, path)
    rec = journal.multipart(str(path))
    assert rec is not None and len(first.parts) == 1  # parts go in parallel: whichever came first
    journal.forget_multipart(str(path))
    journal.start_multipart(rec)  # the same upload, with no part journaled
    assert journal.multipart_parts(rec.upload_id) == {}
    again = Counting(s3)
    put(again, journal, path)
    assert sorted(again.parts) == sorted({1, 2, 3} - set(first.parts))  # the part in S3 matches: kept
    assert stored(s3) == path.read_bytes()
    journal.close()


def test_a_changed_file_aborts_the_old_upload_and_starts_again(s3: Any, tmp_path: Path) -> None:
    path = big_file(tmp_path / "big.bin", 3 * PART)
    journal = Journal(tmp_path / "j.sqlite3")
    with pytest.raises(TransientError):
        put(Counting(s3, fail_after=1), journal, path)
    old = journal.multipart(str(path))
    assert old is not None and unfinished(s3) == [old.upload_id]
    with open(path, "r+b") as f:  # same size, new bytes, mtime kept: only the sha256 tells
        f.write(b"changed!")
    os.utime(path, ns=(old.mtime_ns, old.mtime_ns))
    again = Counting(s3)
    put(again, journal, path)
    assert sorted(again.parts) == [1, 2, 3]
    assert old.upload_id not in unfinished(s3) and unfinished(s3) == []
    assert stored(s3) == path.read_bytes()
    journal.close()


def test_a_stale_upload_id_starts_fresh(s3: Any, tmp_path: Path) -> None:
    """The upload was aborted behind our back (lifecycle rule, another agent's cleanup): NoSuchUpload."""
    path = big_file(tmp_path / "big.bin", 2 * PART + 1)
    journal = Journal(tmp_path / "j.sqlite3")
    with pytest.raises(TransientError):
        put(Counting(s3, fail_after=1), journal, path)
    rec = journal.multipart(str(path))
    assert rec is not None
    s3.abort_multipart_upload(Bucket=BUCKET, Key="big.bin", UploadId=rec.upload_id)
    again = Counting(s3)
    put(again, journal, path)
    assert sorted(again.parts) == [1, 2, 3]
    assert stored(s3) == path.read_bytes()
    assert journal.multipart(str(path)) is None
    journal.close()


def test_an_upload_finished_before_the_journal_heard_of_it_is_not_sent_again(s3: Any, tmp_path: Path) -> None:
    """Killed between CompleteMultipartUpload and the journal update: S3 forgot the UploadId, the object is there."""
    path = big_file(tmp_path / "big.bin", 2 * PART + 3)
    journal = Journal(tmp_path / "j.sqlite3")
    put(s3, journal, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    st = path.stat()
    from agent.state.journal import MultipartRecord

    journal.start_multipart(MultipartRecord(str(path), "big.bin", "gone-upload-id", PART, st.st_size, st.st_mtime_ns, sha))
    again = Counting(s3)
    assert put(again, journal, path).endswith("-3")
    assert again.parts == []
    assert journal.multipart(str(path)) is None
    journal.close()
