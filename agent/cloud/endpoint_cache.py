"""Let botocore's S3 endpoint cache hit across object keys.

botocore resolves the endpoint of every S3 request by evaluating the service's endpoint rule set, and caches
the result (an LRU of 100 entries shared by all clients) keyed on every parameter the operation passes, ``Key``
included. The rule set declares ``Key``, ``Prefix`` and ``CopySource`` but no rule refers to them, so each new
object key is a miss and the whole rule set is evaluated again: about 7 % of the client's CPU per PutObject
against a local server (benchmarks/PIPELINE_NOTES.md). Dropping the parameters that no rule reads before the
cached call gives the same endpoint from the cache.

botocore 1.44 made the same fix upstream (``excluded_params``); there this steps aside. It keeps the older
botocore releases that setup.cfg allows as fast. The unused set is computed from the rule set botocore loaded, so a future rule that reads ``Key`` keeps it. This
touches two private attributes (``_ruleset_resolver._provider`` and ``_loader``); if they change, nothing is
installed and botocore works as it always did.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def unused_parameters(ruleset: dict[str, Any]) -> frozenset[str]:
    """Parameters the rule set declares but no rule reads (as ``{"ref": name}`` or in a ``{name}`` template)."""
    refs: set[str] = set()
    templates: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("ref"), str):
                refs.add(node["ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and "{" in node:
            templates.append(node)

    walk(ruleset.get("rules", []))
    text = "\n".join(templates)
    return frozenset(
        name
        for name in ruleset.get("parameters", {})
        if name not in refs and "{" + name + "}" not in text and "{" + name + "#" not in text
    )


def share_endpoint_resolution(client: Any) -> bool:
    """Make ``client``'s endpoint resolution ignore parameters its rule set never reads; True if installed."""
    provider = getattr(getattr(client, "_ruleset_resolver", None), "_provider", None)
    resolve = getattr(provider, "resolve_endpoint", None)
    loader = getattr(client, "_loader", None)
    if provider is None or not callable(resolve) or loader is None:
        return False
    if getattr(provider, "_excluded_params", None):
        return False  # botocore 1.44+ drops these parameters itself (EndpointProvider.excluded_params)
    try:
        ruleset = loader.load_service_model(client.meta.service_model.service_name, "endpoint-rule-set-1")
    except Exception as exc:  # noqa: BLE001 - an optimisation only: any failure leaves botocore as it is
        log.debug("endpoint cache not installed: %s", exc)
        return False
    unused = unused_parameters(ruleset)
    if not unused:
        return False

    def resolve_endpoint(**params: Any) -> Any:
        for name in unused:
            params.pop(name, None)
        return resolve(**params)

    provider.resolve_endpoint = resolve_endpoint
    return True
