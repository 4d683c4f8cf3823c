"""The one retry delay policy: exponential, capped, jittered, and back to the first step after a success."""

from __future__ import annotations

import random

import pytest

from agent.backoff import Backoff


def test_steps_grow_to_the_cap_within_the_jitter() -> None:
    b = Backoff(first=0.5, cap=4.0, jitter=0.5, rng=random.Random(1))
    delays = [b.next() for _ in range(8)]
    steps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for delay, step in zip(delays, steps, strict=True):
        assert step * 0.5 <= delay <= step
    assert b.failures == 8


def test_reset_starts_again_from_the_first_step() -> None:
    b = Backoff(first=1.0, cap=30.0, jitter=0.0)
    for _ in range(10):
        b.next()
    assert b.step() == 30.0
    b.reset()
    assert b.step() == 1.0
    assert b.next() == 1.0


def test_a_long_outage_does_not_overflow() -> None:
    b = Backoff(first=0.5, cap=5.0, jitter=0.0)
    b.failures = 10_000
    assert b.next() == 5.0


@pytest.mark.parametrize("kwargs", [{"first": 0}, {"first": 5, "cap": 1}, {"factor": 0.5}, {"jitter": 1.0}])
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_delay_for_is_stateless_and_matches_the_message_retry_formula() -> None:
    """The consumer's postponements: 5 s x 2^(receives-1) +-20 %, the exponent capped at 8, as before #15."""
    from agent.pipeline.consumer import LINK_RETRY, MAX_POSTPONE, MESSAGE_RETRY

    for attempt in range(12):
        step = 5 * 2 ** min(attempt, 8)
        for _ in range(50):
            assert step * 0.8 - 1e-9 <= MESSAGE_RETRY.delay_for(attempt) <= step * 1.2 + 1e-9
    assert MESSAGE_RETRY.failures == 0  # nothing counted: the count is the message's receive count
    assert min(MAX_POSTPONE, int(MESSAGE_RETRY.delay_for(20))) == MAX_POSTPONE
    assert all(4 <= int(LINK_RETRY.delay_for(0)) <= 6 for _ in range(50))
    b = Backoff(first=1.0, cap=8.0, jitter=0.0)
    assert [b.delay_for(n) for n in (-1, 0, 1, 2, 3, 9)] == [1.0, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_no_hand_written_backoff_formula_is_left_in_agent() -> None:
    """Every retry delay comes from agent.backoff (#15): no jitter or exponent of its own elsewhere. The one
    exception: cloud/objects.py reads a broken-off body again with tenacity's own jittered wait."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "agent"
    pattern = re.compile(r"random\.uniform|\b2 \*\* |wait_random_exponential")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        if path.relative_to(root).as_posix() not in ("backoff.py", "cloud/objects.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
