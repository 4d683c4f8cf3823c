"""Reading an object's body, with the one retry botocore cannot give.

botocore retries a request (``backend.max_attempts``) until its answer starts. A body that breaks off
afterwards (a reset link, a read timeout, a short read) is past its reach: the call has returned. That, and
only that, is retried here, with tenacity (``BODY_ATTEMPTS`` in all, waits from ``agent.backoff``): the
GET is sent again with the same ``If-Match``, and the file is written from the start. Errors of the GET
itself are not retried again (botocore did), so the layers never multiply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import IO, Any

import botocore.exceptions as bx
import tenacity

from agent.backoff import Backoff
from agent.cloud.errors import call
from agent.errors import TransientError

log = logging.getLogger(__name__)

BODY_ATTEMPTS = 3
BODY_BACKOFF = Backoff(first=0.25, cap=5.0)  # the project's one delay policy; tenacity counts the attempts
CHUNK = 1024 * 1024
BODY_ERRORS = (bx.ReadTimeoutError, bx.ResponseStreamingError, bx.IncompleteReadError, ConnectionError)


class BodyBrokenError(TransientError):
    """The object's body broke off after its GET had succeeded."""


def download(
    s3: Any,
    bucket: str,
    key: str,
    out: IO[bytes],
    *,
    action: str,
    if_match: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
    attempts: int = BODY_ATTEMPTS,
    first: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stream ``bucket/key`` into ``out`` (seekable, written from its start); returns the GET's answer (headers,
    no body). ``on_chunk(n)`` sees every chunk's size (bandwidth limits). A body that breaks off is read again.

    ``first``: a GET answer the caller already has (it looked at the headers first); its body is read first,
    and a read again asks for that same version (``If-Match`` its ETag)."""
    extra = {"IfMatch": if_match} if if_match else {}
    if first is not None and not if_match and first.get("ETag"):
        extra = {"IfMatch": str(first["ETag"])}
    pending = [first] if first is not None else []
    start = out.tell()

    def once() -> dict[str, Any]:
        out.seek(start)
        out.truncate()
        resp: dict[str, Any] = pending.pop() if pending else call(action, s3.get_object, Bucket=bucket, Key=key, **extra)
        body = resp.pop("Body")
        try:
            while True:
                try:
                    chunk = body.read(CHUNK)
                except BODY_ERRORS as exc:
                    raise BodyBrokenError(f"the download broke off while trying to {action}: {exc}") from exc
                if not chunk:
                    break
                if on_chunk is not None:
                    on_chunk(len(chunk))
                out.write(chunk)
        finally:
            body.close()
        return resp

    retryer = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(BodyBrokenError),
        wait=lambda state: BODY_BACKOFF.delay_for(state.attempt_number - 1),
        stop=tenacity.stop_after_attempt(attempts),
        reraise=True,
        before_sleep=lambda state: log.info(
            "%s: %s; reading it again", action, state.outcome.exception() if state.outcome else "broke off"
        ),
    )
    return retryer(once)
