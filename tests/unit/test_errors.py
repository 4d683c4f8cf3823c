"""Library exceptions become thumbdrop errors with the right kind and a message that says what to do."""

from __future__ import annotations

from typing import Any

import botocore.exceptions as bx
import pytest

from agent.cloud import errors as cloud_errors
from agent.cloud.errors import call, convert, is_transient, translate
from agent.errors import (
    AccessDeniedError,
    BackendError,
    ClockSkewError,
    ConfigError,
    CredentialsError,
    ItemError,
    ObjectGoneError,
    OfflineError,
    ResourceMissingError,
    TransientError,
)


def client_error(code: str, status: int = 400, message: str = "", op: str = "GetObject", **extra: Any) -> bx.ClientError:
    error: dict[str, Any] = {"Code": code, "Message": message or f"{code} happened", **extra}
    response: dict[str, Any] = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}
    return bx.ClientError(response, op)  # type: ignore[arg-type]


# --- credentials -----------------------------------------------------------------------------


def test_no_credentials() -> None:
    exc = convert(bx.NoCredentialsError(), "list buckets")
    assert type(exc) is CredentialsError
    assert exc.kind == "fatal"
    assert exc.exit_code == 3
    assert "no AWS credentials" in exc.message and "list buckets" in exc.message
    assert "AWS_ACCESS_KEY_ID" in exc.hint and "aws configure" in exc.hint and "--local" in exc.hint


def test_partial_credentials() -> None:
    exc = convert(bx.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), "x")
    assert type(exc) is CredentialsError
    assert "secret" in exc.hint


def test_profile_not_found() -> None:
    exc = convert(bx.ProfileNotFound(profile="work"), "open the AWS session")
    assert type(exc) is CredentialsError
    assert "work" in exc.message
    assert "backend.profile" in exc.hint


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidClientTokenId"])
def test_refused_credentials(code: str) -> None:
    exc = convert(client_error(code, 403), "upload photo.jpg")
    assert type(exc) is CredentialsError
    assert exc.kind == "fatal"
    assert "refused the credentials" in exc.message and code in exc.message and "upload photo.jpg" in exc.message
    assert "access key" in exc.hint


# --- permissions and missing resources ------------------------------------------------------------


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException", "AuthorizationError"])
def test_access_denied_names_the_action(code: str) -> None:
    exc = convert(client_error(code, 403), "put object trip/a.jpg into bucket photos")
    assert type(exc) is AccessDeniedError
    assert exc.kind == "fatal"
    assert "not allowed to put object trip/a.jpg into bucket photos" in exc.message
    assert "grant" in exc.hint


def test_bare_403_is_access_denied() -> None:
    exc = convert(client_error("403", 403, message="Forbidden"), "check bucket b")
    assert isinstance(exc, AccessDeniedError)
    assert "check bucket b" in exc.message


def test_no_such_bucket() -> None:
    exc = convert(client_error("NoSuchBucket", 404, BucketName="photos"), "list bucket photos")
    assert type(exc) is ResourceMissingError
    assert exc.kind == "fatal"
    assert "'photos' does not exist" in exc.message
    assert "thumbdrop setup" in exc.hint and "source.bucket" in exc.hint


def test_no_such_bucket_without_name() -> None:
    exc = convert(client_error("NoSuchBucket", 404), "list bucket")
    assert type(exc) is ResourceMissingError
    assert "''" not in exc.message


def test_missing_queue() -> None:
    exc = convert(client_error("AWS.SimpleQueueService.NonExistentQueue", 400), "look up queue q")
    assert type(exc) is ResourceMissingError
    assert "thumbdrop setup" in exc.hint


def test_bucket_name_taken() -> None:
    exc = convert(client_error("BucketAlreadyExists", 409), "create bucket photos")
    assert isinstance(exc, ResourceMissingError)
    assert "global" in exc.hint


# --- clock skew ----------------------------------------------------------------------------------------


def test_clock_skew_gives_difference_in_seconds() -> None:
    # The shape S3 sends: RequestTime in the compact x-amz-date form, ServerTime in ISO 8601.
    err = client_error("RequestTimeTooSkewed", 403, RequestTime="20240101T120000Z", ServerTime="2024-01-01T11:40:00Z")
    exc = convert(err, "upload a.jpg")
    assert type(exc) is ClockSkewError
    assert exc.kind == "fatal"
    assert "by 1200 s" in exc.message
    assert "ahead of" in exc.message
    assert "upload a.jpg" in exc.message
    assert "timedatectl" in exc.hint


