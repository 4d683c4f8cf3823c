"""pid_alive: a finished child of ours is not alive, and its owner still gets its exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from agent.state.processes import pid_alive


def test_a_running_process_is_alive_and_a_bad_pid_is_not() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-5)
    assert not pid_alive(2**40)


def test_an_exited_child_is_not_alive_and_keeps_its_exit_code_for_popen() -> None:
    # The tray asks pid_alive about the agent it started; reaping the zombie there made Popen report code 0.
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    deadline = time.monotonic() + 30
    while pid_alive(proc.pid):
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)
    assert not pid_alive(proc.pid)  # asked again: still not alive, still not reaped by us
    assert proc.wait(10) == 3
