"""Log formats: terminal, journald (priority prefixes), JSON; the log file; secrets masked everywhere."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path

import pytest

from agent.cli.main import build_parser
from agent.service import logs
from agent.service.logs import JournalFormatter, JsonFormatter, formatter, setup_logging, stderr_is_journal, syslog_priority

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging rewires the root logger: give it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    agent_level = logging.getLogger("agent").level
    fmt = logs._format
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("agent").setLevel(agent_level)
    logs._format = fmt


def record(msg: str, *args: object, level: int = logging.INFO, name: str = "agent.test", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_syslog_priorities() -> None:
    assert [syslog_priority(lv) for lv in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)] == [
        2,
        3,
        4,
        6,
        7,
    ]


def test_journal_lines_carry_the_priority_and_no_timestamp() -> None:
    f = JournalFormatter()
    assert f.format(record("uploaded %s", "a.jpg")) == "<6>agent.test: uploaded a.jpg"
    assert f.format(record("gone", level=logging.ERROR)) == "<3>agent.test: gone"
    assert f.format(record("slow", level=logging.WARNING)) == "<4>agent.test: slow"
    assert f.format(record("detail", level=logging.DEBUG)) == "<7>agent.test: detail"


def test_journal_traceback_lines_keep_the_level() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("agent.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    lines = JournalFormatter().format(rec).splitlines()
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_stderr_is_the_journal_only_when_the_inode_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = open(tmp_path / "journal", "w")  # noqa: SIM115 - closed below
    try:
        st = os.fstat(stream.fileno())
        monkeypatch.setattr(sys, "stderr", stream)
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"})
        assert not stderr_is_journal({})
        # Under systemd setup_logging picks the journal format by itself.
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        setup_logging(0)
        logging.getLogger("agent.test").warning("disk nearly full")
        stream.flush()
        assert (tmp_path / "journal").read_text() == "<4>agent.test: disk nearly full\n"
    finally:
        stream.close()


def test_terminal_lines_are_readable() -> None:
    text = formatter("text").format(record("uploaded %s", "a.jpg"))
    assert text.endswith(" INFO    uploaded a.jpg")
    assert text[2] == ":"  # HH:MM:SS first


def test_json_one_object_per_line_with_extra_fields() -> None:
    text = JsonFormatter().format(record("pulled %s", "a.jpg", key="trip/a.jpg", size=12))
    assert "\n" not in text
    doc = json.loads(text)
    assert doc["level"] == "INFO"
    assert doc["logger"] == "agent.test"
    assert doc["message"] == "pulled a.jpg"
    assert doc["key"] == "trip/a.jpg" and doc["size"] == 12
    assert doc["ts"].endswith("+00:00")


def test_json_traceback_stays_on_one_line() -> None:
    try:
        raise RuntimeError("bad\nthing")
    except RuntimeError:
        rec = logging.LogRecord("agent.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = JsonFormatter().format(rec)
    assert "\n" not in text
    assert "RuntimeError: bad" in json.loads(text)["exc"]


def test_log_format_option() -> None:
    args = build_parser().parse_args(["--log-format", "json", "status"])
    assert args.log_format == "json"
    assert build_parser().parse_args(["status"]).log_format == "text"


def test_json_format_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    setup_logging(0, fmt="json")
    logging.getLogger("agent.test").info("hello %s", "world", extra={"item": "x.jpg"})
    doc = json.loads(buf.getvalue())
    assert doc["message"] == "hello world" and doc["item"] == "x.jpg"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_masked_in_every_part_of_a_line(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    setup_logging(2, fmt=fmt)
    log = logging.getLogger("botocore.test")  # -vv: library debug lines, where headers would show up
    log.debug("Authorization: AWS4-HMAC-SHA256 Credential=%s/20260101/us-east-1/s3", KEY_ID)
    log.debug("config", extra={"secret": SECRET})
    try:
        raise ValueError(f"bad key {KEY_ID}")
    except ValueError:
        log.exception("failed with %s", SECRET)
    out = buf.getvalue()
    assert out.count("***") >= (4 if fmt == "json" else 3)  # text lines do not show extra fields
    assert KEY_ID not in out and SECRET not in out


def test_log_file_rotates_at_5_mb_keeping_5(tmp_path: Path) -> None:
    setup_logging(0)
    used = logs.use_config_log_file("thumbdrop.log", tmp_path)
    assert used == tmp_path / "thumbdrop.log"
    files = [h for h in logging.getLogger().handlers if isinstance(h, RotatingFileHandler)]
    assert len(files) == 1
    assert files[0].maxBytes == 5 * 1024 * 1024 and files[0].backupCount == 5
    # The terminal keeps its lines too.
    assert any(type(h) is logging.StreamHandler for h in logging.getLogger().handlers)
    logging.getLogger("agent.test").info("to the file")
    files[0].flush()
    assert "INFO    agent.test: to the file" in (tmp_path / "thumbdrop.log").read_text()


def test_log_file_follows_a_reload_and_the_command_line_wins(tmp_path: Path) -> None:
    setup_logging(0)
    logs.use_config_log_file(str(tmp_path / "a.log"), tmp_path)
    logs.use_config_log_file(str(tmp_path / "b.log"), tmp_path)
    names = [Path(h.baseFilename).name for h in logging.getLogger().handlers if isinstance(h, RotatingFileHandler)]
    assert names == ["b.log"]
    logs.use_config_log_file(None, tmp_path)
    assert not [h for h in logging.getLogger().handlers if isinstance(h, RotatingFileHandler)]
    logs.log_to_file(str(tmp_path / "cli.log"))  # 'run --log-file' (the tray's detached agent)
    assert logs.use_config_log_file("config.log", tmp_path) == tmp_path / "cli.log"
    assert not (tmp_path / "config.log").exists()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_name_with_a_newline_or_an_undecodable_byte_stays_on_one_line(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names are shown as everywhere else (\\xff, \\n), never as a split line or \\udcff, in every format."""
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    setup_logging(0, fmt=fmt)
    logging.getLogger("agent.test").error("failed %s: %s", "inbox/two\nlines caf\udce9.jpg", "not an image")
    out = buf.getvalue()
    assert out.count("\n") == 1, out
    line = json.loads(out)["message"] if fmt == "json" else out
    assert "failed inbox/two\\nlines caf\\xe9.jpg: not an image" in line
    assert "udce9" not in out
