"""The real CLI in a subprocess: messages a user reads (issue 14, item 12)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import E2EEnv

pytestmark = pytest.mark.e2e


def test_run_creates_a_new_watch_folder_once_and_says_so(e2e: E2EEnv) -> None:
    """A watch folder nothing was ever uploaded from is made for the user, with one INFO line and no warning (one
    the journal has uploads from is an unplugged drive instead: tests/e2e/test_unplugged.py)."""
    gone = e2e.root / "usb" / "camera"
    e2e.write_config({"watch": {"folders": [str(e2e.inbox), str(gone)], "rescan_seconds": 0}})
    agent = e2e.start_agent()
    agent.wait_ready()
    rc, _took = agent.terminate(timeout=20)
    assert rc == 0, agent.diagnose()
    named = [line for line in agent.log().splitlines() if str(gone) in line]
    assert len(named) == 1, agent.diagnose()
    assert "INFO" in named[0] and "created watch folder" in named[0], agent.diagnose()
    assert gone.is_dir()


def test_global_options_after_the_command(e2e: E2EEnv) -> None:
    """'thumbdrop status --config X': the file given after the command is the one read."""
    e2e.write_config()
    res = e2e.cli("status", "--config", str(e2e.config_path), "--json", config=False)
    assert res.rc == 0, res
    assert f'"config": "{e2e.config_path}"' in res.stdout


def test_a_timed_out_sync_names_20_unfinished_then_counts_the_rest(e2e: E2EEnv) -> None:
    from tests.e2e.conftest import make_image

    names = sorted(f"t/{i:02}.jpg" for i in range(26))
    for n in names:
        make_image(e2e.inbox / n, (64, 48))
    e2e.write_config()
    # The deadline passes before the first step (setting up the backend alone takes longer): deterministic.
    res = e2e.cli("sync", "--timeout", "0.001")
    assert res.rc == 1, str(res)
    lines = res.stdout.splitlines()
    assert "  26 unfinished (timed out):" in lines, str(res)
    assert [ln for ln in lines if ln.startswith("  UNFINISHED ")] == [f"  UNFINISHED {n}" for n in names[:20]], str(res)
    assert lines[-1] == "  ... and 6 more (run sync with --json to get every name)", str(res)
    js = e2e.cli("sync", "--timeout", "0.001", "--json")
    assert js.rc == 1, str(js)
    assert len(json.loads(js.stdout)["unfinished"]) == 26


def test_stop_drains_the_running_agent_and_says_so(e2e: E2EEnv) -> None:
    """'thumbdrop stop': the running agent stops as on SIGTERM (exit 0); with none running, nothing to do."""
    e2e.write_config({"watch": {"rescan_seconds": 0}})
    agent = e2e.start_agent()
    agent.wait_ready()
    res = e2e.cli("stop", timeout=90)
    assert res.rc == 0, (res, agent.diagnose())
    assert f"stopping the agent (pid {agent.proc.pid})" in res.stdout and "agent stopped" in res.stdout, res
    assert agent.proc.wait(30) == 0, agent.diagnose()
    assert "thumbdrop agent stopped" in agent.log()
    again = e2e.cli("stop")
    assert again.rc == 0 and "no agent is running" in again.stdout, again
