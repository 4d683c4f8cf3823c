"""The fault proxy itself: each mode does what the reliability tests rely on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions as bx
import pytest

from tests.reliability.faultproxy import FaultProxy


@pytest.fixture()
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as p:
        yield p


def client(url: str, read_timeout: float = 2) -> Any:
    cfg = botocore.config.Config(
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=1,
        read_timeout=read_timeout,
    )
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t", config=cfg
    )


def test_modes(proxy: FaultProxy, moto_url: str) -> None:
    s3 = client(proxy.url)
    s3.create_bucket(Bucket="proxy-test")
    body = bytes(range(256)) * 4096  # 1 MiB
    s3.put_object(Bucket="proxy-test", Key="k", Body=body)
    assert s3.get_object(Bucket="proxy-test", Key="k")["Body"].read() == body

    proxy.refuse()
    with pytest.raises(bx.EndpointConnectionError):
        s3.head_object(Bucket="proxy-test", Key="k")
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(bx.ReadTimeoutError):
        s3.head_object(Bucket="proxy-test", Key="k")
    assert time.monotonic() - started >= 1.5
    proxy.reset(after_bytes=0)
    with pytest.raises((bx.ConnectionClosedError, bx.EndpointConnectionError)):
        s3.head_object(Bucket="proxy-test", Key="k")
    proxy.reset(after_bytes=100_000)  # the request passes, the 1 MiB response is cut
    with pytest.raises((bx.ResponseStreamingError, bx.ConnectionClosedError)):
        s3.get_object(Bucket="proxy-test", Key="k")["Body"].read()

    s3.close()
    s3 = client(proxy.url)  # a fresh pool: the client need not retry on the connection the proxy cut
    proxy.slow(400_000)
    started = time.monotonic()
    assert s3.get_object(Bucket="proxy-test", Key="k")["Body"].read() == body
    took = time.monotonic() - started
    assert 1.5 < took < 10, took

    proxy.passthrough()
    started = time.monotonic()
    assert s3.get_object(Bucket="proxy-test", Key="k")["Body"].read() == body
    assert time.monotonic() - started < 1.5
    assert proxy.stats["resets"] >= 2
    s3.close()


def test_hold_and_reject_pick_requests(proxy: FaultProxy) -> None:
    s3 = client(proxy.url)
    s3.create_bucket(Bucket="proxy-rules")
    s3.put_object(Bucket="proxy-rules", Key="a", Body=b"a")

    proxy.reject(rb"HEAD /proxy-rules/a")
    with pytest.raises(bx.ConnectionClosedError):
        s3.head_object(Bucket="proxy-rules", Key="a")
    assert s3.get_object(Bucket="proxy-rules", Key="a")["Body"].read() == b"a"  # other requests pass
    assert proxy.rejected_requests == 1

    proxy.release()
    denied = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    proxy.answer(rb"GET /proxy-rules\?uploads", 403, denied)
    with pytest.raises(bx.ClientError) as info:
        s3.list_multipart_uploads(Bucket="proxy-rules")
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert s3.get_object(Bucket="proxy-rules", Key="a")["Body"].read() == b"a"
    assert proxy.answered_requests == 1

    proxy.release()
    proxy.hold(rb"PUT /proxy-rules/held")
    done = threading.Event()

    def put() -> None:
        patient = client(proxy.url, read_timeout=10)
        patient.put_object(Bucket="proxy-rules", Key="held", Body=b"h")
        done.set()
        patient.close()

    t = threading.Thread(target=put, name="proxy-test-put")
    t.start()
    time.sleep(1.0)
    assert not done.is_set() and proxy.held_requests == 1
    assert "held" not in [o["Key"] for o in s3.list_objects_v2(Bucket="proxy-rules").get("Contents", [])]
    proxy.release()
    t.join(10)
    assert done.is_set()
    s3.close()


def test_stop_closes_everything(moto_url: str) -> None:
    proxy = FaultProxy(moto_url)
    s3 = client(proxy.url)
    s3.list_buckets()
    assert proxy.stats["accepted"] >= 1
    proxy.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("faultproxy-")]
    with pytest.raises(bx.EndpointConnectionError):
        s3.list_buckets()
    s3.close()
