"""Files written slowly, failures of older versions, known-bad files, odd names: a real Agent against moto over HTTP.

A real watchdog observer and real files written with real pauses; the waits poll with generous timeouts.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from PIL import Image
from watchdog.observers import Observer

from agent.cli.main import main
from agent.cloud.clients import Backend
from agent.cloud.dlq import DeadLetter, list_dead_letters
from agent.config.loader import parse_config
from agent.config.model import Config
from agent.pipeline.consumer import REASON_ATTR
from agent.pipeline.watching import reports_close_write
from agent.pipeline.worker import done_since
from agent.service.agent import Agent
from agent.service.control import AgentAlreadyRunningError
from agent.service.runtime import pool_size, queue_urls
from tests.support import wait_for

SETTLE = 0.3
PAUSE = 1.2  # between chunks: four times the settle time


def config_data(tmp_path: Path, moto_url: str) -> dict[str, Any]:
    return {
        "backend": {"endpoint_url": moto_url, "addressing_style": "path", "max_attempts": 2},
        # No periodic rescan: what happens comes from the watcher and the queues.
        "watch": {"folders": [str(tmp_path / "inbox")], "settle_seconds": SETTLE, "rescan_seconds": 0},
        "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        "queues": {"wait_seconds": 1, "visibility_timeout": 30},
        "roles": ["uploader", "worker", "puller"],
    }


def config(tmp_path: Path, moto_url: str) -> Config:
    return parse_config(config_data(tmp_path, moto_url), origin=str(tmp_path / "thumbdrop.yaml"))


@contextmanager
def running_agent(cfg: Config, moto_url: str) -> Iterator[Agent]:
    state = Path(cfg.local.state_dir)
    state.mkdir(mode=0o700, exist_ok=True)
    (Path(cfg.watch.folders[0])).mkdir(parents=True, exist_ok=True)
    agent = Agent(cfg, Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=pool_size(cfg)), state)
    agent.start()
    try:
        assert agent.ready.wait(60), "the agent did not become ready"
        yield agent
    finally:
        agent.stop()


def noise_jpeg(size: tuple[int, int] = (900, 700)) -> bytes:
    """A JPEG of about a megabyte: noise does not compress, so each quarter of it ends inside the scan data."""
    pixels = np.random.default_rng(7).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def small_jpeg(color: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(buf, "JPEG")
    return buf.getvalue()


def drop(path: Path, data: bytes) -> None:
    """Written elsewhere and renamed in: one event, a complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent.parent / f".{path.name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def chunks(data: bytes, n: int = 4) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i : i + step] for i in range(0, len(data), step)]


def thumbnail_of_current_version(agent: Agent, key: str, thumb_key: str) -> bool:
    s3 = agent.backend.s3
    try:
        source = s3.head_object(Bucket=agent.cfg.source.bucket, Key=key)
        thumb = s3.head_object(Bucket=agent.cfg.thumbnails.bucket, Key=thumb_key)
    except s3.exceptions.ClientError:
        return False
    return bool(thumb["Metadata"].get("source-etag") == source["ETag"].strip('"'))


needs_close_events = pytest.mark.skipif(
    not reports_close_write(Observer()), reason="this platform's observer reports no close-write (settle time only)"
)


# --- item 2: a file still open for writing ---------------------------------------------------------------


@needs_close_events
def test_a_file_written_in_chunks_slower_than_the_settle_time_is_uploaded_once(tmp_path: Path, moto_url: str) -> None:
    """scp/SMB/camera FTP on a slow link: one open, chunks PAUSE apart (longer than settle_seconds), one close.
    It used to go up once per chunk, each partial version failing as a truncated image."""
    data = noise_jpeg()
    cfg = config(tmp_path, moto_url)
    with running_agent(cfg, moto_url) as agent:
        path = tmp_path / "inbox" / "slow.jpg"
        with open(path, "wb") as f:
            for chunk in chunks(data):
                f.write(chunk)
                f.flush()
                agent.stop_event.wait(PAUSE)
        wait_for((tmp_path / "thumbs" / "slow.jpg").exists, 90, "the thumbnail of the slowly written file")
        agent.stop_event.wait(2 * PAUSE)  # room for a late second upload, were there one
        snap = agent.status.snapshot()
        assert snap["counts"]["uploaded"] == 1, snap["counts"]
        assert snap["counts"]["failed"] == 0 and snap["failures"] == [], snap["failures"]
        body = agent.backend.s3.get_object(Bucket=cfg.source.bucket, Key="slow.jpg")["Body"].read()
        assert body == data


