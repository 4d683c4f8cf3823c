"""The one error hierarchy of thumbdrop.

Every error carries a ``kind`` that tells the caller what to do with it:

* ``transient``: retry (with backoff); after enough receives SQS dead-letters it.
* ``item``: this one file/object/message is bad; report it by name, dead-letter
  it at once, keep going with the others.
* ``fatal``: the agent cannot work (bad config, refused credentials, missing
  bucket); stop cleanly and show it in status.

Library exceptions (botocore, OSError) are converted in ``agent.cloud.errors``
only, so nothing above the cloud layer ever sees a botocore exception.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Kind = Literal["transient", "item", "fatal"]

# Exit codes: the contract in the product SPEC (shared/SPEC.md, "Exit codes"), repeated in README.md.
EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_USAGE = 2
EXIT_BACKEND = 3
EXIT_INTERRUPTED = 130


class ThumbdropError(Exception):
    """Base class: a title, a message that tells the user how to fix it."""

    kind: ClassVar[Kind] = "fatal"
    exit_code: ClassVar[int] = EXIT_BACKEND
    title: ClassVar[str] = "thumbdrop error"

    def __init__(self, message: str, *, hint: str = "", code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code  # the service's own error code ("AccessDenied", "NoSuchBucket"), when it gave one

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# --- fatal: configuration and usage ---------------------------------------


class ConfigError(ThumbdropError):
    """The config file (or built-in defaults plus overrides) is invalid.

    ``problems`` holds every problem found, each ``key.path: what is wrong``.
    """

    exit_code = EXIT_USAGE
    title = "Invalid configuration"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


class UsageError(ThumbdropError):
    exit_code = EXIT_USAGE
    title = "Usage error"


# --- fatal: backend -------------------------------------------------------


class BackendError(ThumbdropError):
    """Something about the backend that stops all work (exit 3)."""

    exit_code = EXIT_BACKEND
    title = "Backend error"


class CredentialsError(BackendError):
    title = "Credentials"


class AccessDeniedError(BackendError):
    title = "Access denied"


class ResourceMissingError(BackendError):
    title = "Missing resource"


class RegionError(BackendError):
    """The backend answered that ``backend.region`` is not where the bucket (or endpoint) lives."""

    title = "Wrong region"


class ClockSkewError(BackendError):
    title = "Clock skew"


class UnsupportedError(BackendError):
    """The store lacks an optional API (NotImplemented, 501, 405): never retried; what needs it degrades."""

    title = "Not supported by this store"


class EndpointUnreachableError(BackendError):
    """Fatal form of unreachable: used where we will not wait (setup, doctor)."""

    title = "Backend unreachable"


# --- transient ---------------------------------------------------------------


class TransientError(ThumbdropError):
    """Worth retrying: network trouble, throttling, 5xx, timeouts."""

    kind = "transient"
    exit_code = EXIT_BACKEND
    title = "Temporary backend failure"


class OfflineError(TransientError):
    """The endpoint cannot be reached right now (connection refused, DNS, timeout)."""

    title = "Backend offline"


class IncompleteSourceError(TransientError):
    """A fresh source that looks cut short: probably still arriving (a newer version follows); try it later."""

    title = "Source still arriving"

    def __init__(self, message: str, *, retry_after: float, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after  # seconds: the consumer postpones the message this long


# --- per item ----------------------------------------------------------------


class ItemError(ThumbdropError):
    """A permanent failure of one item; never retried."""

    kind = "item"
    exit_code = EXIT_ITEMS_FAILED
    title = "Item failed"


class ImageError(ItemError):
    """The file is not an image we can thumbnail (corrupt, truncated, a bomb...)."""

    title = "Bad image"


class UnsafeKeyError(ItemError):
    """An object key that would write outside the thumbnails folder."""

    title = "Unsafe key"


class BadMessageError(ItemError):
    """A queue message that is not an S3 event we understand."""

    title = "Bad message"


class ObjectGoneError(ItemError):
    """The object an event names no longer exists (deleted or overwritten)."""

    title = "Object gone"


# --- cleanup -----------------------------------------------------------------


class MassDeleteError(ThumbdropError):
    """A cleanup run would delete more than ``cleanup.max_delete_fraction`` of a prefix: nothing was deleted."""

    exit_code = EXIT_ITEMS_FAILED
    title = "Cleanup stopped"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "nothing was deleted: " + "; ".join(self.problems),
            hint=f"{guard_check(self.problems)}; if the list is right, run "
            "'thumbdrop cleanup --force' (or raise cleanup.max_delete_fraction)",
        )


LOCAL_SCOPE = "(local thumbnails)"  # how the guard's problem names the local thumbnails folder (pipeline/cleaner.py)


def guard_check(problems: list[str]) -> str:
    """What to check when the mass-delete guard trips: the buckets' settings, the local folders', or both."""
    local = any(LOCAL_SCOPE in p for p in problems)
    bucket = any(LOCAL_SCOPE not in p for p in problems)
    folders = "local.thumbnails_dir and watch.folders in the config (a drive or share with the photos not mounted?)"
    if local and not bucket:
        return f"check {folders}"
    if local:
        return f"check source/thumbnails bucket and prefix, and {folders}"
    return "check source/thumbnails bucket and prefix in the config"
