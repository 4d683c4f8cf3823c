"""SIGKILL at random points, with backend outages: nothing lost, duplicated or half-written.

The random kill points come from a seeded generator; the seed is printed, and
``THUMBDROP_TEST_SEED=<seed>`` replays the same schedule (the same delays, batches and outage modes; wall-clock
noise still differs). ``THUMBDROP_TEST_OUTAGE_SECONDS`` (default ``10,15,10``) sets the outages' lengths and
``THUMBDROP_TEST_KILLS`` (default 30) the number of kill trials.
"""

from __future__ import annotations

import functools
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.reliability.conftest import (
    SOURCE_BUCKET,
    THUMB_BUCKET,
    TMP_MARK,
    AgentProcess,
    ImageCase,
    RelEnv,
    files_under,
    palette,
    summary,
    wait_for,
)

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("THUMBDROP_TEST_SEED", "20261121"))
OUTAGES = [float(s) for s in os.environ.get("THUMBDROP_TEST_OUTAGE_SECONDS", "10,15,10").split(",") if s.strip()]
KILLS = int(os.environ.get("THUMBDROP_TEST_KILLS", "30"))
IMAGES = 50


@dataclass
class Trial:
    """What the kill test did and found; printed at the end whatever the outcome."""

    seed: int
    log: list[str] = field(default_factory=list)
    kills: int = 0
    outages: int = 0
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:6.1f}s {what}"
        self.log.append(line)
        print(line, flush=True)


def image_set(n: int) -> list[ImageCase]:
    """Varied sizes, aspects, formats and folders; two in five are noisy (0.3-1.5 MB) so work takes time to kill."""
    colours = palette(n)
    out = []
    for k in range(n):
        w = 120 + (k * 97) % 900
        h = 90 + (k * 61) % 700
        ext = (".jpg", ".png", ".jpeg", ".JPG", ".bmp")[k % 5]
        folder = ("", "a/", "a/b/", "trip 2/", "été/")[k % 5]
        noise = "rgb" if k % 5 in (1, 3) else ""
        if noise:
            w, h = w + 500, h + 400
        out.append(ImageCase(f"{folder}img-{k:03d}{ext}", (w, h), colours[k], noise=noise))
    return out


def did_work(agent: AgentProcess) -> bool:
    """The agent got as far as moving something (or trying to) before its kill."""
    return bool(re.search(r" (uploaded|thumbnailed|pulled|postponed) ", agent.log()))


def uploads_per_image(agents: list[AgentProcess], cases: list[ImageCase]) -> dict[str, int]:
    counts = dict.fromkeys((c.rel for c in cases), 0)
    pattern = re.compile(r" uploaded .*/inbox/(.+) -> s3://")
    for a in agents:
        for m in pattern.finditer(a.log()):
            if m.group(1) in counts:
                counts[m.group(1)] += 1
    return counts


WORK = re.compile(r" (uploaded|thumbnailed|pulled) ")


def wait_for_kill_point(agent: AgentProcess, rng: random.Random, drop: Callable[[], object]) -> str:
    """Wait for a random kill point of one of three kinds; ``drop`` is called (once) early in the wait.

    * during startup: a delay counted from the process start (imports, provisioning, first reconcile);
    * at a random time: a delay counted from the end of the imports (a second or two on a busy machine);
    * in the middle of work: a moment after the agent logged its k-th upload, thumbnail or pull, when the
      next ones are in flight (or after 5 s if no work comes).
    """
    kind = rng.choices(["startup", "timer", "work"], weights=[2, 3, 5])[0]
    delay = rng.uniform(0.0, 2.5) if kind != "work" else rng.uniform(0.0, 0.3)
    nth = rng.randint(1, 6)
    if kind == "startup":
        drop()
        time.sleep(delay)
        return f"{delay:.2f} s after its start"
    wait_for(lambda: "agent starting" in agent.log() or not agent.alive(), 30, "the agent to start", agent.diagnose)
    drop()
    if kind == "timer":
        time.sleep(delay)
        return f"{delay:.2f} s after its imports"
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and len(WORK.findall(agent.log())) < nth:
        time.sleep(0.02)
    done = len(WORK.findall(agent.log()))
    time.sleep(delay)
    if done < nth:
        return f"after 5 s waiting for work ({done} done)"
    return f"{delay:.2f} s after its work item {nth}"


