"""Which backend a command talks to: the embedded server (``backend.endpoint_url: local``) or the configured one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from agent.config.model import Config
from agent.errors import BackendError
from agent.service.runtime import pool_size, state_dir

if TYPE_CHECKING:  # boto3 and moto's helpers load when a backend is opened: a no-op 'sync' never opens one
    from agent.cloud.clients import Backend
    from agent.cloud.local_backend import LocalBackend

__all__ = ["backend_for", "open_backend", "running_local", "state_dir"]


def backend_for(cfg: Config, local_endpoint: str | None = None) -> Backend:
    """The one local-or-remote choice: the embedded server at ``local_endpoint`` for 'local', else the configured endpoint."""
    from agent.cloud.clients import Backend

    if cfg.backend.endpoint_url == "local":
        if local_endpoint is None:
            raise ValueError("backend_for: the embedded backend's endpoint is needed for endpoint_url 'local'")
        return Backend(cfg.backend, endpoint_url=local_endpoint, local=True, pool_size=pool_size(cfg))
    return Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False, pool_size=pool_size(cfg))


def running_local(cfg: Config) -> str | None:
    """The endpoint of the embedded server an agent on this state dir runs, if one does."""
    from agent.cloud.local_backend import find_running

    return find_running(state_dir(cfg))


@contextmanager
def open_backend(cfg: Config, *, publish: bool = True, start: bool = True) -> Iterator[Backend]:
    """The configured backend; for 'local', the running embedded server or (``start``) a new one we own.

    ``start=False`` is for commands that inspect or prune what is there (dlq, cleanup): a new embedded server is
    empty, so their answer would be a misleading "nothing" or "missing, run setup".
    """
    from agent.cloud.local_backend import attach_or_start

    local: LocalBackend | None = None
    try:
        if cfg.backend.endpoint_url == "local" and not start:
            running = running_local(cfg)
            if running is None:
                raise BackendError(
                    "the embedded backend is not running: it lives inside 'thumbdrop run' (its buckets and queues "
                    "with it), so there is nothing to look at now",
                    hint="start the agent ('thumbdrop run' or the tray) and try again, or set backend.endpoint_url",
                )
            yield backend_for(cfg, running)
        elif cfg.backend.endpoint_url == "local":
            local = attach_or_start(state_dir(cfg), publish=publish)
            yield backend_for(cfg, local.endpoint_url)
        else:
            yield backend_for(cfg)
    finally:
        if local is not None:
            local.stop()
