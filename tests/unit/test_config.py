"""Config schema, loader, lookup order and the checked-in example config."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import find_config_path, load_config, parse_config, user_config_path
from agent.config.example import render_example
from agent.config.model import Config
from agent.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config.example.yaml"
REGENERATE = (
    "config.example.yaml is out of date; regenerate it from the repo root with:\n"
    "  python -c \"from agent.config.example import render_example; print(render_example(), end='')\" > config.example.yaml"
)


def problems_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def single_problem(data: Any) -> str:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


# --- each kind of error, with its key path -------------------------------------------------


def test_unknown_key_suggests_the_close_one() -> None:
    problem = single_problem({"backend": {"regoin": "eu-west-1"}})
    assert problem.startswith("backend.regoin: unknown key")
    assert "did you mean 'region'" in problem


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    problem = single_problem({"queues": {"zzzzzz": 1}})
    assert problem.startswith("queues.zzzzzz: unknown key")
    assert "valid keys:" in problem and "max_receives" in problem


def test_unknown_top_level_section() -> None:
    problem = single_problem({"thumbnail": {}})
    assert problem.startswith("thumbnail: unknown key")
    assert "'thumbnails'" in problem


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"backend": {"region": ["eu-west-1"]}}, "backend.region", "must be a string"),
        ({"backend": {"region": {"a": 1}}}, "backend.region", "must be a string"),
        ({"backend": {"addressing_style": True}}, "backend.addressing_style", "must be a string"),
        ({"source": {"bucket": None}}, "source.bucket", "must be a string, got null"),
        ({"backend": {"max_attempts": "three"}}, "backend.max_attempts", "must be a whole number"),
        ({"backend": {"max_attempts": 2.5}}, "backend.max_attempts", "must be a whole number"),
        ({"queues": {"max_receives": True}}, "queues.max_receives", "must be a whole number"),
        ({"watch": {"settle_seconds": "soon"}}, "watch.settle_seconds", "must be a number"),
        ({"backend": {"verify_tls": "yes"}}, "backend.verify_tls", "must be true or false"),
        ({"queues": {"via_sns": 1}}, "queues.via_sns", "must be true or false"),
        ({"watch": {"folders": {"a": 1}}}, "watch.folders", "must be a list"),
        ({"thumbnails": {"sizes": [256, "big"]}}, "thumbnails.sizes[1]", "must be a whole number"),
    ],
)
def test_wrong_type_names_key_path(data: dict[str, Any], path: str, words: str) -> None:
    problem = single_problem(data)
    assert problem.startswith(f"{path}: "), problem
    assert words in problem


def test_int_accepted_where_float_expected() -> None:
    cfg = parse_config({"watch": {"settle_seconds": 2}})
    assert cfg.watch.settle_seconds == 2.0
    assert isinstance(cfg.watch.settle_seconds, float)


def test_single_value_accepted_where_list_expected() -> None:
    cfg = parse_config({"thumbnails": {"sizes": 512}})
    assert cfg.thumbnails.sizes == [512]


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"backend": {"addressing_style": "sideways"}}, "backend.addressing_style", "must be one of auto, path, virtual"),
        ({"thumbnails": {"format": "gif"}}, "thumbnails.format", "must be one of jpeg, webp, png, avif"),
        ({"roles": ["uploader", "painter"]}, "roles", "unknown role(s) ['painter']"),
        ({"backend": {"endpoint_url": "minio:9000"}}, "backend.endpoint_url", "http(s):// URL"),
        ({"thumbnails": {"background": "white"}}, "thumbnails.background", "must be a colour"),
    ],
)
def test_bad_enum_or_value(data: dict[str, Any], path: str, words: str) -> None:
    problem = single_problem(data)
    assert problem.startswith(f"{path}: "), problem
    assert words in problem


@pytest.mark.parametrize("name", ["Bad_Bucket", "ab", "-abc", "a" * 64, "my..bucket", "UPPER"])
def test_bad_bucket_name(name: str) -> None:
    problem = single_problem({"source": {"bucket": name}})
    assert problem.startswith("source.bucket: ")
    assert "not a valid S3 bucket name" in problem


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("originals", "must end with '/'"),
        ("/originals/", "relative key prefix"),
        ("a/../b/", "relative key prefix"),
        ("a\\b/", "relative key prefix"),
    ],
)
def test_bad_prefix(prefix: str, words: str) -> None:
    problem = single_problem({"thumbnails": {"prefix": prefix}})
    assert problem.startswith("thumbnails.prefix: ")
    assert words in problem


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"queues": {"max_receives": 0}}, "queues.max_receives", "must be between 1 and 1000, got 0"),
        ({"queues": {"wait_seconds": 21}}, "queues.wait_seconds", "between 0 and 20"),
        ({"thumbnails": {"quality": 101}}, "thumbnails.quality", "between 1 and 100"),
        ({"thumbnails": {"sizes": [8]}}, "thumbnails.sizes", "between 16 and 8192"),
        ({"thumbnails": {"sizes": [256, 256]}}, "thumbnails.sizes", "distinct"),
        ({"backend": {"max_attempts": 0}}, "backend.max_attempts", "must be >= 1"),
        ({"backend": {"connect_timeout": 0.0}}, "backend.connect_timeout", "must be >= 0.1"),
    ],
)
def test_out_of_range(data: dict[str, Any], path: str, words: str) -> None:
    problem = single_problem(data)
    assert problem.startswith(f"{path}: "), problem
    assert words in problem


def test_spec_example_message() -> None:
    assert single_problem({"queues": {"max_receives": 0}}) == "queues.max_receives: must be between 1 and 1000, got 0"


def test_unset_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THUMBDROP_TEST_UNSET", raising=False)
    problem = single_problem({"local": {"thumbnails_dir": "$THUMBDROP_TEST_UNSET/thumbs"}})
    assert problem.startswith("local.thumbnails_dir: ")
    assert "$THUMBDROP_TEST_UNSET is not set" in problem


def test_unset_braced_variable_in_list_item(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THUMBDROP_TEST_UNSET", raising=False)
    problem = single_problem({"watch": {"folders": ["/srv/a", "${THUMBDROP_TEST_UNSET}/b"]}})
    assert problem.startswith("watch.folders[1]: ")
    assert "$THUMBDROP_TEST_UNSET is not set" in problem


@pytest.mark.parametrize("value", [[1, 2], "text", 5])
def test_non_mapping_section(value: Any) -> None:
    problem = single_problem({"backend": value})
    assert problem.startswith("backend: must be a mapping"), problem


@pytest.mark.parametrize("value", [[], 0, False, ""])
def test_falsy_non_mapping_section_is_an_error(value: Any) -> None:
    problem = single_problem({"queues": value})
    assert problem.startswith("queues: must be a mapping"), problem


def test_null_section_means_defaults() -> None:
    cfg = parse_config({"queues": None})
    assert cfg.queues.max_receives == 5


@pytest.mark.parametrize("value", [[1, 2], "backend", 3, None])
def test_non_mapping_top_level(value: Any) -> None:
    problem = single_problem(value)
    assert problem.startswith("the top level must be a mapping"), problem


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    # A section appended at the end (say, while testing a reload) would silently replace the first one.
    path.write_text("thumbnails:\n  sizes: [128]\nwatch:\n  settle_seconds: 1\nthumbnails:\n  sizes: [64]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith("line 5, column 1: ") and "'thumbnails' appears twice" in problem, problem
    assert "first on line 1" in problem
    nested = tmp_path / "nested.yaml"
    nested.write_text("watch:\n  settle_seconds: 1\n  settle_seconds: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'settle_seconds' appears twice"):
        load_config(nested)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("backend:\n  region: us-east-1\nsource: {bucket: x\nqueues:\n  pull: p\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert "not valid YAML" in problem
    assert "line " in problem
    line = int(problem.split("line ", 1)[1].split(",", 1)[0])
    assert 3 <= line <= 5, problem
    assert str(path) in str(info.value)


def test_invalid_yaml_tab_indent_line_number(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("backend:\n  region: x\n\tverify_tls: true\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith("line 3,"), info.value.problems


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert "file not found" in info.value.problems[0]
    assert "thumbdrop init" in info.value.problems[0]
    assert info.value.exit_code == 2


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.origin == str(path)
    assert cfg.queues.events == "thumbdrop-events"


def test_three_mistakes_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text(
        "backend:\n  regoin: eu-west-1\nqueues:\n  max_receives: 0\nthumbnails:\n  format: gif\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    exc = info.value
    assert len(exc.problems) == 3, exc.problems
    paths = sorted(p.split(":", 1)[0] for p in exc.problems)
    assert paths == ["backend.regoin", "queues.max_receives", "thumbnails.format"]
    assert str(path) in str(exc)
    assert "3 problem(s)" in str(exc)


# --- expansion --------------------------------------------------------------------------------


def test_tilde_and_vars_expanded_in_path_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TD_PICS", "/data/pics")
    cfg = parse_config(
        {
            "local": {"thumbnails_dir": "~/thumbs", "state_dir": "$TD_PICS/state"},
            "watch": {"folders": ["~/inbox", "${TD_PICS}/camera"]},
            "backend": {"ca_bundle": "~/ca.pem"},
        }
    )
    home = str(tmp_path / "home")
    assert cfg.local.thumbnails_dir == f"{home}/thumbs"
    assert cfg.local.state_dir == "/data/pics/state"
    assert cfg.watch.folders == [f"{home}/inbox", "/data/pics/camera"]
    assert cfg.backend.ca_bundle == f"{home}/ca.pem"


def test_defaults_of_path_fields_are_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse_config({})
    assert cfg.local.thumbnails_dir == f"{tmp_path}/ThumbDrop/thumbnails"
    assert cfg.watch.folders == [f"{tmp_path}/ThumbDrop/inbox"]


def test_tilde_not_expanded_outside_path_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TD_SUFFIX", "photos")
    cfg = parse_config({"source": {"prefix": "~x/"}, "queues": {"events": "ev-$TD_SUFFIX"}})
    assert cfg.source.prefix == "~x/"
    assert cfg.queues.events == "ev-photos"


# --- cross checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(("sp", "tp"), [("", ""), ("", "thumbs/"), ("photos/", "photos/thumbs/"), ("a/", "a/")])
def test_shared_bucket_overlapping_prefixes(sp: str, tp: str) -> None:
    problem = single_problem({"source": {"bucket": "shared", "prefix": sp}, "thumbnails": {"bucket": "shared", "prefix": tp}})
    assert problem.startswith("thumbnails.prefix: ")
    assert "disjoint" in problem


def test_shared_bucket_disjoint_prefixes_ok() -> None:
    cfg = parse_config(
        {"source": {"bucket": "shared", "prefix": "originals/"}, "thumbnails": {"bucket": "shared", "prefix": "thumbs/"}}
    )
    assert cfg.source.bucket == cfg.thumbnails.bucket == "shared"


def test_separate_buckets_may_use_same_prefix() -> None:
    cfg = parse_config({"source": {"prefix": "x/"}, "thumbnails": {"prefix": "x/"}})
    assert cfg.source.prefix == cfg.thumbnails.prefix == "x/"


def test_two_watch_folders_with_same_name() -> None:
    problem = single_problem({"watch": {"folders": ["/srv/a/inbox", "/home/b/inbox"]}})
    assert problem.startswith("watch.folders[1]: ")
    assert "'inbox'" in problem


def test_two_watch_folders_with_different_names_ok() -> None:
    cfg = parse_config({"watch": {"folders": ["/srv/a/inbox", "/srv/camera"]}})
    assert len(cfg.watch.folders) == 2


def test_same_queue_names_error() -> None:
    problem = single_problem({"queues": {"events": "q", "pull": "q"}})
    assert problem.startswith("queues.pull: ")


# --- lookup order -----------------------------------------------------------------------------------


@pytest.fixture()
def config_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private HOME and XDG_CONFIG_HOME; returns the user config file path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("THUMBDROP_CONFIG", raising=False)
    return tmp_path / "xdg" / "thumbdrop" / "config.yaml"


def test_user_config_path_follows_xdg(config_dirs: Path) -> None:
    assert user_config_path() == config_dirs


def test_lookup_none_when_nothing_exists(config_dirs: Path) -> None:
    assert find_config_path(None) is None


def test_lookup_user_config_dir(config_dirs: Path) -> None:
    config_dirs.parent.mkdir(parents=True)
    config_dirs.write_text("{}\n")
    assert find_config_path(None) == config_dirs


def test_lookup_user_config_dir_via_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("THUMBDROP_CONFIG", raising=False)
    path = tmp_path / ".config" / "thumbdrop" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")
    assert find_config_path(None) == path


def test_lookup_env_beats_user_dir(config_dirs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_dirs.parent.mkdir(parents=True)
    config_dirs.write_text("{}\n")
    monkeypatch.setenv("THUMBDROP_CONFIG", str(tmp_path / "env.yaml"))
    assert find_config_path(None) == tmp_path / "env.yaml"
    assert find_config_path(None, env={"THUMBDROP_CONFIG": "/x/y.yaml"}) == Path("/x/y.yaml")


def test_lookup_explicit_beats_env(config_dirs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("THUMBDROP_CONFIG", str(tmp_path / "env.yaml"))
    assert find_config_path(str(tmp_path / "explicit.yaml")) == tmp_path / "explicit.yaml"


def test_lookup_expands_tilde(config_dirs: Path) -> None:
    home = Path(os.environ["HOME"])
    assert find_config_path("~/my.yaml") == home / "my.yaml"


def test_no_file_means_builtin_defaults() -> None:
    cfg = load_config(None)
    assert cfg.origin == "built-in defaults"
    assert cfg.backend.endpoint_url == "local"


# --- --local ----------------------------------------------------------------------------------------


def test_local_forces_embedded_backend(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("backend:\n  endpoint_url: https://minio.example.lan:9000\n", encoding="utf-8")
    assert load_config(path).backend.endpoint_url == "https://minio.example.lan:9000"
    assert load_config(path, local=True).backend.endpoint_url == "local"
    assert parse_config({"backend": {"endpoint_url": None}}, local=True).backend.endpoint_url == "local"


# --- config.example.yaml -------------------------------------------------------------------------------


def schema_paths(cls: type = Config, prefix: str = "") -> list[str]:
    """Every key path of the schema, walking the dataclasses."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        path = f"{prefix}{f.name}"
        out.append(path)
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(schema_paths(hints[f.name], path + "."))
    return out


