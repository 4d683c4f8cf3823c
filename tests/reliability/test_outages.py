"""Backend outages while ``thumbdrop run`` works: the link refused, blackholed, reset mid-transfer, slowed.

SPEC Guarantees: every image gets its thumbnail, including files that arrived while the agent was offline;
nothing is lost or duplicated by a network or backend outage; the agent recovers without a restart, and
``thumbdrop status`` shows it offline meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.reliability.conftest import THUMB_BUCKET, AgentProcess, ImageCase, RelEnv, palette, summary, wait_for

pytestmark = pytest.mark.e2e


def cases(prefix: str, n: int, start: int, colours: list[tuple[int, int, int]]) -> list[ImageCase]:
    out = []
    for i in range(n):
        k = start + i
        size = (320 + 37 * (k % 9), 200 + 53 * (k % 7)) if k % 3 else (180 + 11 * k, 420)
        ext = ".png" if k % 4 == 0 else ".jpg"
        out.append(ImageCase(f"{prefix}/img-{k:03d}{ext}", size, colours[k]))
    return out


def offline_since(rel: RelEnv) -> float | None:
    agent = rel.status()["agent"]
    value = agent.get("offline_since")
    return float(value) if value else None


def drain_and_audit(rel: RelEnv, agent: AgentProcess, all_cases: list[ImageCase], label: str, timeout: float = 120.0) -> None:
    wait_for(lambda: rel.all_thumbnailed(all_cases), timeout, "every image to be thumbnailed and pulled", rel.diagnose)
    # Late duplicates would come from messages still in flight: wait until both queues are empty.
    wait_for(rel.queues_idle, 60, "the queues to drain", rel.diagnose)
    time.sleep(1.0)
    audit = rel.audit(all_cases)
    print(f"audit: {audit}")
    summary("outages", f"{label}: {audit.counts()}")
    assert audit.clean, f"{audit}\n{rel.diagnose()}"
    assert not rel.temp_files()
    assert agent.alive(), rel.diagnose()


def test_outage_refused_blackholed_reset_drains_without_restart(rel: RelEnv) -> None:
    colours = palette(40)
    agent = rel.start_agent()
    agent.wait_ready()
    timeline: list[str] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - t0:6.1f}s {what}")

    before = cases("before", 8, 0, colours)
    for c in before:
        c.write(rel.inbox)
    wait_for(lambda: rel.all_thumbnailed(before), 60, "the first batch", rel.diagnose)
    note("first batch done")
    assert offline_since(rel) is None

    in_flight = cases("inflight", 6, 8, colours)
    for c in in_flight:
        c.write(rel.inbox)
    time.sleep(0.35)  # about settle_seconds: some are uploading when the link goes
    during: list[ImageCase] = []
    phases: list[tuple[str, Callable[[], None], float]] = [
        ("refuse", rel.proxy.refuse, 8.0),
        ("blackhole", rel.proxy.blackhole, 10.0),
        ("reset", lambda: rel.proxy.reset(after_bytes=200), 8.0),
    ]
    first_offline: float | None = None
    for n, (name, cut, seconds) in enumerate(phases):
        cut()
        note(f"link: {name}")
        batch = cases(f"during-{name}", 6, 14 + 6 * n, colours)
        for c in batch[:3]:
            c.write(rel.inbox)
        time.sleep(seconds / 2)
        for c in batch[3:]:
            c.write_slowly(rel.inbox)  # written while offline, slowly: never uploaded half-written
        during += batch
        if first_offline is None:
            first_offline = wait_for(lambda: offline_since(rel), 30, "status to show the agent offline", rel.diagnose)
            note("status: offline")
        time.sleep(seconds / 2)
        since = offline_since(rel)
        assert since is not None, f"status shows the agent online while the link is {name}\n{rel.diagnose()}"
        assert agent.alive(), rel.diagnose()
    rel.proxy.passthrough()
    note("link restored")

    all_cases = before + in_flight + during
    drain_and_audit(rel, agent, all_cases, "refused, then blackholed, then reset (26 s, no restart)")
    note("drained")
    wait_for(lambda: offline_since(rel) is None, 30, "status to show the agent online again", rel.diagnose)
    assert len(rel.agents) == 1, "the agent was restarted"
    print("\n".join(timeline))
    rc, _took = agent.terminate(timeout=15)
    assert rc == 0, rel.diagnose()


def test_slow_link(rel: RelEnv) -> None:
    """A link at 64 KB/s: uploads, thumbnails and pulls take seconds each; nothing fails, nothing is doubled."""
    colours = palette(12)
    rel.proxy.slow(64_000)
    agent = rel.start_agent()
    agent.wait_ready(timeout=90)
    batch = cases("slow", 6, 0, colours)
    # One bigger file: a few seconds on this link, longer than connect_timeout.
    batch.append(ImageCase("slow/bigger.jpg", (700, 500), colours[6], noise="rgb"))
    for c in batch:
        c.write(rel.inbox)
    drain_and_audit(rel, agent, batch, "slow link (64 KB/s)", timeout=180)
    assert not rel.keys(THUMB_BUCKET, ".thumbdrop-failed/")
    rc, _ = agent.terminate(timeout=20)
    assert rc == 0, rel.diagnose()


def test_partial_outage_s3_reads_failing_while_sqs_answers(rel: RelEnv) -> None:
    """S3 GET/HEAD of originals fail (connection reset) while uploads and SQS work: a regional S3 read outage.

    max_receives is 2 to keep the test short; with the default 5 the same happens after about 80 s of outage.
    """
    # Events dead-lettered during the outage are recovered by the worker's reconcile on each rescan.
    rel.write_config({"queues": {"max_receives": 2}, "watch": {"rescan_seconds": 10}})
    colours = palette(4)
    agent = rel.start_agent()
    agent.wait_ready()
    before = ImageCase("partial/before.jpg", (400, 300), colours[0])
    before.write(rel.inbox)
    wait_for(lambda: rel.all_thumbnailed([before]), 60, "the first image", rel.diagnose)

    rel.proxy.reject(rb"(HEAD|GET) /thumbdrop-source/")
    during = ImageCase("partial/during.jpg", (300, 400), colours[1])
    during.write(rel.inbox)
    wait_for(lambda: during.rel in rel.keys("thumbdrop-source"), 30, "the upload (PUT still works)", rel.diagnose)
    time.sleep(22)  # the worker's retries: 5 s, then 10 s (+-20%), then SQS's redrive
    print(
        f"outage over; worker reads rejected: {rel.proxy.rejected_requests}, "
        f"events dead-lettered: {rel.dead_letters('thumbdrop-events-dlq')}"
    )
    rel.proxy.release()
    after = ImageCase("partial/after.jpg", (500, 300), colours[2])
    after.write(rel.inbox)
    wait_for(lambda: rel.all_thumbnailed([after]), 60, "an image dropped after the outage", rel.diagnose)
    wait_for(lambda: rel.all_thumbnailed([during]), 45, "the image uploaded during the outage", rel.diagnose)
    assert agent.alive()


def test_images_that_arrived_while_stopped_go_up_even_if_multipart_listing_is_denied(rel: RelEnv) -> None:
    """Restricted credentials (no s3:ListBucketMultipartUploads): clearing stale multipart uploads fails, the
    reconcile that uploads what arrived while the agent was stopped must still run."""
    colours = palette(3)
    waiting = [ImageCase(f"while-stopped/{i}.jpg", (300 + 40 * i, 200), colours[i]) for i in range(3)]
    for c in waiting:
        c.write(rel.inbox)
    denied = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    rel.proxy.answer(rb"GET /thumbdrop-source\?uploads", 403, denied)
    agent = rel.start_agent()
    agent.wait_ready()
    wait_for(lambda: rel.all_thumbnailed(waiting), 30, "the images that arrived while the agent was stopped", rel.diagnose)
    assert rel.proxy.answered_requests >= 1, "the agent never listed multipart uploads: nothing was tested"
    audit = rel.audit(waiting)
    assert audit.clean, f"{audit}\n{rel.diagnose()}"
    rc, _ = agent.terminate(timeout=15)
    assert rc == 0, rel.diagnose()


def test_sigterm_stops_promptly_while_the_backend_hangs(rel: RelEnv) -> None:
    """A store that accepts connections and never answers (a hung NAS, a half-open link): Ctrl-C / SIGTERM must
    still stop the agent within SPEC's 10 s, not after botocore's read timeout times its attempts."""
    rel.write_config({"backend": {"read_timeout": 60, "max_attempts": 5}})
    colours = palette(6)
    agent = rel.start_agent()
    agent.wait_ready()
    first = cases("first", 2, 0, colours)
    for c in first:
        c.write(rel.inbox)
    wait_for(lambda: rel.all_thumbnailed(first), 60, "the first images", rel.diagnose)

    rel.proxy.blackhole()
    stuck = cases("stuck", 4, 2, colours)
    for c in stuck:
        c.write(rel.inbox)
    time.sleep(2.0)  # settled and handed to the uploader: their requests now hang on the link
    # status through the same hung link: the agent's own state at once, the queue depths given up on.
    asked = time.monotonic()
    res = rel.cli("status", "--json", timeout=60)
    answered = time.monotonic() - asked
    assert res.rc == 3, str(res)  # SPEC: 3 when the backend is unreachable; the agent's own state is shown all the same
    assert answered < 20, f"status took {answered:.1f} s"
    shown = json.loads(res.stdout)
    assert shown["agent"]["state"] == "running" and "did not answer" in json.dumps(shown), shown
    rc, took = agent.terminate(timeout=30)
    print(f"SIGTERM with the backend hanging: exit {rc} after {took:.1f} s")
    summary("outages", f"SIGTERM while the backend hangs: exit {rc} after {took:.1f} s")
    assert rc == 0, rel.diagnose()
    assert took < 12, f"took {took:.1f} s\n{rel.diagnose()}"
    assert "still waiting on the backend" in agent.log()

    # Nothing lost: with the link back, the next start uploads and thumbnails what was stuck.
    rel.proxy.passthrough()
    again = rel.start_agent()
    again.wait_ready()
    drain_and_audit(rel, again, first + stuck, "after a stop while hanging")
    rc, _ = again.terminate(timeout=15)
    assert rc == 0
