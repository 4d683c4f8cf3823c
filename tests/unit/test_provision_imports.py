"""Provisioning's modules import one way: provision -> lifecycle -> provisioning.*, with no lazy import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = [
    "agent/cloud/provision.py",
    "agent/cloud/lifecycle.py",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "agent/cloud/provisioning").glob("*.py")),
]


def imports(path: str) -> list[tuple[str, bool]]:
    """(module imported, at the top level?) for each import in the file."""
    tree = ast.parse((REPO / path).read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top) for alias in node.names)
    return found


def test_no_lazy_imports_and_nothing_below_imports_provision() -> None:
    for path in MODULES:
        for module, at_top in imports(path):
            assert at_top, f"{path} imports {module} inside a function: an import circle dodged?"
            if path != "agent/cloud/provision.py":
                assert module != "agent.cloud.provision", f"{path} imports agent.cloud.provision: a circle"


def test_lifecycle_imports_first_in_a_fresh_interpreter() -> None:
    # Either module imported first works on its own: no circle through a half-initialised module.
    for first in ("agent.cloud.lifecycle", "agent.cloud.provision", "agent.cloud.provisioning.notifications"):
        subprocess.run([sys.executable, "-c", f"import {first}"], cwd=REPO, check=True)
