"""AWS Lambda entry point: thumbdrop's thumbnail worker.

Handler setting: ``handler.handler``. Triggers: the events queue (SQS, with
``ReportBatchItemFailures``), or the source bucket's S3 events, or an SNS topic.
Config from the environment: ``THUMBDROP_CONFIG_YAML`` and/or
``THUMBDROP_<SECTION>_<KEY>`` (e.g. ``THUMBDROP_THUMBNAILS_BUCKET``). Build the
zip with ``build.sh`` beside this file; ``thumbdrop setup --worker lambda``
prints the deployment steps for a config.
"""

from __future__ import annotations

from typing import Any

from agent.service.lambda_worker import handle


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
