"""The Lambda worker: real SQS event payloads (from the S3 events moto put on the events queue) against moto's server."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import yaml
from PIL import Image

from agent.cloud.clients import Backend
from agent.cloud.provision import Provisioner
from agent.config import parse_config
from agent.config.model import Config
from agent.errors import ConfigError
from agent.service import lambda_worker
from agent.service.lambda_worker import LAMBDA_SECTIONS, config_from_env, deploy_steps, handle, lambda_environment

REPO = Path(__file__).resolve().parents[2]


def jpeg(size: tuple[int, int] = (640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def fresh_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lambda_worker, "_cached", None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the worker's /tmp


@pytest.fixture()
def pipeline(moto_url: str) -> tuple[Config, Backend, dict[str, str]]:
    cfg_data = {"backend": {"endpoint_url": moto_url}, "thumbnails": {"sizes": [128, 256]}}
    cfg = parse_config(cfg_data)
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False)
    Provisioner(cfg, backend).setup()
    return cfg, backend, {"THUMBDROP_CONFIG_YAML": yaml.safe_dump(cfg_data)}


def sqs_records(cfg: Config, backend: Backend, expect: int) -> list[dict[str, Any]]:
    """What Lambda's SQS event source hands the function: the queue's messages, in its record format."""
    url = backend.sqs.get_queue_url(QueueName=cfg.queues.events)["QueueUrl"]
    arn = backend.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while len(messages) < expect and time.monotonic() < deadline:
        got = backend.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"], MessageAttributeNames=["All"]
        )
        messages.extend(m for m in got.get("Messages", []) if "s3:TestEvent" not in m["Body"])
    assert len(messages) == expect, messages
    return [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": m.get("MessageAttributes", {}),
            "md5OfBody": hashlib.md5(m["Body"].encode(), usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": "us-east-1",
        }
        for m in messages
    ]


def key_of(record: dict[str, Any]) -> str:
    return unquote_plus(json.loads(record["body"])["Records"][0]["s3"]["object"]["key"])  # keys in S3 events are URL-encoded


def thumb_keys(cfg: Config, backend: Backend) -> set[str]:
    return {o["Key"] for o in backend.s3.list_objects_v2(Bucket=cfg.thumbnails.bucket).get("Contents", [])}


def test_sqs_batch_reports_only_the_bad_record(pipeline: tuple[Config, Backend, dict[str, str]]) -> None:
    cfg, backend, env = pipeline
    backend.s3.put_object(Bucket=cfg.source.bucket, Key="trip/a.jpg", Body=jpeg())
    backend.s3.put_object(Bucket=cfg.source.bucket, Key="trip/b.jpg", Body=jpeg((300, 900)))
    backend.s3.put_object(Bucket=cfg.source.bucket, Key="trip/broken.jpg", Body=b"\xff\xd8 this is not a JPEG")
    records = sqs_records(cfg, backend, 3)
    bad = next(r["messageId"] for r in records if key_of(r) == "trip/broken.jpg")

    assert handle({"Records": records}, None, env=env) == {"batchItemFailures": [{"itemIdentifier": bad}]}

    thumbs = thumb_keys(cfg, backend)
    assert {"128/trip/a.jpg", "256/trip/a.jpg", "128/trip/b.jpg", "256/trip/b.jpg"} <= thumbs
    assert ".thumbdrop-failed/trip/broken.jpg.json" in thumbs  # the verdict, so a redelivery fails fast
    with Image.open(io.BytesIO(backend.s3.get_object(Bucket=cfg.thumbnails.bucket, Key="256/trip/b.jpg")["Body"].read())) as im:
        assert im.size == (85, 256)
    # Redelivered (SQS retries what was reported): the good ones are skipped, the bad one fails again.
    assert handle({"Records": records}, None, env=env) == {"batchItemFailures": [{"itemIdentifier": bad}]}


def test_backend_failure_is_reported_for_retry(pipeline: tuple[Config, Backend, dict[str, str]]) -> None:
    cfg, backend, env = pipeline
    backend.s3.put_object(Bucket=cfg.source.bucket, Key="c.jpg", Body=jpeg())
    records = sqs_records(cfg, backend, 1)
    # The thumbnail bucket is gone: not this image's fault, so it comes back as a failure to retry.
    backend.s3.delete_bucket(Bucket=cfg.thumbnails.bucket)
    assert handle({"Records": records}, None, env=env) == {"batchItemFailures": [{"itemIdentifier": records[0]["messageId"]}]}


def test_direct_s3_trigger(pipeline: tuple[Config, Backend, dict[str, str]]) -> None:
    cfg, backend, env = pipeline
    backend.s3.put_object(Bucket=cfg.source.bucket, Key="direct.jpg", Body=jpeg())
    event = json.loads(sqs_records(cfg, backend, 1)[0]["body"])  # the S3 event itself, as S3 invokes a function
    assert handle(event, None, env=env) == {"processed": 1, "failed": []}
    assert "256/direct.jpg" in thumb_keys(cfg, backend)


def test_packaged_handler(pipeline: tuple[Config, Backend, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, backend, env = pipeline
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("thumbdrop_lambda_handler", REPO / "packaging/lambda/handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    backend.s3.put_object(Bucket=cfg.source.bucket, Key="d.jpg", Body=jpeg())
    assert module.handler({"Records": sqs_records(cfg, backend, 1)}, None) == {"batchItemFailures": []}
    assert "128/d.jpg" in thumb_keys(cfg, backend)


def test_config_from_individual_variables() -> None:
    cfg = config_from_env(
        {
            "THUMBDROP_SOURCE_BUCKET": "photos",
            "THUMBDROP_SOURCE_PREFIX": "originals/",
            "THUMBDROP_THUMBNAILS_BUCKET": "photos",
            "THUMBDROP_THUMBNAILS_PREFIX": "thumbs/",
            "THUMBDROP_THUMBNAILS_SIZES": "256,1024",
            "THUMBDROP_THUMBNAILS_QUALITY": "80",
            "THUMBDROP_QUEUES_MAX_RECEIVES": "3",
            "AWS_REGION": "eu-west-1",
            "HOME": "/home/sbx",
        }
    )
    assert (cfg.source.bucket, cfg.source.prefix, cfg.thumbnails.prefix) == ("photos", "originals/", "thumbs/")
    assert cfg.thumbnails.sizes == [256, 1024] and cfg.thumbnails.quality == 80 and cfg.queues.max_receives == 3
    assert cfg.backend.endpoint_url is None  # AWS, not the embedded backend
    assert cfg.backend.region == "eu-west-1"
    assert cfg.roles == ["worker"]


def test_config_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_env({"THUMBDROP_NOPE_X": "1"})
    assert "THUMBDROP_NOPE_X" in err.value.problems[0]
    with pytest.raises(ConfigError) as err:
        config_from_env({"THUMBDROP_THUMBNAILS_QUALITY": "200", "THUMBDROP_CONFIG_YAML": "queues: {max_receives: 0}"})
    assert sorted(err.value.problems) == [
        "queues.max_receives: must be between 1 and 1000, got 0",
        "thumbnails.quality: must be between 1 and 100, got 200",
    ]


def test_not_a_known_event() -> None:
    with pytest.raises(ValueError, match="not an SQS, SNS or S3 event"):
        handle({"hello": "world"}, None, env={"THUMBDROP_SOURCE_BUCKET": "photos"})


def test_setup_prints_the_deployment_steps() -> None:
    cfg = parse_config({"source": {"prefix": "in/"}, "thumbnails": {"sizes": [128, 512]}})
    text = deploy_steps(cfg, events_queue_arn="arn:aws:sqs:us-east-1:111122223333:thumbdrop-events")
    assert "--function-response-types ReportBatchItemFailures" in text
    assert "arn:aws:sqs:us-east-1:111122223333:thumbdrop-events" in text
    assert '"Resource": "arn:aws:s3:::thumbdrop-source/in/*"' in text
    assert '"THUMBDROP_THUMBNAILS_SIZES": "[128, 512]"' in text
    assert json.dumps({"Variables": lambda_environment(cfg)}, indent=2).replace("\n", "\n     ") in text
    assert "packaging/lambda/build.sh" in text


# --- the Lambda makes the same thumbnails as the agents (issue 14, item 7) ------------------------------------


def example_config(moto_url: str | None = None) -> dict[str, Any]:
    """Every key of the sections the Lambda shares set to its schema example (not its default)."""
    import dataclasses

    data: dict[str, Any] = {}
    for section in LAMBDA_SECTIONS:
        for f in dataclasses.fields(getattr(Config(), section)):
            if f.metadata.get("example") is not None:
                data.setdefault(section, {})[f.name] = f.metadata["example"]
    data["thumbnails"]["prefix"] = "thumbs/"  # same bucket as the sources in the examples: prefixes must differ
    data["source"]["prefix"] = "originals/"
    if moto_url:
        data["backend"] = {"endpoint_url": moto_url}
    return data


@pytest.mark.parametrize("changed", [False, True], ids=["defaults", "every-key-changed"])
def test_lambda_environment_carries_every_shared_key(changed: bool) -> None:
    import dataclasses

    cfg = parse_config(example_config() if changed else {})
    env = lambda_environment(cfg)
    back = config_from_env(env)
    for section in LAMBDA_SECTIONS:
        assert dataclasses.asdict(getattr(back, section)) == dataclasses.asdict(getattr(cfg, section)), section
        names = {f"THUMBDROP_{section}_{f.name}".upper() for f in dataclasses.fields(getattr(cfg, section))}
        assert names <= set(env), f"not passed to the Lambda: {sorted(names - set(env))}"
    # The keys the issue named, which 'setup --worker lambda' used to leave out:
    for key in ("BACKGROUND", "PROGRESSIVE", "MAX_PIXELS", "ENGINE"):
        assert f"THUMBDROP_THUMBNAILS_{key}" in env
    if changed:
        assert (back.thumbnails.progressive, back.thumbnails.background) == (True, "#000000")


def test_agent_and_lambda_make_byte_identical_thumbnails(moto_url: str, tmp_path: Path) -> None:
    from agent.pipeline.worker import ThumbnailWorker
    from agent.state.status import Status

    data = {
        "backend": {"endpoint_url": moto_url},
        "thumbnails": {"sizes": [96, 200], "quality": 70, "progressive": True, "background": "#203040", "max_pixels": 5_000_000},
    }
    cfg = parse_config(data)
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False)
    Provisioner(cfg, backend).setup()
    # Transparent pixels, so the background colour shows in the output.
    image = Image.new("RGBA", (640, 400), (200, 40, 40, 255))
    image.paste((0, 0, 0, 0), (0, 0, 320, 400))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    backend.s3.put_object(Bucket=cfg.source.bucket, Key="trip/a.png", Body=buf.getvalue())
    event = json.loads(sqs_records(cfg, backend, 1)[0]["body"])
    keys = ["96/trip/a.png.jpg", "200/trip/a.png.jpg"]

    def made() -> dict[str, bytes]:
        out = {k: backend.s3.get_object(Bucket=cfg.thumbnails.bucket, Key=k)["Body"].read() for k in keys}
        for k in keys:
            backend.s3.delete_object(Bucket=cfg.thumbnails.bucket, Key=k)
        return out

    worker = ThumbnailWorker(cfg, backend, Status(["worker"]), tmp_path / "agent-tmp")
    try:
        assert worker.process("trip/a.png") == "thumbnailed"
    finally:
        worker.close()
    by_agent = made()
    env = {**lambda_environment(cfg), "AWS_ENDPOINT_URL": moto_url}
    assert handle(event, None, env=env) == {"processed": 1, "failed": []}
    by_lambda = made()
    assert by_agent == by_lambda
    with Image.open(io.BytesIO(by_lambda["200/trip/a.png.jpg"])) as im:
        assert im.info.get("progressive") and im.getpixel((10, 10)) == pytest.approx((0x20, 0x30, 0x40), abs=6)


def test_lambda_makes_a_video_poster_and_waits_for_its_preview(moto_url: str, tmp_path: Path) -> None:
    from tests.clips import make_clip

    cfg_data = {"backend": {"endpoint_url": moto_url}, "video": {"preview": True}}
    cfg = parse_config(cfg_data)
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False)
    Provisioner(cfg, backend).setup()
    clip = make_clip(tmp_path / "c.mov", "libx264", size=(96, 64))
    backend.s3.upload_file(str(clip), cfg.source.bucket, "phone/c.mov")
    result = handle({"Records": sqs_records(cfg, backend, 1)}, env={"THUMBDROP_CONFIG_YAML": yaml.safe_dump(cfg_data)})
    assert result == {"batchItemFailures": []}
    keys = {o["Key"] for o in backend.s3.list_objects_v2(Bucket=cfg.thumbnails.bucket).get("Contents", [])}
    assert keys == {"phone/c.mov.jpg", "phone/c.mov.mp4"}  # the preview is there when the invocation returns
    assert "THUMBDROP_VIDEO_PREVIEW" in deploy_steps(cfg, events_queue_arn="arn:aws:sqs:us-east-1:1:q")
