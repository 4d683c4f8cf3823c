"""setup, teardown, init."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.config.loader import load
from agent.errors import EXIT_OK, EXIT_USAGE
from agent.service.units import SYSTEM_CONFIG


def register(sub: Any) -> None:
    p = sub.add_parser("setup", help="create or verify buckets, queues, topics and notifications (idempotent)")
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.add_argument(
        "--worker", choices=("agent", "lambda"), default="agent", help="lambda: also print how to run the worker on AWS Lambda"
    )
    p.set_defaults(func=cmd_setup)
    p = sub.add_parser("teardown", help="remove what setup created")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show what would be removed")
    p.add_argument("--empty-buckets", action="store_true", help="also delete the objects in thumbdrop's buckets")
    p.set_defaults(func=cmd_teardown)
    p = sub.add_parser("init", help="write a commented starter config to the user config dir")
    p.add_argument("--path", help="write here instead")
    p.add_argument(
        "--system",
        action="store_true",
        help=f"for a system service (the default path is then {SYSTEM_CONFIG}, as for any path under /etc): "
        "absolute folders under /srv/thumbdrop and local.state_dir: /var/lib/thumbdrop",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_init)


def _print_report(report: Any, header: str) -> None:
    print(header)
    for change in report.changes:
        print(f"  {change}")
    if not report.changed:
        print("no changes: everything is already in place" if "setup" in header else "nothing to remove")


def cmd_setup(args: argparse.Namespace) -> int:
    from agent.ops import provision
    from agent.ops.backend import open_backend

    cfg = load(args.config, local=args.local)
    throwaway = provision.throwaway_backend(cfg)
    with open_backend(cfg) as backend:
        report = provision.setup(cfg, backend, dry_run=args.dry_run)
        what = "setup (dry run: nothing changed)" if args.dry_run else "setup"
        _print_report(report, f"{what} on {backend.describe()}:")
        if throwaway:
            print(
                "note: the embedded backend lives inside 'thumbdrop run' and this one ends with this command; "
                "'run' and 'sync' set it up themselves, so there is nothing to set up beforehand"
            )
        if args.worker == "lambda":
            print()
            print(provision.lambda_steps(cfg, backend), end="")
    return EXIT_OK


def cmd_teardown(args: argparse.Namespace) -> int:
    from agent.ops import provision
    from agent.ops.backend import open_backend

    cfg = load(args.config, local=args.local)
    with open_backend(cfg) as backend:
        plan = provision.teardown(cfg, backend, dry_run=True, empty_buckets=args.empty_buckets)
        if args.dry_run or not plan.changed:
            _print_report(plan, f"teardown{' (dry run)' if args.dry_run else ''} on {backend.describe()}:")
            return EXIT_OK
        if not args.yes:
            _print_report(plan, f"teardown would do this on {backend.describe()}:")
            if not sys.stdin.isatty():
                print("refusing to remove anything without --yes (no terminal to ask on)", file=sys.stderr)
                return EXIT_USAGE
            if input("proceed? [y/N] ").strip().lower() not in ("y", "yes"):
                print("nothing removed")
                return EXIT_OK
        report = provision.teardown(cfg, backend, dry_run=False, empty_buckets=args.empty_buckets)
        _print_report(report, f"teardown on {backend.describe()}:")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    import os
    import shlex

    from agent.config import user_config_path
    from agent.config.example import SYSTEM_VALUES, render_example

    given = args.path or args.config
    if given:
        path = Path(given).expanduser()
    else:
        path = Path(SYSTEM_CONFIG) if args.system else user_config_path()
    system = args.system or path.absolute().is_relative_to("/etc")
    if path.exists() and not args.force:
        print(f"{path} already exists; use --force to overwrite it", file=sys.stderr)
        return EXIT_USAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_example(SYSTEM_VALUES if system else None), encoding="utf-8")
    tmp.replace(path)
    # The next commands must read this file: name it unless the default lookup finds it anyway.
    found_anyway = path == user_config_path() and not os.environ.get("THUMBDROP_CONFIG")
    thumbdrop = "thumbdrop" if found_anyway else f"thumbdrop --config {shlex.quote(str(path.absolute()))}"
    if system:
        print(f"wrote {path} for a system service (folders under /srv/thumbdrop, local.state_dir: /var/lib/thumbdrop)")
        steps = [f"sudo {thumbdrop} doctor", f"sudo {thumbdrop} service install"]  # as the README's edge-box steps
    else:
        print(f"wrote {path}")
        steps = [f"{thumbdrop} setup", f"{thumbdrop} run"]
    print("edit it, then run:")
    for step in steps:
        print(f"  {step}")
    return EXIT_OK
