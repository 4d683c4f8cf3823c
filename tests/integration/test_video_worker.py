"""Videos through ThumbnailWorker and QueueConsumer, against the moto server over HTTP."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.errors import ItemError
from agent.pipeline.consumer import REASON_ATTR
from tests.clips import make_audio_only, make_clip
from tests.integration.test_worker_puller import Stack, consuming, jpeg, make_stack
from tests.support import wait_for


@pytest.fixture()
def vstack(moto_url: str, tmp_path: Path) -> Stack:
    return make_stack(moto_url, tmp_path, {"video": {"preview": True, "preview_height": 144}})


def put(stack: Stack, key: str, path: Path) -> None:
    stack.s3.upload_file(str(path), stack.cfg.source.bucket, key)


def meta(stack: Stack, key: str) -> dict[str, Any]:
    return stack.s3.head_object(Bucket=stack.cfg.thumbnails.bucket, Key=key)


def test_video_gets_poster_and_preview_and_its_temp_files_go(vstack: Stack) -> None:
    clip = make_clip(vstack.root / "c.mov", "mpeg4", size=(240, 160), rotation=90, audio=True, seconds=1.0)
    put(vstack, "trip/IMG_0001.MOV", clip)
    worker = vstack.worker()
    with consuming(vstack, vstack.urls.events, vstack.urls.events_dlq, worker.handle_message) as consumer:
        wait_for(lambda: consumer.outcome.ok >= 1, 60, "the video job")
    worker.close()
    assert vstack.thumb_keys() == {"trip/IMG_0001.MOV.jpg", "trip/IMG_0001.MOV.mp4"}
    body = vstack.s3.get_object(Bucket=vstack.cfg.thumbnails.bucket, Key="trip/IMG_0001.MOV.jpg")["Body"].read()
    with Image.open(io.BytesIO(body)) as im:
        assert im.size == (160, 240)  # upright: the phone's portrait
    preview = meta(vstack, "trip/IMG_0001.MOV.mp4")
    assert preview["ContentType"] == "video/mp4"
    etag = vstack.s3.head_object(Bucket=vstack.cfg.source.bucket, Key="trip/IMG_0001.MOV")["ETag"].strip('"')
    assert preview["Metadata"]["source-etag"] == etag
    assert vstack.status.counts["thumbnailed"] == 1 and vstack.status.counts["previewed"] == 1
    assert not list((vstack.root / "work").rglob("*.*"))  # the downloaded source and the encode are gone
    # A redelivery is a cheap skip: both outputs carry this ETag.
    assert worker.process("trip/IMG_0001.MOV") == "skipped"
    assert worker.pending() == (set(), set())


def test_images_do_not_wait_behind_a_preview(vstack: Stack) -> None:
    """A preview blocked in its pool holds no job slot: an image sent after it is thumbnailed meanwhile."""
    release = threading.Event()
    worker = vstack.worker()
    real = worker._preview

    def slow_preview(job: Any) -> None:
        assert release.wait(60)
        real(job)

    worker._preview = slow_preview  # type: ignore[method-assign]
    put(vstack, "v.mp4", make_clip(vstack.root / "v.mp4", "libx264"))
    with consuming(vstack, vstack.urls.events, vstack.urls.events_dlq, worker.handle_message, concurrency=1) as consumer:
        wait_for(lambda: "v.mp4.jpg" in vstack.thumb_keys(), 30, "the poster")
        vstack.s3.put_object(Bucket=vstack.cfg.source.bucket, Key="photo.jpg", Body=jpeg())
        wait_for(lambda: "photo.jpg" in vstack.thumb_keys(), 30, "the image while the preview waits")
        assert "v.mp4.mp4" not in vstack.thumb_keys()
        assert consumer.outcome.ok == 1  # the image; the video's message is still in flight
        assert worker.pending() == ({"v.mp4"}, set())  # a poster without its preview is not done
        release.set()
        wait_for(lambda: consumer.outcome.ok == 2, 60, "the preview")
    worker.close()
    assert vstack.thumb_keys() == {"v.mp4.jpg", "v.mp4.mp4", "photo.jpg"}


def test_a_second_event_during_the_preview_does_not_encode_it_again(vstack: Stack) -> None:
    """moto sends two events for a multipart upload (and SQS redelivers): one preview, both messages wait for it."""
    release = threading.Event()
    encodes: list[str] = []
    worker = vstack.worker()
    real = worker._preview

    def counted(job: Any) -> None:
        encodes.append(job.rel)
        assert release.wait(60)
        real(job)

    worker._preview = counted  # type: ignore[method-assign]
    put(vstack, "twice.mov", make_clip(vstack.root / "twice.mov", "libx264"))
    (event,) = vstack.receive(vstack.urls.events, expect=1)
    first = worker.handle_message(event)
    second = worker.handle_message(event)
    assert first is not None and second is not None
    release.set()
    first.result(timeout=60)
    second.result(timeout=60)
    worker.close()
    assert encodes == ["twice.mov"]  # was: encoded (and downloaded) twice
    assert {"twice.mov.jpg", "twice.mov.mp4"} <= vstack.thumb_keys()


def test_the_heartbeat_keeps_a_long_preview_from_being_redelivered(vstack: Stack) -> None:
    """A preview longer than the visibility timeout (10 s): its message stays hidden until it is done."""
    calls: list[str] = []
    worker = vstack.worker()
    real = worker._preview

    def slow_preview(job: Any) -> None:
        time.sleep(14)
        real(job)

    worker._preview = slow_preview  # type: ignore[method-assign]

    def handle(msg: dict[str, Any]) -> Any:
        calls.append(msg["MessageId"])
        return worker.handle_message(msg)

    put(vstack, "slow.mp4", make_clip(vstack.root / "slow.mp4", "libx264"))
    with consuming(vstack, vstack.urls.events, vstack.urls.events_dlq, handle, visibility=10) as consumer:
        wait_for(lambda: "slow.mp4.jpg" in vstack.thumb_keys(), 30, "the poster")
        time.sleep(11)  # past the visibility timeout; the preview sleeps 14 s
        assert vstack.depth(vstack.urls.events) == (0, 1)  # in flight: neither deleted early nor visible again
        wait_for(lambda: consumer.outcome.ok >= 1, 60, "the slow preview")
        time.sleep(1.5)
    worker.close()
    assert len(calls) == 1, calls  # never handed out a second time while the preview ran
    assert {"slow.mp4.jpg", "slow.mp4.mp4"} <= vstack.thumb_keys()


def test_bad_videos_are_dead_lettered_at_once_with_a_reason_naming_the_file(vstack: Stack) -> None:
    root = vstack.root
    good = make_clip(root / "good.mp4", "libx264")
    cut = root / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (root / "noise.mov").write_bytes(bytes(range(256)) * 64)
    make_audio_only(root / "voice.mp4")
    for name in ("cut.mp4", "noise.mov", "voice.mp4", "good.mp4"):
        put(vstack, f"bad/{name}", root / name)
    worker = vstack.worker()
    with consuming(vstack, vstack.urls.events, vstack.urls.events_dlq, worker.handle_message) as consumer:
        wait_for(lambda: consumer.outcome.dead_lettered >= 3 and consumer.outcome.ok >= 1, 60, "all four")
    worker.close()
    assert consumer.outcome.retried == 0
    dead = vstack.receive(vstack.urls.events_dlq, expect=3)
    reasons = {m["MessageAttributes"][REASON_ATTR]["StringValue"] for m in dead}
    assert any("truncated video" in r for r in reasons), reasons
    assert any("not a video" in r for r in reasons), reasons
    assert any("audio only" in r for r in reasons), reasons
    failed = {f.name: f.reason for f in vstack.status.failures}
    assert set(failed) == {"bad/cut.mp4", "bad/noise.mov", "bad/voice.mp4"}
    assert {"bad/good.mp4.jpg", "bad/good.mp4.mp4"} <= vstack.thumb_keys()
    # The verdict is remembered: the same content is not decoded again.
    with pytest.raises(ItemError, match="audio only"):
        worker.process("bad/voice.mp4")


def test_preview_refused_for_a_long_source_keeps_the_poster(moto_url: str, tmp_path: Path) -> None:
    stack = make_stack(moto_url, tmp_path, {"video": {"preview": True, "max_seconds": 1}})
    put(stack, "long.mp4", make_clip(tmp_path / "long.mp4", "libx264", seconds=2.5))
    worker = stack.worker()
    with pytest.raises(ItemError, match=r"over video.max_seconds \(1 s\)"):
        worker.process("long.mp4")
    worker.close()
    assert "long.mp4.jpg" in stack.thumb_keys()
    assert "long.mp4.mp4" not in stack.thumb_keys()
    assert worker.pending() == (set(), {"long.mp4"})  # reported by name, with the reason in its marker


def test_without_pyav_videos_fail_with_the_install_hint(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = make_stack(moto_url, tmp_path)
    from agent.imaging import video

    monkeypatch.setattr(video, "av", None)
    put(stack, "a.mov", make_clip(stack.root / "a.mov", "libx264"))
    worker = stack.worker()
    with pytest.raises(ItemError, match=r"pip install 'thumbdrop\[video\]'"):
        worker.process("a.mov")
    monkeypatch.undo()  # installed now: the marker does not stand in the way
    assert worker.process("a.mov") == "thumbnailed"
    worker.close()


def test_a_video_that_would_not_fit_in_the_state_dir_waits(vstack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    from agent.errors import TransientError

    put(vstack, "big/clip.mov", make_clip(vstack.root / "clip.mov", "libx264"))
    worker = vstack.worker()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(1 << 30, (1 << 30) - (10 << 20), 10 << 20))
    with pytest.raises(TransientError, match=r"not enough free space in .* for big/clip.mov"):
        worker.process("big/clip.mov")
    assert not list((vstack.root / "work").rglob("*.*"))  # nothing downloaded
    monkeypatch.undo()
    assert worker.process("big/clip.mov") == "thumbnailed"
    worker.close()
