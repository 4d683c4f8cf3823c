"""setup / teardown against a moto server over HTTP, and the CLI's setup command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.clients import Backend
from agent.cloud.events import parse_body
from agent.cloud.provision import MAX_MESSAGE_SIZE, TAG_KEY, TAG_VALUE, Provisioner, Report, dlq_name
from agent.config import parse_config
from agent.config.model import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
THUMBDROP_TAG = {TAG_KEY: TAG_VALUE}


def make_config(url: str, **sections: Any) -> Config:
    backend = {"endpoint_url": url, "addressing_style": "path", "max_attempts": 2, **sections.pop("backend", {})}
    return parse_config({"backend": backend, **sections})


def make_backend(cfg: Config, url: str) -> Backend:
    return Backend(cfg.backend, endpoint_url=url, local=False)


def setup(cfg: Config, backend: Backend, *, dry_run: bool = False) -> Report:
    return Provisioner(cfg, backend, dry_run=dry_run).setup()


def verbs(report: Report) -> set[str]:
    return {c.verb for c in report.changes}


def whats(report: Report, verb: str) -> list[str]:
    return [c.what for c in report.changes if c.verb == verb]


def queue_url(backend: Backend, name: str) -> str:
    return str(backend.sqs.get_queue_url(QueueName=name)["QueueUrl"])


def queue_attrs(backend: Backend, name: str) -> dict[str, str]:
    out = backend.sqs.get_queue_attributes(QueueUrl=queue_url(backend, name), AttributeNames=["All"])
    return dict(out["Attributes"])


def notifications(backend: Backend, bucket: str) -> dict[str, list[dict[str, Any]]]:
    out = backend.s3.get_bucket_notification_configuration(Bucket=bucket)
    return {k: v for k, v in out.items() if k.endswith("Configurations")}


def prefix_filter(entry: dict[str, Any]) -> str | None:
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    values = [r["Value"] for r in rules if r["Name"].lower() == "prefix"]
    return values[0] if values else None


def receive_events(backend: Backend, queue: str, *, want: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Message bodies (parsed JSON) from ``queue`` other than s3:TestEvents, until ``want`` or timeout."""
    url = queue_url(backend, queue)
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        out = backend.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for msg in out.get("Messages", []):
            backend.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
            doc = json.loads(msg["Body"])
            inner = json.loads(doc["Message"]) if doc.get("Type") == "Notification" else doc
            if inner.get("Event") == "s3:TestEvent":
                continue
            got.append(doc)
    return got


def assert_nothing_more(backend: Backend, queue: str) -> None:
    """moto delivers during the PUT, so anything that was sent is there already."""
    url = queue_url(backend, queue)
    out = backend.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert out.get("Messages", []) == [], f"unexpected message(s) on {queue}"


def event_keys(docs: list[dict[str, Any]]) -> list[str]:
    return [e.key for doc in docs for e in parse_body(json.dumps(doc))]


def drain_test_events(backend: Backend, queue: str) -> None:
    url = queue_url(backend, queue)
    for _ in range(3):
        out = backend.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        msgs = out.get("Messages", [])
        for msg in msgs:
            backend.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
        if not msgs:
            return


# --- direct mode -----------------------------------------------------------------------------------------


def test_setup_direct_creates_everything(moto_url: str) -> None:
    cfg = make_config(moto_url, queues={"max_receives": 3, "visibility_timeout": 60})
    backend = make_backend(cfg, moto_url)
    report = setup(cfg, backend)
    assert report.changed
    assert "create" in verbs(report)

    buckets = {b["Name"] for b in backend.s3.list_buckets()["Buckets"]}
    assert buckets == {"thumbdrop-source", "thumbdrop-thumbnails"}
    for bucket in buckets:
        tags = backend.s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
        assert {"Key": TAG_KEY, "Value": TAG_VALUE} in tags

    queues = {u.rsplit("/", 1)[-1] for u in backend.sqs.list_queues().get("QueueUrls", [])}
    assert queues == {"thumbdrop-events", "thumbdrop-events-dlq", "thumbdrop-pull", "thumbdrop-pull-dlq"}

    for queue, bucket in (("thumbdrop-events", "thumbdrop-source"), ("thumbdrop-pull", "thumbdrop-thumbnails")):
        attrs = queue_attrs(backend, queue)
        dlq_attrs = queue_attrs(backend, dlq_name(queue))
        redrive = json.loads(attrs["RedrivePolicy"])
        assert int(redrive["maxReceiveCount"]) == 3
        assert redrive["deadLetterTargetArn"] == dlq_attrs["QueueArn"]
        assert "RedrivePolicy" not in dlq_attrs
        assert attrs["MaximumMessageSize"] == str(MAX_MESSAGE_SIZE) == "262144"
        assert dlq_attrs["MaximumMessageSize"] == "262144"
        assert attrs["VisibilityTimeout"] == "60"
        tags = backend.sqs.list_queue_tags(QueueUrl=queue_url(backend, queue)).get("Tags", {})
        assert tags.get(TAG_KEY) == TAG_VALUE

        policy = json.loads(attrs["Policy"])
        (statement,) = policy["Statement"]
        assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Resource"] == attrs["QueueArn"]
        assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == f"arn:aws:s3:::{bucket}"

        conf = notifications(backend, bucket)
        assert "TopicConfigurations" not in conf
        (entry,) = conf["QueueConfigurations"]
        assert entry["QueueArn"] == attrs["QueueArn"]
        assert entry["Events"] == ["s3:ObjectCreated:*"]
        assert entry["Id"].startswith("thumbdrop-")


