"""What the tray writes and says about results: the failed-items report, and a result dict in a few words."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.state.files import atomic_write
from agent.tray.menu import TrayView

REPORT_FILE = "failed-items.txt"


def write_failed_report(view: TrayView, state_dir: Path) -> Path:
    """A plain-text list of the agent's recent failures, in the agent's state dir (else ``state_dir``)."""
    snap = view.snap
    failures = [f for f in snap.get("failures") or [] if isinstance(f, dict)]
    lines = [
        "thumbdrop: failed items",
        f"written {time.strftime('%Y-%m-%d %H:%M:%S')} from the agent (pid {snap.get('pid', '?')}, config {view.info.get('config', '?')})",
        f"{int((snap.get('counts') or {}).get('failed') or 0)} failure(s) since the agent started; the last {len(failures)} below.",
        "",
    ]
    for f in reversed(failures):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(f.get("at") or 0)))
        lines.append(f"{when}  {f.get('role', '?'):<8} {f.get('name')}")
        lines.append(f"    {f.get('reason')}")
    if not failures:
        lines.append("(no failures)")
    lines += ["", "Fix or remove the files; 'Retry failed items' in the tray menu (or 'thumbdrop dlq redrive') tries again."]
    path = Path(str(view.info.get("state_dir") or state_dir)) / REPORT_FILE
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def describe(result: Any) -> str:
    """A short human line for a result dict from the agent ('12 objects, 3.4 MB')."""
    if not isinstance(result, dict):
        return str(result)
    parts = []
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if "bytes" in key:
            parts.append(f"{value / 1e6:.1f} MB")
        else:
            parts.append(f"{value} {key.replace('_', ' ')}")
    return ", ".join(parts) or str(result)
