"""cleanup, dlq."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from agent.config.loader import load
from agent.errors import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, guard_check
from agent.text import printable


def register(sub: Any) -> None:
    p = sub.add_parser("cleanup", help="apply the cleanup policy; print what was (or would be) deleted")
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted, delete nothing")
    p.add_argument("--force", action="store_true", help="delete even past cleanup.max_delete_fraction (the mass-delete guard)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument(
        "--purge-queues",
        action="store_true",
        help="instead of the policy: drop every message waiting in the events and pull queues",
    )
    p.add_argument(
        "--stale-resources",
        action="store_true",
        help="instead of the policy: remove queues, topics and subscriptions thumbdrop created for an older config",
    )
    p.add_argument(
        "--forget-folder",
        metavar="PATH",
        help="instead of the policy: accept the drive now in watch folder PATH as that folder (after a drive swap); "
        "the journal forgets the files not on it, so no rule ever takes them as deleted (their thumbnails stay)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before purging or removing")
    p.set_defaults(func=cmd_cleanup)

    p = sub.add_parser("dlq", help="dead-lettered items: list them with their reasons, redrive or purge them")
    actions = p.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)
    for name, text, func in (
        ("list", "show each dead-lettered item and why it failed (messages stay where they are)", cmd_dlq_list),
        ("redrive", "send dead-lettered messages back to their queue for another try", cmd_dlq_redrive),
        ("purge", "drop the dead-lettered messages", cmd_dlq_purge),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument(
            "--queue", choices=("events", "pull", "all"), default="all", help="which dead-letter queue (default: both)"
        )
        if name == "list":
            a.add_argument("--limit", type=int, default=1000, help="list at most this many per queue (default 1000)")
            a.add_argument("--json", action="store_true", help="print as JSON")
        if name == "purge":
            a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        if name == "redrive":
            # Redrive loses nothing, so it never asks; --yes is accepted so one script line fits redrive and purge.
            a.add_argument("--yes", action="store_true", help="accepted for scripts; redrive never asks")
        a.set_defaults(func=func)


def _confirm(args: argparse.Namespace, question: str) -> bool | None:
    """True to go on; False when the user said no; None when there is nobody to ask."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"refusing to {question} without --yes (no terminal to ask on)", file=sys.stderr)
        return None
    return input(f"{question}? [y/N] ").strip().lower() in ("y", "yes")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def print_table(rows: list[Any]) -> None:
    """bucket, action, size, key, reason: one line each, every column aligned.

    The free-length text (a local path, a reason naming one) is never cut: the user checks this list
    before --force. So no column is capped, and the reason, the longest, comes last, unpadded.
    """
    if not rows:
        return
    cols = [(d.bucket, d.action, _human(d.size), d.key + (f" -> {d.move_to}" if d.move_to else ""), d.reason) for d in rows]
    head = ("BUCKET", "ACTION", "SIZE", "KEY", "REASON")
    widths = [max(len(r[i]) for r in [head, *cols]) for i in range(4)]
    for r in [head, *cols]:
        line = f"  {r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}  {r[3].ljust(widths[3])}  {r[4]}"
        print(line.rstrip())


def cmd_cleanup(args: argparse.Namespace) -> int:
    from agent.ops import cleanup
    from agent.ops.backend import open_backend

    cfg = load(args.config, local=args.local)
    if args.purge_queues or args.stale_resources:
        return _queues_and_resources(cfg, args)
    if args.forget_folder:
        return _forget_folder(cfg, args.forget_folder)
    with open_backend(cfg, start=False) as backend:
        done = cleanup.run_standalone(cfg, backend, dry_run=args.dry_run, force=args.force)
        where = backend.describe()
    plan, outcome, stopped = done.plan, done.outcome, done.stopped
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "backend": where,
        "items": [d.as_dict() for d in (plan.deletions if outcome is None else outcome.done)],
        "errors": [{**d.as_dict(), "error": e} for d, e in (outcome.errors if outcome else [])],
        "notes": plan.notes,
        "stopped": plan.problems if (stopped or (args.dry_run and plan.problems and not args.force)) else [],
    }
    report["totals"] = {"count": len(report["items"]), "bytes": sum(int(i["size"]) for i in report["items"])}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_cleanup(report, plan.deletions if outcome is None else outcome.done, args, outcome)
    if stopped and not args.json:
        raise done.guard_error()
    return EXIT_ITEMS_FAILED if report["stopped"] or report["errors"] else EXIT_OK


