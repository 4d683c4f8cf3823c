"""Another drive or card mounted where an unplugged one was is not a deletion (issue 14 item 1, QA trial P10).

Each watch folder gets a marker file with its first upload; the journal records it with every upload. A folder
whose marker differs (or is gone) is "another drive": no cleanup rule acts on the first drive's files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import THUMB_BUCKET, E2EEnv, files_under, make_image

pytestmark = pytest.mark.e2e


def _two_folders(e2e: E2EEnv, drive: Path) -> None:
    e2e.write_config(
        {
            "watch": {"folders": [str(e2e.inbox), str(drive)]},
            # The guard would hide the bug (it stops runs that delete most thumbnails): turn it off.
            "cleanup": {"remove_orphan_local_thumbnails": True, "max_delete_fraction": 1.0},
        }
    )


def _sync(e2e: E2EEnv) -> None:
    synced = e2e.cli("sync")
    assert synced.rc == 0, str(synced)


def test_a_same_name_photo_on_another_drive_deletes_nothing(e2e: E2EEnv) -> None:
    drive = e2e.root / "usb"
    _two_folders(e2e, drive)
    make_image(e2e.inbox / "a.jpg", (320, 240))
    for name in ("trip é/u0.jpg", "trip é/u1.jpg", "u-big.jpg", "new one.jpg"):
        make_image(drive / name, (320, 240))
    _sync(e2e)
    first = {"inbox/a.jpg", "usb/trip é/u0.jpg", "usb/trip é/u1.jpg", "usb/u-big.jpg", "usb/new one.jpg"}
    assert files_under(e2e.thumbs) == first
    assert (drive / ".thumbdrop-folder-id").is_file()

    shelf = e2e.root / "shelf"
    os.rename(drive, shelf)  # the drive is unplugged ...
    make_image(drive / "new one.jpg", (240, 320), color=(30, 30, 200))  # ... and another one with a same-name photo is there
    _sync(e2e)
    cleanup = e2e.cli("cleanup")
    assert cleanup.rc == 0, str(cleanup)
    assert "total: 0 item(s)" in cleanup.stdout, str(cleanup)
    assert f"skipped for {drive}: it is another drive than the one its files were uploaded from" in cleanup.stdout
    assert f"thumbdrop cleanup --forget-folder {drive}" in cleanup.stdout, str(cleanup)
    assert files_under(e2e.thumbs) == first
    assert set(e2e.keys(THUMB_BUCKET)) == first
    doctor = e2e.cli("doctor")
    warn = next(line for line in doctor.stdout.splitlines() if line.startswith("WARN  watch folders"))
    assert warn.endswith(
        f"watch folder {drive} is another drive than the one its files were uploaded from "
        "(its .thumbdrop-folder-id differs or is gone): cleanup leaves the first drive's thumbnails alone"
    ), str(doctor)
    assert f"--forget-folder {drive}" in doctor.stdout, str(doctor)

    # The first drive comes back and one of its photos is deleted for real: only that one's thumbnail goes.
    for p in sorted(drive.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    drive.rmdir()
    os.rename(shelf, drive)
    (drive / "u-big.jpg").unlink()
    cleanup = e2e.cli("cleanup")
    assert cleanup.rc == 0, str(cleanup)
    assert "skipped" not in cleanup.stdout, str(cleanup)
    assert files_under(e2e.thumbs) == first - {"usb/u-big.jpg"}
    assert set(e2e.keys(THUMB_BUCKET)) == first - {"usb/u-big.jpg"}


def test_a_camera_card_swap_deletes_nothing_and_forget_folder_accepts_the_new_card(e2e: E2EEnv) -> None:
    card = e2e.root / "card"
    _two_folders(e2e, card)
    make_image(e2e.inbox / "a0.jpg", (320, 240))
    canon = [f"DCIM/100CANON/IMG_000{i}.JPG" for i in range(3)]
    for rel in canon:
        make_image(card / rel, (320, 240))
    _sync(e2e)
    first = {"inbox/a0.jpg", *(f"card/{rel}" for rel in canon)}
    assert files_under(e2e.thumbs) == first

    os.rename(card, e2e.root / "canon-card")
    make_image(card / "DCIM/101NIKON/DSC_5001.JPG", (320, 240))  # the other camera's card, never seen before
    _sync(e2e)
    both = first | {"card/DCIM/101NIKON/DSC_5001.JPG"}
    assert files_under(e2e.thumbs) == both
    cleanup = e2e.cli("cleanup")
    assert cleanup.rc == 0, str(cleanup)
    assert "total: 0 item(s)" in cleanup.stdout, str(cleanup)
    assert files_under(e2e.thumbs) == both
    assert set(e2e.keys(THUMB_BUCKET)) == both

    # The user keeps the new card: it is accepted deliberately, the old card's thumbnails stay.
    forget = e2e.cli("cleanup", "--forget-folder", str(card))
    assert forget.rc == 0, str(forget)
    assert forget.stdout.strip() == (
        f"watch folder {card}: the drive there now is accepted as this folder; the journal forgot 3 file(s) not on it "
        "(their thumbnails stay: delete them by hand if unwanted)"
    )
    cleanup = e2e.cli("cleanup")
    assert cleanup.rc == 0 and "skipped" not in cleanup.stdout, str(cleanup)
    assert "total: 0 item(s)" in cleanup.stdout, str(cleanup)
    assert files_under(e2e.thumbs) == both
    # From now on a photo deleted from the new card is a deletion.
    (card / "DCIM/101NIKON/DSC_5001.JPG").unlink()
    make_image(card / "DCIM/101NIKON/DSC_5002.JPG", (320, 240))
    _sync(e2e)
    cleanup = e2e.cli("cleanup")
    assert cleanup.rc == 0, str(cleanup)
    assert "card/DCIM/101NIKON/DSC_5001.JPG" not in files_under(e2e.thumbs)
    assert "card/DCIM/101NIKON/DSC_5002.JPG" in files_under(e2e.thumbs)
