"""queues.mode (via_sns maps onto it), per-service endpoints, and stores that lack an API."""

from __future__ import annotations

import json
from typing import Any

import botocore.exceptions as bx
import pytest

from agent.cloud.clients import Backend
from agent.cloud.errors import convert
from agent.cloud.provision import events_reach_queues, sns_filter_policy
from agent.config import parse_config
from agent.errors import ConfigError, TransientError, UnsupportedError, UsageError
from agent.pipeline.keys import Layout


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_mode_defaults_to_sqs_and_via_sns_maps_to_sns() -> None:
    assert parse_config({}).queues.mode == "sqs"
    old = parse_config({"queues": {"via_sns": True}})
    assert old.queues.mode == "sns" and old.queues.via_sns
    new = parse_config({"queues": {"mode": "sns"}})
    assert new.queues.mode == "sns" and new.queues.via_sns  # the code paths reading via_sns follow the mode
    assert parse_config({"queues": {"mode": "sqs"}}).queues.via_sns is False


def test_via_sns_contradicting_mode_is_a_config_error() -> None:
    text = problems({"queues": {"mode": "sqs", "via_sns": True}})
    assert "queues.via_sns" in text and "contradicts queues.mode: sqs" in text and "remove via_sns" in text


def test_poll_mode_is_accepted_and_its_backend_calls_no_queue() -> None:
    cfg = parse_config({"queues": {"mode": "poll"}, "backend": {"endpoint_url": "http://127.0.0.1:9"}})
    assert cfg.queues.mode == "poll" and cfg.queues.poll_seconds == 10.0
    b = Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)
    for client in (b.sqs, b.sns, b.receiver(20)):
        with pytest.raises(UsageError, match="poll mode: no queues"):
            client.get_queue_url(QueueName="x")  # refused before any request (port 9 would be refused anyway)


def test_worker_shard_must_be_n_of_m() -> None:
    assert parse_config({"worker": {"shard": "1/2"}}).worker.shard == "1/2"
    for bad in ("2/2", "1", "a/b", "-1/2"):
        assert "worker.shard" in problems({"worker": {"shard": bad}})


def test_unknown_mode_is_refused() -> None:
    assert "must be one of sqs, sns, poll" in problems({"queues": {"mode": "kafka"}})


def test_per_service_endpoints_need_a_real_backend() -> None:
    text = problems({"backend": {"endpoint_url": "local", "sqs_endpoint_url": "http://127.0.0.1:9"}})
    assert "backend.sqs_endpoint_url" in text and "instead of 'local'" in text
    text = problems({"backend": {"endpoint_url": None, "s3_endpoint_url": "local"}})
    assert "backend.s3_endpoint_url: 'local' is only valid for backend.endpoint_url" in text


def test_local_flag_drops_per_service_endpoints() -> None:
    cfg = parse_config({"backend": {"endpoint_url": None, "s3_endpoint_url": "http://127.0.0.1:9"}}, local=True)
    assert cfg.backend.endpoint_url == "local" and cfg.backend.s3_endpoint_url is None


def test_each_client_goes_to_its_own_endpoint() -> None:
    cfg = parse_config({"backend": {"endpoint_url": "http://127.0.0.1:7001", "s3_endpoint_url": "http://127.0.0.1:7002"}})
    b = Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False)
    assert b.s3.meta.endpoint_url == "http://127.0.0.1:7002"
    assert b.sqs.meta.endpoint_url == "http://127.0.0.1:7001"
    assert b.sns.meta.endpoint_url == "http://127.0.0.1:7001"
    assert b.split
    assert b.describe() == "S3 at http://127.0.0.1:7002; SQS at http://127.0.0.1:7001; SNS at http://127.0.0.1:7001"
    assert not events_reach_queues(b)


def test_lan_s3_with_aws_queues_and_aws_with_explicit_endpoints() -> None:
    lan = parse_config({"backend": {"endpoint_url": None, "s3_endpoint_url": "https://nas.lan:9000", "region": "eu-west-1"}})
    b = Backend(lan.backend, endpoint_url=None, local=False)
    assert b.s3.meta.endpoint_url == "https://nas.lan:9000"
    assert b.sqs.meta.endpoint_url == "https://sqs.eu-west-1.amazonaws.com"
    assert b.where("sqs") == "AWS SQS (eu-west-1)"
    assert not events_reach_queues(b)
    aws = parse_config({"backend": {"endpoint_url": None, "s3_endpoint_url": "https://s3.eu-west-1.amazonaws.com"}})
    assert events_reach_queues(Backend(aws.backend, endpoint_url=None, local=False))


def _client_error(code: str, status: int) -> bx.ClientError:
    return bx.ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(("code", "status"), [("NotImplemented", 501), ("MethodNotAllowed", 405), ("", 501)])
def test_a_missing_api_is_unsupported_not_transient(code: str, status: int) -> None:
    err = convert(_client_error(code, status), "tag bucket b")
    assert isinstance(err, UnsupportedError) and err.kind != "transient"
    assert "tag bucket b" in err.message


def test_a_500_is_still_transient() -> None:
    assert isinstance(convert(_client_error("InternalError", 500), "x"), TransientError)


def test_sns_filter_policy_matches_both_key_encodings() -> None:
    assert sns_filter_policy("") is None
    policy = json.loads(sns_filter_policy("dev a/") or "")
    values = {v["prefix"] for v in policy["Records"]["s3"]["object"]["key"]}
    assert values == {"dev a/", "dev+a/", "dev+a%2F", "dev%20a/"}  # AWS: '+'; LocalStack: %20; moto: %2F


def test_foreign_keys_are_told_from_own_output() -> None:
    layout = Layout.of(parse_config({"source": {"prefix": "deva/"}, "thumbnails": {"prefix": "thumbs/deva/"}}))
    assert layout.foreign_source_key("devb/x.jpg")
    assert not layout.foreign_source_key("deva/x.jpg")
    assert layout.foreign_thumb_key("thumbs/devb/x.jpg")
    shared = Layout.of(
        parse_config(
            {
                "source": {"bucket": "one-bucket", "prefix": "in/"},
                "thumbnails": {"bucket": "one-bucket", "prefix": "thumbs/"},
            }
        )
    )
    assert not shared.foreign_source_key("thumbs/x.jpg")  # our own output: ignored, not released
    assert not shared.foreign_thumb_key("in/x.jpg")


def test_an_unreadable_answer_is_translated_not_raised_raw() -> None:
    from botocore.parsers import ResponseParserError

    from agent.cloud.errors import call

    def not_xml() -> None:
        raise ResponseParserError("Unable to parse response, invalid XML received: b'Not Found'")

    with pytest.raises(TransientError) as info:  # before: a raw ResponseParserError (not a BotoCoreError) escaped
        call("list SNS topics", not_xml)
    assert "list SNS topics" in info.value.message and "right endpoint" in info.value.message
