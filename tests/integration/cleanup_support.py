"""Helpers for the cleanup and dead-letter tests: a config pointing at moto, objects with thumbdrop's metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.config.model import Config
from agent.pipeline.keys import ascii_meta

SOURCE = "td-source"
THUMBS = "td-thumbs"


def config_data(moto_url: str, tmp_path: Path, *, shared: bool = False, queues: str = "td", **cleanup: Any) -> dict[str, Any]:
    """Separate buckets (or one shared bucket) with prefixes, local folders under tmp_path."""
    return {
        "backend": {"endpoint_url": moto_url, "addressing_style": "path", "max_attempts": 2},
        "source": {"bucket": SOURCE, "prefix": "originals/"},
        "thumbnails": {"bucket": SOURCE if shared else THUMBS, "prefix": "thumbs/"},
        "queues": {"events": f"{queues}-events", "pull": f"{queues}-pull", "max_receives": 2, "wait_seconds": 1},
        "watch": {"folders": [str(tmp_path / "inbox")], "settle_seconds": 0},
        "local": {"thumbnails_dir": str(tmp_path / "thumbnails"), "state_dir": str(tmp_path / "state")},
        "cleanup": cleanup,
    }


def make_config(moto_url: str, tmp_path: Path, **kwargs: Any) -> Config:
    return parse_config(config_data(moto_url, tmp_path, **kwargs))


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def backend_for(cfg: Config) -> Backend:
    return Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)


def make_buckets(backend: Backend, cfg: Config) -> None:
    for bucket in {cfg.source.bucket, cfg.thumbnails.bucket}:
        backend.s3.create_bucket(Bucket=bucket)


def put(backend: Backend, bucket: str, key: str, body: bytes = b"x" * 10, source: str | None = None) -> None:
    """An object; with ``source``, a thumbnail carrying the worker's ``source-key`` metadata."""
    meta = {"source-key": ascii_meta(source)} if source else {}
    backend.s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)


def put_many(items: list[tuple[str, str]]) -> None:
    """(bucket, key) pairs written straight into the in-process moto server's S3 backend.

    Only test data goes in this way (an HTTP put to moto takes ~10 ms: 2,500 would take half a minute);
    the code under test still lists and deletes over HTTP.
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    store = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for bucket, key in items:
        store.put_object(bucket, key, b"t")


def keys_in(backend: Backend, bucket: str) -> set[str]:
    out: set[str] = set()
    for page in backend.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update(o["Key"] for o in page.get("Contents", []))
    return out


def local_thumbnail(cfg: Config, rel: str, size: int = 10) -> Path:
    path = Path(cfg.local.thumbnails_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"t" * size)
    return path
