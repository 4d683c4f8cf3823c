"""``thumbdrop doctor``: is this host set up to work? Each check PASS, WARN, FAIL (or SKIP) with a one-line fix.

The checks only read, except one harmless probe per bucket: a uniquely named
object (``<prefix>.thumbdrop-doctor-<uuid>``) written, read back and deleted.
Its S3 event reaches the queues like any other; the worker and the puller
ignore probe keys (``keys.is_probe``). One failed check never stops the
others; checks that need an unreachable backend are reported as SKIP.
"""

from __future__ import annotations

import dataclasses
import logging

from agent.cloud.clients import Backend
from agent.config.model import Config
from agent.errors import ThumbdropError
from agent.service.checks import FAIL, PASS, SKIP, WARN, Check, failed
from agent.service.checks.local import local_checks
from agent.service.checks.reach import reach
from agent.service.checks.resources import access_check, bucket_checks, capability_checks, cleanup_mode, queue_checks
from agent.service.checks.routes import duplicate_routes, setup_drift

__all__ = ["FAIL", "PASS", "SKIP", "WARN", "Check", "diagnose", "failed", "run_checks"]

log = logging.getLogger(__name__)


def diagnose(cfg: Config) -> list[Check]:
    """All checks for ``cfg``, reaching the backend the way the agent would (with fewer retries: a doctor should not wait)."""
    from agent.ops.backend import backend_for, running_local

    if cfg.backend.endpoint_url == "local":
        endpoint = running_local(cfg)
        if endpoint is None:
            note = "embedded local backend: not running now; it starts with 'thumbdrop run' and needs no setup"
            return run_checks(cfg, None, backend_note=note)
        return run_checks(cfg, backend_for(cfg, endpoint))
    quick = dataclasses.replace(
        cfg.backend,
        max_attempts=min(cfg.backend.max_attempts, 2),
        connect_timeout=min(cfg.backend.connect_timeout, 5.0),
        read_timeout=min(cfg.backend.read_timeout, 20.0),
    )
    try:
        backend = Backend(quick, endpoint_url=cfg.backend.endpoint_url, local=False, pool_size=8)
    except ThumbdropError as exc:
        checks = run_checks(cfg, None, backend_note="not checked: no usable credentials")
        checks.insert(1, Check("credentials", FAIL, exc.message, exc.hint))
        return checks
    return run_checks(cfg, backend)


def run_checks(cfg: Config, backend: Backend | None, *, backend_note: str = "") -> list[Check]:
    """Every check for this config; ``backend`` None means there is nothing remote to check (``backend_note`` says why)."""
    checks = [Check("config", PASS, f"{cfg.origin} is valid (roles: {', '.join(cfg.roles) or 'none'})")]
    if not cfg.backend.verify_tls and cfg.backend.endpoint_url != "local":
        checks.append(
            Check(
                "tls",
                WARN,
                "backend.verify_tls is false: TLS certificates are not verified",
                "set backend.verify_tls: true (with backend.ca_bundle for a private CA)",
            )
        )
    if backend is None:
        checks.append(Check("backend", PASS, backend_note or "no backend to check"))
    else:
        checks.extend(_remote_checks(cfg, backend))
    checks.extend(local_checks(cfg))
    return checks


# --- remote -------------------------------------------------------------------------------------


def _remote_checks(cfg: Config, backend: Backend) -> list[Check]:
    out: list[Check] = []
    reached = reach(cfg, backend, out)
    remaining = ("buckets", "queues", "notifications", "permissions", "cleanup")
    if not reached:
        out.extend(Check(name, SKIP, "not checked: the backend cannot be used (see above)") for name in remaining)
        return out
    missing: set[str] = set()  # buckets and queues that failed their check: nothing more to say about them
    poll = cfg.queues.mode == "poll"
    for check in [*bucket_checks(cfg, backend), *([] if poll else queue_checks(cfg, backend))]:
        if check.result == FAIL:
            missing.add(check.name.split(" ", 1)[1])
        out.append(check)
    if poll:
        out.append(Check("queues", SKIP, f"poll mode: no queues (listings every {cfg.queues.poll_seconds:g} s)"))
    else:
        out.extend(setup_drift(cfg, backend, missing))
        out.extend(duplicate_routes(cfg, backend))
    for bucket, prefix in dict.fromkeys([(cfg.source.bucket, cfg.source.prefix), (cfg.thumbnails.bucket, cfg.thumbnails.prefix)]):
        if bucket not in missing:
            out.append(access_check(backend, bucket, prefix))
    if cfg.source.bucket not in missing:
        out.extend(capability_checks(cfg, backend))
    if {cfg.source.bucket, cfg.thumbnails.bucket} & missing:
        out.append(Check("cleanup", SKIP, "not checked: a bucket is missing"))
    else:
        out.append(cleanup_mode(cfg, backend))
    return out