def test_clock_skew_behind_with_http_dates() -> None:
    err = client_error(
        "RequestTimeTooSkewed",
        403,
        RequestTime="Mon, 01 Jan 2024 11:59:00 GMT",
        ServerTime="Mon, 01 Jan 2024 12:15:30 GMT",
    )
    exc = convert(err, "upload a.jpg")
    assert type(exc) is ClockSkewError
    assert "990 s" in exc.message
    assert "behind" in exc.message


def test_clock_skew_without_times() -> None:
    exc = convert(client_error("RequestTimeTooSkewed", 403), "upload a.jpg")
    assert type(exc) is ClockSkewError
    assert "more than 15 minutes" in exc.message


# --- transient ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("ServiceUnavailable", 503),
        ("InternalError", 500),
        ("Throttling", 400),
        ("ThrottlingException", 400),
        ("RequestTimeout", 400),
        ("WhoKnows", 500),
        ("WhoKnows", 502),
        ("TooManyRequests", 429),
        ("", 503),
    ],
)
def test_transient_client_errors(code: str, status: int) -> None:
    exc = convert(client_error(code, status), "get object a.jpg")
    assert type(exc) is TransientError
    assert exc.kind == "transient"
    assert is_transient(exc)
    assert "get object a.jpg" in exc.message


@pytest.mark.parametrize(
    "error",
    [
        bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        bx.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        bx.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        bx.HTTPClientError(error="boom"),
        ConnectionRefusedError("refused"),
    ],
)
def test_unreachable_is_offline(error: Exception) -> None:
    exc = convert(error, "receive messages")
    assert isinstance(exc, OfflineError)
    assert exc.kind == "transient"
    assert "receive messages" in exc.message


def test_endpoint_unreachable_hint() -> None:
    exc = convert(bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "list buckets")
    assert type(exc) is OfflineError
    assert "cannot reach the backend" in exc.message
    assert "backend.endpoint_url" in exc.hint
    # The hint is shown by one-shot commands too (sync, setup, status), which do not wait for the backend; the
    # running agent says that work resumes in its own offline line (Status.offline).
    assert "resumes" not in exc.hint


@pytest.mark.parametrize(
    "error",
    [
        bx.ReadTimeoutError(endpoint_url="http://x"),
        bx.ResponseStreamingError(error="reset"),
        bx.IncompleteReadError(actual_bytes=1, expected_bytes=2),
    ],
)
def test_read_failures_are_transient(error: Exception) -> None:
    exc = convert(error, "download a.jpg")
    assert type(exc) is TransientError
    assert exc.kind == "transient"


def test_ssl_error_is_fatal_with_ca_bundle_hint() -> None:
    exc = convert(bx.SSLError(endpoint_url="https://minio", error="self-signed"), "list buckets")
    assert type(exc) is BackendError
    assert exc.kind == "fatal"
    assert "TLS verification failed" in exc.message
    assert "backend.ca_bundle" in exc.hint and "verify_tls" in exc.hint


# --- per item -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "status"), [("NoSuchKey", 404), ("404", 404), ("NotFound", 404)])
def test_gone_object_is_item_error(code: str, status: int) -> None:
    exc = convert(client_error(code, status), "get object trip/a.jpg")
    assert type(exc) is ObjectGoneError
    assert isinstance(exc, ItemError)
    assert exc.kind == "item"
    assert exc.exit_code == 1
    assert "trip/a.jpg" in exc.message


def test_a_404_to_an_upload_is_a_refused_key_not_a_gone_object() -> None:
    # moto answers 404 to a PUT of a key with a newline; "object not found while trying to upload" misled.
    exc = convert(client_error("404", 404, op="PutObject"), "upload /in/line\nbreak.jpg")
    assert type(exc) is ItemError
    assert exc.message == (
        "the store refused its key: it answered 404 Not Found to the upload (moto, the embedded backend, refuses keys "
        "that contain a newline); rename the file"
    )
    assert "/in/" not in str(exc)  # the log line names the path already
    assert type(convert(client_error("NoSuchKey", 404), "start the upload of /in/a.jpg")) is ItemError


@pytest.mark.parametrize("code", ["NoSuchUpload", "404"])
def test_a_gone_multipart_upload_stays_gone(code: str) -> None:
    # The multipart code restarts an upload aborted under it: that must stay an ObjectGoneError.
    assert type(convert(client_error(code, 404, op="UploadPart"), "upload part 2 of /in/a.jpg")) is ObjectGoneError


