"""Shutting a thread pool down within a deadline.

``ThreadPoolExecutor.shutdown(wait=True)`` waits for every running job however long it takes, and a job
blocked on a backend that accepts connections but never answers waits for botocore's read timeout times its
attempts: minutes. A stopping agent must not (SPEC: drain and exit within 10 s); what is still running at the
deadline is abandoned, which is safe because every role is idempotent and resumes from the buckets and the
local folders at the next start.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor


def shutdown_within(pool: ThreadPoolExecutor, deadline: float, *, cancel_futures: bool) -> bool:
    """Stop taking work, wait for running jobs until ``deadline`` (monotonic); True if all of them finished."""
    pool.shutdown(wait=False, cancel_futures=cancel_futures)
    threads = list(getattr(pool, "_threads", ()))  # private but stable since Python 3.2; empty if it ever goes
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)