def _forget_folder(cfg: Any, given: str) -> int:
    """Accept what is in a watch folder now as that folder: the way out of "another drive" (state.watch_folders)."""
    from agent.ops.cleanup import forget_folder

    root, dropped = forget_folder(cfg, given)
    print(
        f"watch folder {printable(str(root))}: the drive there now is accepted as this folder; the journal forgot "
        f"{dropped} file(s) not on it (their thumbnails stay: delete them by hand if unwanted)"
    )
    return EXIT_OK


def _print_cleanup(report: dict[str, Any], rows: list[Any], args: argparse.Namespace, outcome: Any) -> None:
    # inbox_after_upload: move makes rows that are moves: the heading says what the rows are.
    actions = {str(i["action"]) for i in report["items"]}
    verbs = [v for a, v in (({"delete", "abort"}, "remove"), ({"move"}, "move")) if a & actions] or ["remove"]
    if outcome is None:
        what = " or ".join(verbs)
        print(f"cleanup on {report['backend']} ({'dry run: ' if args.dry_run else ''}nothing deleted); would {what}:")
    else:
        print(f"cleanup on {report['backend']}; {' or '.join(v + 'd' for v in verbs)}:")
    print_table(rows)
    t = report["totals"]
    print(f"total: {t['count']} item(s), {t['bytes']} bytes ({_human(t['bytes'])})")
    for e in report["errors"]:
        print(f"  FAILED {e['bucket']} {e['key']}: {e['error']}")
    for note in report["notes"]:
        print(f"note: {note}")
    if args.dry_run and report["stopped"]:
        print("a real run would stop here, deleting nothing:")
        for problem in report["stopped"]:
            print(f"  {problem}")
        print(f"  ({guard_check(report['stopped'])}; if the list is right, use --force)")


