"""Buckets: create (tagged as thumbdrop's), check, and remove the ones thumbdrop created."""

from __future__ import annotations

from typing import Any

from agent.cloud.capabilities import degrade
from agent.cloud.errors import call
from agent.cloud.provisioning.common import TAG_KEY, TAG_VALUE, Run, is_ours
from agent.errors import AccessDeniedError, BackendError, ObjectGoneError, ResourceMissingError, ThumbdropError, UnsupportedError


def ensure_bucket(run: Run, bucket: str) -> None:
    if bucket_exists(run, bucket):
        run.report.add("ok", f"bucket {bucket}")
        return
    run.report.add("create", f"bucket {bucket}")
    if run.dry:
        return
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if run.backend.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": run.backend.region}
    try:
        call(f"create bucket {bucket}", run.s3.create_bucket, **kwargs)
    except ThumbdropError as exc:
        # Another agent of the fleet created it a moment ago: AWS says BucketAlreadyOwnedByYou, some stores
        # (s3rver) BucketAlreadyExists. Ours if we can use it; else the name really is someone else's.
        if exc.code != "BucketAlreadyOwnedByYou" and not bucket_exists(run, bucket):
            raise
    tags = {"TagSet": [{"Key": TAG_KEY, "Value": TAG_VALUE}]}
    try:
        call(f"tag bucket {bucket}", run.s3.put_bucket_tagging, Bucket=bucket, Tagging=tags)
    except UnsupportedError:
        degrade("bucket tagging (PutBucketTagging)", "buckets are not marked as thumbdrop's, so teardown keeps them")


def bucket_exists(run: Run, bucket: str) -> bool:
    try:
        call(f"check bucket {bucket}", run.s3.head_bucket, Bucket=bucket)
        return True
    except ResourceMissingError:
        return False
    except ThumbdropError as exc:
        if isinstance(exc, ObjectGoneError):  # HEAD gives a bare 404 without a code
            return False
        if isinstance(exc, AccessDeniedError):
            # HEAD answers a bare 403 (no error code) for refused credentials too: ask once with a GET, whose
            # body names the cause (InvalidAccessKeyId, SignatureDoesNotMatch, a missing bucket...).
            try:
                call(f"list bucket {bucket}", run.s3.list_objects_v2, Bucket=bucket, MaxKeys=1)
            except ResourceMissingError:
                return False
            except ThumbdropError as probe:
                if not isinstance(probe, AccessDeniedError):
                    raise probe from exc  # e.g. the credentials themselves were refused: say that
            else:
                return True  # HEAD refused but listing allowed: usable
            raise BackendError(
                f"bucket {bucket!r} exists but these credentials may not use it (owned by another account?)",
                hint="choose another bucket name, or grant s3:ListBucket/GetObject/PutObject on it",
            ) from exc
        raise


def bucket_is_ours(s3: Any, bucket: str) -> bool:
    """Whether thumbdrop created the bucket (its tag says so); a bucket without tags is not ours."""
    try:
        tags = call(f"read tags of bucket {bucket}", s3.get_bucket_tagging, Bucket=bucket).get("TagSet", [])
    except ThumbdropError:
        return False  # NoSuchTagSet: not created by thumbdrop
    return is_ours(tags)


def teardown_bucket(run: Run, bucket: str, empty: bool) -> None:
    if not bucket_exists(run, bucket):
        return
    if not bucket_is_ours(run.s3, bucket):
        run.report.add("keep", f"bucket {bucket} (not created by thumbdrop)")
        return
    listing = call(f"list bucket {bucket}", run.s3.list_objects_v2, Bucket=bucket, MaxKeys=1)
    if listing.get("KeyCount", 0) and not empty:
        run.report.add("keep", f"bucket {bucket} (not empty; use --empty-buckets to delete its objects too)")
        return
    if listing.get("KeyCount", 0):
        run.report.add("delete", f"every object in bucket {bucket}")
        if not run.dry:
            empty_bucket(run.s3, bucket)
    run.report.add("delete", f"bucket {bucket}")
    if not run.dry:
        call(f"delete bucket {bucket}", run.s3.delete_bucket, Bucket=bucket)


def empty_bucket(s3: Any, bucket: str) -> None:
    paginator = s3.get_paginator("list_objects_v2")
    for page in call(f"list bucket {bucket}", lambda: list(paginator.paginate(Bucket=bucket))):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            out = call(f"delete objects in {bucket}", s3.delete_objects, Bucket=bucket, Delete={"Objects": keys[i : i + 1000]})
            if out.get("Errors"):
                first = out["Errors"][0]
                raise BackendError(f"could not delete {len(out['Errors'])} object(s) in {bucket}, e.g. {first}")
