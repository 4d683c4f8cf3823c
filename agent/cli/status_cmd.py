"""status: the running agent's published status, queue depths, pending local files."""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from agent.errors import EXIT_BACKEND, EXIT_OK, ThumbdropError
from agent.text import printable

DEPTH_TIMEOUT = 8.0  # seconds for the queue depths; the rest of status is local


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="agent state, pending files, queue depths, recent errors")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_status)


def _depths(cfg: Any) -> tuple[dict[str, Any], bool]:
    """(queue depths or the reason they are unknown, whether the backend was reachable)."""
    from agent.cloud.clients import Backend
    from agent.cloud.local_backend import find_running
    from agent.service.runtime import pool_size, queue_depths, state_dir

    if cfg.backend.endpoint_url == "local":
        endpoint = find_running(state_dir(cfg))
        if endpoint is None:
            # Not unreachable: there is nothing to reach until an agent runs (the embedded backend lives in it).
            return {"error": "the embedded backend is not running (it lives with the agent: 'thumbdrop run')"}, True
        backend = Backend(cfg.backend, endpoint_url=endpoint, local=True, pool_size=pool_size(cfg))
    else:
        backend = Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False, pool_size=pool_size(cfg))
    out: dict[str, Any] = {"backend": backend.describe()}
    if not backend.local:
        out["endpoints"] = {s: backend.where(s) for s in ("s3", "sqs", "sns")}
    found: dict[str, Any] = {}
    refused: list[ThumbdropError] = []

    if cfg.queues.mode == "poll":
        found["queues"] = "poll mode: no queues"

    def query() -> None:
        try:
            for name, entry in queue_depths(cfg, backend).items():
                found[name] = entry if entry is not None else "missing (run 'thumbdrop setup')"
        except ThumbdropError as exc:
            found["error"] = str(exc)
            refused.append(exc)

    # The agent's own state is local and always shown; a backend that accepts connections but never answers
    # must not hold the whole command for botocore's timeouts times its attempts.
    worker = threading.Thread(target=query, name="status-depths", daemon=True)
    worker.start()
    worker.join(DEPTH_TIMEOUT)
    if worker.is_alive():
        out["error"] = f"the backend did not answer within {DEPTH_TIMEOUT:.0f} s (queue depths unknown; try 'thumbdrop doctor')"
        return out, False
    out.update(found)
    # Offline, credentials refused, wrong region...: exit 3 as SPEC says (a missing queue is shown, not an error).
    return out, not any(exc.exit_code == EXIT_BACKEND for exc in refused)


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_status(args: argparse.Namespace) -> int:
    from agent.cli.main import load
    from agent.service.control_client import read_status
    from agent.service.runtime import state_dir

    cfg = load(args)
    published = read_status(state_dir(cfg))  # live from the agent's control socket, else its status.json
    running = published is not None and published.get("state") not in ("not running", "stopped")
    report: dict[str, Any] = {
        "config": cfg.origin,
        "agent": published if running else {"state": "not running"},
    }
    report["queues"], reachable = _depths(cfg)
    code = EXIT_OK if reachable else EXIT_BACKEND
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return code
    agent = report["agent"]
    print(f"config:   {cfg.origin}")
    print(f"agent:    {agent['state']}" + (f" (pid {agent['pid']}, roles {', '.join(agent['roles'])})" if running else ""))
    if running:
        if agent.get("offline_since"):
            print(f"          OFFLINE since {_ago(agent['offline_since'])}: {agent.get('offline_reason', '')}")
        if agent.get("fatal"):
            print(f"          ERROR: {agent['fatal']}")
        for m in agent.get("missing_folders") or []:
            print(f"          WAITING: {m['detail']}")
        c = agent["counts"]
        dup = f", {c['duplicates']} duplicates (poll mode: done by another worker meanwhile)" if c.get("duplicates") else ""
        print(
            f"counts:   {c['uploaded']} uploaded, {c['thumbnailed']} thumbnailed, {c['pulled']} pulled, {c['failed']} failed{dup}"
        )
        a = agent["active"]
        print(
            f"active:   {a['uploading']} uploading, {a['thumbnailing']} thumbnailing, {a['pulling']} pulling; "
            f"{agent['pending_local']} local file(s) pending"
        )
    q = report["queues"]
    if "backend" in q:
        print(f"backend:  {q['backend']}")
    for name in ("events", "pull"):
        e = q.get(name)
        if isinstance(e, dict):
            print(
                f"queue {name:<6} {e['visible']} waiting, {e['in_flight']} in flight, {e.get('dead_letter', '?')} dead-lettered"
            )
        elif e:
            print(f"queue {name:<6} {e}")
    if q.get("error"):
        print(f"queues:   {q['error']}")
    if running and agent.get("failures"):
        print("recent failures:")
        for f in agent["failures"][-10:]:
            print(f"  {_ago(f['at'])} {printable(str(f['name']))}: {printable(str(f['reason']))}")
    return code