def _queues_and_resources(cfg: Any, args: argparse.Namespace) -> int:
    from agent.ops import queues
    from agent.ops.backend import open_backend

    rc = EXIT_OK
    with open_backend(cfg, start=False) as backend:
        if cfg.queues.mode == "poll" and args.purge_queues:
            print("poll mode: no queues (nothing to purge)")
        elif args.purge_queues:
            targets = list(queues.work_queues(cfg, backend).items())
            counts = {n: queues.depth(backend, u) for n, u in targets}
            print("queues to purge: " + (", ".join(f"{n} ({c} message(s))" for n, c in counts.items()) or "none found"))
            if targets and not args.dry_run:
                ok = _confirm(args, "purge these queues")
                if ok is None:
                    return EXIT_USAGE
                if ok:
                    for n, u in targets:
                        print(f"purged {n}: about {queues.purge(backend, u, n)} message(s) dropped")
        if cfg.queues.mode == "poll" and args.stale_resources:
            print("poll mode: no queues or topics (no stale resources to look for)")
        elif args.stale_resources:
            found = queues.find_stale(cfg, backend)
            for item in found.keep:
                print(f"keep    {item}")
            for item in found.remove:
                print(f"{'remove' if not args.dry_run else 'would remove'}  {item}")
            if not found.remove:
                print("no stale resources")
            elif not args.dry_run:
                ok = _confirm(args, f"remove these {len(found.remove)} resource(s)")
                if ok is None:
                    return EXIT_USAGE
                if ok:
                    for item, error in queues.remove_stale(backend, found.remove):
                        print(f"  FAILED {item}: {error}")
                        rc = EXIT_ITEMS_FAILED
    return rc


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from agent.ops import dlq
    from agent.ops.backend import open_backend

    cfg = load(args.config, local=args.local)
    if cfg.queues.mode == "poll":
        return _markers_list(cfg, args)
    with open_backend(cfg, start=False) as backend:
        out, removed = dlq.list_letters(cfg, backend, args.queue, limit=args.limit)
    if args.json:
        print(json.dumps({n: [d.as_dict() for d in v] if v is not None else None for n, v in out.items()}, indent=2))
        return EXIT_OK
    for name, letters in out.items():
        if letters is None:
            print(f"{name}: missing (run 'thumbdrop setup')")
            continue
        gone = len(removed.get(name, []))
        print(f"{name}: {len(letters)} dead-lettered message(s)" + (f"; {gone} about items done since removed" if gone else ""))
        width = min(60, max((len(d.item) for d in letters), default=0))
        for d in letters:
            when = datetime.fromtimestamp(d.sent_at).strftime("%Y-%m-%d %H:%M:%S") if d.sent_at else "-"
            print(f"  {when}  {d.item.ljust(width)}  {d.reason}")
    return EXIT_OK


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from agent.ops import dlq
    from agent.ops.backend import open_backend

    cfg = load(args.config, local=args.local)
    if cfg.queues.mode == "poll":
        return _markers_redrive(cfg, args)
    rc = EXIT_OK
    with open_backend(cfg, start=False) as backend:
        for q, result in dlq.redrive(cfg, backend, args.queue):
            name = q.name
            if result is None:
                print(f"{name}: missing (run 'thumbdrop setup')")
                continue
            if result.task is not None:
                print(f"{name}: the backend is moving its messages back (move task {result.task})")
                continue
            print(f"{name}: {result.moved} message(s) sent back for another try")
            if result.failed:
                print(f"  {result.failed} message(s) could not be sent back and stay dead-lettered")
                rc = EXIT_ITEMS_FAILED
    return rc


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    from agent.ops import dlq
    from agent.ops.backend import open_backend

    cfg = load(args.config, local=args.local)
    if cfg.queues.mode == "poll":
        print("poll mode: no queues (failed items are failure markers: 'thumbdrop dlq list' shows them)")
        return EXIT_OK
    with open_backend(cfg, start=False) as backend:
        found = dlq.depths(cfg, backend, args.queue)
        targets = [(name, url) for name, (url, _n) in found.items()]
        counts = {name: n for name, (_url, n) in found.items()}
        if not any(counts.values()):
            print("nothing to purge: " + (", ".join(f"{n} is empty" for n in counts) or "no dead-letter queues found"))
            return EXIT_OK
        print("dead-letter queues: " + ", ".join(f"{n} ({c} message(s))" for n, c in counts.items()))
        ok = _confirm(args, "drop these messages for good")
        if ok is None:
            return EXIT_USAGE
        if not ok:
            print("nothing purged")
            return EXIT_OK
        for name, url in targets:
            print(f"purged {name}: about {dlq.purge(backend, url, name)} message(s) dropped")
    return EXIT_OK


def _markers_list(cfg: Any, args: argparse.Namespace) -> int:
    """Poll mode has no dead-letter queue: the worker's failure markers are its dead letters."""
    from agent.ops import dlq
    from agent.ops.backend import open_backend

    if args.queue == "pull":
        rows: list[dict[str, Any]] = []
    else:
        with open_backend(cfg, start=False) as backend:
            rows = dlq.failure_markers(cfg, backend, limit=args.limit)
    if args.json:
        print(json.dumps({"failure markers": rows}, indent=2))
        return EXIT_OK
    print(f"poll mode: no queues; failure markers: {len(rows)}")
    width = min(60, max((len(r["item"]) for r in rows), default=0))
    for r in rows:
        when = datetime.fromtimestamp(r["at"]).strftime("%Y-%m-%d %H:%M:%S")
        print(f"  {when}  {r['item'].ljust(width)}  {r['reason']}")
    return EXIT_OK


def _markers_redrive(cfg: Any, args: argparse.Namespace) -> int:
    """Poll mode: remove the failure markers, so the next listing (queues.poll_seconds) tries those sources again."""
    from agent.ops import dlq
    from agent.ops.backend import open_backend

    if args.queue == "pull":
        print("poll mode: no queues; the puller retries at every listing by itself")
        return EXIT_OK
    with open_backend(cfg, start=False) as backend:
        removed, failed = dlq.clear_failure_markers(cfg, backend)
    print(f"poll mode: {removed} failure marker(s) removed; the next listing tries them again")
    for f in failed:
        print(f"  FAILED {f}")
    return EXIT_ITEMS_FAILED if failed else EXIT_OK
