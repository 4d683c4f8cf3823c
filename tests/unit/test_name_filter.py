"""NameFilter matches its globs as one regex per list: the same answers as fnmatch.fnmatchcase glob by glob."""

from __future__ import annotations

import fnmatch

from agent.config.model import WatchConfig
from agent.pipeline.local_files import NameFilter

GLOBS = [
    "*.jpg",
    "*.JPEG",
    "img_??.png",
    "[abc]*.tif",
    "[!x]*.gif",
    "a+b(c).bmp",
    "*.[0-9]",
    "file[*].raw",
    "$^.heic",
    "*",
    "",
    "**x*y**",
]
NAMES = [
    "a.jpg",
    "A.JPG",
    "photo.jpeg",
    "img_01.png",
    "img_001.png",
    "b-shot.tif",
    "d-shot.tif",
    "x.gif",
    "y.gif",
    "a+b(c).bmp",
    "ab(c).bmp",
    "scan.7",
    "file*.raw",
    "file[*].raw",
    "$^.heic",
    "",
    "line\nbreak.jpg",
    ".hidden",
    "notes~",
    "xay",
    "ñandú.JPG",
]


def by_glob(rel: str, include: list[str], exclude: list[str]) -> bool:
    """The rule as it always was: fnmatchcase per glob, lower-cased, exclude on every part first."""
    inc, exc = [g.lower() for g in include], [g.lower() for g in exclude]
    parts = rel.split("/")
    if any(fnmatch.fnmatchcase(p.lower(), g) for p in parts for g in exc):
        return False
    return any(fnmatch.fnmatchcase(parts[-1].lower(), g) for g in inc)


def test_one_regex_per_list_answers_as_fnmatchcase_per_glob() -> None:
    for i in range(len(GLOBS)):
        include = GLOBS[: i + 1]
        exclude = GLOBS[i + 1 : i + 3]
        f = NameFilter(include, exclude)
        for name in NAMES:
            for rel in (name, f"sub dir/{name}", f".git/{name}", f"{name}/leaf.jpg"):
                assert f.wanted(rel) == by_glob(rel, include, exclude), (rel, include, exclude)
            assert f.excluded(name) == any(fnmatch.fnmatchcase(name.lower(), g.lower()) for g in exclude), (name, exclude)


def test_empty_lists_match_nothing_and_the_defaults_behave() -> None:
    assert not NameFilter([], []).wanted("a.jpg")
    assert not NameFilter(["*.jpg"], []).excluded("a.jpg")
    watch = WatchConfig()
    f = NameFilter(watch.include, watch.exclude)
    assert f.wanted("2026/IMG_0001.JPG") and f.wanted("clip.MOV")
    assert not f.wanted(".cache/a.jpg") and not f.wanted("a.jpg.part") and not f.wanted("a.jpg~")
    assert not f.wanted("notes.txt")
