"""Logging setup: readable lines on a terminal, levels kept under systemd, JSON for log shippers.

Under systemd (stderr is the journal stream) lines carry a ``<N>`` syslog priority
prefix and no timestamp: journald keeps the level and adds its own time. A log
file, when asked for, is rotated by size. Secrets from the environment are
masked in every line whatever the format.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from agent.text import printable

FORMATS = ("text", "json")
LOG_FILE_BYTES = 5 * 1024 * 1024
LOG_FILE_BACKUPS = 5
_format = "text"  # chosen by setup_logging; a log file added later uses it too


class _Redact(logging.Filter):
    """Belt and braces: never let a secret from the environment reach a log line."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = [
            v for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID") if len(v := os.environ.get(k, "")) >= 8
        ]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            if any(s in msg for s in self.secrets):
                for s in self.secrets:
                    msg = msg.replace(s, "***")
                record.msg, record.args = msg, None
        return True

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text


class _OneLine(logging.Filter):
    """A message is one line, in any format: a newline or an undecodable byte in a name (a file, a bucket key)
    is shown escaped (``\\n``, ``\\xff``) as everywhere else, never as a split line or ``\\udcff``. Tracebacks
    are added by the formatter after this and keep their lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not msg.isprintable():
            record.msg, record.args = printable(msg), None
        return True


# Attributes every LogRecord has; anything else on a record came from ``extra=`` and goes into JSON.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald understands: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    for floor, prio in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6)):
        if levelno >= floor:
            return prio
    return 7


class _SafeFormatter(logging.Formatter):
    """Masks secrets in the whole output (tracebacks and extra fields included), not only the message."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self.redactor = _Redact()

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        return super().format(record)


class JournalFormatter(_SafeFormatter):
    """``<N>logger: message`` with no timestamp; every line of a traceback keeps the prefix, so keeps the level."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def render(self, record: logging.LogRecord) -> str:
        prio = syslog_priority(record.levelno)
        return "\n".join(f"<{prio}>{line}" for line in (super().render(record).splitlines() or [""]))


class JsonFormatter(_SafeFormatter):
    """One JSON object per line: ts, level, logger, message, the ``extra=`` fields, exc for a traceback."""

    def render(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def stderr_is_journal(env: dict[str, str] | None = None) -> bool:
    """Whether stderr is systemd's journal stream: JOURNAL_STREAM names its device and inode."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def formatter(fmt: str, *, journal: bool = False, file: bool = False) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if journal:
        return JournalFormatter()
    if file:
        return _SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    return _SafeFormatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")


def setup_logging(verbosity: int, *, fmt: str = "text") -> None:
    """verbosity: -1 quiet (warnings), 0 info, 1 debug for thumbdrop, 2 debug for everything; fmt: text or json."""
    global _format
    _format = fmt
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, journal=stderr_is_journal()))
    handler.addFilter(_OneLine())
    handler.addFilter(_Redact())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbosity < 2 else logging.DEBUG)
    logging.getLogger("agent").setLevel(level)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "watchdog", "PIL"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)


def log_to_file(
    path: str, *, max_bytes: int = LOG_FILE_BYTES, backups: int = LOG_FILE_BACKUPS, keep_stderr: bool = False, source: str = "cli"
) -> None:
    """Send the log to ``path``, rotated by size, instead of stderr (a detached agent has no terminal).

    ``keep_stderr``: log to both (``local.log_file``: the terminal or journal keeps its lines).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", errors="backslashreplace")
    handler.setFormatter(formatter(_format, file=True))
    handler.addFilter(_OneLine())
    handler.addFilter(_Redact())
    handler._thumbdrop_source = source  # type: ignore[attr-defined]  # lets use_config_log_file find its own
    root = logging.getLogger()
    # stderr stays for what logging never sees (a crash before logging, a config error printed by the CLI).
    root.handlers[:] = [*(root.handlers if keep_stderr else []), handler]


def use_config_log_file(value: str | None, state_dir: Path) -> Path | None:
    """Apply ``local.log_file`` (again, after a reload); a --log-file given on the command line wins.

    A bare name is placed in the state dir. Returns the file in use, if any.
    """
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, RotatingFileHandler)]
    if any(getattr(h, "_thumbdrop_source", "") == "cli" for h in files):
        return Path(files[0].baseFilename)
    path = None if not value else (state_dir / value if "/" not in value else Path(value))
    for h in files:
        if path is not None and Path(h.baseFilename) == path.absolute():
            return path
        root.removeHandler(h)
        h.close()
    if path is not None:
        log_to_file(str(path), keep_stderr=True, source="config")
    return path
