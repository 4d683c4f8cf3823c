"""The worker role on AWS Lambda: SQS-, SNS- or S3-triggered invocations run ThumbnailWorker.

Config comes from the environment: ``THUMBDROP_CONFIG_YAML`` (a whole config
file's text) and/or ``THUMBDROP_<SECTION>_<KEY>`` variables
(``THUMBDROP_THUMBNAILS_SIZES=256,1024``), validated by the same schema as a
config file. ``backend.endpoint_url`` defaults to AWS here.

SQS batches report partial failures (``batchItemFailures``, the function's event
source mapping needs ``ReportBatchItemFailures``): only the records that failed,
transiently or for good, come back; after ``queues.max_receives`` SQS moves them
to the dead-letter queue. A bad image fails fast on every later receive: its
failure marker carries the verdict.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.cloud.provision import Provisioner, bucket_arn, partition
from agent.config.loader import parse_config
from agent.config.model import Config
from agent.errors import ConfigError, ThumbdropError
from agent.pipeline.worker import ThumbnailWorker
from agent.state.status import Status

log = logging.getLogger(__name__)
PREFIX = "THUMBDROP_"
CONFIG_YAML = "THUMBDROP_CONFIG_YAML"
NOT_CONFIG = {CONFIG_YAML, "THUMBDROP_CONFIG"}
ORIGIN = "environment (THUMBDROP_*)"

# What the Lambda worker must share with the agents, key by key: where the sources and thumbnails live, and every
# setting that changes the thumbnails' bytes or the worker's limits. Whole sections, so a key added to one of them
# reaches the Lambda without anyone remembering to list it.
LAMBDA_SECTIONS = ("source", "thumbnails", "worker", "video")

_cached: tuple[str, ThumbnailWorker] | None = None  # a warm Lambda container reuses its worker and clients


def config_from_env(env: Mapping[str, str]) -> Config:
    """The config the environment describes; ConfigError names every bad variable."""
    data: dict[str, Any] = {}
    if env.get(CONFIG_YAML):
        try:
            loaded = yaml.safe_load(env[CONFIG_YAML])
        except yaml.YAMLError as exc:
            raise ConfigError(ORIGIN, [f"{CONFIG_YAML}: not valid YAML: {exc}"]) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(ORIGIN, [f"{CONFIG_YAML}: must be a mapping of sections"])
        data = loaded or {}
    hints = typing.get_type_hints(Config)
    known = {f.name for f in dataclasses.fields(Config) if not f.metadata.get("internal")}
    sections = {name for name in known if dataclasses.is_dataclass(hints[name])}
    for name, value in sorted(env.items()):
        if not name.startswith(PREFIX) or name in NOT_CONFIG:
            continue
        rest = name[len(PREFIX) :].lower()
        if rest in known - sections:  # a top-level key: THUMBDROP_ROLES=worker
            data[rest] = _value(value)
            continue
        section = next((s for s in sorted(sections, key=len, reverse=True) if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(ORIGIN, [f"{name}: not THUMBDROP_<SECTION>_<KEY> with a section of {', '.join(sorted(sections))}"])
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(ORIGIN, [f"{name}: {section} is not a section"])
        target[rest[len(section) + 1 :]] = _value(value)
    if data.get("backend") is None:
        data["backend"] = {}
    backend = data["backend"] if isinstance(data["backend"], dict) else {}  # not a mapping: the loader says so
    backend.setdefault("endpoint_url", env.get("AWS_ENDPOINT_URL") or None)  # AWS, not the embedded backend
    backend.setdefault("region", env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1")
    data.setdefault("roles", ["worker"])
    return parse_config(data, origin=ORIGIN)


def _value(text: str) -> Any:
    """A YAML scalar; ``a,b`` (not a quoted string, not a flow list) is a list."""
    if "," in text and not text.lstrip().startswith(("[", "{", "'", '"')):
        return [_value(part.strip()) for part in text.split(",")]
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def lambda_environment(cfg: Config) -> dict[str, str]:
    """``THUMBDROP_<SECTION>_<KEY>`` for every key of ``LAMBDA_SECTIONS``: ``config_from_env`` reads back the same values."""
    env: dict[str, str] = {}
    for section in LAMBDA_SECTIONS:
        values = getattr(cfg, section)
        for f in dataclasses.fields(values):
            if not f.metadata.get("internal"):
                env[f"{PREFIX}{section}_{f.name}".upper()] = env_text(getattr(values, f.name))
    return env


def env_text(value: Any) -> str:
    """A value as a variable ``_value`` parses back to the same value ('' stays '', '#ffffff' is not a comment)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    if _value(text) != value:
        text = json.dumps(value)  # JSON is YAML: quoted, so never split at a comma
    if _value(text) != value:
        raise ValueError(f"{value!r} cannot be passed through an environment variable")
    return text


def worker_for(env: Mapping[str, str]) -> ThumbnailWorker:
    global _cached
    key = json.dumps(sorted((k, v) for k, v in env.items() if k.startswith(PREFIX) or k.startswith("AWS_ENDPOINT")))
    if _cached is None or _cached[0] != key:
        cfg = config_from_env(env)
        backend = Backend(cfg.backend, endpoint_url=cfg.backend.endpoint_url, local=False, pool_size=16)
        tmp = Path(tempfile.gettempdir()) / "thumbdrop"  # /tmp: the only writable place on Lambda
        _cached = (key, ThumbnailWorker(cfg, backend, Status(["worker"]), tmp))
    return _cached[1]