def test_example_file_matches_rendering() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == render_example(), REGENERATE


def test_example_file_loads_without_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(EXAMPLE)
    assert cfg.origin == str(EXAMPLE)
    defaults = parse_config({})
    assert dataclasses.asdict(cfg) | {"origin": ""} == dataclasses.asdict(defaults) | {"origin": ""}


def test_example_mentions_every_schema_key() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    paths = schema_paths()
    assert "queues.max_receives" in paths and "backend.endpoint_url" in paths and "cleanup.interval_minutes" in paths
    missing = []
    for path in paths:
        node: Any = doc
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(path)
                break
            node = node[part]
    assert not missing, f"config.example.yaml lacks {missing}; {REGENERATE}"


def test_example_documents_every_key() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if i == 0 or not lines[i - 1].strip().startswith("#"):
            undocumented.append(stripped)
    assert not undocumented, f"keys without a comment: {undocumented}"


def test_nested_watch_folders_error() -> None:
    problem = single_problem({"watch": {"folders": ["/srv/photos", "/srv/photos/camera"]}})
    assert problem.startswith("watch.folders[1]: ")
    assert "overlaps" in problem


@pytest.mark.parametrize(
    ("local", "key"),
    [
        ({"thumbnails_dir": "/data/in/thumbs"}, "local.thumbnails_dir"),  # inside: every pull would be re-uploaded
        ({"thumbnails_dir": "/data/in"}, "local.thumbnails_dir"),  # the same folder
        ({"thumbnails_dir": "/data"}, "local.thumbnails_dir"),  # around it: pruning thumbnails would walk the inbox
        ({"state_dir": "/data/in/.state"}, "local.state_dir"),
    ],
)
def test_folders_thumbdrop_writes_must_not_overlap_a_watch_folder(local: dict[str, str], key: str) -> None:
    problem = single_problem({"watch": {"folders": ["/data/in"]}, "local": local})
    assert problem.startswith(f"{key}: ") and "overlaps watch.folders[0] '/data/in'" in problem, problem


