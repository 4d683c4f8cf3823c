"""pause, resume, tray: the commands that talk to a running agent through its control socket."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from agent.config.loader import load
from agent.errors import EXIT_OK

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("pause", help="pause the running agent's uploads and pulls")
    p.set_defaults(func=cmd_pause)
    p = sub.add_parser("resume", help="resume the running agent's uploads and pulls")
    p.set_defaults(func=cmd_resume)
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
