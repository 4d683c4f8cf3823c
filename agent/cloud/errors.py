"""The one place where boto3/botocore/OS exceptions become thumbdrop errors; and the retry rule.

Who retries what (one budget per operation; the layers never multiply):

1. One request: botocore, and only botocore. Its ``standard`` retry mode (``agent.cloud.clients``) tries every
   call up to ``backend.max_attempts`` times in all (default 5) on a transport failure (connection refused or
   reset, a timeout), throttling and 5xx answers, with its own jittered exponential backoff. thumbdrop code
   calls through ``call`` (conversion only) and never wraps a call in a retry loop of its own: a failed call
   has used up its budget. A long poll (``Backend.receiver``) makes one attempt: the consumer loop is its retry.
   The one exception is what botocore cannot reach: a body that breaks off after its GET succeeded is read
   again by ``agent.cloud.objects.download`` (tenacity, ``BODY_ATTEMPTS``); the GET's own errors are not.
2. One item: the role that owns it, after the request's budget is spent, with ``agent.backoff.Backoff``: the
   uploader's per-path backoff (the file is tried again later), the consumer's postponement of a message
   (SQS redelivers it; after ``max_receives`` it is dead-lettered), the reconcile round at the next rescan.
3. Nothing is retried for a fatal error (credentials, permissions, a wrong region) or an item error (a bad
   file): those are reported with a hint, at once.
"""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import botocore.exceptions as bx
from botocore.parsers import ResponseParserError

from agent.errors import (
    AccessDeniedError,
    BackendError,
    ClockSkewError,
    CredentialsError,
    ItemError,
    ObjectGoneError,
    OfflineError,
    RegionError,
    ResourceMissingError,
    ThumbdropError,
    TransientError,
    UnsupportedError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "PriorRequestNotComplete",
    "KMS.ThrottlingException",
    "PreconditionFailed",  # the object changed between HEAD and GET: the next try reads it anew
}
REFUSED_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "AuthFailure",
}
ACCESS_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "AuthorizationError", "Forbidden", "AllAccessDisabled"}
MISSING_QUEUE_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
UNSUPPORTED_CODES = {"NotImplemented", "MethodNotAllowed", "UnsupportedOperation", "XNotImplemented"}
# Actions (see the uploader and multipart) that create an object: a 404 there is a refused key, not a gone object.
# Not "upload part N of": a part of an aborted upload is gone (NoSuchUpload, and some stores send a bare 404).
WRITE_ACTIONS = ("upload ", "start the upload of ")
GONE_OBJECT_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
# Answers that mean "this request was signed for, or sent to, the wrong region".
REGION_CODES = {"PermanentRedirect", "IllegalLocationConstraintException", "InvalidRegion", "AuthorizationQueryParametersError"}
_REGION_NAME = r"([a-z]{2}(?:-[a-z]+)+-\d+)"
_EXPECTED_RES = (
    re.compile(rf"expecting '{_REGION_NAME}'"),  # AuthorizationHeaderMalformed
    re.compile(rf"\.s3[.-]{_REGION_NAME}\.amazonaws\.com"),  # PermanentRedirect's Endpoint
)
_SENT_RES = (re.compile(rf"the region '{_REGION_NAME}' is wrong"), re.compile(rf"valid region, not '{_REGION_NAME}'"))
_SCOPE_RE = re.compile(r"scoped to (?:a valid|the correct|correct|the) region", re.IGNORECASE)


