"""The control socket: round trips with a fake agent, file mode, stale sockets, errors, and the CLI on top."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.errors import EXIT_BACKEND, EXIT_OK
from agent.service.control import AgentAlreadyRunningError, ControlServer, socket_path, sun_path
from agent.service.control_client import AgentNotRunningError, ControlClient, ControlCommandError, read_status
from agent.state.status import Status
from tests.unit.control_fakes import FakeAgent, make_config, serving


@pytest.fixture()
def agent(tmp_path: Path) -> FakeAgent:
    cfg = make_config(tmp_path)
    state = Path(str(cfg.local.state_dir))
    state.mkdir(mode=0o700)
    return FakeAgent(cfg, state)


def test_round_trip_of_every_command(agent: FakeAgent) -> None:
    with serving(agent):
        client = ControlClient(agent.state_dir)
        snap = client.call("status")
        assert snap["state"] == "running" and snap["pid"] == os.getpid()
        assert client.call("pause") == "paused"
        assert client.call("status")["state"] == "paused"
        assert client.call("resume") == "running"
        assert client.call("sync-now") == {"triggered": True}
        info = client.call("info")
        assert info["pid"] == os.getpid()
        assert info["inbox"] == list(agent.cfg.watch.folders)
        assert info["thumbnails_dir"] == agent.cfg.local.thumbnails_dir
        assert info["state_dir"] == str(agent.state_dir)
        assert "features" not in info  # cleanup and dlq are always there: nothing to announce
        assert client.call("stop") == {"stopping": True}
        assert agent.calls == ["pause", "resume", "sync-now", "stop"]
        assert client.running()


def test_socket_is_private_and_removed_on_stop(agent: FakeAgent) -> None:
    path = socket_path(agent.state_dir)
    with serving(agent):
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert not [p for p in agent.state_dir.iterdir() if p.name.startswith(".control.sock")], "temp name left behind"
    assert not path.exists()


def test_stale_socket_file_is_replaced(agent: FakeAgent) -> None:
    path = socket_path(agent.state_dir)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed agent leaves
    assert path.exists()
    with serving(agent):
        assert ControlClient(agent.state_dir).call("status")["state"] == "running"


def test_a_second_agent_on_the_same_state_dir_is_refused(agent: FakeAgent) -> None:
    with serving(agent):
        second = ControlServer(agent.state_dir, agent)
        with pytest.raises(AgentAlreadyRunningError) as err:
            second.start()
        assert f"pid {os.getpid()}" in str(err.value)
        assert err.value.exit_code == 2
        # The first one is untouched.
        assert ControlClient(agent.state_dir).call("status")["state"] == "running"


def test_no_agent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AgentNotRunningError) as err:
        ControlClient(tmp_path).call("status")
    assert "no agent is running" in str(err.value)
    assert err.value.exit_code == EXIT_BACKEND
    assert not ControlClient(tmp_path).running()


def test_errors_come_back_as_codes(agent: FakeAgent) -> None:
    with serving(agent):
        client = ControlClient(agent.state_dir)
        with pytest.raises(ControlCommandError) as err:
            client.call("frobnicate")
        assert err.value.code == "unknown-command" and "sync-now" in str(err.value)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(socket_path(agent.state_dir)))
            raw.sendall(b"not json\n[1, 2]\n" + json.dumps({"cmd": "status"}).encode() + b"\n")
            with raw.makefile("rb") as reader:
                answers = [json.loads(reader.readline()) for _ in range(3)]
        assert [a.get("code") for a in answers] == ["bad-request", "bad-request", None]
        assert answers[2]["result"]["state"] == "running"


def test_stop_does_not_wait_for_an_idle_client(agent: FakeAgent) -> None:
    server = ControlServer(agent.state_dir, agent)
    server.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(socket_path(agent.state_dir)))
        idle.sendall(b'{"cmd": "status"}\n')
        with idle.makefile("rb") as reader:
            assert json.loads(reader.readline())["ok"]
            started = time.monotonic()
            server.stop()
            server.join(10)
            assert time.monotonic() - started < 2
            assert reader.readline() == b""  # the server hung up


def test_several_requests_on_one_connection(agent: FakeAgent) -> None:
    with serving(agent), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(socket_path(agent.state_dir)))
        reader = raw.makefile("rb")
        answers = []
        for req in (b"garbage\n", b'{"cmd": "pause"}\n', b'{"cmd": "status"}\n'):
            raw.sendall(req)
            answers.append(json.loads(reader.readline()))
        reader.close()
    assert [a["ok"] for a in answers] == [False, True, True]
    assert answers[2]["result"]["state"] == "paused"


def test_a_stopping_agent_refuses_pause(agent: FakeAgent) -> None:
    with serving(agent):
        agent.stop_event.set()
        with pytest.raises(ControlCommandError) as err:
            ControlClient(agent.state_dir).call("pause")
        assert err.value.code == "stopping"
        assert ControlClient(agent.state_dir).call("status")["state"] == "running"


def test_cleanup_through_the_socket_trusts_only_this_drives_uploads(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    """The socket's cleanup reads the journal as 'thumbdrop cleanup' and the cleaner role do (one lookup):
    a file uploaded while another drive was mounted on the watch folder is not this folder's."""
    from agent.pipeline import cleanup_run
    from agent.state.journal import Journal, UploadRecord

    seen: dict[str, Any] = {}

    def fake_plan(_cfg: Any, _backend: Any, **kwargs: Any) -> cleanup_run.Plan:
        seen.update(kwargs)
        return cleanup_run.Plan([], [], [])

    monkeypatch.setattr(cleanup_run, "plan_cleanup", fake_plan)
    inbox = agent.cfg.watch.folders[0]
    journal = Journal(agent.state_dir / "journal.sqlite3")
    agent.journal = journal  # type: ignore[attr-defined]
    try:
        journal.accept_folder(inbox, "drive-b")
        for name, drive in (("a.jpg", "drive-a"), ("b.jpg", "drive-b")):
            journal.record_upload(UploadRecord(f"{inbox}/{name}", f"src/{name}", 1, 1, "s", "e", folder_id=drive))
        with serving(agent):
            assert ControlClient(agent.state_dir).call("cleanup-now", dry_run=True)["objects"] == 0
        lookup = seen["uploaded_from"]
        assert lookup(f"{inbox}/b.jpg") == "src/b.jpg"
        assert lookup(f"{inbox}/a.jpg") is None  # uploaded from the other drive
        assert seen["accepted"](inbox) == "drive-b"
    finally:
        journal.close()


