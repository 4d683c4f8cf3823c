"""S3 lifecycle rules for the age-based cleanup rules, so pruning also happens with no agent running.

With ``cleanup.mode`` lifecycle or both, ``setup`` installs per bucket: expiry of
originals under ``source.prefix`` (delete_originals, after originals_min_age_days),
expiry of thumbnails under ``thumbnails.prefix`` (thumbnails_max_age_days) and
AbortIncompleteMultipartUpload under both prefixes. S3 counts whole days, so
values round up, to at least 1. Rules that need knowledge S3 lacks (pulled
copies, orphans, local folders) stay with the agent.

Merging: the bucket's other rules are kept as they are; thumbdrop's own are the
IDs ``thumbdrop-<kind>[-<hash of prefix>]`` for this config's prefixes, replaced
as a whole. ``thumbdrop-`` rules for other prefixes (other agents of a fleet, or
an older config) are kept and reported. An expiry for a whole bucket (empty
prefix) is installed only on a bucket thumbdrop created.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from agent.cloud.capabilities import degrade
from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.cloud.provisioning.buckets import bucket_exists, bucket_is_ours
from agent.cloud.provisioning.common import Run
from agent.config.model import Config
from agent.errors import BackendError, ObjectGoneError, ThumbdropError, UnsupportedError

RULE_PREFIX = "thumbdrop-"
KINDS = ("expire-originals", "expire-thumbnails", "abort-multipart")
Rule = dict[str, Any]


def rule_id(kind: str, prefix: str) -> str:
    """Stable per (kind, prefix), like the notification IDs of provision."""
    suffix = "-" + hashlib.sha1(prefix.encode()).hexdigest()[:8] if prefix else ""
    return f"{RULE_PREFIX}{kind}{suffix}"


def _days(value: float) -> int:
    return max(1, math.ceil(value))


def _rule(kind: str, prefix: str, action: dict[str, Any]) -> Rule:
    return {"ID": rule_id(kind, prefix), "Status": "Enabled", "Filter": {"Prefix": prefix}, **action}


def desired_rules(cfg: Config) -> dict[str, list[Rule]]:
    """bucket -> the rules thumbdrop wants there ([] in agent mode: its rules are removed)."""
    c = cfg.cleanup
    sb, sp, tb, tp = cfg.source.bucket, cfg.source.prefix, cfg.thumbnails.bucket, cfg.thumbnails.prefix
    out: dict[str, list[Rule]] = {sb: [], tb: []}
    if c.mode == "agent":
        return out
    if c.delete_originals:
        out[sb].append(_rule("expire-originals", sp, {"Expiration": {"Days": _days(c.originals_min_age_days)}}))
    if c.thumbnails_max_age_days:
        out[tb].append(_rule("expire-thumbnails", tp, {"Expiration": {"Days": _days(c.thumbnails_max_age_days)}}))
    if c.abort_multipart_after_hours:
        days = _days(c.abort_multipart_after_hours / 24)
        for bucket, prefix in dict.fromkeys([(sb, sp), (tb, tp)]):
            out[bucket].append(
                _rule("abort-multipart", prefix, {"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days}})
            )
    return out


def own_ids(cfg: Config, bucket: str) -> set[str]:
    """Every rule ID this config owns on ``bucket``, installed or not."""
    prefixes = {
        p for b, p in ((cfg.source.bucket, cfg.source.prefix), (cfg.thumbnails.bucket, cfg.thumbnails.prefix)) if b == bucket
    }
    return {rule_id(kind, p) for kind in KINDS for p in prefixes}


def _prefix(rule: Rule) -> str:
    f = rule.get("Filter") or {}
    return str(f.get("Prefix", (f.get("And") or {}).get("Prefix", rule.get("Prefix", ""))))


def _norm(rules: list[Rule]) -> str:
    """A comparable form of our rules: stores echo them back in slightly different shapes."""
    keyed = [
        (
            str(r.get("ID")),
            str(r.get("Status")),
            _prefix(r),
            (r.get("Expiration") or {}).get("Days"),
            (r.get("AbortIncompleteMultipartUpload") or {}).get("DaysAfterInitiation"),
        )
        for r in rules
    ]
    return json.dumps(sorted(keyed, key=str))


def _putable(rule: Rule) -> Rule:
    """A foreign rule as read, made valid to write back (S3 rejects a flag it echoes next to Days)."""
    out = dict(rule)
    exp = out.get("Expiration")
    if isinstance(exp, dict) and ("Days" in exp or "Date" in exp) and not exp.get("ExpiredObjectDeleteMarker"):
        out["Expiration"] = {k: v for k, v in exp.items() if k != "ExpiredObjectDeleteMarker"}
    return out


def read_rules(s3: Any, bucket: str) -> list[Rule]:
    """The bucket's lifecycle rules; [] when it has none."""
    try:
        out = call(f"read lifecycle rules of bucket {bucket}", s3.get_bucket_lifecycle_configuration, Bucket=bucket)
    except ObjectGoneError:  # NoSuchLifecycleConfiguration is a bare 404
        return []
    except ThumbdropError as exc:
        if exc.code == "NoSuchLifecycleConfiguration":
            return []
        raise
    return list(out.get("Rules", []))