def convert(exc: BaseException, action: str, *, region: str | None = None) -> ThumbdropError:
    """Map a library exception raised while doing ``action`` to the hierarchy.

    ``region``: the region the request was signed for (``backend.region``), named when the backend says it is wrong.
    """
    if isinstance(exc, ThumbdropError):
        return exc
    if isinstance(exc, bx.NoCredentialsError):
        return CredentialsError(
            f"no AWS credentials found while trying to {action}",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, run 'aws configure', set backend.profile, "
            "or use the embedded backend with --local",
        )
    if isinstance(exc, bx.PartialCredentialsError):
        return CredentialsError(f"incomplete AWS credentials: {exc}", hint="set both the key id and the secret")
    if isinstance(exc, bx.ProfileNotFound):
        return CredentialsError(str(exc), hint="fix backend.profile or add the profile to ~/.aws/config")
    if isinstance(exc, bx.SSLError):
        return BackendError(
            f"TLS verification failed while trying to {action}: {exc}",
            hint="point backend.ca_bundle at your CA certificate (or, for a test store only, verify_tls: false)",
        )
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError)):
        url = str(getattr(exc, "kwargs", {}).get("endpoint_url", ""))
        if region and "amazonaws.com" in url and f".{region}." in url:
            # The AWS address is built from backend.region: a region that does not exist has no address at all.
            hint = f"check the network, and that backend.region ({region}) is an AWS region that exists"
        else:
            hint = "check backend.endpoint_url and the network"
        return OfflineError(f"cannot reach the backend while trying to {action}: {exc}", hint=hint)
    if isinstance(exc, (bx.ReadTimeoutError, bx.ResponseStreamingError, bx.IncompleteReadError)):
        return TransientError(f"the backend stopped answering while trying to {action}: {exc}")
    if isinstance(exc, bx.HTTPClientError):
        return OfflineError(f"connection failed while trying to {action}: {exc}")
    if isinstance(exc, bx.ClientError):
        converted = _wrong_region(exc, action, region) or _convert_client_error(exc, action, region)
        converted.code = converted.code or str(exc.response.get("Error", {}).get("Code", ""))  # callers test the code
        return converted
    if isinstance(exc, ResponseParserError):
        # Not a BotoCoreError: a body that is no S3/SQS/SNS answer ('Not Found' from an S3-only store asked for
        # SNS, an HTML page from a proxy). Retried like a glitch; the message says what came back.
        return TransientError(
            f"the backend's answer could not be read while trying to {action} (is this the right endpoint for it?): "
            f"{str(exc)[:300]}",
            hint="check backend.endpoint_url (and s3/sqs/sns_endpoint_url); 'thumbdrop doctor' shows what each serves",
        )
    if isinstance(exc, bx.ParamValidationError):
        return BackendError(f"invalid request while trying to {action}: {exc}")
    if isinstance(exc, bx.BotoCoreError):
        return TransientError(f"backend failure while trying to {action}: {exc}")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return OfflineError(f"connection failed while trying to {action}: {exc}")
    return BackendError(f"unexpected error while trying to {action}: {type(exc).__name__}: {exc}")


def _wrong_region(exc: bx.ClientError, action: str, region: str | None) -> RegionError | None:
    """A RegionError naming ``backend.region``, the value sent and the one expected, if the answer means a wrong region."""
    err: dict[str, Any] = dict(exc.response.get("Error", {}))
    code = str(err.get("Code", ""))
    message = str(err.get("Message", ""))
    meta = exc.response.get("ResponseMetadata", {})
    headers = {str(k).lower(): str(v) for k, v in (meta.get("HTTPHeaders") or {}).items()}
    status = int(meta.get("HTTPStatusCode", 0) or 0)
    about_region = (
        code in REGION_CODES
        or status == 301
        or (code == "AuthorizationHeaderMalformed" and ("region" in message.lower() or "Region" in err))
        or bool(_SCOPE_RE.search(message))
    )
    if not about_region:
        return None
    text = " ".join([message, str(err.get("Endpoint", ""))])
    expected = str(err.get("Region") or headers.get("x-amz-bucket-region") or "") or _first(_EXPECTED_RES, text)
    sent = region or _first(_SENT_RES, message)
    said = f"{code or status}: {message}" if message else str(code or status)
    now = f"backend.region is {sent!r}" if sent else "backend.region is wrong"
    if expected and expected != sent:
        return RegionError(
            f"{now} but the backend expects {expected!r} (while trying to {action}; it said {said})",
            hint=f"set backend.region: {expected} in the config (the region the buckets and queues live in)",
        )
    return RegionError(
        f"{now}{' and the backend refused it' if sent else ''} (while trying to {action}; it said {said})",
        hint="set backend.region to the region the buckets live in "
        "('aws s3api get-bucket-location --bucket BUCKET' tells it), or fix backend.endpoint_url",
    )


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> str:
    for pattern in patterns:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return ""


