"""pause, resume, stop, tray: the commands that talk to a running agent through its control socket."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from agent.config.loader import load
from agent.errors import EXIT_ITEMS_FAILED, EXIT_OK

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("pause", help="pause the running agent's uploads and pulls")
    p.set_defaults(func=cmd_pause)
    p = sub.add_parser("resume", help="resume the running agent's uploads and pulls")
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("stop", help="stop the running agent: it drains in-flight work and exits (as on SIGTERM)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds to wait for it to exit (default 60)")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("tray", help="the agent with a tray icon (starts the agent, or attaches to a running one)")
    p.add_argument(
        "--backend", choices=("auto", "gtk", "appindicator", "xorg"), help="tray backend (default: tray.backend from the config)"
    )
    p.set_defaults(func=cmd_tray)


def _client(args: argparse.Namespace) -> Any:
    from agent.ops.backend import state_dir
    from agent.service.control_client import ControlClient

    return ControlClient(state_dir(load(args.config, local=args.local)))


def cmd_pause(args: argparse.Namespace) -> int:
    state = _client(args).call("pause")
    print(f"agent {state}: uploads and pulls wait until 'thumbdrop resume'")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    state = _client(args).call("resume")
    print(f"agent {state}")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    from agent.service.control_client import AgentNotRunningError

    client = _client(args)
    try:
        info = client.call("info")
        client.call("stop")
    except AgentNotRunningError:
        print("no agent is running: nothing to stop")
        return EXIT_OK
    pid = info.get("pid") if isinstance(info, dict) else None
    print(f"stopping the agent{f' (pid {pid})' if pid else ''}: it finishes what it is doing")
    deadline = time.monotonic() + max(0.0, args.timeout)
    while client.running():
        if time.monotonic() > deadline:
            print(
                f"thumbdrop: the agent is still stopping after {args.timeout:.0f} s (it may be waiting on the backend; "
                "'thumbdrop status' shows it; run 'thumbdrop stop' again to wait longer)",
                file=sys.stderr,
            )
            return EXIT_ITEMS_FAILED
        time.sleep(0.2)
    print("agent stopped")
    return EXIT_OK


def cmd_tray(args: argparse.Namespace) -> int:
    from agent.config import find_config_path
    from agent.tray.backend import choose_backend

    cfg = load(args.config, local=args.local)
    # Decided before pystray is imported: without a display the import itself fails with an Xlib traceback.
    choice = choose_backend(args.backend or cfg.tray.backend)
    from agent.tray.app import run_tray

    path = find_config_path(args.config)
    config_path: Path | None = path.resolve() if path is not None else None
    return run_tray(cfg, choice, config_path=config_path, local=args.local, verbosity=-1 if args.quiet else args.verbose)
