"""The cleanup table: every column aligned, (local) rows with long paths included; nothing cut."""

from __future__ import annotations

import pytest

from agent.cli.cleanup_cmds import print_table
from agent.pipeline.cleaner import LOCAL, Deletion


def test_local_rows_line_up_with_bucket_rows(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(
        [
            Deletion("thumbdrop-thumbnails", "inbox/a.jpg", "thumbnail of a deleted local file", 12345),
            Deletion(
                LOCAL,
                "/home/user/ThumbDrop/thumbnails/inbox/a.jpg",
                "local thumbnail; its source /home/user/ThumbDrop/inbox/a.jpg was deleted",
                12345,
            ),
            Deletion(
                LOCAL,
                "/home/user/ThumbDrop/inbox/trip/b.jpg",
                "uploaded and thumbnailed",
                2048000,
                move_to="/home/user/ThumbDrop/done/trip/b.jpg",
            ),
            Deletion("thumbdrop-source", "trip/b.jpg", "original; its thumbnails exist", 5),
        ]
    )
    assert capsys.readouterr().out == (
        "  BUCKET                ACTION      SIZE  KEY                                                                            REASON\n"
        "  thumbdrop-thumbnails  delete  12.1 KiB  inbox/a.jpg                                                                    thumbnail of a deleted local file\n"
        "  (local)               delete  12.1 KiB  /home/user/ThumbDrop/thumbnails/inbox/a.jpg                                    local thumbnail; its source /home/user/ThumbDrop/inbox/a.jpg was deleted\n"
        "  (local)               move     2.0 MiB  /home/user/ThumbDrop/inbox/trip/b.jpg -> /home/user/ThumbDrop/done/trip/b.jpg  uploaded and thumbnailed\n"
        "  thumbdrop-source      delete       5 B  trip/b.jpg                                                                     original; its thumbnails exist\n"
    )