# --- leftovers ----------------------------------------------------------------------------------------------


def test_unknown_client_error_is_fatal_backend_error() -> None:
    exc = convert(client_error("MalformedXML", 400, message="bad xml"), "set notifications")
    assert type(exc) is BackendError
    assert "MalformedXML" in exc.message and "bad xml" in exc.message


def test_thumbdrop_error_passes_through() -> None:
    original = ConfigError("x.yaml", ["a: b"])
    assert convert(original, "anything") is original


def test_unexpected_exception() -> None:
    exc = convert(ValueError("odd"), "do something")
    assert type(exc) is BackendError
    assert "ValueError" in exc.message and "odd" in exc.message


def test_str_includes_hint() -> None:
    exc = convert(bx.NoCredentialsError(), "x")
    assert str(exc) == f"{exc.message} ({exc.hint})"


def test_translate_chains_the_cause() -> None:
    original = client_error("NoSuchBucket", 404, BucketName="b")
    with pytest.raises(ResourceMissingError) as info, translate("list bucket b"):
        raise original
    assert info.value.__cause__ is original


def test_translate_leaves_other_exceptions() -> None:
    with pytest.raises(KeyError), translate("x"):
        raise KeyError("not a library error")


def test_call_converts() -> None:
    def boom() -> None:
        raise bx.EndpointConnectionError(endpoint_url="http://x")

    with pytest.raises(OfflineError):
        call("poke", boom)
    assert call("add", lambda a, b: a + b, 1, b=2) == 3


# --- retrying ---------------------------------------------------------------------------------------------------


# --- a wrong backend.region ------------------------------------------------------------------------
# Error bodies as AWS sends them, parsed by botocore's own parsers (what a ClientError then carries).


def aws_error(
    protocol: str, status: int, body: bytes, headers: dict[str, str] | None = None, op: str = "HeadBucket"
) -> bx.ClientError:
    from botocore import parsers

    parsed = parsers.create_parser(protocol).parse({"body": body, "headers": headers or {}, "status_code": status}, None)  # type: ignore[arg-type]
    return bx.ClientError(parsed, op)  # type: ignore[arg-type]


S3_MALFORMED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AuthorizationHeaderMalformed</Code>'
    b"<Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message>"
    b"<Region>eu-west-1</Region><RequestId>4X2</RequestId><HostId>h0</HostId></Error>"
)
S3_REDIRECT = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the
 specified endpoint. Please send all future requests to this endpoint.</Message>
<Endpoint>my-photos.s3.eu-west-1.amazonaws.com</Endpoint><Bucket>my-photos</Bucket><RequestId>9Q</RequestId></Error>"""
S3_LOCATION = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>IllegalLocationConstraintException</Code><Message>The unspecified location constraint is incompatible for
 the region specific endpoint this request was sent to.</Message><RequestId>Z1</RequestId></Error>"""
STS_SCOPE = b"""<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>
<Code>SignatureDoesNotMatch</Code><Message>Credential should be scoped to a valid region, not 'eu-wset-1'. </Message>
</Error><RequestId>r1</RequestId></ErrorResponse>"""


@pytest.mark.parametrize(
    ("error", "region", "sent", "expected"),
    [
        (aws_error("rest-xml", 400, S3_MALFORMED, op="ListObjectsV2"), None, "us-east-1", "eu-west-1"),
        (
            aws_error("rest-xml", 301, S3_REDIRECT, {"x-amz-bucket-region": "eu-west-1"}, "GetObject"),
            "us-east-1",
            "us-east-1",
            "eu-west-1",
        ),
        (aws_error("rest-xml", 301, S3_REDIRECT, op="GetObject"), "us-east-1", "us-east-1", "eu-west-1"),  # from Endpoint
        (aws_error("rest-xml", 301, b"", {"x-amz-bucket-region": "ap-southeast-2"}), "us-east-1", "us-east-1", "ap-southeast-2"),
        (aws_error("rest-xml", 400, S3_LOCATION, op="CreateBucket"), "us-east-1", "us-east-1", None),
        (aws_error("query", 403, STS_SCOPE, op="GetCallerIdentity"), None, "eu-wset-1", None),
    ],
    ids=["malformed-header", "redirect-header", "redirect-endpoint", "head-301", "location-constraint", "sts-scope"],
)
def test_wrong_region_is_named(error: bx.ClientError, region: str | None, sent: str, expected: str | None) -> None:
    exc = convert(error, "check bucket my-photos", region=region)
    assert isinstance(exc, cloud_errors.RegionError) and isinstance(exc, BackendError)
    assert exc.exit_code == 3 and exc.kind == "fatal"
    assert f"backend.region is '{sent}'" in exc.message
    assert "check bucket my-photos" in exc.message
    if expected:
        assert f"expects '{expected}'" in exc.message
        assert exc.hint == f"set backend.region: {expected} in the config (the region the buckets and queues live in)"
    else:
        assert "backend.region" in exc.hint and "get-bucket-location" in exc.hint


