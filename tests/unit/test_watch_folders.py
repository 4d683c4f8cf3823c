"""Watch folder states from the journal: an unplugged drive or an empty mount point is never a deletion."""

from __future__ import annotations

from pathlib import Path

from agent.config.loader import parse_config
from agent.pipeline.cleaner import LocalStat, Snapshot
from agent.pipeline.cleaner_local import select_local
from agent.state.journal import Journal, UploadRecord
from agent.state.watch_folders import (
    EMPTIED,
    FEW,
    MARKER,
    MISSING,
    NEW,
    OK,
    OTHER,
    UNMARKED,
    check_folder,
    identify,
    stamp_marker,
)


def record(journal: Journal, path: Path, key: str) -> None:
    journal.record_upload(UploadRecord(str(path), key, 1, 1, "sha", "etag"))


def test_uploads_under_a_folder_leave_out_its_siblings(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        for name in ("a/inbox/x.jpg", "a/inbox/deep/y.jpg", "a/inbox-2/z.jpg", "a/inbox0/z.jpg", "a/inbox.jpg", "a/inboxx/z.jpg"):
            record(journal, tmp_path / name, name)
        assert sorted(journal.uploads_under(str(tmp_path / "a" / "inbox"))) == [
            str(tmp_path / "a/inbox/deep/y.jpg"),
            str(tmp_path / "a/inbox/x.jpg"),
        ]
        assert list(journal.uploads_under(str(tmp_path / "a" / "inbox") + "/")) == list(
            journal.uploads_under(str(tmp_path / "a" / "inbox"))
        )
        assert list(journal.uploads_under(str(tmp_path / "b"))) == []
        assert list(journal.uploads_under(str(tmp_path / "caf\udce9"))) == []  # not UTF-8: nothing recorded, no crash
    finally:
        journal.close()


def test_uploads_under_pages_through_a_large_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        for i in range(1234):
            record(journal, tmp_path / "inbox" / f"{i:05d}.jpg", f"{i}.jpg")
        got = list(journal.uploads_under(str(tmp_path / "inbox")))
        assert len(got) == 1234 and len(set(got)) == 1234
    finally:
        journal.close()


def test_folder_states(tmp_path: Path) -> None:
    recorded: dict[str, list[str]] = {}

    def under(folder: str) -> list[str]:
        return recorded.get(folder, [])

    folder = tmp_path / "drive"
    assert check_folder(folder, under).state == NEW  # nothing uploaded from it: the agent may create it
    recorded[str(folder)] = [str(folder / "a.jpg"), str(folder / "sub" / "b.jpg")]
    assert check_folder(folder, under).state == MISSING
    folder.mkdir()
    assert check_folder(folder, under).state == EMPTIED  # an empty mount point
    (folder / "other.jpg").write_bytes(b"x")  # another drive's files are not this one's
    assert check_folder(folder, under).state == EMPTIED
    (folder / "sub").mkdir()
    (folder / "sub" / "b.jpg").write_bytes(b"x")
    assert check_folder(folder, under).state == OK
    (folder / "sub" / "b.jpg").unlink()
    done = tmp_path / "done"
    (done / "sub").mkdir(parents=True)
    (done / "sub" / "b.jpg").write_bytes(b"x")  # moved away by inbox_after_upload: move
    assert check_folder(folder, under).state == EMPTIED
    assert check_folder(folder, under, moved_to=done).state == OK
    assert check_folder(tmp_path / "empty-but-new", under).state == NEW


def test_local_orphans_are_kept_for_a_missing_or_emptied_folder_and_removed_for_the_others(tmp_path: Path) -> None:
    folders = {name: tmp_path / name for name in ("cam", "drive", "stick")}
    cfg = parse_config(
        {
            "source": {"bucket": "photos", "prefix": "originals/"},
            "thumbnails": {"bucket": "photos", "prefix": "thumbs/"},
            "watch": {"folders": [str(f) for f in folders.values()]},
            "local": {"thumbnails_dir": str(tmp_path / "th")},
            "cleanup": {"remove_orphan_local_thumbnails": True},
        }
    )
    folders["cam"].mkdir()
    (folders["cam"] / "kept.jpg").write_bytes(b"x")
    folders["stick"].mkdir()  # came back empty; "drive" is not there at all
    uploaded = {
        str(folders["cam"] / "kept.jpg"): "originals/cam/kept.jpg",
        str(folders["cam"] / "deleted.jpg"): "originals/cam/deleted.jpg",
        str(folders["drive"] / "d.jpg"): "originals/drive/d.jpg",
        str(folders["stick"] / "s.jpg"): "originals/stick/s.jpg",
    }

    def under(folder: str) -> list[str]:
        return [p for p in uploaded if p.startswith(folder + "/")]

    local = {rel: LocalStat(3, 0) for rel in ("cam/kept.jpg", "cam/deleted.jpg", "drive/d.jpg", "stick/s.jpg")}
    out, notes = select_local(cfg, Snapshot(local_thumbs=local), [], uploaded_from=uploaded.get, recorded_under=under)
    assert {d.key for d in out} == {str(tmp_path / "th" / "cam" / "deleted.jpg")}
    assert notes == [
        f"remove_orphan_local_thumbnails skipped for {folders['drive']}: it is missing, but files were uploaded from it "
        "(an unplugged drive is not a deletion)",
        f"remove_orphan_local_thumbnails skipped for {folders['stick']}: it holds none of the files uploaded from it "
        "(an empty mount point or another drive is not a deletion); mount the right drive; to accept the drive that "
        "is there now as this folder (the thumbnails of files not on it stay; delete them by hand if unwanted): "
        f"thumbdrop cleanup --forget-folder {folders['stick']}",
    ]


def test_a_folder_holding_fewer_than_half_of_its_files_is_not_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "card"
    folder.mkdir()
    recorded = [str(folder / f"IMG_{i}.JPG") for i in range(5)]
    for path in recorded[:2]:
        Path(path).write_bytes(b"x")
    few = check_folder(folder, lambda _f: recorded)
    assert (few.state, few.present, few.total, few.trusted) == (FEW, 2, 5, False)
    assert "holds only 2 of the 5 files uploaded from it" in few.describe()
    Path(recorded[2]).write_bytes(b"x")
    assert check_folder(folder, lambda _f: recorded).state == OK  # 3 of 5: a real deletion of two


def test_another_drive_is_told_apart_by_its_marker(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        folder = tmp_path / "usb"
        folder.mkdir()
        (folder / "a.jpg").write_bytes(b"x")
        first = identify(folder, journal.uploads_under, journal.folder_identity, journal.accept_folder)
        assert first is not None and (folder / MARKER).read_text().strip() == first
        assert journal.folder_identity(str(folder)) == first
        journal.record_upload(UploadRecord(str(folder / "a.jpg"), "usb/a.jpg", 1, 1, "sha", "etag", first))
        assert check_folder(folder, journal.uploads_under, accepted=journal.folder_identity).state == OK

        # Another drive in its place, with a file of the same name: no marker, so another drive.
        (folder / MARKER).unlink()
        assert check_folder(folder, journal.uploads_under, accepted=journal.folder_identity).state == OTHER
        # Its uploads are recorded as not the folder's own, and it is not stamped behind the user's back.
        assert identify(folder, journal.uploads_under, journal.folder_identity, journal.accept_folder) == UNMARKED
        assert not (folder / MARKER).exists()
        journal.record_upload(UploadRecord(str(folder / "b.jpg"), "usb/b.jpg", 1, 1, "sha", "etag", UNMARKED))
        assert list(journal.uploads_under(str(folder))) == [str(folder / "a.jpg")]
        # A drive with a marker of its own (used with thumbdrop elsewhere) is another drive too.
        other = stamp_marker(folder)
        assert other is not None and other != first
        assert check_folder(folder, journal.uploads_under, accepted=journal.folder_identity).state == OTHER

        # Accepting it deliberately: the journal forgets what is not on it, and the drive is the folder now.
        assert journal.forget_folder(str(folder), other, lambda p: Path(p).exists()) == 1  # b.jpg is not there
        assert journal.folder_identity(str(folder)) == other
        assert check_folder(folder, journal.uploads_under, accepted=journal.folder_identity).state == OK
    finally:
        journal.close()


def test_a_journal_from_before_identities_stamps_only_a_folder_that_holds_most_of_its_files(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        folder = tmp_path / "usb"
        folder.mkdir()
        for i in range(4):
            record(journal, folder / f"{i}.jpg", f"usb/{i}.jpg")  # no identity recorded
        (folder / "new.jpg").write_bytes(b"x")  # another drive: none of the recorded files
        assert identify(folder, journal.uploads_under, journal.folder_identity, journal.accept_folder) is None
        assert not (folder / MARKER).exists() and journal.folder_identity(str(folder)) is None
        for i in range(3):
            (folder / f"{i}.jpg").write_bytes(b"x")  # the right drive
        stamped = identify(folder, journal.uploads_under, journal.folder_identity, journal.accept_folder)
        assert stamped is not None and journal.folder_identity(str(folder)) == stamped
    finally:
        journal.close()
