"""sync keeps the worker's verdict in the journal, as run does: a known-bad file is not uploaded again (QA P7)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import requests
import yaml

from agent.cli.main import main
from agent.state.journal import Journal
from tests.integration.test_slow_writes import config_data, drop, small_jpeg


def test_a_second_sync_does_not_upload_a_known_bad_file_again_and_still_reports_it(
    tmp_path: Path, moto_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_file = tmp_path / "thumbdrop.yaml"
    cfg_file.write_text(yaml.safe_dump(config_data(tmp_path, moto_url)), encoding="utf-8")
    drop(tmp_path / "inbox" / "readme.jpg", b"just text, not an image\n")
    drop(tmp_path / "inbox" / "good.jpg", small_jpeg())
    capsys.readouterr()

    assert main(["-q", "--config", str(cfg_file), "sync", "--json", "--timeout", "120"]) == 1
    first = json.loads(capsys.readouterr().out)
    assert first["uploaded"] == 2 and [f["name"] for f in first["failures"]] == ["readme.jpg"], first
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        assert [(name, role) for name, role, *_ in journal.failures()] == [("readme.jpg", "worker")]
    finally:
        journal.close()

    # The embedded backend starts empty each time: only the journal remembers the verdict.
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    assert main(["-q", "--config", str(cfg_file), "sync", "--json", "--timeout", "120"]) == 1
    second = json.loads(capsys.readouterr().out)
    # readme.jpg is known bad: not uploaded again. (good.jpg normally counts as done by its local thumbnail, but
    # that thumbnail's time is the object's LastModified, in whole seconds: within the second of its drop it
    # goes up again. Not what this test is about.)
    assert [f["name"] for f in second["failures"]] == ["readme.jpg"], second
    assert second["failures"][0]["reason"] == first["failures"][0]["reason"]
    assert second["unfinished"] == [], second
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="thumbdrop-source").get("Contents", [])]
    assert "readme.jpg" not in keys and second["uploaded"] == len(keys), (keys, second)
