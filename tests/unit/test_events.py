"""S3 event notifications as they arrive on SQS: direct or SNS-wrapped."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.cloud.events import MAX_BODY, ObjectEvent, parse_body
from agent.errors import BadMessageError


def record(key: str = "trip/IMG_1.jpg", bucket: str = "photos", name: str = "ObjectCreated:Put", **obj: Any) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, **obj}},
    }


def direct(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def sns(message: Any) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:thumbdrop-events",
            "Subject": "Amazon S3 Notification",
            "Message": message,
        }
    )


def test_direct_event() -> None:
    body = direct(record(size=1234, eTag='"abc123"', sequencer="0055AED6DCD90281E5"))
    (event,) = parse_body(body)
    assert event == ObjectEvent(
        bucket="photos",
        key="trip/IMG_1.jpg",
        event_name="ObjectCreated:Put",
        size=1234,
        etag="abc123",
        sequencer="0055AED6DCD90281E5",
    )
    assert event.created


def test_several_records_in_order() -> None:
    events = parse_body(direct(record("a.jpg"), record("b.jpg", name="ObjectRemoved:Delete")))
    assert [e.key for e in events] == ["a.jpg", "b.jpg"]
    assert [e.created for e in events] == [True, False]


def test_optional_fields_missing_or_odd() -> None:
    (event,) = parse_body(direct(record(size="12", sequencer=5)))
    assert event.size is None
    assert event.etag is None
    assert event.sequencer is None


def test_lowercase_etag_accepted() -> None:
    (event,) = parse_body(direct(record(etag="ff00")))
    assert event.etag == "ff00"


def test_sns_wrapped_event() -> None:
    (event,) = parse_body(sns(direct(record("holiday/b.png", bucket="thumbs", size=9))))
    assert (event.bucket, event.key, event.size) == ("thumbs", "holiday/b.png", 9)


def test_raw_and_wrapped_give_the_same_events() -> None:
    inner = direct(record("x/y z.jpg"), record("w.jpg"))
    assert parse_body(inner) == parse_body(sns(inner))


def test_test_event_is_empty() -> None:
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos", "Time": "2024-01-01T00:00:00Z"})
    assert parse_body(test_event) == []
    assert parse_body(sns(test_event)) == []


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("trip/my+photo.jpg", "trip/my photo.jpg"),
        ("trip%2FIMG_1.jpg", "trip/IMG_1.jpg"),
        ("a%2Bb.jpg", "a+b.jpg"),
        ("%C3%A9t%C3%A9/plage.jpg", "été/plage.jpg"),
        ("100%25.jpg", "100%.jpg"),
    ],
)
def test_keys_are_url_decoded(raw: str, decoded: str) -> None:
    (event,) = parse_body(direct(record(raw)))
    assert event.key == decoded


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("not json at all", "not valid JSON"),
        ('{"Records": [', "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"a string"', "not a JSON object"),
        ("{}", "no 'Records' list"),
        ('{"Records": {"s3": {}}}', "no 'Records' list"),
        ('{"Records": "x"}', "no 'Records' list"),
        ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "record 0"),
        ('{"Records": [{"s3": {"bucket": {"name": "b"}}}]}', "record 0"),
        ('{"Records": [42]}', "record 0"),
    ],
)
def test_bad_messages(body: str, words: str) -> None:
    with pytest.raises(BadMessageError) as info:
        parse_body(body)
    assert words in info.value.message
    assert info.value.kind == "item"


def test_second_record_bad_names_its_index() -> None:
    body = json.dumps({"Records": [record("a.jpg"), {"s3": {"bucket": {"name": "b"}, "object": {}}}]})
    with pytest.raises(BadMessageError, match="record 1"):
        parse_body(body)


def test_non_string_key() -> None:
    with pytest.raises(BadMessageError, match="non-string"):
        parse_body(direct(record(key=123)))  # type: ignore[arg-type]


def test_sns_message_not_a_string() -> None:
    with pytest.raises(BadMessageError, match="Message is not a string"):
        parse_body(sns({"Records": [record()]}))


def test_sns_message_not_json() -> None:
    with pytest.raises(BadMessageError, match="not valid JSON"):
        parse_body(sns("hello"))


def test_sns_message_without_records() -> None:
    with pytest.raises(BadMessageError, match="no 'Records' list"):
        parse_body(sns(json.dumps({"hello": "world"})))


def test_body_too_large() -> None:
    padding = "x" * (MAX_BODY + 1)
    with pytest.raises(BadMessageError, match="larger than any S3 event"):
        parse_body(json.dumps({"Records": [], "pad": padding}))


def test_body_at_limit_is_parsed() -> None:
    body = direct(record())
    body = body[:-1] + ', "pad": "' + "x" * (MAX_BODY - len(body) - 11) + '"}'
    assert len(body) == MAX_BODY
    assert len(parse_body(body)) == 1


def test_deeply_nested_json_is_a_bad_message() -> None:
    with pytest.raises(BadMessageError):
        parse_body("[" * 100_000 + "]" * 100_000)