def test_random_kills_with_outages(rel: RelEnv) -> None:
    rng = random.Random(SEED)
    trial = Trial(SEED)
    print(f"\nkill test: seed {SEED} (replay with THUMBDROP_TEST_SEED={SEED}), {KILLS} kills, outages {OUTAGES} s")
    rel.write_config({"watch": {"rescan_seconds": 30}})
    cases = image_set(IMAGES)
    batches = [cases[i : i + 4] for i in range(0, len(cases), 4)]
    # Each batch is dropped before a given trial: while no agent runs (the agent finds them at start),
    # or a random moment into the trial (the watcher sees them).
    drop_at: dict[int, list[tuple[list[ImageCase], bool]]] = {}
    last_drop = max(1, int(KILLS * 0.8))
    for i, batch in enumerate(batches):
        t = round(i * last_drop / max(1, len(batches) - 1))
        drop_at.setdefault(t, []).append((batch, rng.random() < 0.4))
    modes = ["refuse", "blackhole", "reset"]
    outage_at = {round((k + 1) * KILLS / (len(OUTAGES) + 1)): (OUTAGES[k], modes[k % 3]) for k in range(len(OUTAGES))}
    outage_end: float | None = None
    slow_writes = set(rng.sample(range(len(cases)), 6))

    def drop_all(batches: list[list[ImageCase]]) -> None:
        for batch in batches:
            drop(batch)

    def drop(batch: list[ImageCase]) -> None:
        for c in batch:
            if cases.index(c) in slow_writes:
                c.write_slowly(rel.inbox, pieces=4, pause=0.08)
            else:
                c.write(rel.inbox)

    try:
        for n in range(KILLS):
            if outage_end is not None and time.monotonic() >= outage_end:
                rel.proxy.passthrough()
                outage_end = None
                trial.note("outage over: link restored")
            if n in outage_at:
                seconds, mode = outage_at[n]
                if mode == "reset":
                    after = rng.randint(100, 4000)
                    rel.proxy.reset(after_bytes=after)
                    mode = f"reset after {after} bytes"
                else:
                    getattr(rel.proxy, mode)()
                outage_end = time.monotonic() + seconds
                trial.outages += 1
                trial.note(f"outage {trial.outages}: {mode} for {seconds:.0f} s")
            for batch, while_stopped in drop_at.get(n, []):
                if while_stopped:
                    drop(batch)
                    trial.note(f"dropped {len(batch)} image(s) while no agent runs")
            agent = rel.start_agent()
            during = [b for b, while_stopped in drop_at.get(n, []) if not while_stopped]
            how = wait_for_kill_point(agent, rng, functools.partial(drop_all, during))
            if during:
                trial.note(f"dropped {sum(len(b) for b in during)} image(s) into the running agent")
            was_alive = agent.alive()
            agent.kill()
            trial.kills += 1
            assert was_alive, f"the agent died by itself before its kill\n{agent.diagnose()}"
            trial.note(f"kill {trial.kills}: SIGKILL {how}")
        if outage_end is not None:
            time.sleep(max(0.0, outage_end - time.monotonic()))
            rel.proxy.passthrough()
            trial.note("outage over: link restored")

        final = rel.start_agent()
        trial.note("final agent started")
        wait_for(lambda: rel.all_thumbnailed(cases), 150, "every image to be thumbnailed and pulled", rel.diagnose)
        trial.note("every image thumbnailed")
        wait_for(rel.queues_idle, 60, "the queues to drain", rel.diagnose)
        time.sleep(1.0)
        rc, _ = final.terminate(timeout=15)
        assert rc == 0, final.diagnose()
        trial.note("final agent stopped (exit 0)")

        audit = rel.audit(cases)
        working = sum(1 for a in rel.agents[:-1] if did_work(a))
        uploads = uploads_per_image(rel.agents, cases)
        redone = {k: v for k, v in uploads.items() if v > 1}
        stale = rel.multipart_uploads()
        result = (
            f"seed {SEED}: kill trials {trial.kills} ({working} interrupted work), outages {trial.outages} "
            f"({', '.join(f'{s:.0f}' for s in OUTAGES)} s), images {audit.images}: lost {len(audit.lost)}, "
            f"duplicated {len(audit.duplicated)}, partial {len(audit.partial)}, wrong {len(audit.wrong)}, "
            f"marked failed {len(audit.failed)}; events of good images dead-lettered {len(audit.dead_letters)}; "
            f"uploads redone after a kill {len(redone)}; stale multipart uploads {len(stale)}"
        )
        print(f"\nkill test result: {result}")
        summary("kill test (replay: THUMBDROP_TEST_SEED=<seed>)", result)
        for letter in audit.dead_letters:
            summary("kill test (replay: THUMBDROP_TEST_SEED=<seed>)", f"  dead letter: {letter}")
        assert trial.kills >= 20 and trial.outages == len(OUTAGES)
        # The guarantees: nothing lost, duplicated or half-written. A good image's event can still end in the
        # dead-letter queue when max_receives agents in a row received it and were killed before deleting it
        # (reported above, not a guarantee); if its thumbnail was never made, it counts as lost.
        assert audit.guarantees_hold, f"seed {SEED}: {audit}\n{rel.diagnose()}"
        assert not stale
    finally:
        print("\n".join(trial.log))


