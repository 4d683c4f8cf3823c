"""The ``thumbdrop`` command: global options, then one module per command group."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from agent import __version__
from agent.cli import agent_cmds, cleanup_cmds, gallery_cmds, ops_cmds, provision_cmds, status_cmd, tray_cmds
from agent.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigError, ThumbdropError
from agent.service.logs import FORMATS as LOG_FORMATS
from agent.service.logs import setup_logging

log = logging.getLogger("agent.cli")
GROUPS = (agent_cmds, provision_cmds, status_cmd, tray_cmds, gallery_cmds, cleanup_cmds, ops_cmds)


def build_parser(groups: Sequence[Any] = GROUPS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thumbdrop",
        description="Drop images in a folder; get thumbnails back. See 'thumbdrop COMMAND --help'.",
    )
    add_global_options(parser)
    parser.add_argument("--version", action="version", version=f"thumbdrop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in groups:
        group.register(sub)
    for command in _subcommands(parser):
        # After the command too: 'thumbdrop status --config x.yaml'. SUPPRESS: not given there, the value given
        # before the command (or the top-level default) stands.
        add_global_options(command, after_command=True)
    return parser


def add_global_options(parser: argparse.ArgumentParser, *, after_command: bool = False) -> None:
    """--config, --local, -v/-q, --log-format; on a command's parser, any option it defines itself wins."""
    taken = set(parser._option_string_actions)
    used_dests = {a.dest for a in parser._actions}
    title = "global options (also accepted before the command)" if after_command else None
    group = parser.add_argument_group(title) if title else parser

    def wanted(*flags: str, dest: str) -> list[str]:
        return [] if dest in used_dests else [f for f in flags if f not in taken]

    def extra(default: Any) -> dict[str, Any]:
        return {"default": argparse.SUPPRESS} if after_command else {"default": default}

    if flags := wanted("--config", dest="config"):
        group.add_argument(
            *flags, metavar="PATH", help="config file (default: $THUMBDROP_CONFIG, then the user config dir)", **extra(None)
        )
    if flags := wanted("--local", dest="local"):
        group.add_argument(
            *flags, action="store_true", help="use the embedded local backend whatever the config says", **extra(False)
        )
    verbose, quiet = wanted("-v", "--verbose", dest="verbose"), wanted("-q", "--quiet", dest="quiet")
    noise = group.add_mutually_exclusive_group() if verbose and quiet else group
    if verbose:
        noise.add_argument(*verbose, action="count", help="more detail (-vv: library debug too)", **extra(0))
    if quiet:
        noise.add_argument(*quiet, action="store_true", help="warnings and errors only", **extra(False))
    if flags := wanted("--log-format", dest="log_format"):
        group.add_argument(
            *flags,
            choices=LOG_FORMATS,
            help="text (default) or json (one object per line, for log shippers)",
            **extra("text"),
        )


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command's parser, nested ones ('service install', 'dlq list') included, each once."""
    found: dict[int, argparse.ArgumentParser] = {}
    stack = [parser]
    while stack:
        for action in stack.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    if id(child) not in found:
                        found[id(child)] = child
                        stack.append(child)
    return list(found.values())


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
        _json_error(args, EXIT_USAGE, "config", f"invalid configuration in {exc.source}", problems=exc.problems)
        return EXIT_USAGE
    except ThumbdropError as exc:
        print(f"thumbdrop: {exc.title}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  how to fix: {exc.hint}", file=sys.stderr)
        _json_error(args, exc.exit_code, exc.kind, exc.message, title=exc.title, hint=exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        print("thumbdrop: interrupted", file=sys.stderr)
        _json_error(args, EXIT_INTERRUPTED, "interrupted", "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `thumbdrop status | head`: the reader has gone, which is not an error. Python would still complain
        # while flushing stdout at exit, so point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _json_error(args: argparse.Namespace, code: int, kind: str, message: str, **extra: Any) -> None:
    """With --json, a failed command still answers on stdout: one object a script can read, with the exit code."""
    if getattr(args, "json", False):
        error = {"kind": kind, "message": message, **extra}
        print(json.dumps({"ok": False, "exit_code": code, "error": error}, indent=2))


def entry() -> None:
    sys.exit(main())