def test_a_bug_in_a_command_does_not_kill_the_server(agent: FakeAgent) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    agent.sync_now = broken  # type: ignore[method-assign]
    with serving(agent):
        client = ControlClient(agent.state_dir)
        with pytest.raises(ControlCommandError) as err:
            client.call("sync-now")
        assert err.value.code == "internal" and "boom" in str(err.value)
        assert client.call("status")["state"] == "running"


def test_long_state_dir_paths_still_work(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(socket_path(deep))) > 108
    fake = FakeAgent(make_config(tmp_path), deep)
    with serving(fake):
        assert ControlClient(deep).call("status")["state"] == "running"
        with sun_path(socket_path(deep)) as addr:
            assert len(addr) < 100


def test_read_status_prefers_the_socket_then_status_json(agent: FakeAgent) -> None:
    assert read_status(agent.state_dir) is None
    stale = Status(["uploader"])
    stale.set_state("running")
    stale.publish(agent.state_dir)
    assert read_status(agent.state_dir)["state"] == "running"  # type: ignore[index]
    with serving(agent):
        agent.status.set_state("paused")
        assert read_status(agent.state_dir)["state"] == "paused"  # type: ignore[index]


# --- the CLI on top ---------------------------------------------------------------------------


def _config_file(agent: FakeAgent, tmp_path: Path) -> str:
    path = tmp_path / "thumbdrop.yaml"
    path.write_text(
        f"local: {{state_dir: '{agent.state_dir}', thumbnails_dir: '{tmp_path / 'thumbs'}'}}\n"
        f"watch: {{folders: ['{tmp_path / 'inbox'}']}}\n"
    )
    return str(path)