def test_a_writer_that_reopens_for_each_chunk_gets_no_failure_reported(tmp_path: Path, moto_url: str) -> None:
    """A writer that closes and appends again (a resumed transfer): each settled version goes up, and the truncated
    early ones are tried again later or dropped as superseded, never reported; the last one is thumbnailed."""
    data = noise_jpeg()
    cfg = config(tmp_path, moto_url)
    with running_agent(cfg, moto_url) as agent:
        path = tmp_path / "inbox" / "resumed.jpg"
        for chunk in chunks(data):
            with open(path, "ab") as f:
                f.write(chunk)
            agent.stop_event.wait(PAUSE)
        wait_for(
            lambda: (
                (tmp_path / "thumbs" / "resumed.jpg").exists()
                and thumbnail_of_current_version(agent, "resumed.jpg", "resumed.jpg")
            ),
            90,
            "the thumbnail of the complete file",
        )
        body = agent.backend.s3.get_object(Bucket=cfg.source.bucket, Key="resumed.jpg")["Body"].read()
        assert body == data
        snap = agent.status.snapshot()
        assert snap["counts"]["uploaded"] >= 1
        assert snap["counts"]["failed"] == 0 and snap["failures"] == [], snap["failures"]
        urls = queue_urls(cfg, agent.backend)
        assert urls.events_dlq is not None
        assert list_dead_letters(agent.backend.sqs, urls.events_dlq, queue="events-dlq", max_receives=5) == []


