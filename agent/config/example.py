"""Render the commented example config from the schema (config.example.yaml, ``thumbdrop init``).

Because the example is generated from ``model``, it documents every key; a test
checks that the checked-in ``config.example.yaml`` equals this rendering.
"""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from typing import Any

import yaml

from agent.config.model import Config

HEADER = """\
# thumbdrop configuration.
#
# Every key is optional: a missing key takes the default shown. Lines starting
# with "#   e.g." show another value you might use. Validate with:
#     thumbdrop --config THIS_FILE setup --dry-run
# Environment variables ($HOME, ${VAR}) are expanded in every value, and "~"
# in paths. The standard AWS variables (AWS_PROFILE, AWS_ACCESS_KEY_ID,
# AWS_ENDPOINT_URL, ...) work as in the AWS CLI.
"""


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def render_example() -> str:
    lines = [HEADER]
    _render(Config, lines, indent=0)
    return "\n".join(lines).rstrip() + "\n"


def _render(cls: type, lines: list[str], indent: int) -> None:
    hints = typing.get_type_hints(cls)
    pad = "  " * indent
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        doc = f.metadata.get("doc", "")
        for line in textwrap.wrap(doc, width=88 - len(pad) - 2):
            lines.append(f"{pad}# {line}")
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            lines.append(f"{pad}{f.name}:")
            _render(hint, lines, indent + 1)  # type: ignore[arg-type]
            lines.append("")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        example = f.metadata.get("example")
        lines.append(f"{pad}{f.name}: {_scalar(default)}")
        if example is not None and example != default:
            lines.append(f"{pad}#   e.g. {f.name}: {_scalar(example)}")
