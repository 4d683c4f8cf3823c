"""The building blocks of the config schema (``agent.config.model``): the field maker and the value checks.

``opt`` makes a dataclass field whose metadata documents it; each check returns an error message, or None
when the value is fine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import field
from typing import Any

from agent.config.values import check_rate as rate  # noqa: F401  (the checks of text values, for the schema)
from agent.config.values import check_windows as windows  # noqa: F401

Check = Callable[[Any], "str | None"]


def opt(default: Any, doc: str, example: Any = None, check: Check | None = None) -> Any:
    """A schema field: default, description, example, optional validator."""
    meta = {"doc": doc, "example": default if example is None else example, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def at_least(n: float) -> Check:
    return lambda v: None if v >= n else f"must be >= {n}, got {v}"


def between(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v}"


def one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
ROLES = ("uploader", "worker", "puller", "cleaner")
FORMATS = ("jpeg", "webp", "png", "avif")
EVENT_MODES = ("sqs", "sns", "poll")


def bucket_name(v: str) -> str | None:
    if not _BUCKET_RE.match(v) or ".." in v:
        return f"{v!r} is not a valid S3 bucket name (3-63 chars: a-z, 0-9, '.', '-')"
    return None


def queue_name(v: str) -> str | None:
    if not _QUEUE_RE.match(v):
        return f"{v!r} is not a valid SQS/SNS name (1-80 chars: letters, digits, '-', '_')"
    return None


def key_prefix(v: str) -> str | None:
    if v.startswith("/") or "\\" in v or ".." in v.split("/"):
        return f"{v!r} must be a relative key prefix (no leading '/', no '\\', no '..')"
    if v and not v.endswith("/"):
        return f"{v!r} must end with '/' (prefixes name a folder), e.g. {v + '/'!r}"
    return None


def color(v: str) -> str | None:
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", v):
        return f"must be a colour like '#ffffff', got {v!r}"
    return None


def sizes(v: list[int]) -> str | None:
    if not v:
        return "must list at least one size"
    bad = [s for s in v if not 16 <= s <= 8192]
    if bad:
        return f"each size must be between 16 and 8192 pixels, got {bad}"
    if len(set(v)) != len(v):
        return f"sizes must be distinct, got {v}"
    return None


def roles(v: list[str]) -> str | None:
    bad = [r for r in v if r not in ROLES]
    if bad:
        return f"unknown role(s) {bad}; valid roles: {', '.join(ROLES)}"
    return None


def endpoint(v: str | None) -> str | None:
    if v is None or v == "local" or re.match(r"^https?://[^\s/]+", v):
        return None
    return f"must be 'local', null (AWS), or an http(s):// URL; got {v!r}"


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0 (or null to turn the rule off), got {v}"
