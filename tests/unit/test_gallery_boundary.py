"""Boundaries of the faces: the gallery and the tray share the status words through a neutral module
(``agent.state.status_words``), never by importing each other's modules; and they write files only through
``agent.state.files`` (one temp naming scheme)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GALLERY = REPO / "agent" / "gallery"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (a lazy import is still an import)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_gallery_module_imports_the_tray() -> None:
    modules = sorted(GALLERY.glob("*.py"))
    assert len(modules) >= 5  # server, handler, live, index, security, launch
    bad = {
        str(p.relative_to(REPO)): sorted(m for m in imported_modules(p) if m == "agent.tray" or m.startswith("agent.tray."))
        for p in modules
    }
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_status_words_belong_to_no_face() -> None:
    imports = imported_modules(REPO / "agent" / "state" / "status_words.py")
    agent_imports = {m for m in imports if m.startswith("agent.")}
    assert agent_imports and all(m.startswith("agent.state.status") for m in agent_imports), agent_imports


def modules_loaded_by(code: str) -> list[str]:
    """The modules a fresh interpreter (run from the repo root) has loaded after running ``code``."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return list(json.loads(result.stdout.splitlines()[-1]))


def test_serving_the_gallery_loads_no_tray_module() -> None:
    loaded = modules_loaded_by(
        "import agent.gallery.server, agent.gallery.handler, agent.gallery.live, agent.gallery.launch\n"
        "from agent.gallery.live import page_status\n"
        "page_status({'state': 'running', 'roles': ['puller'], 'counts': {'pulled': 2}}, {})"
    )
    assert "agent.gallery.live" in loaded
    assert [m for m in loaded if m == "pystray" or m.startswith("agent.tray")] == []


def test_the_faces_write_files_only_through_atomic_write() -> None:
    # A hand-written temp file + rename is a sixth naming scheme that a cleaner cannot tell from a live write.
    faces = sorted((REPO / "agent" / "gallery").glob("*.py")) + sorted((REPO / "agent" / "tray").glob("*.py"))
    texts = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in faces}
    renames = {name: n for name, text in texts.items() if (n := text.count("os.replace(") + text.count(".replace(tmp"))}
    assert renames == {}
