"""``thumbdrop doctor``'s checks, one module per subject; ``agent.service.doctor`` runs them in order.

``reach`` (backend, credentials, clock), ``resources`` (buckets, queues, access, store capabilities, cleanup
mode), ``routes`` (drift from what setup writes, duplicate event routes), ``local`` (watch folders, inotify,
disk, video). Each check is PASS, WARN, FAIL or SKIP with a one-line fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass
class Check:
    name: str
    result: str  # PASS, WARN, FAIL or SKIP
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def failed(checks: list[Check]) -> bool:
    return any(c.result == FAIL for c in checks)
