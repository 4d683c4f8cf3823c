"""What an S3 store can do: optional APIs probed instead of assumed.

MinIO, Garage, Ceph, s3rver and friends serve S3 but may lack notifications, lifecycle rules,
tagging, versioning, multipart listing or abort, or conditional writes. A missing API answers
NotImplemented/501/405 (``UnsupportedError``); the code that needs it calls :func:`degrade`,
which logs one warning per API naming the consequence, and carries on without it.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions as bx
from botocore.parsers import ResponseParserError

from agent.cloud.clients import Backend

log = logging.getLogger(__name__)
PROBE_MARK = ".thumbdrop-doctor-"  # the reserved key space (agent.pipeline.keys.PROBE_MARK), never thumbnailed or pulled

_warned: set[str] = set()
_warned_lock = threading.Lock()


def degrade(api: str, consequence: str) -> None:
    """One warning per API per process: the store lacks ``api``, so ``consequence``."""
    with _warned_lock:
        if api in _warned:
            return
        _warned.add(api)
    log.warning("this store does not support %s: %s", api, consequence)


def reset_warnings() -> None:
    """For tests: forget which warnings were given."""
    with _warned_lock:
        _warned.clear()


@dataclass
class Capability:
    name: str  # what thumbdrop calls it
    api: str  # the S3/SQS/SNS operation probed
    supported: bool | None  # None: could not tell (e.g. access denied, or the bucket is missing)
    detail: str  # what was seen, or what is degraded without it


def _code(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return str(err.get("Code", "")), status
    return type(exc).__name__, 0


def _unsupported(code: str, status: int) -> bool:
    return code in ("NotImplemented", "MethodNotAllowed", "UnsupportedOperation") or status in (405, 501)


def _probe(name: str, api: str, fn: Callable[[], Any], *, fine: tuple[str, ...] = (), without: str) -> Capability:
    """Call ``fn``; an answer, or one of the ``fine`` error codes, means the API exists."""
    try:
        fn()
    except (bx.ClientError, bx.BotoCoreError, ResponseParserError) as exc:
        code, status = _code(exc)
        if code in fine:
            return Capability(name, api, True, f"supported ({code})")
        if _unsupported(code, status):
            return Capability(name, api, False, f"missing ({code or status}): {without}")
        if isinstance(exc, ResponseParserError) or (status == 404 and not code.startswith("NoSuch")):
            return Capability(name, api, False, f"missing (not served here): {without}")
        if isinstance(exc, bx.EndpointConnectionError):
            return Capability(name, api, None, f"endpoint unreachable: {without}")
        return Capability(name, api, None, f"unknown ({code or status or type(exc).__name__})")
    return Capability(name, api, True, "supported")


# The bucket-level reads probed: (name, API, client method, error codes that still mean it exists, without it).
_BUCKET_READS: tuple[tuple[str, str, str, tuple[str, ...], str], ...] = (
    (
        "notifications",
        "GetBucketNotificationConfiguration",
        "get_bucket_notification_configuration",
        (),
        "no bucket events: the queue modes cannot work here; queues.mode: poll is made for such stores",
    ),
    (
        "lifecycle rules",
        "GetBucketLifecycleConfiguration",
        "get_bucket_lifecycle_configuration",
        ("NoSuchLifecycleConfiguration",),
        "cleanup.mode lifecycle/both cannot install rules; use cleanup.mode: agent",
    ),
    (
        "tagging",
        "GetBucketTagging",
        "get_bucket_tagging",
        ("NoSuchTagSet",),
        "buckets are not tagged as thumbdrop's, so teardown keeps them",
    ),
    ("versioning", "GetBucketVersioning", "get_bucket_versioning", (), "none (thumbdrop does not need it)"),
)


def probe(backend: Backend, bucket: str, prefix: str, *, queues: bool = True, sns: bool = False) -> list[Capability]:
    """Each optional API, probed cheaply and safely: reads, and writes only under ``prefix + PROBE_MARK``."""
    s3 = backend.s3
    key = f"{prefix}{PROBE_MARK}{uuid.uuid4().hex}"
    caps = [
        _probe(name, api, functools.partial(getattr(s3, method), Bucket=bucket), fine=fine, without=without)
        for name, api, method, fine, without in _BUCKET_READS
    ]
    caps += [
        _probe(
            "multipart listing",
            "ListMultipartUploads",
            lambda: s3.list_multipart_uploads(Bucket=bucket, Prefix=key, MaxUploads=1),
            without="unfinished multipart uploads are not found, so not aborted",
        ),
        _probe(
            "multipart abort",
            "AbortMultipartUpload",
            lambda: s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId="thumbdrop-doctor-probe"),
            fine=("NoSuchUpload", "404"),
            without="unfinished multipart uploads stay until the store drops them",
        ),
        _conditional_writes(backend, bucket, key),
    ]
    if caps[3].supported:  # a read answers; turning versioning on is not probed (it would change the bucket)
        caps[3].detail = "answers (read only; thumbdrop does not need versioning)"
    if queues:
        caps.append(
            _probe(
                "SQS",
                "ListQueues",
                lambda: backend.sqs.list_queues(QueueNamePrefix="thumbdrop-doctor-", MaxResults=1),
                without="no queues at this endpoint: set backend.sqs_endpoint_url, or queues.mode: poll",
            )
        )
    if sns:
        caps.append(
            _probe(
                "SNS",
                "ListTopics",
                lambda: backend.sns.list_topics(),
                without="no topics at this endpoint: use queues.mode: sqs or set backend.sns_endpoint_url",
            )
        )
    return caps


def _conditional_writes(backend: Backend, bucket: str, key: str) -> Capability:
    """PUT a probe object twice, the second time with If-None-Match: *; a store that honours it refuses (412)."""
    s3 = backend.s3
    name, api = "conditional writes", "PutObject If-None-Match"
    without = "no leases: several workers may thumbnail one image at once (harmless, counted)"
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"thumbdrop doctor probe; safe to delete\n")
    except (bx.ClientError, bx.BotoCoreError, ResponseParserError) as exc:
        code, status = _code(exc)
        return Capability(name, api, None, f"unknown: cannot write {key} ({code or status})")
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"again\n", IfNoneMatch="*")
        cap = Capability(name, api, False, f"missing (ignored: the second write succeeded): {without}")
    except (bx.ClientError, bx.BotoCoreError, ResponseParserError) as exc:
        code, status = _code(exc)
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
            cap = Capability(name, api, True, "supported")
        elif _unsupported(code, status):
            cap = Capability(name, api, False, f"missing ({code or status}): {without}")
        else:
            cap = Capability(name, api, None, f"unknown ({code or status})")
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except (bx.ClientError, bx.BotoCoreError, ResponseParserError) as exc:
        log.warning("doctor: could not delete its probe s3://%s/%s (%s); delete it by hand", bucket, key, _code(exc)[0])
    return cap
