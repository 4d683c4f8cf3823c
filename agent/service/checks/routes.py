"""The event routes: what 'thumbdrop setup' would change, and notifications that deliver an upload twice."""

from __future__ import annotations

from collections.abc import Iterator

from agent.cloud.clients import Backend
from agent.cloud.provision import Provisioner, own_notification_ids
from agent.config.model import Config
from agent.errors import ThumbdropError
from agent.service.checks import FAIL, PASS, WARN, Check


def setup_drift(cfg: Config, backend: Backend, missing: set[str]) -> Iterator[Check]:
    """Compare with what 'thumbdrop setup' would write: notifications, queue policies, topics, subscriptions."""
    try:
        report = Provisioner(cfg, backend, dry_run=True).setup()
    except ThumbdropError as exc:
        yield Check("notifications", FAIL, f"cannot compare with what setup writes: {exc.message}", exc.hint)
        return
    # Routes of the other queues.via_sns mode that setup would replace: the events still arrive (the duplicate
    # check says if twice), so a warning, not "events would not reach the queues".
    replaced = {c.what.split(" on bucket ")[1].split(" ")[0] for c in report.changes if c.verb == "replace"}
    for change in report.changes:
        what = change.what
        if change.verb == "replace":
            continue  # named by the notifications check of its bucket below
        if what.startswith(("bucket ", "queue ")) and " policy" not in what:
            if change.verb == "update":
                yield Check(what.split(":")[0], WARN, f"attributes differ from the config: {what}", "run 'thumbdrop setup'")
            continue  # existence is the bucket and queue checks' business
        # "policy on queue q allowing s3.amazonaws.com" -> "policy on queue q"; about a missing queue, nothing.
        name = what.split(" allowing ")[0]
        if name.rsplit(" ", 1)[-1] in missing:
            continue
        if what.startswith("notifications on bucket "):
            bucket = what.removeprefix("notifications on bucket ")
            name = f"notifications {bucket}"
            if change.verb == "ok":
                yield Check(name, PASS, "match what setup writes")
            elif bucket in replaced:
                yield Check(
                    name,
                    WARN,
                    "thumbdrop's route was made for the other queues.via_sns setting; setup replaces it",
                    "run 'thumbdrop setup'",
                )
            else:
                yield Check(
                    name,
                    FAIL,
                    "missing or different from what setup writes: events would not reach the queues",
                    "run 'thumbdrop setup'",
                )
        elif change.verb == "ok":
            yield Check(name, PASS, "in place")
        elif change.verb == "keep":
            yield Check("foreign notifications", PASS, what)
        else:
            yield Check(
                name, FAIL, f"setup would {change.verb} it ({what}): events would not be delivered", "run 'thumbdrop setup'"
            )


def duplicate_routes(cfg: Config, backend: Backend) -> Iterator[Check]:
    """Two notifications that both send a bucket's new objects to one queue: every upload arrives twice."""
    try:
        routes = Provisioner(cfg, backend, dry_run=True).routes()
    except ThumbdropError as exc:
        yield Check("routes", WARN, f"cannot count the event routes: {exc.message}", exc.hint)
        return
    ours = own_notification_ids(cfg)
    for pipe, ids in routes:
        if len(ids) < 2:
            continue  # none: the notifications check has said so
        where = f"s3://{pipe.bucket}/{pipe.prefix}"
        foreign = [i for i in ids if i not in ours]
        if foreign:
            fix = (
                f"remove the extra notification(s) {', '.join(foreign)} from bucket {pipe.bucket}, or point them at "
                "another queue or prefix"
            )
        else:
            fix = "run 'thumbdrop setup': it replaces thumbdrop's own routes"
        yield Check(
            f"routes {pipe.kind}",
            WARN,
            f"{len(ids)} notifications send new objects under {where} to queue {pipe.queue} ({', '.join(ids)}): "
            f"every upload arrives {len(ids)} times",
            fix,
        )
