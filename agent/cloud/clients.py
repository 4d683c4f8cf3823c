"""One factory for boto3 sessions and clients (s3, sqs, sns).

Honours ``backend.*`` (endpoint, region, profile, addressing style, TLS, retries)
and otherwise leaves everything to botocore, so the standard credential chain
and ``AWS_*`` variables (``AWS_ENDPOINT_URL`` included) behave as in the AWS CLI.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config

from agent.cloud.endpoint_cache import share_endpoint_resolution
from agent.cloud.errors import translate
from agent.config.model import BackendConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)
# A long poll answers within its wait: a silent connection is given up this many seconds later.
RECEIVE_MARGIN = 5.0

# The embedded backend accepts any credentials; fixed ones keep real keys off the wire.
LOCAL_CREDENTIALS = {"aws_access_key_id": "thumbdrop-local", "aws_secret_access_key": "thumbdrop-local"}
_warned_tls = False


class NoQueues:
    """Stands in for the SQS/SNS client in poll mode: any call is refused without a request."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __getattr__(self, name: str) -> Any:
        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            from agent.errors import UsageError

            raise UsageError(
                f"poll mode: no queues ({self.service.upper()} {name} is not called with queues.mode: poll)",
                hint="set queues.mode: sqs or sns for a store with queues",
            )

        return refuse


class Backend:
    """Clients for one backend; boto3 clients are thread-safe, so one of each is shared."""

    def __init__(self, cfg: BackendConfig, *, endpoint_url: str | None, local: bool, pool_size: int = 32) -> None:
        global _warned_tls
        self.cfg = cfg
        self.endpoint_url = endpoint_url
        self.local = local
        self.region = cfg.region
        self._pool_size = pool_size
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        # queues.mode poll: no queue or topic is ever called; a stray call is a bug and says so.
        self.poll = bool(getattr(cfg, "poll_mode", False))
        with translate("open the AWS session"):
            if local:
                self.session = boto3.Session(
                    region_name=cfg.region,
                    aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
                    aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
                )
            else:
                self.session = boto3.Session(profile_name=cfg.profile, region_name=cfg.region)
        if not cfg.verify_tls and not local and not _warned_tls:
            _warned_tls = True
            log.warning("backend.verify_tls is false: TLS certificates are NOT verified; use only for testing")

    @property
    def verify(self) -> bool | str:
        if not self.cfg.verify_tls:
            return False
        return self.cfg.ca_bundle or True

    def _config(self, service: str, *, read_timeout: float | None = None, attempts: int | None = None) -> botocore.config.Config:
        addressing: Any = "path" if self.local else self.cfg.addressing_style
        if read_timeout is None:
            # A long poll waits up to 20 s: the read timeout must outlast it.
            read_timeout = max(self.cfg.read_timeout, 30.0) if service == "sqs" else self.cfg.read_timeout
        return botocore.config.Config(  # type: ignore[call-arg]  # user_agent_appid is newer than the stubs
            region_name=self.cfg.region,
            # all tries, as in ~/.aws/config; the one retry layer of a request (the rule: agent/cloud/errors.py)
            retries={"mode": "standard", "total_max_attempts": attempts or self.cfg.max_attempts},
            connect_timeout=self.cfg.connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=self._pool_size,
            s3={"addressing_style": addressing},
            user_agent_appid="thumbdrop",
        )

    def client(self, service: str) -> Any:
        if self.poll and service in ("sqs", "sns"):
            return NoQueues(service)
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._make(service, self._config(service))
            return self._clients[service]

    def _make(self, service: str, config: botocore.config.Config) -> Any:
        kwargs: dict[str, Any] = {"config": config, "verify": self.verify}
        endpoint = self.endpoint_for(service)
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        with translate(f"create the {service} client"):
            client = self.session.client(service, **kwargs)  # type: ignore[call-overload]
        if service == "s3":
            share_endpoint_resolution(client)
        return client

    def receiver(self, wait_seconds: int) -> SQSClient:
        if self.poll:
            return NoQueues("sqs")  # type: ignore[return-value]
        """An SQS client for long polls of ``wait_seconds``: a poll whose answer is lost (a blackholed or
        half-open link) is given up ``RECEIVE_MARGIN`` s after its wait, not after read_timeout times
        max_attempts (minutes); one attempt, because the consumer's loop is the retry."""
        name = f"sqs-receive-{wait_seconds}"
        with self._lock:
            if name not in self._clients:
                config = self._config("sqs", read_timeout=wait_seconds + RECEIVE_MARGIN, attempts=1)
                self._clients[name] = self._make("sqs", config)
            return self._clients[name]  # type: ignore[no-any-return]

    @property
    def s3(self) -> S3Client:
        return self.client("s3")  # type: ignore[no-any-return]

    @property
    def sqs(self) -> SQSClient:
        return self.client("sqs")  # type: ignore[no-any-return]

    @property
    def sns(self) -> SNSClient:
        return self.client("sns")  # type: ignore[no-any-return]

    def endpoint_for(self, service: str) -> str | None:
        """backend.<service>_endpoint_url when set, else backend.endpoint_url (None: botocore decides)."""
        if not self.local:
            own = getattr(self.cfg, f"{service}_endpoint_url", None)
            if own:
                return str(own)
        return self.endpoint_url

    @property
    def split(self) -> bool:
        """S3 and the queue services on different endpoints: S3 notifications cannot reach the queues."""
        return self.endpoint_for("s3") != self.endpoint_for("sqs")

    def where(self, service: str) -> str:
        """The endpoint one service uses, for status and doctor."""
        endpoint = self.endpoint_for(service) or os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        return endpoint or f"AWS {service.upper()} ({self.region})"

    def describe(self) -> str:
        if self.local:
            return f"embedded local backend at {self.endpoint_url}"
        if any(getattr(self.cfg, f"{s}_endpoint_url", None) for s in ("s3", "sqs", "sns")):
            return "; ".join(f"{s.upper()} at {self.where(s)}" for s in ("s3", "sqs", "sns"))
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return f"S3-compatible endpoint {endpoint} ({self.region})"
        return f"AWS ({self.region})"

    def credential_source(self) -> str:
        """Where the credentials come from (env, shared-credentials-file, iam-role, ...), or 'none'."""
        if self.local:
            return "embedded backend (fixed local credentials)"
        creds = self.session.get_credentials()
        return getattr(creds, "method", "unknown") if creds is not None else "none"
