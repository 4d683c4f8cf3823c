"""run, worker, sync."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from agent.config.loader import load
from agent.errors import EXIT_INTERRUPTED, EXIT_ITEMS_FAILED, EXIT_OK
from agent.text import printable


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the agent (configured roles) until SIGTERM/SIGINT")
    p.add_argument("--log-file", metavar="PATH", help="log to PATH (rotated by size) instead of stderr; 'thumbdrop tray' uses it")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("worker", help="run the worker role alone (scale-out hosts)")
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("sync", help="one shot: upload, thumbnail and pull everything pending, then exit")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="give up after S seconds (exit 1, listing what is unfinished)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_sync)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service.logs import log_to_file
    from agent.service.run import serve

    if args.log_file:
        log_to_file(args.log_file)
    return _leave(serve(load(args.config, local=args.local), reload=lambda: load(args.config, local=args.local)))


def cmd_worker(args: argparse.Namespace) -> int:
    from agent.service.run import serve

    return _leave(
        serve(load(args.config, local=args.local), roles=["worker"], reload=lambda: load(args.config, local=args.local))
    )


def _leave(code: int) -> int:
    """Exit now, even if requests to an unresponsive backend are still blocked in worker threads.

    The agent has drained what it could within its stop deadline; Python would otherwise wait for those
    threads at exit (for botocore's read timeout times its attempts: minutes). Their work is redone at the next
    start, as after a crash, which every role is built to survive.
    """
    # Python joins every pool worker thread at exit (concurrent.futures registers them, daemon or not, and
    # they inherit daemon=True from the thread that first submitted work), and any non-daemon thread.
    from concurrent.futures import thread as pool_threads

    joined_at_exit = set(getattr(pool_threads, "_threads_queues", {}))
    stuck = sorted(
        {
            t.name
            for t in threading.enumerate()
            if t.is_alive() and t is not threading.main_thread() and (not t.daemon or t in joined_at_exit)
        }
    )
    if not stuck:
        return code
    logging.getLogger(__name__).warning(
        "exiting with %d thread(s) still waiting on the backend (%s): their work is redone at the next start",
        len(stuck),
        ", ".join(stuck),
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _ProgressLine:
    """One line on a terminal with every phase (they overlap: uploads, thumbnails and pulls stream);
    one plain line per finished phase otherwise."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.tty = sys.stderr.isatty()
        self.enabled = enabled  # off with -q, and with --log-format json (stderr is then for a log shipper)
        self.finished: set[str] = set()
        self.phases: dict[str, tuple[int, int]] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase in self.finished or not self.enabled:
            return
        complete = done >= total
        self.phases[phase] = (done, total)
        if self.tty:
            line = "  ".join(f"{p} {d}/{t}" for p, (d, t) in self.phases.items())
            end = "\n" if all(d >= t for d, t in self.phases.values()) and complete else ""
            sys.stderr.write(f"\r{line}\x1b[K{end}")
            sys.stderr.flush()
        elif complete:
            print(f"{phase}: {done}/{total}", file=sys.stderr)
        if complete:
            self.finished.add(phase)


UNFINISHED_SHOWN = 20  # an interrupted or timed-out sync names this many unfinished items, then counts the rest


def cmd_sync(args: argparse.Namespace) -> int:
    from agent.ops.backend import open_backend, state_dir
    from agent.ops.status import report_missing_watch_folders
    from agent.service.sync import Sync
    from agent.service.sync_client import sync_through_agent

    cfg = load(args.config, local=args.local)
    missing = report_missing_watch_folders(cfg)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = _ProgressLine(enabled=not args.quiet and args.log_format != "json")
    try:
        # A running agent on this state dir does the work itself: never a second uploader and worker beside it.
        result = sync_through_agent(cfg, state_dir(cfg), timeout=args.timeout, progress=progress, stop=stop)
        if result is None:
            result = Sync(
                cfg, lambda: open_backend(cfg), state_dir(cfg), timeout=args.timeout, progress=progress, stop=stop
            ).run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    code = EXIT_INTERRUPTED if result.interrupted else EXIT_OK if result.ok else EXIT_ITEMS_FAILED
    if args.json:
        report = {"ok": result.ok, "exit_code": code, **result.as_dict(), "missing_folders": missing}
        if result.interrupted or result.timed_out:
            stopped = "interrupted" if result.interrupted else f"timed out after {args.timeout:g} s"
            report["error"] = {
                "kind": "interrupted" if result.interrupted else "timeout",
                "message": f"{stopped}: {len(result.unfinished)} item(s) unfinished",
            }
        print(json.dumps(report, indent=2))
        return code
    print(
        f"{result.files} image(s) in scope: {result.uploaded} uploaded, {result.thumbnailed} thumbnailed, "
        f"{result.pulled} pulled, {len(result.failures)} failed"
    )
    for name, reason in sorted(result.failures.items()):
        print(f"  FAILED {printable(name)}: {printable(reason)}")
    for m in missing:
        print(f"  SKIPPED {printable(m['detail'])}")
    why = " (interrupted)" if result.interrupted else " (timed out)" if result.timed_out else ""
    if result.unfinished:
        print(f"  {len(result.unfinished)} unfinished{why}:")
        names = sorted(result.unfinished)
        # A sync stopped early on a big folder would otherwise bury its summary under thousands of names.
        shown = names[:UNFINISHED_SHOWN] if why else names
        for name in shown:
            print(f"  UNFINISHED {printable(name)}")
        if len(names) > len(shown):
            print(f"  ... and {len(names) - len(shown)} more (run sync with --json to get every name)")
    elif why:
        print(f"  {why.strip(' ()')}")
    return code
