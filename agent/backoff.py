"""The one retry delay policy: exponential steps with jitter, capped, back to the first step after a success.

Every loop that waits out a failing backend (the consumers' receives, the uploader's postponed files, the
agent's start-up and reconcile) uses it, so a recovery is never slowed by a delay that grew during an
earlier outage and was never reset.
"""

from __future__ import annotations

import random
import threading


class Backoff:
    """``first``, ``first*factor``, ... up to ``cap`` seconds; each delay is scaled by a random factor in
    [1 - jitter, 1] so that many waiters do not hit a returning backend at the same instant."""

    def __init__(
        self,
        *,
        first: float = 0.5,
        cap: float = 5.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < first <= cap or factor < 1 or not 0 <= jitter < 1:
            raise ValueError(f"bad backoff: first={first} cap={cap} factor={factor} jitter={jitter}")
        self.first = first
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.failures = 0

    def step(self) -> float:
        """The undithered delay the next failure gets."""
        with self._lock:
            return self._step_locked()

    def _step_locked(self) -> float:
        # min() before the power: a long outage must not overflow the float.
        return min(self.cap, self.first * self.factor ** min(self.failures, 64))

    def next(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        with self._lock:
            delay = self._step_locked()
            self.failures += 1
            return delay * self._rng.uniform(1.0 - self.jitter, 1.0)

    def delay_for(self, attempt: int) -> float:
        """The delay after the ``attempt``-th failure (0-based), with jitter; stateless, for a count kept
        elsewhere (an SQS message's receive count)."""
        step = min(self.cap, self.first * self.factor ** min(max(attempt, 0), 64))
        with self._lock:
            return step * self._rng.uniform(1.0 - self.jitter, 1.0)

    def reset(self) -> None:
        """A success: the next failure waits ``first`` again."""
        with self._lock:
            self.failures = 0