def test_setup_with_prefixes_sets_prefix_filters(moto_url: str) -> None:
    cfg = make_config(moto_url, source={"prefix": "originals/"}, thumbnails={"prefix": "thumbs/"})
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    (src,) = notifications(backend, "thumbdrop-source")["QueueConfigurations"]
    (thumb,) = notifications(backend, "thumbdrop-thumbnails")["QueueConfigurations"]
    assert prefix_filter(src) == "originals/"
    assert prefix_filter(thumb) == "thumbs/"


def test_setup_is_idempotent(moto_url: str) -> None:
    cfg = make_config(moto_url)
    backend = make_backend(cfg, moto_url)
    assert setup(cfg, backend).changed
    before = notifications(backend, "thumbdrop-source")
    again = setup(cfg, make_backend(cfg, moto_url))
    assert again.changed is False
    assert verbs(again) <= {"ok", "keep"}
    assert len(again.changes) >= 10
    assert notifications(backend, "thumbdrop-source") == before


def test_setup_repairs_a_changed_queue(moto_url: str) -> None:
    cfg = make_config(moto_url, queues={"max_receives": 4})
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    url = queue_url(backend, "thumbdrop-events")
    backend.sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "30"})
    report = setup(cfg, backend)
    assert any(w.startswith("queue thumbdrop-events:") and "VisibilityTimeout" in w for w in whats(report, "update"))
    assert queue_attrs(backend, "thumbdrop-events")["VisibilityTimeout"] == "120"
    assert setup(cfg, backend).changed is False


def test_events_flow_direct(moto_url: str) -> None:
    cfg = make_config(moto_url)
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    backend.s3.put_object(Bucket="thumbdrop-source", Key="trip/my photo.jpg", Body=b"jpeg")
    backend.s3.put_object(Bucket="thumbdrop-thumbnails", Key="trip/my photo.jpg", Body=b"thumb")
    (doc,) = receive_events(backend, "thumbdrop-events")
    assert "Records" in doc and "Type" not in doc
    (event,) = parse_body(json.dumps(doc))
    assert (event.bucket, event.key) == ("thumbdrop-source", "trip/my photo.jpg")
    assert event.created
    (pull,) = receive_events(backend, "thumbdrop-pull")
    assert [(e.bucket, e.key) for e in parse_body(json.dumps(pull))] == [("thumbdrop-thumbnails", "trip/my photo.jpg")]


# --- SNS mode ----------------------------------------------------------------------------------------------------


def topic_arns(backend: Backend) -> dict[str, str]:
    return {t["TopicArn"].rsplit(":", 1)[-1]: t["TopicArn"] for t in backend.sns.list_topics()["Topics"]}