def test_siblings_of_the_watch_folder_are_fine() -> None:
    cfg = parse_config({"watch": {"folders": ["/data/in"]}, "local": {"thumbnails_dir": "/data/thumbs", "state_dir": "/data"}})
    assert cfg.local.thumbnails_dir == "/data/thumbs"
    worker_only = parse_config(
        {"roles": ["worker", "puller"], "watch": {"folders": ["/data/in"]}, "local": {"thumbnails_dir": "/data/in"}}
    )
    assert worker_only.local.thumbnails_dir == "/data/in"


def test_a_watch_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    photo = tmp_path / "red.jpg"
    photo.write_bytes(b"\xff\xd8")
    problem = single_problem({"watch": {"folders": [str(photo)]}})
    assert problem.startswith("watch.folders[0]: ") and "is a file, not a folder" in problem, problem


def schema_docs(cls: type = Config) -> list[str]:
    """Every description in the schema, sections included."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        out.append(f.metadata.get("doc", ""))
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(schema_docs(hints[f.name]))
    return out


def test_example_never_breaks_a_quoted_name_across_lines() -> None:
    # A quoted literal in a description is a key name or a command to copy: '.thumbdrop-failed/' split after its
    # hyphen cannot be copied. An apostrophe (agent's) is not an opening quote.
    comments = [ln.strip().removeprefix("#").strip() for ln in EXAMPLE.read_text(encoding="utf-8").splitlines()]
    quoted = [q for doc in schema_docs() for q in re.findall(r"(?<![\w'])'[^'\n]*'(?![\w'])", doc)]
    assert "'.thumbdrop-failed/'" in quoted and "'thumbdrop setup'" in quoted
    broken = [q for q in quoted if not any(q in line for line in comments)]
    assert not broken, f"quoted names wrapped across two comment lines: {broken}; {REGENERATE}"


def test_example_has_a_blank_line_before_each_section() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    sections = [i for i, ln in enumerate(lines) if re.fullmatch(r"[a-z_]+:", ln)]
    assert len(sections) >= 10
    crowded = []
    for i in sections:
        start = i
        while start > 0 and lines[start - 1].startswith("#"):
            start -= 1  # the section's own comment
        if start == 0 or lines[start - 1] != "":
            crowded.append(lines[i])
    assert not crowded, f"sections without a blank line before their comment: {crowded}; {REGENERATE}"