def test_failures_of_an_older_version_go_once_a_newer_one_succeeds(
    tmp_path: Path, moto_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Status (recent failures), the failed count, the journal and 'dlq list' all forget the failure of the
    version a newer one replaced."""
    cfg = config(tmp_path, moto_url)
    cfg_file = tmp_path / "thumbdrop.yaml"
    cfg_file.write_text(yaml.safe_dump(config_data(tmp_path, moto_url)), encoding="utf-8")
    photo = tmp_path / "inbox" / "photo.jpg"
    with running_agent(cfg, moto_url) as agent:
        urls = queue_urls(cfg, agent.backend)
        assert urls.events_dlq is not None
        drop(photo, b"this is not an image at all")
        wait_for(lambda: agent.status.snapshot()["failures"], 60, "the failure of the broken version")
        snap = agent.status.snapshot()
        assert [f["name"] for f in snap["failures"]] == ["photo.jpg"] and snap["counts"]["failed"] == 1
        wait_for(
            lambda: list_dead_letters(agent.backend.sqs, urls.events_dlq, queue="events-dlq", max_receives=5),
            30,
            "the dead-lettered message of the broken version",
        )
        assert [row[0] for row in agent.journal.failures()] == ["photo.jpg"]

        drop(photo, small_jpeg())
        wait_for((tmp_path / "thumbs" / "photo.jpg").exists, 60, "the thumbnail of the fixed version")
        wait_for(lambda: not agent.status.snapshot()["failures"], 30, "the old failure to leave the status")
        snap = agent.status.snapshot()
        assert snap["counts"]["failed"] == 0 and snap["failed_total"] == 1
        assert agent.journal.failures() == []

        removed: list[DeadLetter] = []
        listed = list_dead_letters(
            agent.backend.sqs,
            urls.events_dlq,
            queue="events-dlq",
            max_receives=5,
            done=done_since(cfg, agent.backend),
            removed=removed,
        )
        assert listed == [] and [d.item for d in removed] == ["photo.jpg"]
        # Gone for good, not only left out of one listing.
        assert list_dead_letters(agent.backend.sqs, urls.events_dlq, queue="events-dlq", max_receives=5) == []

        # The CLI does the same: a failure that stays is listed, a stale one goes.
        drop(tmp_path / "inbox" / "broken.jpg", b"still not an image")
        wait_for(
            lambda: list_dead_letters(agent.backend.sqs, urls.events_dlq, queue="events-dlq", max_receives=5),
            60,
            "the dead-lettered message of broken.jpg",
        )
        capsys.readouterr()
        assert main(["-q", "--config", str(cfg_file), "dlq", "list", "--queue", "events"]) == 0
        out = capsys.readouterr().out
        assert "events-dlq: 1 dead-lettered message(s)" in out and "broken.jpg" in out and "photo.jpg" not in out


# --- item 14: known-bad files across restarts of the embedded backend ------------------------------------------


def test_a_known_bad_file_is_not_uploaded_and_reported_again_after_the_backend_comes_back_empty(
    tmp_path: Path, moto_url: str
) -> None:
    """The embedded backend forgets its buckets (and failure markers) at every restart; the journal keeps the
    verdict on the file's content, so an unchanged bad file is listed, not uploaded and reported again."""
    cfg = config(tmp_path, moto_url)
    bad = tmp_path / "inbox" / "bad.jpg"
    with running_agent(cfg, moto_url) as agent:
        drop(bad, b"not an image, and never will be")
        wait_for(lambda: agent.status.snapshot()["failures"], 60, "the first verdict")
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()  # a backend restarted empty

    with running_agent(cfg, moto_url) as agent:
        wait_for(lambda: agent.status.snapshot()["failures"], 60, "the verdict remembered from the journal")
        snap = agent.status.snapshot()
        assert [(f["name"], f["role"]) for f in snap["failures"]] == [("bad.jpg", "worker")]
        # Not uploaded again, and still failing: the count agrees with the list.
        assert snap["counts"]["uploaded"] == 0 and snap["counts"]["failed"] == 1, snap["counts"]
        listed = agent.backend.s3.list_objects_v2(Bucket=cfg.source.bucket).get("Contents", [])
        assert listed == []

        drop(bad, small_jpeg())  # changed: tried again
        wait_for((tmp_path / "thumbs" / "bad.jpg").exists, 60, "the thumbnail of the changed file")
        wait_for(lambda: not agent.status.snapshot()["failures"], 30, "the old verdict to go")
        assert agent.journal.failures() == []


# --- item 5: names that are not UTF-8 -------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_logged_and_listed_escaped(
    tmp_path: Path, moto_url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The journal's UnicodeEncodeError escaped from status.fail(), so the log line after it never ran."""
    cfg = config(tmp_path, moto_url)
    cfg_file = tmp_path / "thumbdrop.yaml"
    cfg_file.write_text(yaml.safe_dump(config_data(tmp_path, moto_url)), encoding="utf-8")
    with running_agent(cfg, moto_url) as agent, caplog.at_level(logging.INFO, logger="agent"):
        inbox = os.fsencode(tmp_path / "inbox")
        with open(inbox + b"/caf\xe9.jpg", "wb") as f:
            f.write(small_jpeg())
        wait_for(
            lambda: any("caf\\xe9.jpg" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records),
            30,
            "the failure's log line",
        )
        snap = agent.status.snapshot()
        assert [f["name"] for f in snap["failures"]] == [f"{tmp_path}/inbox/caf\\xe9.jpg"]
        assert "not valid UTF-8" in snap["failures"][0]["reason"]
        assert [row[0] for row in agent.journal.failures()] == [f"{tmp_path}/inbox/caf\\xe9.jpg"]
        capsys.readouterr()
        assert main(["-q", "--config", str(cfg_file), "status"]) == 0
        out = capsys.readouterr().out
        shown = [line for line in out.splitlines() if "caf" in line]
        assert len(shown) == 1 and shown[0].endswith(f"{tmp_path}/inbox/caf\\xe9.jpg: {snap['failures'][0]['reason']}"), out
    assert not any("\udce9" in r.getMessage() for r in caplog.records)


# --- item 14: logs ------------------------------------------------------------------------------------------------


def test_pause_and_resume_are_logged_and_a_refused_second_agent_does_not_say_it_starts(
    tmp_path: Path, moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, moto_url)
    with running_agent(cfg, moto_url) as agent, caplog.at_level(logging.INFO, logger="agent"):
        agent.pause()
        agent.pause()  # already paused: no second line
        agent.resume()
        lines = [r.getMessage() for r in caplog.records if r.name == "agent.service.agent"]
        assert [line.split(":")[0] for line in lines] == ["paused", "resumed"], lines

        caplog.clear()
        second = Agent(cfg, agent.backend, Path(cfg.local.state_dir))
        with pytest.raises(AgentAlreadyRunningError):
            second.start()
        second.journal.close()
        assert not any("starting" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_sync_and_dlq_list_show_a_name_with_a_newline_on_one_line(
    tmp_path: Path, moto_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config_data(tmp_path, moto_url)
    cfg_file = tmp_path / "thumbdrop.yaml"
    cfg_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    # A name with a control character is refused before the upload (moto would refuse the key with a 404): a
    # failure named by a name with a newline in it, which is what this test needs.
    drop(tmp_path / "inbox" / "bad\nname.jpg", small_jpeg())
    capsys.readouterr()
    assert main(["-q", "--config", str(cfg_file), "sync", "--timeout", "120"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1] == (
        f"  FAILED {tmp_path}/inbox/bad\\nname.jpg: not uploaded: its name contains a control character (\\n), "
        "which S3 tools and stores handle badly; rename the file"
    ), lines
    assert main(["-q", "--config", str(cfg_file), "sync", "--json", "--timeout", "120"]) == 1
    names = [f["name"] for f in json.loads(capsys.readouterr().out)["failures"]]
    assert names == [f"{tmp_path}/inbox/bad\\nname.jpg"]

    cfg = config(tmp_path, moto_url)
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False)
    urls = queue_urls(cfg, backend)
    assert urls.events_dlq is not None
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": cfg.source.bucket}, "object": {"key": "two%0Alines.jpg"}},
    }
    backend.sqs.send_message(
        QueueUrl=urls.events_dlq,
        MessageBody=json.dumps({"Records": [record]}),
        MessageAttributes={REASON_ATTR: {"DataType": "String", "StringValue": "not an image\n(second line)"}},
    )
    assert main(["-q", "--config", str(cfg_file), "dlq", "list", "--queue", "events"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "thumbdrop-events-dlq: 1 dead-lettered message(s)", lines
    assert len(lines) == 2 and lines[1].endswith("two\\nlines.jpg  not an image\\n(second line)"), lines
