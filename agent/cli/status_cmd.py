"""status: the running agent's published status, queue depths, pending local files."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from agent.config.loader import load
from agent.errors import EXIT_BACKEND, EXIT_OK
from agent.text import printable


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="agent state, pending files, queue depths, recent errors")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_status)


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_status(args: argparse.Namespace) -> int:
    from agent.ops.status import agent_status, is_running, queue_report

    cfg = load(args.config, local=args.local)
    published = agent_status(cfg)  # live from the agent's control socket, else its status.json
    running = is_running(published)
    report: dict[str, Any] = {
        "config": cfg.origin,
        "agent": published if running else {"state": "not running"},
    }
    report["queues"], reachable = queue_report(cfg)
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