# --- kills at chosen moments ------------------------------------------------------------------------------------


def test_kill_during_multipart_upload_restart_finishes_and_clears_parts(rel: RelEnv) -> None:
    """SIGKILL while a file above the multipart threshold is going up in parts; the restart finishes it."""
    rel.write_config({"transfer": {"multipart_threshold_mb": 5, "multipart_chunksize_mb": 5}})
    big = ImageCase("big/huge.png", (2000, 1500), (30, 160, 220), noise="rgb")
    small = ImageCase("big/small.jpg", (640, 480), (220, 160, 30))
    agent = rel.start_agent()
    agent.wait_ready()
    rel.proxy.slow(1_500_000)  # ~5 s for the 7.6 MB file: time to kill it in the middle
    big.write(rel.inbox)
    size = (rel.inbox / big.rel).stat().st_size
    assert size > 5 * 2**20
    wait_for(rel.multipart_uploads, 30, "a multipart upload to start", rel.diagnose)
    time.sleep(1.0)  # some parts are on their way
    agent.kill()
    started = rel.multipart_uploads()
    assert started, "the multipart upload finished before the kill: nothing was tested"
    assert big.rel not in rel.keys(SOURCE_BUCKET)

    small.write(rel.inbox)  # and something new arrives while the agent is down
    rel.proxy.passthrough()
    again = rel.start_agent()
    wait_for(lambda: rel.all_thumbnailed([big, small]), 90, "both thumbnails after the restart", rel.diagnose)
    wait_for(rel.queues_idle, 60, "the queues to drain", rel.diagnose)
    audit = rel.audit([big, small])
    print(f"audit: {audit}")
    assert audit.clean, f"{audit}\n{rel.diagnose()}"
    head = rel.s3.head_object(Bucket=SOURCE_BUCKET, Key=big.rel)
    assert head["ContentLength"] == size
    left = {u["UploadId"] for u in rel.multipart_uploads()}
    assert not left & {u["UploadId"] for u in started}, f"the killed agent's multipart upload is still open: {left}"
    assert not left, f"unfinished multipart uploads after the restart: {left}"
    rc, _ = again.terminate(timeout=15)
    assert rc == 0, again.diagnose()


