"""``thumbdrop doctor``: is this host set up to work? Each check PASS, WARN, FAIL (or SKIP) with a one-line fix.

The checks only read, except one harmless probe per bucket: a uniquely named
object (``<prefix>.thumbdrop-doctor-<uuid>``) written, read back and deleted.
Its S3 event reaches the queues like any other; the worker and the puller
ignore probe keys (``keys.is_probe``). One failed check never stops the
others; checks that need an unreachable backend are reported as SKIP.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.cloud.provision import TAG_KEY, TAG_VALUE, Provisioner, dlq_name, own_notification_ids
from agent.config.cleanup_checks import move_target
from agent.config.model import Config
from agent.errors import (
    AccessDeniedError,
    ClockSkewError,
    CredentialsError,
    ObjectGoneError,
    OfflineError,
    ThumbdropError,
)
from agent.pipeline.keys import PROBE_MARK
from agent.state.journal import JOURNAL_FILE, Journal
from agent.state.watch_folders import MISSING, NEW, OK, WatchFolder, check_folders

log = logging.getLogger(__name__)

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
SKEW_WARN = 60.0  # seconds; AWS refuses requests signed more than 15 minutes off
SKEW_FAIL = 15 * 60.0
DISK_WARN = 1 << 30
DISK_FAIL = 100 << 20
WATCHES_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
SYSCTL_FIX = "echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-thumbdrop.conf && sudo sysctl --system"


@dataclass
class Check:
    name: str
    result: str  # PASS, WARN, FAIL or SKIP
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def failed(checks: list[Check]) -> bool:
    return any(c.result == FAIL for c in checks)


def clock_fix() -> str:
    system = platform.system()
    if system == "Darwin":
        return "turn on 'Set time and date automatically' (or: sudo sntp -sS time.apple.com)"
    if system == "Windows":
        return "turn on 'Set time automatically' (or, as administrator: w32tm /resync)"
    return "sudo timedatectl set-ntp true (needs systemd-timesyncd, chrony or ntpd)"


def diagnose(cfg: Config) -> list[Check]:
    """All checks for ``cfg``, reaching the backend the way the agent would (with fewer retries: a doctor should not wait)."""
    from agent.cloud.local_backend import find_running
    from agent.service.runtime import pool_size, state_dir

    if cfg.backend.endpoint_url == "local":
        endpoint = find_running(state_dir(cfg))
        if endpoint is None:
            note = "embedded local backend: not running now; it starts with 'thumbdrop run' and needs no setup"
            return run_checks(cfg, None, backend_note=note)
        return run_checks(cfg, Backend(cfg.backend, endpoint_url=endpoint, local=True, pool_size=pool_size(cfg)))
    quick = dataclasses.replace(
        cfg.backend,
        max_attempts=min(cfg.backend.max_attempts, 2),
        connect_timeout=min(cfg.backend.connect_timeout, 5.0),
        read_timeout=min(cfg.backend.read_timeout, 20.0),
    )
    try:
        backend = Backend(quick, endpoint_url=cfg.backend.endpoint_url, local=False, pool_size=8)
    except ThumbdropError as exc:
        checks = run_checks(cfg, None, backend_note="not checked: no usable credentials")
        checks.insert(1, Check("credentials", FAIL, exc.message, exc.hint))
        return checks
    return run_checks(cfg, backend)


def run_checks(cfg: Config, backend: Backend | None, *, backend_note: str = "") -> list[Check]:
    """Every check for this config; ``backend`` None means there is nothing remote to check (``backend_note`` says why)."""
    checks = [Check("config", PASS, f"{cfg.origin} is valid (roles: {', '.join(cfg.roles) or 'none'})")]
    if not cfg.backend.verify_tls and cfg.backend.endpoint_url != "local":
        checks.append(
            Check(
                "tls",
                WARN,
                "backend.verify_tls is false: TLS certificates are not verified",
                "set backend.verify_tls: true (with backend.ca_bundle for a private CA)",
            )
        )
    if backend is None:
        checks.append(Check("backend", PASS, backend_note or "no backend to check"))
    else:
        checks.extend(_remote_checks(cfg, backend))
    checks.extend(_local_checks(cfg))
    return checks


# --- remote -------------------------------------------------------------------------------------


def _remote_checks(cfg: Config, backend: Backend) -> list[Check]:
    out: list[Check] = []
    reached = _reach(cfg, backend, out)
    remaining = ("buckets", "queues", "notifications", "permissions", "cleanup")
    if not reached:
        out.extend(Check(name, SKIP, "not checked: the backend cannot be used (see above)") for name in remaining)
        return out
    missing: set[str] = set()  # buckets and queues that failed their check: nothing more to say about them
    poll = cfg.queues.mode == "poll"
    for check in [*_bucket_checks(cfg, backend), *([] if poll else _queue_checks(cfg, backend))]:
        if check.result == FAIL:
            missing.add(check.name.split(" ", 1)[1])
        out.append(check)
    if poll:
        out.append(Check("queues", SKIP, f"poll mode: no queues (listings every {cfg.queues.poll_seconds:g} s)"))
    else:
        out.extend(_setup_drift(cfg, backend, missing))
        out.extend(_duplicate_routes(cfg, backend))
    for bucket, prefix in dict.fromkeys([(cfg.source.bucket, cfg.source.prefix), (cfg.thumbnails.bucket, cfg.thumbnails.prefix)]):
        if bucket not in missing:
            out.append(_probe(backend, bucket, prefix))
    if cfg.source.bucket not in missing:
        out.extend(capability_checks(cfg, backend))
    if {cfg.source.bucket, cfg.thumbnails.bucket} & missing:
        out.append(Check("cleanup", SKIP, "not checked: a bucket is missing"))
    else:
        out.append(_cleanup_mode(cfg, backend))
    return out


def capability_checks(cfg: Config, backend: Backend) -> list[Check]:
    """The store's capability table: one row per optional API, probed in the reserved key space."""
    from agent.cloud.capabilities import probe

    queue_mode = cfg.queues.mode in ("sqs", "sns")
    needed = {"notifications", "SQS", "SNS"} if queue_mode else set()
    if cfg.cleanup.mode != "agent":
        needed.add("lifecycle rules")
    out = []
    for cap in probe(backend, cfg.source.bucket, cfg.source.prefix, queues=queue_mode, sns=cfg.queues.mode == "sns"):
        result = PASS if cap.supported else SKIP if cap.supported is None else FAIL if cap.name in needed else WARN
        fix = ""
        if cap.supported is False and cap.name in needed:
            fix = "use a store that has it, or " + cap.detail.split(": ", 1)[-1]
        out.append(Check(f"store {cap.name}", result, f"{cap.api}: {cap.detail}", fix))
    if queue_mode and backend.split and not backend.local and not _both_aws(backend):
        out.append(
            Check(
                "store notifications",
                FAIL,
                f"S3 at {backend.where('s3')} cannot deliver bucket events to SQS at {backend.where('sqs')}",
                "put S3 and the queues on one backend, or queues.mode: poll",
            )
        )
    return out


