"""Child of test_resumable_kill: uploads one file with the real Uploader, logging each part as it starts and ends.

Usage: python -m tests.reliability.resumable_child <moto-url> <watch-folder> <state-dir> <part-log> <rate>
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from agent.cloud.clients import Backend
from agent.config.loader import parse_config
from agent.pipeline import multipart
from agent.pipeline.uploader import Uploader
from agent.state.journal import Journal
from agent.state.status import Status


def main() -> int:
    url, folder, state, part_log, rate = sys.argv[1:6]
    cfg = parse_config(
        {
            "backend": {"endpoint_url": url, "addressing_style": "path", "max_bandwidth": rate, "max_attempts": 1},
            "source": {"bucket": "resume-kill"},
            "watch": {"folders": [folder], "include": ["*.mov"], "settle_seconds": 0},
            "transfer": {"multipart_threshold_mb": 5, "multipart_chunksize_mb": 5},
            "local": {"thumbnails_dir": str(Path(state) / "thumbs"), "state_dir": state},
        }
    )
    backend = Backend(cfg.backend, endpoint_url=url, local=False)
    journal = Journal(Path(state) / "journal.sqlite3")
    log_fd = os.open(part_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    real = multipart.ResumableUpload._send_part

    def logged(self: Any, src: Any, rec: Any, n: int) -> tuple[int, str]:
        os.write(log_fd, f"{os.getpid()} start {n}\n".encode())
        out = real(self, src, rec, n)
        os.write(log_fd, f"{os.getpid()} done {n}\n".encode())
        return out

    multipart.ResumableUpload._send_part = logged  # type: ignore[method-assign]
    up = Uploader(cfg, backend, Status(["uploader"]), journal)
    try:
        up.abort_stale_multipart()  # what the agent does at start: must keep the upload it can resume
        lf = up.local_file(Path(folder) / "big.mov")
        assert lf is not None
        result = up.upload(lf)
    finally:
        up.pool.shutdown()
        journal.close()
    os.write(log_fd, f"{os.getpid()} result {result}\n".encode())
    return 0 if result == "uploaded" else 1


if __name__ == "__main__":
    sys.exit(main())
