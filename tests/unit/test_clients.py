"""The client factory honours backend.* and leaves the rest to botocore (AWS_* variables included)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from agent.cloud import clients
from agent.cloud.clients import LOCAL_CREDENTIALS, Backend
from agent.config import parse_config
from agent.errors import CredentialsError


def backend(local: bool = False, endpoint_url: str | None = "http://127.0.0.1:9", **keys: Any) -> Backend:
    cfg = parse_config({"backend": {"endpoint_url": endpoint_url, **keys}})
    return Backend(cfg.backend, endpoint_url=endpoint_url, local=local)


def http_verify(client: Any) -> Any:
    return client._endpoint.http_session._verify


@pytest.fixture(autouse=True)
def tls_warning_not_yet_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "_warned_tls", False)


def test_endpoint_url_for_every_service() -> None:
    b = backend(endpoint_url="http://127.0.0.1:9999")
    for client in (b.s3, b.sqs, b.sns):
        assert client.meta.endpoint_url == "http://127.0.0.1:9999"
    assert "S3-compatible endpoint http://127.0.0.1:9999" in b.describe()


def test_region() -> None:
    b = backend(region="eu-west-2")
    assert b.s3.meta.region_name == "eu-west-2"
    assert b.sqs.meta.region_name == "eu-west-2"
    assert b.region == "eu-west-2"


def test_aws_endpoint_for_null() -> None:
    b = backend(endpoint_url=None, region="eu-central-1")
    assert b.s3.meta.endpoint_url == "https://s3.eu-central-1.amazonaws.com"
    assert b.sqs.meta.endpoint_url == "https://sqs.eu-central-1.amazonaws.com"


@pytest.mark.parametrize("style", ["path", "virtual", "auto"])
def test_addressing_style(style: str) -> None:
    b = backend(addressing_style=style)
    assert b.s3.meta.config.s3 == {"addressing_style": style}


def test_path_style_url_shape() -> None:
    b = backend(addressing_style="path", endpoint_url="http://127.0.0.1:9999")
    url = b.s3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "a.jpg"})
    assert url.startswith("http://127.0.0.1:9999/photos/a.jpg")


def test_virtual_style_url_shape() -> None:
    b = backend(addressing_style="virtual", endpoint_url=None)
    url = b.s3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "a.jpg"})
    assert url.startswith("https://photos.s3.amazonaws.com/a.jpg")


def test_verify_tls_default_true() -> None:
    b = backend()
    assert b.verify is True
    assert http_verify(b.s3) is True


def test_verify_tls_false() -> None:
    b = backend(verify_tls=False)
    assert b.verify is False
    assert http_verify(b.s3) is False
    assert http_verify(b.sqs) is False


def test_ca_bundle(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not really a certificate\n")
    b = backend(ca_bundle=str(ca))
    assert b.verify == str(ca)
    assert http_verify(b.s3) == str(ca)


def test_verify_tls_false_wins_over_ca_bundle(tmp_path: Path) -> None:
    b = backend(ca_bundle=str(tmp_path / "ca.pem"), verify_tls=False)
    assert http_verify(b.s3) is False


def test_verify_tls_false_warns_exactly_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.cloud.clients"):
        backend(verify_tls=False)
        backend(verify_tls=False).s3  # noqa: B018 - building the client must not warn again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "verify_tls" in r.getMessage()]
    assert len(warnings) == 1
    assert "NOT verified" in warnings[0].getMessage()


def test_verify_tls_true_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.cloud.clients"):
        backend().s3  # noqa: B018
    assert not [r for r in caplog.records if "verify_tls" in r.getMessage()]


def test_retries_max_attempts() -> None:
    b = backend(max_attempts=7)
    # backend.max_attempts counts every attempt, like max_attempts in ~/.aws/config and AWS_MAX_ATTEMPTS.
    assert b.s3.meta.config.retries == {"mode": "standard", "total_max_attempts": 7}
    assert b.sqs.meta.config.retries["total_max_attempts"] == 7


def test_timeouts() -> None:
    b = backend(connect_timeout=2.5, read_timeout=10)
    assert b.s3.meta.config.connect_timeout == 2.5
    assert b.s3.meta.config.read_timeout == 10
    # SQS long polls wait 20 s: its read timeout must outlast them.
    assert b.sqs.meta.config.read_timeout >= 30


def test_clients_are_cached() -> None:
    b = backend()
    assert b.s3 is b.s3
    assert b.client("sqs") is b.sqs


@pytest.fixture()
def aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "aws-config"
    path.write_text(
        "[profile thumbdrop-test]\n"
        "aws_access_key_id = AKIDPROFILEKEY0000000\n"
        "aws_secret_access_key = profile-secret\n"
        "region = ap-southeast-2\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return path


def test_profile_credentials(aws_config: Path) -> None:
    b = backend(profile="thumbdrop-test")
    creds = b.session.get_credentials()
    assert creds is not None
    assert creds.access_key == "AKIDPROFILEKEY0000000"
    assert b.session.profile_name == "thumbdrop-test"
    assert b.credential_source() == "config-file"


def test_missing_profile_is_credentials_error(aws_config: Path) -> None:
    with pytest.raises(CredentialsError) as info:
        backend(profile="no-such-profile")
    assert "no-such-profile" in info.value.message
    assert "backend.profile" in info.value.hint


def test_env_credentials_without_profile() -> None:
    b = backend()
    assert b.credential_source() == "env"


def test_aws_endpoint_url_env_used_when_null(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    b = backend(endpoint_url=None)
    assert b.s3.meta.endpoint_url == "http://127.0.0.1:4566"
    assert b.sqs.meta.endpoint_url == "http://127.0.0.1:4566"


def test_service_specific_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4577")
    b = backend(endpoint_url=None)
    assert b.s3.meta.endpoint_url == "http://127.0.0.1:4566"
    assert b.sqs.meta.endpoint_url == "http://127.0.0.1:4577"


def test_configured_endpoint_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    b = backend(endpoint_url="http://127.0.0.1:9000")
    assert b.s3.meta.endpoint_url == "http://127.0.0.1:9000"


def test_local_uses_fixed_credentials_and_path_style(aws_config: Path) -> None:
    # Even with a profile and virtual addressing configured, the embedded backend gets neither.
    b = backend(local=True, endpoint_url="http://127.0.0.1:5555", profile="thumbdrop-test", addressing_style="virtual")
    creds = b.session.get_credentials()
    assert creds is not None
    assert creds.access_key == LOCAL_CREDENTIALS["aws_access_key_id"]
    assert creds.secret_key == LOCAL_CREDENTIALS["aws_secret_access_key"]
    assert b.s3.meta.config.s3 == {"addressing_style": "path"}
    assert b.s3.meta.endpoint_url == "http://127.0.0.1:5555"
    assert "embedded local backend" in b.describe()
    assert "fixed local credentials" in b.credential_source()


def test_local_verify_tls_false_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.cloud.clients"):
        backend(local=True, verify_tls=False)
    assert not [r for r in caplog.records if "verify_tls" in r.getMessage()]


# --- the S3 endpoint is resolved once per bucket, not once per object key ---------------------------------------


def _count_rule_evaluations(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    ruleset = client._ruleset_resolver._provider.ruleset
    calls = [0]
    real = ruleset.evaluate

    def evaluate(params: dict[str, Any]) -> Any:
        calls[0] += 1
        return real(params)

    monkeypatch.setattr(ruleset, "evaluate", evaluate)
    return calls


def test_s3_endpoint_resolution_is_shared_across_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """One rule-set evaluation for five new keys: by our wrapper on botocore < 1.44, by botocore itself after."""
    from moto import mock_aws

    from agent.cloud import endpoint_cache

    with mock_aws():
        s3 = backend(endpoint_url=None, region="eu-west-1").s3
        s3.create_bucket(Bucket="keys-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        calls = _count_rule_evaluations(s3, monkeypatch)
        for i in range(5):
            s3.put_object(Bucket="keys-bucket", Key=f"photo-{i}.jpg", Body=b"x")
            s3.head_object(Bucket="keys-bucket", Key=f"photo-{i}.jpg")
    assert calls[0] == 1, calls  # botocore < 1.44 alone: one per new key
    assert endpoint_cache.unused_parameters(s3._loader.load_service_model("s3", "endpoint-rule-set-1")) >= {"Key"}


def test_unused_parameters_keeps_what_a_rule_reads() -> None:
    from agent.cloud.endpoint_cache import unused_parameters

    ruleset = {
        "parameters": {"Bucket": {}, "Key": {}, "Region": {}, "Prefix": {}},
        "rules": [
            {"conditions": [{"fn": "isSet", "argv": [{"ref": "Bucket"}]}], "endpoint": {"url": "https://{Region}.x/{Key#a}"}}
        ],
    }
    assert unused_parameters(ruleset) == {"Prefix"}


def test_endpoint_sharing_steps_aside_for_an_unfamiliar_client() -> None:
    from agent.cloud.endpoint_cache import share_endpoint_resolution

    assert share_endpoint_resolution(object()) is False


def test_long_polls_have_their_own_client_that_gives_up_soon_after_the_wait() -> None:
    """Issue 14 item 3: a long poll on a silent connection was abandoned after read_timeout times max_attempts
    (5 x 60 s by default); it must be abandoned a few seconds after its wait, once, and the loop retries."""
    b = backend(read_timeout=60, max_attempts=5)
    receiver = b.receiver(20)
    assert receiver is b.receiver(20)
    assert receiver is not b.sqs
    assert receiver.meta.config.read_timeout == 20 + clients.RECEIVE_MARGIN
    assert receiver.meta.config.retries["total_max_attempts"] == 1
    assert b.sqs.meta.config.read_timeout == 60
    assert b.sqs.meta.config.retries["total_max_attempts"] == 5