def test_kill_during_thumbnail_download_leaves_no_partial_file(rel: RelEnv) -> None:
    """SIGKILL while the puller streams a thumbnail into its temp file; the restart cleans up and pulls it whole."""
    case = ImageCase("pull/noisy.png", (256, 256), (200, 40, 90), noise="bw")  # 11 KB original, ~48 KB thumbnail
    agent = rel.start_agent()
    agent.wait_ready()
    rel.proxy.slow(12_000)  # the thumbnail takes ~4 s to come down
    case.write(rel.inbox)

    def temp_file() -> list[str]:
        return [f for f in files_under(rel.thumbs) if TMP_MARK in f]

    seen = wait_for(temp_file, 60, "the puller to start writing the thumbnail", rel.diagnose)
    time.sleep(0.5)
    agent.kill()
    leftovers = temp_file()
    assert leftovers, f"the download finished before the kill ({seen}): nothing was tested"
    assert not (rel.thumbs / case.thumb_rel).exists(), "a thumbnail appeared before its download ended"
    size = (rel.thumbs / leftovers[0]).stat().st_size
    expected = rel.keys(THUMB_BUCKET)[case.thumb_rel]["Size"]
    print(f"killed with {size} of {expected} bytes in {leftovers[0]}")

    rel.proxy.passthrough()
    again = rel.start_agent()
    wait_for(lambda: rel.all_thumbnailed([case]), 60, "the thumbnail after the restart", rel.diagnose)
    wait_for(rel.queues_idle, 60, "the queues to drain", rel.diagnose)
    audit = rel.audit([case])
    assert audit.clean, f"{audit}\n{rel.diagnose()}"
    assert not temp_file()
    rc, _ = again.terminate(timeout=15)
    assert rc == 0, again.diagnose()


def test_first_start_with_an_image_dropped_at_once(rel: RelEnv) -> None:
    """The very first start provisions the buckets and notifications; an image dropped meanwhile is not lost."""
    case = ImageCase("first.jpg", (500, 300), (90, 200, 60))
    agent = rel.start_agent()
    # Drop it as soon as the watcher can see it: before the bootstrap has made the buckets and notifications.
    wait_for(lambda: rel.inbox.exists() and "agent starting" in agent.log(), 30, "the agent to start", rel.diagnose)
    case.write(rel.inbox)
    wait_for(lambda: rel.all_thumbnailed([case]), 60, "the thumbnail of an image dropped during the first start", rel.diagnose)
    audit = rel.audit([case])
    assert audit.clean, f"{audit}\n{rel.diagnose()}"
    rc, _ = agent.terminate(timeout=15)
    assert rc == 0, agent.diagnose()


def test_image_dropped_while_a_restart_provisions_is_not_lost(rel: RelEnv) -> None:
    """A kill during the first provisioning can leave the buckets without their event notifications, and the
    next agent starts watching before it has configured them. An image dropped in that window is uploaded
    before the bucket notifies anyone: it must still get its thumbnail (without a restart or a sync).

    The window is made wide on purpose: the proxy holds the agent's PutBucketNotificationConfiguration
    request until the image is in the bucket.
    """
    for bucket in (SOURCE_BUCKET, THUMB_BUCKET):
        rel.s3.create_bucket(Bucket=bucket)  # what a kill right after 'create bucket' leaves behind
    case = ImageCase("raced.jpg", (64, 48), (200, 60, 160))
    rel.proxy.hold(rb"PUT /thumbdrop-source\?notification")
    agent = rel.start_agent()
    # The bootstrap thread (the first connection) starts after the watcher: from then on a new file is seen.
    wait_for(lambda: rel.proxy.held_requests, 30, "the agent to configure the notifications", agent.diagnose)
    case.write(rel.inbox)
    # Seen, but held back until the bucket notifies: an upload now would never produce its event.
    time.sleep(3)
    held = rel.proxy.held_requests
    uploaded_early = case.rel in rel.keys(SOURCE_BUCKET)
    rel.proxy.release()
    assert held, "the window was not hit: nothing was tested"
    assert not uploaded_early, "uploaded before the bucket notifications existed"
    agent.wait_ready()
    wait_for(lambda: rel.all_thumbnailed([case]), 20, "the thumbnail of the image uploaded during provisioning", rel.diagnose)
    audit = rel.audit([case])
    assert audit.clean, f"{audit}\n{rel.diagnose()}"
    rc, _ = agent.terminate(timeout=15)
    assert rc == 0, agent.diagnose()
