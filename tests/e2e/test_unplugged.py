"""An unplugged drive is not a deletion: a watch folder that vanishes (or comes back empty) keeps its thumbnails."""

from __future__ import annotations

import json
import os

import pytest

from tests.e2e.conftest import THUMB_BUCKET, E2EEnv, files_under, make_image, wait_for

pytestmark = pytest.mark.e2e


def test_an_unplugged_watch_folder_keeps_its_thumbnails_locally_and_in_the_bucket(e2e: E2EEnv) -> None:
    drive = e2e.root / "drive"  # the second watch folder, on a "removable drive"
    e2e.write_config(
        {
            "watch": {"folders": [str(e2e.inbox), str(drive)]},
            # The guard would hide the bug (it stops runs that delete most thumbnails): turn it off.
            "cleanup": {"remove_orphan_local_thumbnails": True, "max_delete_fraction": 1.0},
        }
    )
    make_image(e2e.inbox / "a.jpg", (320, 240))
    make_image(drive / "b.jpg", (320, 240))
    make_image(drive / "sub" / "c.jpg", (240, 320))
    synced = e2e.cli("sync")
    assert synced.rc == 0, str(synced)
    on_drive = {"drive/b.jpg", "drive/sub/c.jpg"}
    assert files_under(e2e.thumbs) == {"inbox/a.jpg", *on_drive}

    unplugged = e2e.root / "unplugged"
    os.rename(drive, unplugged)  # what unmounting the drive looks like to the agent
    agent = e2e.start_agent()
    agent.wait_ready()
    # Either the note that it skipped the folder, or (the bug) the summary of what it deleted.
    wait_for(lambda: "cleanup: " in agent.log(), 45, "the first cleanup run", agent.diagnose)

    assert not drive.exists(), "the agent must not create a watch folder files were uploaded from"
    assert files_under(e2e.thumbs) == {"inbox/a.jpg", *on_drive}
    assert set(e2e.keys(THUMB_BUCKET)) == {"inbox/a.jpg", *on_drive}
    log = agent.log()
    assert f"watch folder {drive} is missing, but files were uploaded from it" in log
    assert f"remove_orphan_local_thumbnails skipped for {drive}: it is missing" in log
    # Named once, with the advice for an unplugged drive (never "create it").
    warned = [line for line in log.splitlines() if "WARNING" in line and str(drive) in line]
    assert len(warned) == 1 and "plug the drive in or mount the share" in warned[0], log
    assert "create it" not in log, log

    status = e2e.cli("status")
    assert status.rc == 0, str(status)
    assert f"WAITING: watch folder {drive} is missing, but files were uploaded from it" in status.stdout, str(status)
    report = json.loads(e2e.cli("status", "--json").stdout)
    assert [m["folder"] for m in report["agent"]["missing_folders"]] == [str(drive)]
    doctor = e2e.cli("doctor")
    assert "(the agent creates it)" not in doctor.stdout, str(doctor)
    assert "WARN  watch folders" in doctor.stdout and f"watch folder {drive} is missing" in doctor.stdout, str(doctor)

    # The mount point comes back empty (the drive is not in it): watched again, but still no deletion.
    drive.mkdir()
    wait_for(lambda: f"watch folder {drive} is back" in agent.log(), 30, "the folder to be watched again", agent.diagnose)
    assert [line for line in agent.log().splitlines() if "is back" in line][0].split()[1] == "INFO"

    def waiting() -> str:
        return " ".join(m["detail"] for m in json.loads(e2e.cli("status", "--json").stdout)["agent"]["missing_folders"])

    # status shows the empty stand-in as WAITING too (as doctor does).
    wait_for(lambda: "holds none of the files uploaded from it" in waiting(), 30, "status to show the empty stand-in")
    status = e2e.cli("status")
    assert f"WAITING: watch folder {drive} holds none of the files uploaded from it" in status.stdout, str(status)
    cleanup = e2e.cli("cleanup")
    assert cleanup.rc == 0, str(cleanup)
    assert f"skipped for {drive}: it holds none of the files uploaded from it" in cleanup.stdout, str(cleanup)
    assert "total: 0 item(s)" in cleanup.stdout, str(cleanup)
    assert files_under(e2e.thumbs) == {"inbox/a.jpg", *on_drive}
    assert set(e2e.keys(THUMB_BUCKET)) == {"inbox/a.jpg", *on_drive}
    doctor = e2e.cli("doctor")
    assert f"watch folder {drive} holds none of the files uploaded from it" in doctor.stdout, str(doctor)

    # The drive itself comes back: its files are there, so a file deleted from it now is a real deletion.
    drive.rmdir()
    os.rename(unplugged, drive)
    (drive / "b.jpg").unlink()
    cleanup = e2e.cli("cleanup")
    assert cleanup.rc == 0, str(cleanup)
    assert "skipped" not in cleanup.stdout, str(cleanup)
    assert files_under(e2e.thumbs) == {"inbox/a.jpg", "drive/sub/c.jpg"}
    assert set(e2e.keys(THUMB_BUCKET)) == {"inbox/a.jpg", "drive/sub/c.jpg"}
    rc, _ = agent.terminate()
    assert rc == 0


def test_a_new_watch_folder_is_still_created(e2e: E2EEnv) -> None:
    """The first-run experience: a folder nothing was uploaded from yet is made for the user."""
    fresh = e2e.root / "fresh" / "inbox"
    e2e.write_config({"watch": {"folders": [str(fresh)]}})
    agent = e2e.start_agent()
    agent.wait_ready()
    assert fresh.is_dir()
    # First run: the folder is made and said so at INFO, with no warning telling the user to create it.
    assert f"INFO    created watch folder {fresh}" in agent.log(), agent.log()
    assert not [line for line in agent.log().splitlines() if "WARNING" in line and str(fresh) in line], agent.log()
    make_image(fresh / "x.jpg", (100, 80))
    wait_for(lambda: (e2e.thumbs / "x.jpg").exists(), 45, "the thumbnail of a file in the new folder", agent.diagnose)
    assert "missing" not in json.dumps(json.loads(e2e.cli("status", "--json").stdout)["agent"]["missing_folders"])
    rc, _ = agent.terminate()
    assert rc == 0
