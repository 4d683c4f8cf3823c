"""Bandwidth cap (``backend.max_bandwidth``) and upload pause hours (``watch.pause_hours``).

One token bucket per process and rate, shared by every upload and download of
every role, so the cap is the agent's total whatever ``transfer.concurrency``
is (s3transfer's own limiter would cap each transfer separately). Uploads pass
through ``ThrottledReader``; downloads call ``consume`` per chunk read.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from agent.config.values import in_window, parse_rate, parse_window

log = logging.getLogger(__name__)
MIN_BURST = 64 * 1024

_buckets: dict[int, TokenBucket] = {}
_buckets_lock = threading.Lock()


class TokenBucket:
    """``rate`` bytes/s on average, bursts up to a quarter second's worth (at least 64 KiB)."""

    def __init__(self, rate: int, *, burst: int | None = None) -> None:
        self.rate = rate
        self.capacity = burst or max(rate // 4, MIN_BURST)
        self._tokens = float(self.capacity)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def consume(self, n: int, *, stop: threading.Event | None = None) -> None:
        """Block until ``n`` bytes may pass; returns at once when ``stop`` is set.

        Shutdown lifts the cap: an in-flight transfer then finishes at full speed
        instead of holding up the agent's drain for minutes.
        """
        while n > 0:
            # Large reads go in burst-sized slices: one 8 MiB part cannot lock out the other transfers.
            take = min(n, self.capacity)
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= take:
                    self._tokens -= take
                    n -= take
                    continue
                wait = (take - self._tokens) / self.rate
            if stop is not None:
                if stop.wait(wait):
                    return
            else:
                time.sleep(wait)


def limiter_for(max_bandwidth: str | None) -> TokenBucket | None:
    """The process-wide bucket for this rate (None: no limit); the same rate shares one bucket."""
    if not max_bandwidth:
        return None
    rate = parse_rate(max_bandwidth)
    with _buckets_lock:
        if rate not in _buckets:
            _buckets[rate] = TokenBucket(rate)
        return _buckets[rate]


def throttle(bucket: TokenBucket | None, n: int, *, stop: threading.Event | None = None) -> None:
    if bucket is not None and n > 0:
        bucket.consume(n, stop=stop)


class ThrottledReader:
    """A seekable file-like object whose reads draw from a token bucket.

    botocore reads a body more than once (checksums, signing, a retry) and seeks
    back in between; only bytes past the furthest point read so far are charged,
    so each byte costs its tokens once.
    """

    def __init__(self, raw: IO[bytes], bucket: TokenBucket, *, stop: threading.Event | None = None) -> None:
        self.raw = raw
        self.bucket = bucket
        self.stop = stop
        self._pos = raw.tell()
        self._high = self._pos

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        end = self._pos + len(data)
        if end > self._high:
            self.bucket.consume(end - self._high, stop=self.stop)
            self._high = end
        self._pos = end
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = self.raw.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> ThrottledReader:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class PauseSchedule:
    """``watch.pause_hours``: daily local-time windows when uploads wait."""

    windows: tuple[tuple[int, int], ...]
    texts: tuple[str, ...]

    @classmethod
    def parse(cls, items: list[str]) -> PauseSchedule:
        return cls(tuple(parse_window(t) for t in items), tuple(t.strip() for t in items))

    def active(self, now: datetime | None = None) -> str | None:
        """The window in force at ``now`` (local time), as written in the config; None outside all windows."""
        at = (now or datetime.now()).time()
        for window, text in zip(self.windows, self.texts, strict=True):
            if in_window(window, at):
                return text
        return None
