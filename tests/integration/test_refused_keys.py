"""A key the store refuses on upload is named as a refused key with a fix, not as an object "not found"."""

from __future__ import annotations

import boto3
import pytest

from agent.cloud.errors import call
from agent.errors import ItemError, ObjectGoneError


def test_a_key_moto_refuses_on_put_is_a_refused_key_with_a_fix(moto_url: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket="src")
    # moto's router answers 404 to a PUT of a key with a newline (real S3 takes it): the case of the QA trial.
    with pytest.raises(ItemError) as caught:
        call("upload /in/line\nbreak.jpg", s3.put_object, Bucket="src", Key="line\nbreak.jpg", Body=b"x")
    assert not isinstance(caught.value, ObjectGoneError)
    assert str(caught.value) == (
        "the store refused its key: it answered 404 Not Found to the upload (moto, the embedded backend, refuses keys "
        "that contain a newline); rename the file"
    )
    # A read of a missing object is still "not found".
    with pytest.raises(ObjectGoneError):
        call("read nope.jpg", s3.head_object, Bucket="src", Key="nope.jpg")
