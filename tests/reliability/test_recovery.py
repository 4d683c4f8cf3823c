"""How fast work resumes after an outage (issue 14, item 3), with the default timeouts and long polls.

Randomized outage shapes (seeded, so a failure can be replayed): one or two phases of a blackholed, reset or
refused link with random durations; files are dropped just before the cut, during each phase and right
after the return. Every one of them must have its local thumbnail within RECOVERY seconds of the link's
return. With botocore's defaults a long poll on a blackholed connection used to hang for read_timeout times
its attempts, messages whose receive response was lost stayed hidden for the whole visibility timeout and
the backoffs had grown to 30-60 s: files came back minutes late, or only at the next rescan.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from tests.reliability.conftest import ImageCase, RelEnv, palette, summary, wait_for

pytestmark = pytest.mark.e2e

RECOVERY = 60.0  # SPEC: every file dropped around an outage has its thumbnail this soon after the return
SEED = 1414
SHAPES = 3


def local_thumbnails(rel: RelEnv, cases: list[ImageCase]) -> list[str]:
    """The cases that still have no local thumbnail."""
    return [c.rel for c in cases if not (rel.thumbs / c.thumb_rel).is_file()]


def test_every_file_is_back_soon_after_randomized_outages(rel: RelEnv) -> None:
    # The defaults a user has (the fixture shortens timeouts for its other tests): 60 s read timeout, 5
    # attempts, 20 s long polls, 120 s visibility.
    rel.write_config(
        {
            "backend": {"connect_timeout": 5, "read_timeout": 60, "max_attempts": 5},
            "queues": {"wait_seconds": 20, "visibility_timeout": 120},
        }
    )
    rng = random.Random(SEED)
    colours = palette(80)
    agent = rel.start_agent()
    agent.wait_ready()
    n = 0

    def drop(label: str, count: int, slowly: bool = False) -> list[ImageCase]:
        nonlocal n
        out = []
        for _ in range(count):
            size = (260 + 17 * (n % 11), 190 + 13 * (n % 7))
            c = ImageCase(f"{label}/img-{n:03d}{'.png' if n % 5 == 0 else '.jpg'}", size, colours[n])
            (c.write_slowly if slowly else c.write)(rel.inbox)
            out.append(c)
            n += 1
        return out

    cuts: dict[str, Callable[[], None]] = {
        "blackhole": rel.proxy.blackhole,
        "reset": lambda: rel.proxy.reset(after_bytes=rng.choice([0, 200, 3000])),
        "refuse": rel.proxy.refuse,
    }
    everything: list[ImageCase] = []
    results: list[str] = []
    firsts = sorted(cuts)
    rng.shuffle(firsts)  # each kind of cut opens one outage; the second phase, if any, is drawn at random
    for shape, first in enumerate(firsts[:SHAPES]):
        phases = [(first, rng.uniform(4.0, 15.0))]
        if rng.random() < 0.5:
            phases.append((rng.choice(sorted(cuts)), rng.uniform(4.0, 12.0)))
        label = " then ".join(f"{name} {secs:.0f}s" for name, secs in phases)
        batch = drop(f"s{shape}-before", 3)
        time.sleep(rng.uniform(0.0, 1.0))  # some are uploading, some thumbnailing, some pulling at the cut
        for i, (name, seconds) in enumerate(phases):
            cuts[name]()
            batch += drop(f"s{shape}-during{i}", 2)
            time.sleep(seconds / 2)
            batch += drop(f"s{shape}-during{i}-late", 1, slowly=True)
            time.sleep(seconds / 2)
        rel.proxy.passthrough()
        back = time.monotonic()
        batch += drop(f"s{shape}-after", 2)
        everything.extend(batch)
        wait_for(
            lambda: not local_thumbnails(rel, everything),
            RECOVERY,
            f"every file to have its local thumbnail after outage {shape + 1} ({label}); "
            f"missing at the return: {local_thumbnails(rel, everything)}",
            rel.diagnose,
        )
        took = time.monotonic() - back
        results.append(f"outage {shape + 1} ({label}): all {len(everything)} thumbnails local {took:.1f} s after the return")
        print(results[-1])
        summary("outage recovery", results[-1])
        assert agent.alive(), rel.diagnose()

    wait_for(rel.queues_idle, 60, "the queues to drain", rel.diagnose)
    audit = rel.audit(everything)
    assert audit.guarantees_hold, f"{audit}\n{rel.diagnose()}"
    rc, _ = agent.terminate(timeout=20)
    assert rc == 0, rel.diagnose()
    # moto's request threads finish the agent's last long polls (20 s) after it is gone: not a leak of ours.
    wait_for(lambda: not moto_requests_open(), 40, "moto to finish the last long polls")


def moto_requests_open() -> list[str]:
    return [t.name for t in threading.enumerate() if "process_request_thread" in t.name]
