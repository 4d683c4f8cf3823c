"""setup and teardown: create, check or remove the buckets, queues, topics and notifications thumbdrop uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.config.model import Config
from agent.ops.backend import running_local

if TYPE_CHECKING:
    from agent.cloud.clients import Backend
    from agent.cloud.provision import Report


def setup(cfg: Config, backend: Backend, *, dry_run: bool) -> Report:
    from agent.cloud.provision import Provisioner

    return Provisioner(cfg, backend, dry_run=dry_run).setup()


def teardown(cfg: Config, backend: Backend, *, dry_run: bool, empty_buckets: bool) -> Report:
    from agent.cloud.provision import Provisioner

    return Provisioner(cfg, backend, dry_run=dry_run).teardown(empty_buckets=empty_buckets)


def throwaway_backend(cfg: Config) -> bool:
    """True when a command would start an embedded backend of its own, which ends with it (and its setup too)."""
    return cfg.backend.endpoint_url == "local" and running_local(cfg) is None


def lambda_steps(cfg: Config, backend: Backend) -> str:
    """How to run the worker on AWS Lambda against this backend's events queue."""
    from agent.service.lambda_worker import deploy_steps, queue_arn

    return deploy_steps(cfg, events_queue_arn=queue_arn(cfg, backend))