def _describe(rules: list[Rule]) -> str:
    parts = []
    for r in rules:
        days = (r.get("Expiration") or {}).get("Days") or (r.get("AbortIncompleteMultipartUpload") or {}).get(
            "DaysAfterInitiation"
        )
        kind = str(r["ID"])[len(RULE_PREFIX) :].split("-")[0:2]
        parts.append(f"{'-'.join(kind)} '{_prefix(r)}' after {days} d")
    return ", ".join(parts)


def ensure_lifecycle(prov: Run, *, remove: bool = False) -> None:
    """Bring thumbdrop's lifecycle rules on both buckets in line with the config (``remove``: take them away)."""
    cfg, s3, report = prov.cfg, prov.s3, prov.report
    for bucket, wanted in desired_rules(cfg).items():
        if remove:
            wanted = []
        if not bucket_exists(prov, bucket):
            if wanted:
                report.add("create", f"lifecycle rules on bucket {bucket}: {_describe(wanted)}")
            continue
        if any(r.get("Expiration") and not _prefix(r) for r in wanted) and not bucket_is_ours(s3, bucket):
            wanted = [r for r in wanted if not (r.get("Expiration") and not _prefix(r))]
            report.add(
                "keep",
                f"bucket {bucket} without a lifecycle expiry for all its objects: the prefix is empty and thumbdrop did "
                "not create the bucket (set a prefix, or prune with cleanup.mode: agent)",
            )
        try:
            current = read_rules(s3, bucket)
        except UnsupportedError:
            if wanted:
                degrade(
                    "lifecycle rules (PutBucketLifecycleConfiguration)",
                    f"cleanup.mode {cfg.cleanup.mode} cannot install its rules on bucket {bucket}: nothing prunes "
                    "it without an agent; use cleanup.mode: agent",
                )
                report.add("skip", f"lifecycle rules on bucket {bucket} (not supported by this store)")
            continue
        except ThumbdropError:
            if wanted:
                raise
            # Nothing wanted (agent mode): a store without lifecycle support, or credentials that may not
            # read it, must not stop setup (run and sync call it at every start).
            continue
        ours = own_ids(cfg, bucket)
        mine = [r for r in current if r.get("ID") in ours]
        foreign = [r for r in current if r.get("ID") not in ours]
        others = sorted(str(r.get("ID")) for r in foreign if str(r.get("ID", "")).startswith(RULE_PREFIX))
        if others:
            report.add("keep", f"thumbdrop lifecycle rule(s) for other prefixes on bucket {bucket}: {', '.join(others)}")
        if len(foreign) > len(others):
            report.add("keep", f"{len(foreign) - len(others)} lifecycle rule(s) on bucket {bucket} that thumbdrop did not create")
        if _norm(mine) == _norm(wanted):
            if wanted:
                report.add("ok", f"lifecycle rules on bucket {bucket} ({_describe(wanted)})")
            continue
        verb = "delete" if not wanted else "update" if mine else "create"
        report.add(verb, f"lifecycle rules on bucket {bucket}" + (f": {_describe(wanted)}" if wanted else ""))
        if prov.dry:
            continue
        rules = [_putable(r) for r in foreign] + wanted
        if rules:
            call(
                f"set lifecycle rules on bucket {bucket}",
                s3.put_bucket_lifecycle_configuration,
                Bucket=bucket,
                LifecycleConfiguration={"Rules": rules},
            )
        else:
            call(f"remove lifecycle rules of bucket {bucket}", s3.delete_bucket_lifecycle, Bucket=bucket)
        after = [r for r in read_rules(s3, bucket) if r.get("ID") in ours]
        if _norm(after) != _norm(wanted):
            raise BackendError(
                f"bucket {bucket}: the lifecycle rules did not stick",
                hint="check that the store supports lifecycle rules, or use cleanup.mode: agent",
            )


def cleanup_mode_report(cfg: Config, backend: Backend) -> str:
    """Which cleanup mode is active and whether the lifecycle rules it needs are in place (for 'doctor')."""
    c = cfg.cleanup
    lines = [f"cleanup mode: {c.mode}"]
    where = f"the cleaner role every {c.interval_minutes:g} min" if "cleaner" in cfg.roles else "'thumbdrop cleanup' only"
    lines.append(f"agent rules run by {where}" if c.mode != "lifecycle" else f"rules S3 cannot express run by {where}")
    for bucket, wanted in desired_rules(cfg).items():
        try:
            mine = [r for r in read_rules(backend.s3, bucket) if r.get("ID") in own_ids(cfg, bucket)]
        except ThumbdropError as exc:
            lines.append(f"bucket {bucket}: cannot read its lifecycle rules: {exc}")
            continue
        if c.mode == "agent":
            if mine:
                lines.append(f"bucket {bucket}: WARN thumbdrop lifecycle rules still installed; 'thumbdrop setup' removes them")
        elif _norm(mine) == _norm(wanted):
            lines.append(
                f"bucket {bucket}: lifecycle rules in place" + (f" ({_describe(wanted)})" if wanted else " (none needed)")
            )
        else:
            lines.append(f"bucket {bucket}: lifecycle rules missing or out of date; run 'thumbdrop setup'")
    return "\n".join(lines)