def _convert_client_error(exc: bx.ClientError, action: str, region: str | None = None) -> ThumbdropError:
    err: dict[str, Any] = dict(exc.response.get("Error", {}))
    code = str(err.get("Code", ""))
    message = _one_line(str(err.get("Message", ""))) or code
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in UNSUPPORTED_CODES or status in (405, 501):
        # Before the 5xx rule: a 501 will not go away by retrying; what needs the API degrades instead.
        return UnsupportedError(
            f"the store does not support this request ({code or status}) while trying to {action}: {message}",
            hint="thumbdrop works without it where it can; 'thumbdrop doctor' lists the store's capabilities",
        )
    if code in TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientError(f"the backend answered {code or status} while trying to {action}: {message}")
    if code == "RequestTimeTooSkewed":
        return ClockSkewError(
            f"this machine's clock differs from the server's {_skew_text(err)} ({action})",
            hint="sync the clock: 'sudo timedatectl set-ntp true' (Linux) or enable automatic time",
        )
    if code in REFUSED_CREDENTIAL_CODES:
        hint = "check the access key and secret (and the session token if any) or backend.profile"
        if code in ("InvalidClientTokenId", "UnrecognizedClientException"):
            # AWS answers this too for a region the account has not enabled (opt-in regions).
            hint += f"; if they are right, check that backend.region{f' ({region})' if region else ''} is enabled for the account"
        return CredentialsError(f"the backend refused the credentials ({code}) while trying to {action}: {message}", hint=hint)
    if code in ACCESS_DENIED_CODES or status == 403:
        return AccessDeniedError(
            f"access denied: not allowed to {action} ({code or status})",
            hint="grant this permission to the credentials in use, or ask the bucket's owner",
        )
    if code == "NoSuchBucket":
        bucket = err.get("BucketName", "")
        return ResourceMissingError(
            f"bucket {bucket!r} does not exist ({action})".replace(" '' ", " "),
            hint="run 'thumbdrop setup' or fix source.bucket / thumbnails.bucket",
        )
    if code == "BucketAlreadyExists":
        return ResourceMissingError(
            f"the bucket name is taken by another account ({action})",
            hint="choose another source.bucket / thumbnails.bucket: S3 bucket names are global",
        )
    if code in MISSING_QUEUE_CODES:
        return ResourceMissingError(
            f"queue does not exist ({action})",
            hint="run 'thumbdrop setup' or fix queues.events / queues.pull (or backend.region, if the queue is in another region)",
        )
    if code == "NotFound" and "topic" in action:
        return ResourceMissingError(f"SNS topic does not exist ({action})", hint="run 'thumbdrop setup'")
    if status == 404 and code not in ("NoSuchUpload", "NoSuchBucket") and _writes(action):
        # Nothing can be "not found" about an object being written: the store refused its key.
        return ItemError(
            f"the store refused its key: it answered {code or status} Not Found to the upload (moto, the embedded "
            "backend, refuses keys that contain a newline); rename the file"
        )
    if code in GONE_OBJECT_CODES or status == 404:
        return ObjectGoneError(f"object not found while trying to {action}")
    return BackendError(f"the backend refused to {action}: {code}: {message}")


def _writes(action: str) -> bool:
    return action.startswith(WRITE_ACTIONS) and not action.startswith("upload part ")


def _one_line(message: str) -> str:
    """A backend's error message fit for one log line: an HTML error page (moto's 500 for an API it lacks,
    a proxy's) becomes its title; anything else is folded onto one line and cut at 300 characters."""
    low = message.lstrip()[:200].lower()
    if low.startswith(("<!doctype html", "<html")) or "<html" in low:
        title = re.search(r"<title[^>]*>(.*?)</title>", message, re.IGNORECASE | re.DOTALL)
        text = " ".join(title.group(1).split()) if title else ""
        return f"an HTML error page ({text})" if text else "an HTML error page"
    text = " ".join(message.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _skew_text(err: dict[str, Any]) -> str:
    try:
        server = _parse_time(str(err["ServerTime"]))
        request = _parse_time(str(err["RequestTime"]))
    except (KeyError, ValueError):
        return "by more than 15 minutes"
    delta = (request - server).total_seconds()
    direction = "ahead of" if delta > 0 else "behind"
    return f"by {abs(delta):.0f} s (this machine is {direction} the server)"


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@contextmanager
def translate(action: str, *, region: str | None = None) -> Iterator[None]:
    """Run a block, converting any library exception into the hierarchy."""
    try:
        yield
    except ThumbdropError:
        raise
    except (bx.BotoCoreError, bx.ClientError, ResponseParserError, OSError) as exc:
        raise convert(exc, action, region=region) from exc


def call(action: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with conversion; no retry of our own (botocore retries inside: see the top)."""
    with translate(action, region=_client_region(fn)):
        return fn(*args, **kwargs)


def _client_region(fn: Callable[..., Any]) -> str | None:
    """The region a boto3 client method signs for (``backend.region``), to name it if the backend refuses it."""
    meta = getattr(getattr(fn, "__self__", None), "meta", None)
    region = getattr(meta, "region_name", None)
    return region if isinstance(region, str) else None


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ThumbdropError) and exc.kind == "transient"
