"""doctor, service install."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.config.loader import load
from agent.errors import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check config, credentials, clock, buckets, queues, notifications, permissions, limits")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("service", help="run the agent as a systemd service")
    service = p.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    p = service.add_parser("install", help="write the systemd unit for this config and enable it")
    p.add_argument("--user", action="store_true", help="a user service (~/.config/systemd/user) instead of a system one")
    p.add_argument("--print", dest="print_only", action="store_true", help="show the unit; write nothing")
    p.add_argument("--unit-dir", metavar="DIR", help="write the unit there (e.g. to package it); it is then not enabled")
    p.set_defaults(func=cmd_service_install)


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent.service.doctor import FAIL, Check, diagnose, failed

    invalid = False
    try:
        cfg = load(args.config, local=args.local)
    except ConfigError as exc:
        invalid = True
        # An invalid config is the first finding of a doctor, not a reason to stop before reporting.
        checks = [Check("config", FAIL, f"{exc.source}: {'; '.join(exc.problems)}", _config_fix(exc.problems))]
        header = str(exc.source)
    else:
        checks = diagnose(cfg)
        header = cfg.origin
    if args.json:
        print(json.dumps({"config": header, "ok": not failed(checks), "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        print(f"thumbdrop doctor: {header}")
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.result}  {c.name:<{width}}  {c.detail}")
            if c.fix and c.result in ("FAIL", "WARN"):
                print(f"      {'':<{width}}  fix: {c.fix}")
        counts = {r: sum(c.result == r for c in checks) for r in ("FAIL", "WARN", "PASS", "SKIP")}
        print(", ".join(f"{n} {r.lower()}" for r, n in counts.items() if n))
    if invalid:
        return EXIT_USAGE  # the README's rule for every command: an invalid config exits 2
    return EXIT_ITEMS_FAILED if failed(checks) else EXIT_OK


def _config_fix(problems: list[str]) -> str:
    """The fix for an invalid config: per key, unless the file itself is the problem (its problem then says how)."""
    first = problems[0] if len(problems) == 1 else ""
    if first.startswith("file not found"):
        return ""  # the problem already says: create it with 'thumbdrop init', or fix --config
    if first.startswith("cannot read file"):
        return "make the file readable by this user, or fix --config"
    if "not valid YAML" in first:
        return "correct the YAML there (indent with spaces, a colon and a space after each key); see config.example.yaml"
    if first.startswith("the top level must be"):
        return "start from 'thumbdrop init' or config.example.yaml: sections such as watch:, local:, backend:"
    return "fix the key(s) named; see config.example.yaml"


def cmd_service_install(args: argparse.Namespace) -> int:
    from agent.service import units

    cfg = load(args.config, local=args.local)
    if args.print_only:
        sys.stdout.write(units.render(cfg, user=args.user))
        return EXIT_OK
    unit_dir = Path(args.unit_dir).expanduser() if args.unit_dir else None
    try:
        result = units.install(cfg, user=args.user, unit_dir=unit_dir, enable=unit_dir is None)
    except PermissionError as exc:
        raise UsageError(
            f"cannot write the unit: {exc.strerror} ({exc.filename})",
            hint="a system service needs root: use sudo, or install a user service with --user",
        ) from None
    print(f"wrote {result.path}")
    for warning in result.warnings:
        print(f"thumbdrop: warning: {warning}", file=sys.stderr)
    if result.enabled:
        scope = "--user " if args.user else ""
        print(f"enabled and started: see it with 'systemctl {scope}status thumbdrop'")
    if result.next_steps:
        print("next steps" + (" (as root)" if not args.user else "") + ":")
        for step in result.next_steps:
            print(f"  {step}")
    return EXIT_OK
