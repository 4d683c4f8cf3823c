"""The one place where boto3/botocore/OS exceptions become thumbdrop errors."""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import botocore.exceptions as bx
import tenacity
from botocore.parsers import ResponseParserError

from agent.errors import (
    AccessDeniedError,
    BackendError,
    ClockSkewError,
    CredentialsError,
    ObjectGoneError,
    OfflineError,
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
GONE_OBJECT_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


def convert(exc: BaseException, action: str) -> ThumbdropError:
    """Map a library exception raised while doing ``action`` to the hierarchy."""
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
        return OfflineError(
            f"cannot reach the backend while trying to {action}: {exc}",
            hint="check backend.endpoint_url and the network; work resumes by itself when it is back",
        )
    if isinstance(exc, (bx.ReadTimeoutError, bx.ResponseStreamingError, bx.IncompleteReadError)):
        return TransientError(f"the backend stopped answering while trying to {action}: {exc}")
    if isinstance(exc, bx.HTTPClientError):
        return OfflineError(f"connection failed while trying to {action}: {exc}")
    if isinstance(exc, bx.ClientError):
        return _convert_client_error(exc, action)
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


def _convert_client_error(exc: bx.ClientError, action: str) -> ThumbdropError:
    err: dict[str, Any] = dict(exc.response.get("Error", {}))
    code = str(err.get("Code", ""))
    message = str(err.get("Message", "")) or code
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
        return CredentialsError(
            f"the backend refused the credentials ({code}) while trying to {action}: {message}",
            hint="check the access key and secret (and the session token if any) or backend.profile",
        )
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
            f"queue does not exist ({action})", hint="run 'thumbdrop setup' or fix queues.events / queues.pull"
        )
    if code == "NotFound" and "topic" in action:
        return ResourceMissingError(f"SNS topic does not exist ({action})", hint="run 'thumbdrop setup'")
    if code in GONE_OBJECT_CODES or status == 404:
        return ObjectGoneError(f"object not found while trying to {action}")
    return BackendError(f"the backend refused to {action}: {code}: {message}")


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
def translate(action: str) -> Iterator[None]:
    """Run a block, converting any library exception into the hierarchy."""
    try:
        yield
    except ThumbdropError:
        raise
    except (bx.BotoCoreError, bx.ClientError, ResponseParserError, OSError) as exc:
        raise convert(exc, action) from exc


def call(action: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with conversion; no retry of our own (botocore retries inside)."""
    with translate(action):
        return fn(*args, **kwargs)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ThumbdropError) and exc.kind == "transient"


def retrying(action: str, fn: Callable[..., T], /, *args: Any, attempts: int = 5, **kwargs: Any) -> T:
    """``call`` with tenacity retries of transient errors: exponential backoff + jitter, capped."""
    retryer = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=30),
        stop=tenacity.stop_after_attempt(attempts),
        reraise=True,
        before_sleep=lambda rs: log.debug("retrying %s after: %s", action, rs.outcome.exception() if rs.outcome else ""),
    )
    return retryer(call, action, fn, *args, **kwargs)