def _both_aws(backend: Backend) -> bool:
    from agent.cloud.provision import events_reach_queues

    return events_reach_queues(backend)


def _reach(cfg: Config, backend: Backend, out: list[Check]) -> bool:
    """Backend reachable, credentials found and accepted, clock in step; False when nothing more can be checked."""
    source = backend.credential_source()
    if source == "none":
        out.append(
            Check(
                "credentials",
                FAIL,
                "no credentials found (environment, ~/.aws/credentials, backend.profile, instance role)",
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, run 'aws configure', or set backend.profile",
            )
        )
        return False
    sent = time.time()
    try:
        if backend.endpoint_for("s3") is None:
            resp = call("identify the credentials", backend.client("sts").get_caller_identity)
            who = f" as {resp.get('Arn', '?')}"
        else:
            resp = call("list buckets", backend.s3.list_buckets)
            who = ""
    except OfflineError as exc:
        out.append(Check("backend", FAIL, f"cannot reach {backend.describe()}: {exc.message}", _endpoint_fix(cfg)))
        return False
    except CredentialsError as exc:
        out.append(Check("backend", PASS, f"reached {backend.describe()}"))
        out.append(Check("credentials", FAIL, f"found ({source}) but refused: {exc.message}", exc.hint))
        return False
    except ClockSkewError as exc:
        out.append(Check("backend", PASS, f"reached {backend.describe()}"))
        out.append(Check("clock", FAIL, exc.message, clock_fix()))
        return False
    except AccessDeniedError:
        # Signed correctly, only not allowed to list: the credentials are good, and thumbdrop never lists buckets.
        out.append(Check("backend", PASS, f"reached {backend.describe()}"))
        out.append(Check("credentials", PASS, f"accepted (source: {source}; listing buckets is not allowed, which is fine)"))
        return True
    except ThumbdropError as exc:
        out.append(Check("backend", FAIL, f"{backend.describe()}: {exc.message}", exc.hint or _endpoint_fix(cfg)))
        return False
    received = time.time()
    out.append(Check("backend", PASS, f"reached {backend.describe()}"))
    if not backend.local:
        out.append(Check("endpoints", PASS, "; ".join(f"{s.upper()}: {backend.where(s)}" for s in _services(cfg))))
    out.append(Check("credentials", PASS, f"accepted (source: {source}){who}"))
    out.append(_clock(resp, (sent + received) / 2))
    return True


