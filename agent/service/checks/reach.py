"""Can the backend be used at all: reachable, credentials found and accepted, clock in step."""

from __future__ import annotations

import email.utils
import platform
import time
from typing import Any

from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.config.model import Config
from agent.errors import AccessDeniedError, ClockSkewError, CredentialsError, OfflineError, ThumbdropError
from agent.service.checks import FAIL, PASS, WARN, Check

SKEW_WARN = 60.0  # seconds; AWS refuses requests signed more than 15 minutes off
SKEW_FAIL = 15 * 60.0


def clock_fix() -> str:
    system = platform.system()
    if system == "Darwin":
        return "turn on 'Set time and date automatically' (or: sudo sntp -sS time.apple.com)"
    if system == "Windows":
        return "turn on 'Set time automatically' (or, as administrator: w32tm /resync)"
    return "sudo timedatectl set-ntp true (needs systemd-timesyncd, chrony or ntpd)"


def reach(cfg: Config, backend: Backend, out: list[Check]) -> bool:
    """Backend reachable, credentials found and accepted, clock in step; False when nothing more can be checked."""
    source = backend.credential_source()
    if source == "none":
        out.append(
            Check(
                "credentials",
                FAIL,
                "no credentials found (environment, ~/.aws/credentials, backend.profile, instance role)",
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, run 'aws configure', or set backend.profile",
            )
        )
        return False
    sent = time.time()
    try:
        if backend.endpoint_for("s3") is None:
            resp = call("identify the credentials", backend.client("sts").get_caller_identity)
            who = f" as {resp.get('Arn', '?')}"
        else:
            resp = call("list buckets", backend.s3.list_buckets)
            who = ""
    except OfflineError as exc:
        out.append(Check("backend", FAIL, f"cannot reach {backend.describe()}: {exc.message}", _endpoint_fix(cfg)))
        return False
    except CredentialsError as exc:
        out.append(Check("backend", PASS, f"reached {backend.describe()}"))
        out.append(Check("credentials", FAIL, f"found ({source}) but refused: {exc.message}", exc.hint))
        return False
    except ClockSkewError as exc:
        out.append(Check("backend", PASS, f"reached {backend.describe()}"))
        out.append(Check("clock", FAIL, exc.message, clock_fix()))
        return False
    except AccessDeniedError:
        # Signed correctly, only not allowed to list: the credentials are good, and thumbdrop never lists buckets.
        out.append(Check("backend", PASS, f"reached {backend.describe()}"))
        out.append(Check("credentials", PASS, f"accepted (source: {source}; listing buckets is not allowed, which is fine)"))
        return True
    except ThumbdropError as exc:
        out.append(Check("backend", FAIL, f"{backend.describe()}: {exc.message}", exc.hint or _endpoint_fix(cfg)))
        return False
    received = time.time()
    out.append(Check("backend", PASS, f"reached {backend.describe()}"))
    if not backend.local:
        out.append(Check("endpoints", PASS, "; ".join(f"{s.upper()}: {backend.where(s)}" for s in _services(cfg))))
    out.append(Check("credentials", PASS, f"accepted (source: {source}){who}"))
    out.append(clock(resp, (sent + received) / 2))
    return True


def _services(cfg: Config) -> tuple[str, ...]:
    if cfg.queues.mode == "poll":
        return ("s3",)
    return ("s3", "sqs", "sns") if cfg.queues.mode == "sns" else ("s3", "sqs")


def _endpoint_fix(cfg: Config) -> str:
    url = cfg.backend.endpoint_url or "AWS"
    return f"check backend.endpoint_url ({url}): is the address right and the store running? Then the network and proxy"


def clock(resp: dict[str, Any], local_time: float) -> Check:
    """The skew between this machine and the server, from the answer's Date header."""
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        server = email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        server = None
    if server is None:
        return Check("clock", WARN, "the server sent no Date header: clock skew not measured")
    skew = local_time - server  # Date has a resolution of one second
    where = "ahead of" if skew > 0 else "behind"
    text = f"this machine is {abs(skew):.0f} s {where} the server"
    if abs(skew) > SKEW_FAIL:
        return Check("clock", FAIL, text + " (requests are refused past 15 minutes)", clock_fix())
    if abs(skew) > SKEW_WARN:
        return Check("clock", WARN, text + " (refused past 15 minutes)", clock_fix())
    return Check("clock", PASS, text if abs(skew) >= 2 else "in step with the server")