def test_call_names_the_clients_region() -> None:
    """``call`` knows the region a client signs for, so a bare 301 still names the configured value."""
    import boto3
    from botocore.stub import Stubber

    s3 = boto3.client("s3", region_name="us-west-2", aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(s3) as stub:
        stub.add_client_error(
            "head_bucket",
            service_error_code="301",
            service_message="Moved Permanently",
            http_status_code=301,
            response_meta={"HTTPHeaders": {"x-amz-bucket-region": "eu-central-1"}},
        )
        with pytest.raises(cloud_errors.RegionError) as caught:
            call("check bucket my-photos", s3.head_bucket, Bucket="my-photos")
    assert "backend.region is 'us-west-2' but the backend expects 'eu-central-1'" in caught.value.message
    assert "set backend.region: eu-central-1" in caught.value.hint


def test_malformed_header_without_region_is_not_a_region_error() -> None:
    body = b"""<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; a non-empty
 Access Key (AKID) must be provided in the credential.</Message></Error>"""
    exc = convert(aws_error("rest-xml", 400, body), "list bucket b", region="us-east-1")
    assert not isinstance(exc, cloud_errors.RegionError)


def test_invalid_token_hint_mentions_an_opt_in_region() -> None:
    body = (
        b'{"__type":"com.amazonaws.sqs#InvalidClientTokenId","message":"The security token included in the request is invalid."}'
    )
    exc = convert(
        aws_error("json", 403, body, {"x-amzn-query-error": "InvalidClientTokenId;Sender"}, "GetQueueUrl"),
        "look up queue q",
        region="me-central-1",
    )
    assert type(exc) is CredentialsError
    assert "backend.region (me-central-1) is enabled" in exc.hint


def test_an_aws_address_built_from_a_wrong_region_names_it() -> None:
    url = "https://sqs.eu-wset-1.amazonaws.com/"  # a typo: DNS has no such name
    exc = convert(bx.EndpointConnectionError(endpoint_url=url), "look up queue q", region="eu-wset-1")
    assert type(exc) is OfflineError
    assert exc.hint == "check the network, and that backend.region (eu-wset-1) is an AWS region that exists"
    other = convert(bx.EndpointConnectionError(endpoint_url="http://minio.lan:9000/"), "x", region="garage")
    assert other.hint == "check backend.endpoint_url and the network"


def test_an_html_error_page_becomes_one_line_with_its_title() -> None:
    """moto answers an API it lacks (StartMessageMoveTask) with a whole HTML page; the log got all of it."""
    page = (
        "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n"
        "<p>The server encountered an internal error and was unable to complete your request.</p>\n"
    )
    exc = convert(client_error("", 500, page), "start moving td-events-dlq back")
    assert exc.message == (
        "the backend answered 500 while trying to start moving td-events-dlq back: an HTML error page (500 Internal Server Error)"
    )
    long = convert(client_error("Weird", 400, "line one\nline two " + "x" * 400), "list the source bucket")
    assert "\n" not in long.message and "line one line two" in long.message and long.message.endswith("...")


@pytest.mark.parametrize(
    "code,status",
    [("AccessDenied", 403), ("NoSuchBucket", 404), ("SlowDown", 503), ("PurgeQueueInProgress", 403), ("Whatever", 400)],
)
def test_converted_errors_keep_the_service_error_code(code: str, status: int) -> None:
    # Callers test exc.code, never the words of a message or title.
    assert convert(client_error(code, status), "do something").code == code


def test_errors_without_a_service_code_have_an_empty_code() -> None:
    assert convert(bx.EndpointConnectionError(endpoint_url="http://x"), "list").code == ""
    assert ItemError("bad image").code == ""
