"""``thumbdrop run`` in a subprocess: drop images, get thumbnails; restarts, SIGTERM, SNS, status."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.e2e.conftest import (
    SOURCE_BUCKET,
    THUMB_BUCKET,
    E2EEnv,
    check_thumbnail,
    files_under,
    image_bytes,
    make_image,
    wait_for,
)

pytestmark = pytest.mark.e2e


def uploaded_lines(log: str, name: str) -> list[str]:
    return [line for line in log.splitlines() if " uploaded " in line and name in line]


def test_dropped_images_get_thumbnails_at_spec_paths(e2e: E2EEnv) -> None:
    agent = e2e.start_agent()
    agent.wait_ready()
    # rel path -> (size, colour, expected thumbnail rel path)
    cases: dict[str, tuple[tuple[int, int], tuple[int, int, int], str]] = {
        "trip/IMG 1.jpg": ((800, 600), (200, 30, 30), "trip/IMG 1.jpg"),
        "a+b/c+d.jpg": ((600, 800), (30, 200, 30), "a+b/c+d.jpg"),
        "100%/x%20y.jpg": ((1000, 250), (30, 30, 200), "100%/x%20y.jpg"),
        "été/naïve 1.jpg": ((500, 500), (200, 200, 30), "été/naïve 1.jpg"),
        "a.png": ((300, 200), (30, 200, 200), "a.png.jpg"),
        "d1/d2/d3/deep.jpeg": ((257, 100), (200, 30, 200), "d1/d2/d3/deep.jpeg"),
        "UPPER.JPG": ((400, 300), (120, 120, 120), "UPPER.JPG"),
        "tiny.png": ((40, 30), (250, 120, 20), "tiny.png.jpg"),  # smaller than the bound: never upscaled
    }
    for rel, (size, color, _thumb) in cases.items():
        make_image(e2e.inbox / rel, size, color=color)
    # Not images, or excluded: never uploaded.
    (e2e.inbox / "notes.txt").write_text("not an image")
    make_image(e2e.inbox / ".hidden.jpg", (50, 50))
    (e2e.inbox / "partial.jpg.part").write_bytes(image_bytes((50, 50)))

    expected = {thumb for _size, _color, thumb in cases.values()}
    wait_for(lambda: expected <= files_under(e2e.thumbs), 60, "every thumbnail", agent.diagnose)
    for size, color, thumb in cases.values():
        check_thumbnail(e2e.thumbs / thumb, size, color=color)

    # Keys follow SPEC: the relative path, '/'-separated, unescaped; the thumbnail key is the local name.
    assert set(e2e.keys(SOURCE_BUCKET)) == set(cases), agent.diagnose()
    thumb_keys = {k for k in e2e.keys(THUMB_BUCKET) if not k.startswith(".thumbdrop-failed/")}
    assert thumb_keys == expected
    # S3 metadata is ASCII: the unicode key is encoded, and the etag names the source.
    head = e2e.s3.head_object(Bucket=THUMB_BUCKET, Key="été/naïve 1.jpg")
    assert head["Metadata"]["source-key"].isascii()
    assert head["Metadata"]["source-etag"] == e2e.s3.head_object(Bucket=SOURCE_BUCKET, Key="été/naïve 1.jpg")["ETag"].strip('"')
    # Nothing else appeared locally: no temp files left behind, nothing for the excluded files.
    assert files_under(e2e.thumbs) == expected
    assert agent.alive()


def test_slowly_written_file_is_uploaded_once_complete(e2e: E2EEnv) -> None:
    agent = e2e.start_agent()
    agent.wait_ready()
    data = image_bytes((700, 500), "JPEG", noise=True, quality=95)
    path = e2e.inbox / "slow.jpg"
    chunks = 12
    step = len(data) // chunks + 1
    with open(path, "wb") as f:  # ~3 s of writing, a pause (0.25 s) shorter than settle_seconds (0.5 s) between chunks
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(0.25)
    thumb = e2e.thumbs / "slow.jpg"
    wait_for(thumb.exists, 45, "the thumbnail of slow.jpg", agent.diagnose)
    check_thumbnail(thumb, (700, 500))
    time.sleep(1.5)  # a late second upload would show now (settle 0.5 s)
    head = e2e.s3.head_object(Bucket=SOURCE_BUCKET, Key="slow.jpg")
    assert head["ContentLength"] == len(data)
    lines = uploaded_lines(agent.log(), "slow.jpg")
    assert len(lines) == 1, agent.diagnose()
    assert f"({len(data)} bytes)" in lines[0]
    assert not e2e.keys(THUMB_BUCKET, ".thumbdrop-failed/"), "a partial file was thumbnailed (and failed)"


def test_file_being_written_while_the_agent_starts_is_uploaded_once_complete(e2e: E2EEnv) -> None:
    # Writes come every 0.25 s; settle_seconds 1.5 leaves room for a loaded CI machine stalling the writer.
    e2e.write_config({"watch": {"settle_seconds": 1.5}})
    data = image_bytes((700, 500), "JPEG", noise=True, quality=95)
    chunks = [data[i : i + 8192] for i in range(0, len(data), 8192)]
    path = e2e.inbox / "copying.jpg"
    with open(path, "wb") as f:
        f.write(chunks.pop(0))
        f.flush()
        agent = e2e.start_agent()
        # Keep writing (a pause of 0.25 s, under settle_seconds) until the startup reconcile has run, and a bit longer.
        deadline = time.monotonic() + 40
        while "reconciled " not in agent.log() and time.monotonic() < deadline and len(chunks) > 4:
            f.write(chunks.pop(0))
            f.flush()
            time.sleep(0.25)
        assert "reconciled " in agent.log(), agent.diagnose()
        for _ in range(4):
            time.sleep(0.25)
            f.write(chunks.pop(0))
            f.flush()
        f.write(b"".join(chunks))
    wait_for((e2e.thumbs / "copying.jpg").exists, 45, "the thumbnail of copying.jpg", agent.diagnose)
    time.sleep(1.5)
    assert e2e.s3.head_object(Bucket=SOURCE_BUCKET, Key="copying.jpg")["ContentLength"] == len(data)
    lines = uploaded_lines(agent.log(), "copying.jpg")
    assert len(lines) == 1, f"uploaded {len(lines)} times:\n" + "\n".join(lines)
    assert "failed copying.jpg" not in agent.log(), agent.diagnose()


def test_a_watch_folder_deleted_or_replaced_is_watched_again(e2e: E2EEnv) -> None:
    import shutil

    e2e.write_config({"watch": {"rescan_seconds": 3600}})  # only live watching can find these files
    agent = e2e.start_agent()
    agent.wait_ready()
    shutil.rmtree(e2e.inbox)  # deleted and made again (a script, a sync tool)
    time.sleep(2.5)
    e2e.inbox.mkdir()
    make_image(e2e.inbox / "after-recreate.jpg", (400, 300))
    wait_for(lambda: (e2e.thumbs / "after-recreate.jpg").exists(), 30, "a file in the recreated folder", agent.diagnose)
    os.rename(e2e.inbox, e2e.root / "inbox-old")  # renamed away, an empty one put in its place
    e2e.inbox.mkdir()
    time.sleep(3)
    make_image(e2e.inbox / "after-replace.jpg", (300, 400))
    wait_for(lambda: (e2e.thumbs / "after-replace.jpg").exists(), 30, "a file in the replacing folder", agent.diagnose)
    log = agent.log()
    assert "is gone; watching it again when it is back" in log and "was replaced: watching the new one" in log


def test_file_and_directory_moved_in_from_outside(e2e: E2EEnv) -> None:
    agent = e2e.start_agent()
    agent.wait_ready()
    make_image(e2e.outside / "moved in.jpg", (640, 480), color=(10, 100, 200))
    make_image(e2e.outside / "album" / "one.jpg", (300, 900), color=(100, 10, 200))
    make_image(e2e.outside / "album" / "sub" / "two.png", (900, 300), color=(200, 100, 10))
    time.sleep(0.3)
    os.rename(e2e.outside / "moved in.jpg", e2e.inbox / "moved in.jpg")
    os.rename(e2e.outside / "album", e2e.inbox / "album")
    expected = {"moved in.jpg", "album/one.jpg", "album/sub/two.png.jpg"}
    wait_for(lambda: expected <= files_under(e2e.thumbs), 45, "thumbnails of the moved-in files", agent.diagnose)
    check_thumbnail(e2e.thumbs / "moved in.jpg", (640, 480), color=(10, 100, 200))
    check_thumbnail(e2e.thumbs / "album/one.jpg", (300, 900), color=(100, 10, 200))
    check_thumbnail(e2e.thumbs / "album/sub/two.png.jpg", (900, 300), color=(200, 100, 10))


def test_file_over_the_multipart_threshold(e2e: E2EEnv) -> None:
    e2e.write_config({"transfer": {"multipart_threshold_mb": 5, "multipart_chunksize_mb": 5}})
    agent = e2e.start_agent()
    agent.wait_ready()
    big = make_image(e2e.inbox / "big.png", (1550, 1550), noise=True)
    size = big.stat().st_size
    assert size > 7_000_000
    thumb = e2e.thumbs / "big.png.jpg"
    wait_for(thumb.exists, 60, "the thumbnail of big.png", agent.diagnose)
    check_thumbnail(thumb, (1550, 1550))
    head = e2e.s3.head_object(Bucket=SOURCE_BUCKET, Key="big.png")
    assert head["ContentLength"] == size
    etag = head["ETag"].strip('"')
    assert etag.endswith("-2"), f"not a two-part multipart upload: {etag}"
    assert set(e2e.keys(THUMB_BUCKET)) == {"big.png.jpg"}
    meta = e2e.s3.head_object(Bucket=THUMB_BUCKET, Key="big.png.jpg")["Metadata"]
    assert meta["source-etag"] == etag
    assert len(uploaded_lines(agent.log(), "big.png")) == 1


def test_files_present_before_start_are_processed_and_a_restart_redoes_nothing(e2e: E2EEnv) -> None:
    for i in range(3):
        make_image(e2e.inbox / f"old/{i}.jpg", (500 + 100 * i, 400), color=(40 * i, 90, 160))
    agent = e2e.start_agent()
    expected = {f"old/{i}.jpg" for i in range(3)}
    wait_for(lambda: expected <= files_under(e2e.thumbs), 45, "thumbnails of files present at start", agent.diagnose)
    for i in range(3):
        check_thumbnail(e2e.thumbs / f"old/{i}.jpg", (500 + 100 * i, 400), color=(40 * i, 90, 160))
    rc, _ = agent.terminate()
    assert rc == 0, agent.diagnose()
    stamps = {rel: (e2e.thumbs / rel).stat().st_mtime_ns for rel in expected}

    make_image(e2e.inbox / "new.jpg", (640, 480))  # arrives while the agent is stopped
    again = e2e.start_agent()
    wait_for((e2e.thumbs / "new.jpg").exists, 45, "the thumbnail of a file added while stopped", again.diagnose)
    check_thumbnail(e2e.thumbs / "new.jpg", (640, 480))
    time.sleep(1.0)
    log = again.log()
    assert len(uploaded_lines(log, "new.jpg")) == 1, again.diagnose()
    assert not uploaded_lines(log, "/old/"), again.diagnose()
    assert {rel: (e2e.thumbs / rel).stat().st_mtime_ns for rel in expected} == stamps


def test_sigterm_while_idle_exits_0_quickly(e2e: E2EEnv) -> None:
    agent = e2e.start_agent()
    agent.wait_ready()
    time.sleep(1.5)  # consumers are in their long polls
    rc, took = agent.terminate(timeout=10)
    assert rc == 0, agent.diagnose()
    assert took < 10
    assert "thumbdrop agent stopped" in agent.log()
    assert not list((e2e.state / "tmp").glob("*")), "a clean stop leaves no temp folder behind"


def test_sigterm_with_work_in_flight_exits_0_and_a_restart_finishes(e2e: E2EEnv) -> None:
    names = [f"batch/{i:02d}.jpg" for i in range(8)]
    for n in names:
        make_image(e2e.inbox / n, (1800, 1200), noise=True, quality=95)
    agent = e2e.start_agent()
    wait_for(lambda: " uploaded " in agent.log(), 45, "the first upload", agent.diagnose)
    rc, took = agent.terminate(timeout=10)
    assert rc == 0, agent.diagnose()
    assert took < 10
    log = agent.log()
    assert "received SIGTERM" in log and "thumbdrop agent stopped" in log
    assert "Traceback" not in log, agent.diagnose()

    again = e2e.start_agent()
    wait_for(lambda: set(names) <= files_under(e2e.thumbs), 60, "every thumbnail after the restart", again.diagnose)
    for n in names:
        check_thumbnail(e2e.thumbs / n, (1800, 1200))
    assert not [f for f in files_under(e2e.thumbs) if ".thumbdrop-tmp-" in f]


def test_sns_mode_end_to_end(e2e: E2EEnv) -> None:
    e2e.write_config({"queues": {"via_sns": True}})
    agent = e2e.start_agent()
    agent.wait_ready()
    for bucket in (SOURCE_BUCKET, THUMB_BUCKET):
        conf = e2e.s3.get_bucket_notification_configuration(Bucket=bucket)
        assert conf.get("TopicConfigurations"), f"{bucket} does not notify through SNS: {conf}"
        assert not conf.get("QueueConfigurations"), conf
    topics = {t["TopicArn"].rsplit(":", 1)[-1] for t in e2e.sns.list_topics()["Topics"]}
    assert {"thumbdrop-events", "thumbdrop-pull"} <= topics
    make_image(e2e.inbox / "via sns/été.jpg", (640, 360), color=(20, 160, 90))
    thumb = e2e.thumbs / "via sns/été.jpg"
    wait_for(thumb.exists, 45, "the thumbnail through SNS", agent.diagnose)
    check_thumbnail(thumb, (640, 360), color=(20, 160, 90))
    rc, _ = agent.terminate()
    assert rc == 0


def test_status_while_running(e2e: E2EEnv) -> None:
    agent = e2e.start_agent()
    agent.wait_ready()
    make_image(e2e.inbox / "s/one.jpg", (640, 480))
    make_image(e2e.inbox / "two.png", (64, 48))
    wait_for(lambda: {"s/one.jpg", "two.png.jpg"} <= files_under(e2e.thumbs), 45, "thumbnails", agent.diagnose)

    def counts_published() -> dict[str, object] | None:
        res = e2e.cli("status", "--json")
        assert res.rc == 0, str(res)
        report = json.loads(res.stdout)
        c = report["agent"].get("counts", {})
        return report if c.get("uploaded", 0) >= 2 and c.get("thumbnailed", 0) >= 2 and c.get("pulled", 0) >= 2 else None

    report = wait_for(counts_published, 30, "status to show the counts", agent.diagnose)
    assert report["agent"]["state"] == "running"
    assert report["agent"]["pid"] == agent.proc.pid
    assert report["agent"]["counts"]["failed"] == 0
    for name in ("events", "pull"):
        depth = report["queues"][name]
        assert isinstance(depth, dict), report["queues"]
        assert {"visible", "in_flight", "dead_letter"} <= set(depth)
        assert all(isinstance(v, int) for v in depth.values())
        assert depth["dead_letter"] == 0

    text = e2e.cli("status")
    assert text.rc == 0, str(text)
    assert re.search(r"agent:\s+running \(pid \d+", text.stdout), str(text)
    assert re.search(r"counts:\s+\d+ uploaded, \d+ thumbnailed, \d+ pulled, 0 failed", text.stdout), str(text)
    assert re.search(r"queue events\s+\d+ waiting, \d+ in flight, 0 dead-lettered", text.stdout), str(text)
    assert re.search(r"queue pull\s+\d+ waiting, \d+ in flight, 0 dead-lettered", text.stdout), str(text)

    rc, _ = agent.terminate()
    assert rc == 0
    after = json.loads(e2e.cli("status", "--json").stdout)
    assert after["agent"]["state"] == "not running"


def test_the_embedded_backend_is_started_again_if_it_dies(e2e: E2EEnv) -> None:
    """It is run's own child: nothing else would bring it back, and the agent would stay offline for good."""
    import json
    import signal
    import subprocess
    import sys

    from tests.e2e.conftest import REPO

    inbox = e2e.home / "ThumbDrop" / "inbox"
    thumbs = e2e.home / "ThumbDrop" / "thumbnails"
    state = e2e.home / ".local" / "state" / "thumbdrop"
    log_path = e2e.root / "agent-local.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--local", "run"], cwd=REPO, env=e2e.env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: (state / "local-backend.json").exists(), 60, "the embedded backend", log_path.read_text)
        make_image(inbox / "before.jpg", (400, 300))
        wait_for(lambda: (thumbs / "before.jpg").exists(), 60, "the first thumbnail", log_path.read_text)
        server = json.loads((state / "local-backend.json").read_text())["server_pid"]
        os.kill(server, signal.SIGKILL)
        make_image(inbox / "after.jpg", (300, 400))
        wait_for(lambda: (thumbs / "after.jpg").exists(), 60, "a thumbnail after the backend died", log_path.read_text)
        assert "the embedded backend exited" in log_path.read_text()
        assert json.loads((state / "local-backend.json").read_text())["server_pid"] != server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, log_path.read_text()


def test_a_clean_stop_on_the_embedded_backend_logs_no_warning(e2e: E2EEnv) -> None:
    """The embedded server stops with the agent: a consumer's long poll cut off by that is not an outage."""
    import signal
    import subprocess
    import sys

    from tests.e2e.conftest import REPO

    thumbs = e2e.home / "ThumbDrop" / "thumbnails"
    log_path = e2e.root / "agent-local.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--local", "run"], cwd=REPO, env=e2e.env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        make_image(e2e.home / "ThumbDrop" / "inbox" / "one.jpg", (400, 300))
        wait_for(lambda: (thumbs / "one.jpg").exists(), 90, "the first thumbnail", log_path.read_text)
        wait_for(lambda: "thumbdrop agent running" in log_path.read_text(), 30, "the agent to run", log_path.read_text)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log_path.read_text()
    assert rc == 0, text
    assert "thumbdrop agent stopped" in text, text
    assert [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line] == [], text