def handle(event: Mapping[str, Any], context: Any = None, *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Lambda handler's work: returns ``{"batchItemFailures": [...]}`` for SQS, a summary otherwise."""
    if not logging.getLogger("agent").level:
        logging.getLogger("agent").setLevel(logging.INFO)
    worker = worker_for(os.environ if env is None else env)
    records = list(event.get("Records") or [])
    if records and all(r.get("eventSource") == "aws:sqs" for r in records):
        return _sqs(worker, records)
    if records and all("s3" in r for r in records):
        return _direct(worker, [json.dumps({"Records": [r]}) for r in records])
    if records and all("Sns" in r for r in records):
        return _direct(worker, [str(r["Sns"].get("Message", "")) for r in records])
    raise ValueError("not an SQS, SNS or S3 event: expected Records[] with eventSource aws:sqs, s3 or Sns")


def _handle(worker: ThumbnailWorker, msg: dict[str, Any]) -> None:
    """One message, all of it: a video preview handed to the preview pool is waited for (the invocation is the job)."""
    later = worker.handle_message(msg)
    if later is not None:
        later.result()


def _sqs(worker: ThumbnailWorker, records: list[Mapping[str, Any]]) -> dict[str, Any]:
    failures = []
    for rec in records:
        msg = {"Body": rec.get("body", ""), "MessageId": rec.get("messageId", "?")}
        try:
            _handle(worker, msg)
        except ThumbdropError as exc:
            log.warning("%s (%s): %s", worker.describe(msg), exc.kind, exc)
            failures.append({"itemIdentifier": msg["MessageId"]})
        except Exception:  # noqa: BLE001 - a bug on one record must not fail (and so redeliver) the whole batch
            log.exception("unexpected error on %s", worker.describe(msg))
            failures.append({"itemIdentifier": msg["MessageId"]})
    return {"batchItemFailures": failures}


def _direct(worker: ThumbnailWorker, bodies: list[str]) -> dict[str, Any]:
    """S3 or SNS invoke the function asynchronously: raising makes Lambda retry, so only transient errors raise."""
    failed: list[dict[str, str]] = []
    transient: ThumbdropError | None = None
    for body in bodies:
        msg = {"Body": body, "MessageId": "direct"}
        try:
            _handle(worker, msg)
        except ThumbdropError as exc:
            log.warning("%s (%s): %s", worker.describe(msg), exc.kind, exc)
            failed.append({"item": worker.describe(msg), "reason": str(exc), "kind": exc.kind})
            if exc.kind == "transient":
                transient = exc
    if transient is not None:
        raise transient
    return {"processed": len(bodies), "failed": failed}


# --- 'thumbdrop setup --worker lambda' --------------------------------------------------------


def queue_arn(cfg: Config, backend: Backend) -> str | None:
    """The events queue's ARN, if the backend can tell (else the steps show a placeholder)."""
    try:
        url = Provisioner(cfg, backend, dry_run=True).queue_url(cfg.queues.events)
        if url is None:
            return None
        attrs = call("read the events queue", backend.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])
    except ThumbdropError:
        return None


def deploy_steps(cfg: Config, *, events_queue_arn: str | None, function: str = "thumbdrop-worker") -> str:
    """How to deploy the worker on Lambda for this config: build, IAM policy, function, SQS trigger."""
    region = cfg.backend.region
    part = partition(region)
    queue_arn = events_queue_arn or f"arn:{part}:sqs:{region}:ACCOUNT_ID:{cfg.queues.events}"
    timeout = max(30, min(900, cfg.queues.visibility_timeout // 6))
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": f"{bucket_arn(region, cfg.source.bucket)}/{cfg.source.prefix}*",
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": f"{bucket_arn(region, cfg.thumbnails.bucket)}/{cfg.thumbnails.prefix}*",
            },
            {
                "Effect": "Allow",
                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
                "Resource": queue_arn,
            },
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"arn:{part}:logs:{region}:*:*",
            },
        ],
    }
    env = {"Variables": lambda_environment(cfg)}
    storage = ""
    if cfg.video.preview:
        # A video and its preview are written to /tmp (512 MB by default): room for a few GB of source.
        storage = " --ephemeral-storage Size=10240"
    return f"""\
Worker on AWS Lambda ({region}), fed by the events queue {cfg.queues.events}:

1. Build the deployment zip (Pillow and PyAV wheels for the Lambda runtime; about 43 MB, 131 MB unpacked):
     packaging/lambda/build.sh            # ARCH=arm64 for Graviton; writes dist/thumbdrop-lambda-x86_64.zip

2. An execution role for the function with this policy (save as policy.json):
{_indent(json.dumps(policy, indent=2), 5)}
     aws iam create-role --role-name {function} --assume-role-policy-document \\
       '{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"lambda.amazonaws.com"}},"Action":"sts:AssumeRole"}}]}}'
     aws iam put-role-policy --role-name {function} --policy-name thumbdrop --policy-document file://policy.json

3. The function (save the environment as env.json):
{_indent(json.dumps(env, indent=2), 5)}
     aws lambda create-function --function-name {function} --runtime python3.12 --handler handler.handler \\
       --zip-file fileb://dist/thumbdrop-lambda-x86_64.zip --role arn:{part}:iam::ACCOUNT_ID:role/{function} \\
       --timeout {timeout} --memory-size 1024 --environment file://env.json --region {region}{storage}
   (SQS needs the queue's visibility timeout ({cfg.queues.visibility_timeout} s) at least 6x the function's timeout.)

4. The SQS trigger, reporting partial batch failures so one bad image does not redeliver the batch:
     aws lambda create-event-source-mapping --function-name {function} --event-source-arn {queue_arn} \\
       --batch-size 10 --function-response-types ReportBatchItemFailures --region {region}

5. Take the worker role off the agents (roles: [uploader, puller, cleaner]), or they compete with the function.
"""


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())
