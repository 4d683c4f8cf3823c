"""The CLI is a face: it reaches the agent through the operations layer, never around it (SPEC "Faces")."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_gallery_boundary import modules_loaded_by

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "agent" / "cli"

# What a command module may import: the operations layer, the config, errors and text helpers, the control
# client, and the entry points that run something (the agent, a sync, the doctor, the unit writer, the tray,
# the gallery) or set up logging.
ALLOWED = (
    "agent",  # __version__ only: not a prefix
    "agent.cli",
    "agent.config",
    "agent.errors",
    "agent.text",
    "agent.ops",
    "agent.service.control_client",
    "agent.service.run",
    "agent.service.sync",
    "agent.service.sync_client",
    "agent.service.logs",
    "agent.service.units",
    "agent.service.doctor",
    "agent.tray.backend",
    "agent.tray.app",
    "agent.gallery.launch",
    "agent.gallery.server",
)
FORBIDDEN = ("agent.pipeline", "agent.cloud", "agent.state", "agent.imaging", "agent.service.runtime", "agent.service.control")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every agent module ``path`` imports, at the top or inside a function, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # 'from agent.service import units' imports the module agent.service.units, not just the package
            subs = [f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")]
            found += [(node.lineno, m) for m in subs or [node.module]]
    return [(line, name) for line, name in found if name == "agent" or name.startswith("agent.")]


def _allowed(name: str) -> bool:
    if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
        return False
    return any(name == a or (a != "agent" and name.startswith(a + ".")) for a in ALLOWED)


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def test_the_boundary_rule_itself() -> None:
    assert _allowed("agent.ops.cleanup") and _allowed("agent.config.loader") and _allowed("agent.service.control_client")
    assert not _allowed("agent.pipeline.cleanup_run") and not _allowed("agent.cloud.dlq")
    assert not _allowed("agent.state.journal") and not _allowed("agent.service.runtime")
    assert not _allowed("agent.service.control") and not _allowed("agent.agentx")
    found = dict((n, line) for line, n in _imports(CLI / "cleanup_cmds.py"))
    assert "agent.ops.cleanup" in found  # 'from agent.ops import cleanup' is seen as the module it imports


def test_cli_modules_import_only_the_ops_layer_and_entry_points() -> None:
    bad = [
        f"{path.name}:{line}: {name}" for path in sorted(CLI.glob("*.py")) for line, name in _imports(path) if not _allowed(name)
    ]
    assert not bad, "the CLI reaches past the operations layer:\n" + "\n".join(bad)


def test_cli_modules_never_call_the_backend_themselves() -> None:
    bad = [
        f"{path.name}:{node.lineno}: .{node.attr}"
        for path in sorted(CLI.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr in ("s3", "sqs", "sns", "client")
    ]
    assert not bad, "the CLI calls the backend itself:\n" + "\n".join(bad)


def test_command_modules_do_not_import_cli_main() -> None:
    """main imports the command modules; they take ``load`` from agent.config.loader, so there is no circle."""
    bad = [
        f"{path.name}:{line}"
        for path in sorted(CLI.glob("*.py"))
        if path.name != "main.py"
        for line, name in _imports(path)
        if name == "agent.cli.main"
    ]
    assert not bad


def test_control_client_does_not_import_the_control_server() -> None:
    """The client needs only the socket's address (control_socket): no circle with the server it talks to."""
    names = {name for _line, name in _imports(REPO / "agent" / "service" / "control_client.py")}
    assert "agent.service.control" not in names and "agent.service.control_socket" in names


def test_importing_the_cli_loads_no_pipeline_and_no_boto() -> None:
    """'thumbdrop --help' loads neither the pipeline nor boto3: the command modules import them when they run."""
    loaded = modules_loaded_by("import agent.cli.main")
    assert "agent.cli.cleanup_cmds" in loaded
    assert [m for m in loaded if m.startswith(("agent.pipeline", "agent.cloud", "boto3", "botocore"))] == []


def test_the_cleaner_role_uses_the_ops_layer_without_loading_the_service_layer() -> None:
    """Imports point one way: the cleaner role (pipeline) calls agent.ops.cleanup, which loads no service or face."""
    loaded = modules_loaded_by("import agent.pipeline.cleaner_role")
    assert "agent.ops.cleanup" in loaded
    assert [m for m in loaded if m.startswith(("agent.service", "agent.cli", "agent.tray", "agent.gallery"))] == []