def test_setup_sns_mode(moto_url: str) -> None:
    cfg = make_config(moto_url, queues={"via_sns": True, "events_topic": "ev-topic", "pull_topic": "pull-topic"})
    backend = make_backend(cfg, moto_url)
    report = setup(cfg, backend)
    assert "topic ev-topic" in whats(report, "create")

    topics = topic_arns(backend)
    assert set(topics) == {"ev-topic", "pull-topic"}
    for topic, queue, bucket in (
        ("ev-topic", "thumbdrop-events", "thumbdrop-source"),
        ("pull-topic", "thumbdrop-pull", "thumbdrop-thumbnails"),
    ):
        arn = topics[topic]
        tags = backend.sns.list_tags_for_resource(ResourceArn=arn)["Tags"]
        assert {"Key": TAG_KEY, "Value": TAG_VALUE} in tags
        attrs = queue_attrs(backend, queue)
        subs = backend.sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
        assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("sqs", attrs["QueueArn"])]
        policy = json.loads(attrs["Policy"])
        assert [s["Principal"] for s in policy["Statement"]] == [{"Service": "sns.amazonaws.com"}]
        assert policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"] == arn
        topic_policy = json.loads(backend.sns.get_topic_attributes(TopicArn=arn)["Attributes"]["Policy"])
        ours = [s for s in topic_policy["Statement"] if s.get("Sid") == "thumbdrop-s3"]
        assert len(ours) == 1
        assert ours[0]["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{bucket}"
        conf = notifications(backend, bucket)
        assert "QueueConfigurations" not in conf
        (entry,) = conf["TopicConfigurations"]
        assert entry["TopicArn"] == arn

    again = setup(cfg, backend)
    assert again.changed is False, [str(c) for c in again.changes if c.verb not in ("ok", "keep")]
    assert len(backend.sns.list_subscriptions()["Subscriptions"]) == 2


def test_sns_event_arrives_wrapped(moto_url: str) -> None:
    cfg = make_config(moto_url, queues={"via_sns": True})
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    backend.s3.put_object(Bucket="thumbdrop-source", Key="a+b/c.png", Body=b"png")
    (doc,) = receive_events(backend, "thumbdrop-events")
    assert doc["Type"] == "Notification"
    assert doc["TopicArn"].endswith(":thumbdrop-events")
    assert event_keys([doc]) == ["a+b/c.png"]
    backend.s3.put_object(Bucket="thumbdrop-thumbnails", Key="c.png.jpg", Body=b"jpg")
    pulls = receive_events(backend, "thumbdrop-pull")
    assert pulls[0]["Type"] == "Notification"
    assert event_keys(pulls) == ["c.png.jpg"]


def test_switch_direct_to_sns(moto_url: str) -> None:
    direct = make_config(moto_url)
    backend = make_backend(direct, moto_url)
    setup(direct, backend)
    assert "QueueConfigurations" in notifications(backend, "thumbdrop-source")

    via_sns = make_config(moto_url, queues={"via_sns": True})
    report = setup(via_sns, backend)
    assert "notifications on bucket thumbdrop-source" in whats(report, "update")
    for bucket in ("thumbdrop-source", "thumbdrop-thumbnails"):
        conf = notifications(backend, bucket)
        assert not [e for e in conf.get("QueueConfigurations", []) if e["Id"].startswith("thumbdrop-")]
        assert len(conf["TopicConfigurations"]) == 1

    drain_test_events(backend, "thumbdrop-events")
    backend.s3.put_object(Bucket="thumbdrop-source", Key="after-switch.jpg", Body=b"x")
    docs = receive_events(backend, "thumbdrop-events")
    assert docs[0]["Type"] == "Notification"
    assert event_keys(docs) == ["after-switch.jpg"]
    assert_nothing_more(backend, "thumbdrop-events")  # through SNS only, not also directly
    assert setup(via_sns, backend).changed is False


# --- foreign notifications, shared buckets ---------------------------------------------------------------------


def test_foreign_notification_survives_setup_and_teardown(moto_url: str) -> None:
    cfg = make_config(moto_url)
    backend = make_backend(cfg, moto_url)
    backend.s3.create_bucket(Bucket="thumbdrop-source")  # the user's own bucket: not tagged
    other_url = backend.sqs.create_queue(QueueName="someone-else-queue")["QueueUrl"]
    other_arn = backend.sqs.get_queue_attributes(QueueUrl=other_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    foreign = {"Id": "someone-else", "QueueArn": other_arn, "Events": ["s3:ObjectRemoved:*"]}
    backend.s3.put_bucket_notification_configuration(
        Bucket="thumbdrop-source", NotificationConfiguration={"QueueConfigurations": [foreign]}
    )

    report = setup(cfg, backend)
    assert "bucket thumbdrop-source" in whats(report, "ok")
    assert any("did not create" in w for w in whats(report, "keep"))
    ids = {e["Id"] for e in notifications(backend, "thumbdrop-source")["QueueConfigurations"]}
    assert "someone-else" in ids and len(ids) == 2
    assert setup(cfg, backend).changed is False

    down = Provisioner(cfg, backend).teardown()
    assert "thumbdrop notifications on bucket thumbdrop-source" in whats(down, "delete")
    assert "bucket thumbdrop-source (not created by thumbdrop)" in whats(down, "keep")
    (entry,) = notifications(backend, "thumbdrop-source")["QueueConfigurations"]
    assert entry["Id"] == "someone-else"
    assert entry["QueueArn"] == other_arn
    queues = {u.rsplit("/", 1)[-1] for u in backend.sqs.list_queues().get("QueueUrls", [])}
    assert queues == {"someone-else-queue"}


def test_shared_bucket_with_disjoint_prefixes(moto_url: str) -> None:
    cfg = make_config(
        moto_url,
        source={"bucket": "shared-photos", "prefix": "originals/"},
        thumbnails={"bucket": "shared-photos", "prefix": "thumbs/"},
    )
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    assert [b["Name"] for b in backend.s3.list_buckets()["Buckets"]] == ["shared-photos"]
    entries = notifications(backend, "shared-photos")["QueueConfigurations"]
    assert len(entries) == 2
    by_queue = {e["QueueArn"].rsplit(":", 1)[-1]: prefix_filter(e) for e in entries}
    assert by_queue == {"thumbdrop-events": "originals/", "thumbdrop-pull": "thumbs/"}
    assert setup(cfg, backend).changed is False

    for queue in ("thumbdrop-events", "thumbdrop-pull"):
        drain_test_events(backend, queue)
    backend.s3.put_object(Bucket="shared-photos", Key="thumbs/t.jpg", Body=b"t")
    backend.s3.put_object(Bucket="shared-photos", Key="originals/o.jpg", Body=b"o")
    backend.s3.put_object(Bucket="shared-photos", Key="elsewhere/x.jpg", Body=b"x")
    assert event_keys(receive_events(backend, "thumbdrop-events")) == ["originals/o.jpg"]
    assert event_keys(receive_events(backend, "thumbdrop-pull")) == ["thumbs/t.jpg"]
    assert_nothing_more(backend, "thumbdrop-events")
    assert_nothing_more(backend, "thumbdrop-pull")


# --- dry run --------------------------------------------------------------------------------------------------------


def test_dry_run_changes_nothing(moto_url: str) -> None:
    cfg = make_config(moto_url, queues={"via_sns": True})
    backend = make_backend(cfg, moto_url)
    report = setup(cfg, backend, dry_run=True)
    assert report.dry_run and report.changed
    created = whats(report, "create")
    for what in (
        "bucket thumbdrop-source",
        "bucket thumbdrop-thumbnails",
        "topic thumbdrop-events",
        "notifications on bucket thumbdrop-source",
    ):
        assert what in created
    assert any(w.startswith("queue thumbdrop-events-dlq") for w in created)
    assert any(w.startswith("queue thumbdrop-pull ") for w in created)
    assert backend.s3.list_buckets()["Buckets"] == []
    assert backend.sqs.list_queues().get("QueueUrls", []) == []
    assert backend.sns.list_topics()["Topics"] == []


def test_dry_run_after_setup_reports_no_changes(moto_url: str) -> None:
    cfg = make_config(moto_url)
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    changed = make_config(moto_url, queues={"max_receives": 9})
    report = setup(changed, backend, dry_run=True)
    assert any(w.startswith("queue thumbdrop-events:") and "RedrivePolicy" in w for w in whats(report, "update"))
    redrive = json.loads(queue_attrs(backend, "thumbdrop-events")["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 5


# --- teardown -------------------------------------------------------------------------------------------------------


def test_teardown_removes_what_setup_created(moto_url: str) -> None:
    cfg = make_config(moto_url, queues={"via_sns": True})
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    plan = Provisioner(cfg, backend, dry_run=True).teardown()
    assert "bucket thumbdrop-source" in whats(plan, "delete")
    assert len(backend.s3.list_buckets()["Buckets"]) == 2  # a dry run removes nothing

    report = Provisioner(cfg, backend).teardown()
    deleted = whats(report, "delete")
    for what in ("queue thumbdrop-events", "queue thumbdrop-pull-dlq", "topic thumbdrop-pull", "bucket thumbdrop-thumbnails"):
        assert what in deleted
    assert backend.s3.list_buckets()["Buckets"] == []
    assert backend.sqs.list_queues().get("QueueUrls", []) == []
    assert backend.sns.list_topics()["Topics"] == []
    assert backend.sns.list_subscriptions()["Subscriptions"] == []
    assert Provisioner(cfg, backend).teardown().changed is False


def test_teardown_keeps_non_empty_bucket_unless_asked(moto_url: str) -> None:
    cfg = make_config(moto_url)
    backend = make_backend(cfg, moto_url)
    setup(cfg, backend)
    backend.s3.put_object(Bucket="thumbdrop-source", Key="keep/me.jpg", Body=b"x")
    report = Provisioner(cfg, backend).teardown()
    assert any(w.startswith("bucket thumbdrop-source (not empty") for w in whats(report, "keep"))
    assert [b["Name"] for b in backend.s3.list_buckets()["Buckets"]] == ["thumbdrop-source"]
    assert backend.s3.head_object(Bucket="thumbdrop-source", Key="keep/me.jpg")["ContentLength"] == 1
    assert "QueueConfigurations" not in notifications(backend, "thumbdrop-source")

    report = Provisioner(cfg, backend).teardown(empty_buckets=True)
    assert "every object in bucket thumbdrop-source" in whats(report, "delete")
    assert backend.s3.list_buckets()["Buckets"] == []


def test_teardown_keeps_untagged_queue(moto_url: str) -> None:
    cfg = make_config(moto_url)
    backend = make_backend(cfg, moto_url)
    backend.sqs.create_queue(QueueName="thumbdrop-events")  # exists before setup: the user's
    report = setup(cfg, backend)
    assert "queue thumbdrop-events" not in whats(report, "create")
    report = Provisioner(cfg, backend).teardown()
    assert "queue thumbdrop-events (not created by thumbdrop)" in whats(report, "keep")
    assert "queue thumbdrop-events-dlq" in whats(report, "delete")
    queues = {u.rsplit("/", 1)[-1] for u in backend.sqs.list_queues().get("QueueUrls", [])}
    assert queues == {"thumbdrop-events"}


# --- the CLI in a subprocess ------------------------------------------------------------------------------------------


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THUMBDROP_", "XDG_"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO_ROOT), AWS_CONFIG_FILE=str(home / "aws-config"))
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False
    )


def test_cli_setup_twice(moto_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"backend:\n  endpoint_url: {moto_url}\n  addressing_style: path\nlocal:\n  state_dir: {tmp_path / 'state'}\n",
        encoding="utf-8",
    )
    first = run_cli(tmp_path, "--config", str(cfg), "setup")
    assert first.returncode == 0, first.stderr
    assert "create" in first.stdout
    assert "bucket thumbdrop-source" in first.stdout
    second = run_cli(tmp_path, "--config", str(cfg), "setup")
    assert second.returncode == 0, second.stderr
    assert "no changes" in second.stdout
    assert "create" not in second.stdout


def test_cli_config_with_three_mistakes(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("backend:\n  regoin: eu-west-1\nqueues:\n  max_receives: 0\nthumbnails:\n  format: gif\n", encoding="utf-8")
    result = run_cli(tmp_path, "--config", str(cfg), "setup")
    assert result.returncode == 2
    for key in ("backend.regoin", "queues.max_receives", "thumbnails.format"):
        assert key in result.stderr
    assert str(cfg) in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_dry_run_changes_nothing(moto_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"backend:\n  endpoint_url: {moto_url}\n  addressing_style: path\n", encoding="utf-8")
    result = run_cli(tmp_path, "--config", str(cfg), "setup", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run" in result.stdout and "create" in result.stdout
    backend = make_backend(make_config(moto_url), moto_url)
    assert backend.s3.list_buckets()["Buckets"] == []
    assert backend.sqs.list_queues().get("QueueUrls", []) == []


def test_refused_credentials_are_named_as_such_not_as_a_foreign_bucket(tmp_path: Path) -> None:
    """HeadBucket answers a bare 403 for bad keys too; the user must hear "credentials refused", not "rename
    the bucket". moto checks credentials only when told so at start: a server of its own, with auth on."""
    import socket

    from agent.errors import CredentialsError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "moto server did not start"
            time.sleep(0.2)
        cfg = parse_config({"backend": {"endpoint_url": url, "addressing_style": "path", "max_attempts": 1}})
        backend = Backend(cfg.backend, endpoint_url=url, local=False)
        with pytest.raises(CredentialsError) as info:
            Provisioner(cfg, backend).bucket_exists("thumbdrop-source")
        assert "InvalidAccessKeyId" in str(info.value) and "owned by another account" not in str(info.value)
    finally:
        server.terminate()
        server.wait(10)
