"""Render the commented example config from the schema (config.example.yaml, ``thumbdrop init``).

Because the example is generated from ``model``, it documents every key; a test
checks that the checked-in ``config.example.yaml`` equals this rendering.
"""

from __future__ import annotations

import dataclasses
import re
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


# A quoted literal in a description ('.thumbdrop-failed/', 'thumbdrop setup'): a key name or a command to copy,
# so a comment line never breaks inside one. The quote must not be an apostrophe (agent's).
QUOTED = re.compile(r"(?<![\w'])'[^'\n]*'(?![\w'])")
_NBSP = "\x00"  # stands for a space inside a quoted literal while wrapping


def wrap_doc(doc: str, width: int) -> list[str]:
    """``doc`` as comment lines of at most ``width`` characters, never breaking a quoted literal or a hyphenated word."""
    protected = QUOTED.sub(lambda m: m.group(0).replace(" ", _NBSP), doc)
    lines = textwrap.wrap(protected, width=width, break_on_hyphens=False, break_long_words=False)
    return [line.replace(_NBSP, " ") for line in lines]


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


# 'thumbdrop init --system' (or a path under /etc): the edge box's system service runs as its own user, whose
# '~' is /var/lib/thumbdrop, so every folder is absolute (under /srv/thumbdrop, which the shipped unit may write)
# and the state dir is where 'thumbdrop status' and 'pause' look for the running service.
SYSTEM_VALUES: dict[str, Any] = {
    "watch.folders": ["/srv/thumbdrop/inbox"],
    "local.thumbnails_dir": "/srv/thumbdrop/thumbnails",
    "local.state_dir": "/var/lib/thumbdrop",
    "cleanup.inbox_move_to": "/srv/thumbdrop/done",
}


def render_example(values: dict[str, Any] | None = None) -> str:
    """The commented config; ``values`` (key path -> value) replace the defaults shown (``SYSTEM_VALUES``)."""
    lines = [HEADER.rstrip("\n"), ""]
    _render(Config, lines, indent=0, values=values or {})
    return "\n".join(lines).rstrip() + "\n"


def _render(cls: type, lines: list[str], indent: int, values: dict[str, Any], path: str = "") -> None:
    hints = typing.get_type_hints(cls)
    pad = "  " * indent
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        doc = f.metadata.get("doc", "")
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and lines and lines[-1] != "":
            lines.append("")  # a blank line before each section's comment, also after a top-level scalar key
        for line in wrap_doc(doc, width=88 - len(pad) - 2):
            lines.append(f"{pad}# {line}")
        if dataclasses.is_dataclass(hint):
            lines.append(f"{pad}{f.name}:")
            _render(hint, lines, indent + 1, values, f"{path}{f.name}.")  # type: ignore[arg-type]
            lines.append("")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = values.get(path + f.name, default)
        example = f.metadata.get("example")
        lines.append(f"{pad}{f.name}: {_scalar(default)}")
        if example is not None and example != default:
            lines.append(f"{pad}#   e.g. {f.name}: {_scalar(example)}")
