"""Thumbnail jobs admitted against a memory budget (``worker.max_memory_mb``), so the worker's memory is bounded
by design rather than by luck: one 100 MP PNG takes ~400 MB to decode, and one worker per core could decode
several at once on a 1 GB edge box.

Each job's need is estimated from the source's header (agent.imaging.memory). A job waits until it fits next
to the running ones; a job too big to run next to others runs alone once they are done; only a job larger than
the whole budget is refused, as a bad item whose reason says how to fix it. Waiters are served in arrival
order, so a big job is never starved by a stream of small ones.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.errors import ImageError
from agent.imaging import Thumbnail, ThumbnailSpec, make_thumbnails
from agent.imaging.memory import MIB, estimate

log = logging.getLogger(__name__)
# Automatic budget: a quarter of the RAM, at least 512 MB (half the RAM on smaller machines), at most 4 GB.
AUTO_FRACTION = 4
AUTO_FLOOR_MB = 512
AUTO_CAP_MB = 4096


def physical_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or the name is unknown
        return None


def default_memory_mb(physical_mb: int | None = None) -> int:
    """The budget ``worker.max_memory_mb: 0`` stands for on a machine with ``physical_mb`` of RAM."""
    ram = physical_mb if physical_mb is not None else physical_memory_mb()
    if ram is None:
        return 1024
    return max(min(AUTO_FLOOR_MB, ram // 2), min(AUTO_CAP_MB, ram // AUTO_FRACTION))


class MemoryBudget:
    """A semaphore counted in bytes, first come first served."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"memory budget must be positive, got {limit}")
        self.limit = limit
        self.in_use = 0
        self.peak = 0  # the most ever admitted at once (for tests and benchmarks)
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def acquire(self, need: int) -> None:
        """Block until ``need`` bytes fit (alone, if need is more than what is free with others running)."""
        if need > self.limit:
            raise ValueError(f"{need} bytes can never fit a budget of {self.limit}")
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                self._cond.wait_for(lambda: self._queue[0] is ticket and self.in_use + need <= self.limit)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next in line may fit too
            self.in_use += need
            self.peak = max(self.peak, self.in_use)

    def release(self, need: int) -> None:
        with self._cond:
            self.in_use -= need
            self._cond.notify_all()

    @contextmanager
    def hold(self, need: int) -> Iterator[None]:
        self.acquire(need)
        try:
            yield
        finally:
            self.release(need)

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)


def make_admitted(budget: MemoryBudget | None, source: Path, spec: ThumbnailSpec, out_dir: Path, name: str) -> list[Thumbnail]:
    """make_thumbnails once the job's estimated memory fits ``budget`` (None: no admission).

    Raises ImageError when the job needs more than the whole budget: it could never run.
    """
    need = estimate(source, spec) if budget is not None else None
    if budget is None or need is None or need.width * need.height > spec.max_pixels:
        # (Above thumbnails.max_pixels the engine refuses it from the header, with that reason: nothing to admit.)
        return make_thumbnails(source, spec, out_dir)
    if need.bytes > budget.limit:
        raise ImageError(
            f"needs {need.describe()} to make its thumbnails, more than worker.max_memory_mb allows ({budget.limit // MIB} MB)",
            hint="raise worker.max_memory_mb if this machine has the memory to spare, or make the image smaller",
        )
    if budget.in_use + need.bytes > budget.limit or budget.waiting():
        log.info(
            "%s waits for memory: needs about %d MB, %d MB of %d MB in use",
            name,
            need.mb,
            budget.in_use // MIB,
            budget.limit // MIB,
        )
    with budget.hold(need.bytes):
        return make_thumbnails(source, spec, out_dir)