def _services(cfg: Config) -> tuple[str, ...]:
    if cfg.queues.mode == "poll":
        return ("s3",)
    return ("s3", "sqs", "sns") if cfg.queues.mode == "sns" else ("s3", "sqs")


def _endpoint_fix(cfg: Config) -> str:
    url = cfg.backend.endpoint_url or "AWS"
    return f"check backend.endpoint_url ({url}): is the address right and the store running? Then the network and proxy"


def _clock(resp: dict[str, Any], local_time: float) -> Check:
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        server = email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        server = None
    if server is None:
        return Check("clock", WARN, "the server sent no Date header: clock skew not measured")
    skew = local_time - server  # Date has a resolution of one second
    where = "ahead of" if skew > 0 else "behind"
    text = f"this machine is {abs(skew):.0f} s {where} the server"
    if abs(skew) > SKEW_FAIL:
        return Check("clock", FAIL, text + " (requests are refused past 15 minutes)", clock_fix())
    if abs(skew) > SKEW_WARN:
        return Check("clock", WARN, text + " (refused past 15 minutes)", clock_fix())
    return Check("clock", PASS, text if abs(skew) >= 2 else "in step with the server")


def _bucket_checks(cfg: Config, backend: Backend) -> Iterator[Check]:
    prov = Provisioner(cfg, backend, dry_run=True)
    for bucket in dict.fromkeys([cfg.source.bucket, cfg.thumbnails.bucket]):
        name = f"bucket {bucket}"
        try:
            exists = prov.bucket_exists(bucket)
        except ThumbdropError as exc:
            yield Check(name, FAIL, exc.message, exc.hint)
            continue
        if not exists:
            yield Check(name, FAIL, "does not exist", "run 'thumbdrop setup', or fix source.bucket / thumbnails.bucket")
            continue
        try:
            tags = call(f"read tags of bucket {bucket}", backend.s3.get_bucket_tagging, Bucket=bucket).get("TagSet", [])
        except ThumbdropError:
            tags = []  # no tag set at all, or not allowed to read it: either way not known to be ours
        ours = any(t.get("Key") == TAG_KEY and t.get("Value") == TAG_VALUE for t in tags)
        yield Check(
            name, PASS, "exists, created by thumbdrop setup" if ours else "exists and is accessible (not created by setup)"
        )


