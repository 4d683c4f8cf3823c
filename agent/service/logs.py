"""Logging setup: readable lines on a terminal, levels kept under systemd."""

from __future__ import annotations

import logging
import os
import sys


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


def setup_logging(verbosity: int) -> None:
    """verbosity: -1 quiet (warnings), 0 info, 1 debug for thumbdrop, 2 debug for everything."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    handler.addFilter(_Redact())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbosity < 2 else logging.DEBUG)
    logging.getLogger("agent").setLevel(level)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "watchdog", "PIL"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
