"""The ``thumbdrop`` command: global options, then one module per command group."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from agent import __version__
from agent.cli import agent_cmds, cleanup_cmds, gallery_cmds, ops_cmds, provision_cmds, status_cmd, tray_cmds
from agent.config import find_config_path, load_config
from agent.config.model import Config
from agent.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigError, ThumbdropError
from agent.service.logs import FORMATS as LOG_FORMATS
from agent.service.logs import setup_logging

log = logging.getLogger("agent.cli")
GROUPS = (agent_cmds, provision_cmds, status_cmd, tray_cmds, gallery_cmds, cleanup_cmds, ops_cmds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thumbdrop",
        description="Drop images in a folder; get thumbnails back. See 'thumbdrop COMMAND --help'.",
    )
    parser.add_argument("--config", metavar="PATH", help="config file (default: $THUMBDROP_CONFIG, then the user config dir)")
    parser.add_argument("--local", action="store_true", help="use the embedded local backend whatever the config says")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="count", default=0, help="more detail (-vv: library debug too)")
    noise.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--version", action="version", version=f"thumbdrop {__version__}")
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text (default) or json (one object per line, for log shippers)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def load(args: argparse.Namespace) -> Config:
    return load_config(find_config_path(args.config), local=args.local)


def main(argv: Sequence[str] | None = None) -> int:
    # A file name from a non-UTF-8 source (os.fsdecode's surrogates) must print as \xe9, not crash the command.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose, fmt=args.log_format)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"thumbdrop: invalid configuration in {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except ThumbdropError as exc:
        print(f"thumbdrop: {exc.title}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  how to fix: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("thumbdrop: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `thumbdrop status | head`: the reader has gone, which is not an error. Python would still complain
        # while flushing stdout at exit, so point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def entry() -> None:
    sys.exit(main())