def _queue_checks(cfg: Config, backend: Backend) -> Iterator[Check]:
    prov = Provisioner(cfg, backend, dry_run=True)
    for queue in (cfg.queues.events, dlq_name(cfg.queues.events), cfg.queues.pull, dlq_name(cfg.queues.pull)):
        name = f"queue {queue}"
        try:
            url = prov.queue_url(queue)
            if url is None:
                yield Check(name, FAIL, "does not exist", "run 'thumbdrop setup', or fix queues.events / queues.pull")
                continue
            attrs = call(f"read queue {queue}", backend.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
        except ThumbdropError as exc:
            yield Check(name, FAIL, exc.message, exc.hint or "grant sqs:GetQueueUrl and sqs:GetQueueAttributes on it")
            continue
        a = attrs.get("Attributes", {})
        depth = f"{a.get('ApproximateNumberOfMessages', '?')} waiting, {a.get('ApproximateNumberOfMessagesNotVisible', '?')} in flight"
        if not queue.endswith("-dlq") and "RedrivePolicy" not in a:
            yield Check(name, WARN, f"exists ({depth}) but has no dead-letter queue", "run 'thumbdrop setup'")
        elif queue.endswith("-dlq") and a.get("ApproximateNumberOfMessages", "0") != "0":
            yield Check(
                name, WARN, f"{a['ApproximateNumberOfMessages']} dead-lettered item(s)", "see them with 'thumbdrop dlq list'"
            )
        else:
            yield Check(name, PASS, f"exists ({depth})")


def _setup_drift(cfg: Config, backend: Backend, missing: set[str]) -> Iterator[Check]:
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


def _duplicate_routes(cfg: Config, backend: Backend) -> Iterator[Check]:
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


def _probe(backend: Backend, bucket: str, prefix: str) -> Check:
    """Write, read and delete one uniquely named object: the permissions the roles need, tried for real."""
    key = f"{prefix}{PROBE_MARK}{uuid.uuid4().hex}"
    name = f"access {bucket}"
    arn = f"arn:aws:s3:::{bucket}/{prefix}*"
    body = b"thumbdrop doctor probe; safe to delete\n"
    step = "write"
    try:
        call(f"write s3://{bucket}/{key}", backend.s3.put_object, Bucket=bucket, Key=key, Body=body)
        step = "read"
        got = call(f"read s3://{bucket}/{key}", backend.s3.get_object, Bucket=bucket, Key=key)["Body"].read()
        if got != body:
            return Check(
                name, FAIL, f"read back {len(got)} bytes instead of the {len(body)} written", "check the store's consistency"
            )
        step = "delete"
        call(f"delete s3://{bucket}/{key}", backend.s3.delete_object, Bucket=bucket, Key=key)
    except ThumbdropError as exc:
        action = {"write": "s3:PutObject", "read": "s3:GetObject", "delete": "s3:DeleteObject"}[step]
        leftover = f"; delete s3://{bucket}/{key} by hand" if step == "delete" else ""
        return Check(
            name,
            FAIL if step != "delete" else WARN,
            f"cannot {step} objects: {exc.message}",
            f"grant {action} on {arn}{leftover}",
        )
    return Check(name, PASS, f"write, read and delete allowed under s3://{bucket}/{prefix}")


def _cleanup_mode(cfg: Config, backend: Backend) -> Check:
    report: Callable[[Config, Backend], str] | None
    try:
        from agent.cloud.lifecycle import cleanup_mode_report as report
    except ImportError:
        report = None
    if report is not None:
        try:
            lines = report(cfg, backend).splitlines()
        except (ThumbdropError, AttributeError) as exc:
            return Check("cleanup", WARN, f"cannot tell the cleanup mode: {exc}")
        trouble = [ln for ln in lines if "WARN" in ln or "missing" in ln or "cannot" in ln]
        return Check("cleanup", WARN if trouble else PASS, "; ".join(lines), "run 'thumbdrop setup'" if trouble else "")
    rules = []
    for bucket in dict.fromkeys([cfg.source.bucket, cfg.thumbnails.bucket]):
        try:
            got = call(f"read lifecycle of {bucket}", backend.s3.get_bucket_lifecycle_configuration, Bucket=bucket)
            rules.append(f"{len(got.get('Rules', []))} on bucket {bucket}")
        except ObjectGoneError:
            continue  # NoSuchLifecycleConfiguration
        except ThumbdropError as exc:
            if exc.code != "NoSuchLifecycleConfiguration":
                return Check("cleanup", WARN, f"cannot read the lifecycle rules of {bucket}: {exc.message}")
    if rules:
        return Check("cleanup", PASS, f"agent, plus bucket lifecycle rules ({', '.join(rules)})")
    return Check("cleanup", PASS, "agent (no lifecycle rules)")


# --- local --------------------------------------------------------------------------------------


def _local_checks(cfg: Config) -> list[Check]:
    out: list[Check] = []
    if "uploader" in cfg.roles:
        folders = watch_folder_states(cfg)
        out.append(watch_folders_check(folders))
        out.append(inotify_check(cfg, folders=folders))
    if "puller" in cfg.roles:
        out.append(disk_check("disk thumbnails", Path(cfg.local.thumbnails_dir)))
    if "worker" in cfg.roles:
        out.append(video_check(cfg))
    return out


def video_check(cfg: Config) -> Check:
    """Video patterns are in watch.include by default; a worker without PyAV fails every video."""
    from agent.imaging import video

    if video.available():
        return Check(
            "video", PASS, f"PyAV {video.av.__version__}: video posters" + (" and previews" if cfg.video.preview else "")
        )
    videos = [p for p in cfg.watch.include if video.is_video(p.replace("*", "x"))]
    if not videos and not cfg.video.preview:
        return Check("video", PASS, "PyAV not installed; no video patterns in watch.include")
    return Check(
        "video",
        WARN,
        f"PyAV is not installed: videos ({', '.join(videos) or 'video.preview'}) fail with a reason",
        "pip install 'thumbdrop[video]', or take the video patterns out of watch.include",
    )


def count_watch_dirs(cfg: Config) -> int:
    """Directories the watcher needs an inotify watch for: every one, excluded names too (watchdog watches whole trees)."""
    return sum(1 for folder in cfg.watch.folders for _ in os.walk(folder))


def watch_folder_states(cfg: Config) -> list[WatchFolder]:
    """Each watch folder as the agent will see it, with the journal's record of uploads (read, never created)."""
    from agent.service.runtime import state_dir

    path = state_dir(cfg) / JOURNAL_FILE
    if not path.exists():
        return check_folders(cfg.watch.folders, lambda _f: [])
    journal = Journal(path)
    try:
        return check_folders(
            cfg.watch.folders,
            lambda f: list(journal.uploads_under(f)),
            moved_to=_moved_to(cfg),
            accepted=journal.folder_identity,
        )
    finally:
        journal.close()


def _moved_to(cfg: Config) -> Path | None:
    return move_target(cfg) if cfg.cleanup.inbox_after_upload == "move" else None


def watch_folders_check(folders: list[WatchFolder]) -> Check:
    """A folder files were uploaded from that is missing, came back empty or is another drive: cleanup skips it."""
    untrusted = [f for f in folders if f.state not in (OK, NEW)]
    if untrusted:
        fixes = list(dict.fromkeys(f.fix() for f in untrusted))
        return Check("watch folders", WARN, "; ".join(f.describe() for f in untrusted), "; ".join(fixes))
    new = [f.path for f in folders if f.state == NEW]
    text = f"{len(folders) - len(new)} of {len(folders)} there"
    if new:
        text += f"; {', '.join(new)} does not exist yet (the agent creates it)"
    return Check("watch folders", PASS, text)


def inotify_check(cfg: Config, *, limit_file: Path = WATCHES_FILE, folders: list[WatchFolder] | None = None) -> Check:
    if folders is None:
        folders = check_folders(cfg.watch.folders, lambda _f: [])
    new = [f.path for f in folders if f.state == NEW]
    lost = [f.path for f in folders if f.state == MISSING]
    need = count_watch_dirs(cfg)
    try:
        limit = int(limit_file.read_text().strip())
    except (OSError, ValueError):
        return Check("inotify", PASS, f"{need} folder(s) to watch (no inotify limit to compare with on this system)")
    text = f"{need} watch(es) needed for {len(cfg.watch.folders)} folder tree(s); the limit is {limit}"
    if new:
        text += f"; {', '.join(new)} does not exist yet (the agent creates it)"
    if lost:
        text += f"; {', '.join(lost)} is missing (the agent waits for it)"
    if need > limit:
        return Check("inotify", FAIL, text + ": new files in the rest would be missed until a rescan", SYSCTL_FIX)
    if need > limit // 2:
        return Check("inotify", WARN, text + " (other programs use watches too)", SYSCTL_FIX)
    return Check("inotify", PASS, text)


def disk_check(name: str, folder: Path) -> Check:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the folder may not exist yet: its file system is what counts
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return Check(name, WARN, f"cannot measure free space for {folder}: {exc.strerror or exc}")
    text = f"{_size(free)} free for {folder}"
    if free < DISK_FAIL:
        return Check(name, FAIL, text, "free some space, or move local.thumbnails_dir to a larger disk")
    if free < DISK_WARN:
        return Check(name, WARN, text, "free some space, or move local.thumbnails_dir to a larger disk")
    return Check(name, PASS, text)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