def test_pause_and_resume_commands(agent: FakeAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config_file(agent, tmp_path)
    with serving(agent):
        assert main(["--config", config, "pause"]) == EXIT_OK
        assert "paused" in capsys.readouterr().out
        assert agent.status.state == "paused"
        assert main(["--config", config, "resume"]) == EXIT_OK
        assert agent.status.state == "running"


def test_pause_without_an_agent_exits_3(agent: FakeAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config_file(agent, tmp_path)
    assert main(["--config", config, "pause"]) == 3
    assert "no agent is running" in capsys.readouterr().err
    assert main(["--config", config, "resume"]) == 3


def test_status_command_reads_the_live_agent(agent: FakeAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config_file(agent, tmp_path)
    with serving(agent):
        agent.status.set_state("paused")
        assert main(["--config", config, "status", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["agent"]["state"] == "paused"
    assert report["agent"]["pid"] == os.getpid()


def test_a_socket_that_cannot_be_bound_is_not_fatal(tmp_path: Path, agent: FakeAgent) -> None:
    nowhere = tmp_path / "no-such-dir"  # bind fails (as it would on a filesystem without sockets), even as root
    server = ControlServer(nowhere, agent)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("agent.service.control")
    logger.addHandler(handler)
    try:
        server.start()  # logged, not raised: the agent runs on without a control interface
    finally:
        logger.removeHandler(handler)
    server.stop()
    server.join(1)
    assert any("no control socket" in r.getMessage() for r in records)
    with pytest.raises(AgentNotRunningError):
        ControlClient(nowhere).call("status")


def test_status_long_poll_answers_on_a_change_or_after_the_wait(agent: FakeAgent) -> None:
    import threading

    with serving(agent):
        client = ControlClient(agent.state_dir)
        version = client.call("status")["version"]
        started = time.monotonic()
        assert client.call("status", after=version, wait=0.3)["version"] == version  # nothing changed: after the wait
        assert time.monotonic() - started >= 0.25
        later = threading.Timer(0.2, lambda: agent.status.pulled("/t/a.jpg"))
        later.name = "test-change"
        later.start()
        try:
            snap = client.call("status", after=version, wait=15)  # a change ends the wait long before 15 s
        finally:
            later.join()
        assert snap["version"] > version and snap["recent_thumbnails"] == ["/t/a.jpg"]
        with pytest.raises(ControlCommandError) as err:
            client.call("status", after="x")
        assert err.value.code == "bad-request"


def test_pending_local_changes_bump_the_status_version() -> None:
    status = Status(["uploader"])
    before = status.version
    status.set_pending(3)
    assert status.version == before + 1 and status.snapshot()["pending_local"] == 3
    status.set_pending(3)  # no change: no wake-up for the long polls
    assert status.version == before + 1


def test_retry_of_an_unlisted_item_is_refused(agent: FakeAgent) -> None:
    with serving(agent):
        client = ControlClient(agent.state_dir)
        with pytest.raises(ControlCommandError) as err:
            client.call("retry", name="a.jpg", role="worker")
        assert err.value.code == "not-found"
        with pytest.raises(ControlCommandError) as err:
            client.call("retry")
        assert err.value.code == "bad-request"


class _FailsAtOnce:
    """An uploader whose retried file fails again before the retry command has even answered."""

    def __init__(self, status: Any, reason: str) -> None:
        self.status, self.reason, self.touched = status, reason, []

    def touch(self, path: Path) -> None:
        self.touched.append(path)
        self.status.fail(str(path), self.reason, "uploader", once=True)


def test_an_item_that_fails_again_at_once_stays_listed_after_its_retry(agent: FakeAgent) -> None:
    # The retry used to take the item off the list AFTER sending it again: a failure that came back in between
    # was not listed twice (same reason), then wiped: the still-failing file vanished from status.
    reason = "cannot read it: permission denied"
    agent.status.fail("/in/a.jpg", reason, "uploader")
    agent.uploader = _FailsAtOnce(agent.status, reason)  # type: ignore[attr-defined]
    with serving(agent):
        answer = ControlClient(agent.state_dir).call("retry", name="/in/a.jpg", role="uploader")
    assert answer == {"retried": "/in/a.jpg", "how": "queued for upload"}
    listed = [f for f in agent.status.snapshot()["failures"] if f["name"] == "/in/a.jpg"]
    assert len(listed) == 1 and listed[0]["reason"] == reason
    assert agent.status.snapshot()["counts"]["failed"] == 1


def test_a_retry_that_cannot_be_sent_keeps_the_item_listed(agent: FakeAgent) -> None:
    class Broken:
        def touch(self, path: Path) -> None:
            raise OSError("disk gone")

    agent.status.fail("/in/b.jpg", "bad", "uploader")
    agent.uploader = Broken()  # type: ignore[attr-defined]
    with serving(agent), pytest.raises(ControlCommandError):
        ControlClient(agent.state_dir).call("retry", name="/in/b.jpg", role="uploader")
    assert [f["name"] for f in agent.status.snapshot()["failures"]] == ["/in/b.jpg"]
