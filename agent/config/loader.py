"""Find, read and validate the config; every problem reported at once with its key path."""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import platformdirs
import yaml

from agent.config.cleanup_checks import policy_problems
from agent.config.model import Config
from agent.errors import ConfigError

APP_NAME = "thumbdrop"
CONFIG_ENV = "THUMBDROP_CONFIG"
DEFAULTS_ORIGIN = "built-in defaults"

# Fields that name local paths: "~" is expanded there.
PATH_FIELDS = {"local.thumbnails_dir", "local.state_dir", "local.log_file", "watch.folders", "backend.ca_bundle"}
_UNSET_VAR = re.compile(r"\$(\w+|\{\w+\})")


def user_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.yaml"


def find_config_path(explicit: str | None, env: typing.Mapping[str, str] | None = None) -> Path | None:
    """The lookup order of SPEC: --config, $THUMBDROP_CONFIG, the user config dir, else None."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser()
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    candidate = user_config_path()
    return candidate if candidate.exists() else None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping.

    PyYAML keeps the last one silently: a second ``thumbnails:`` appended at the end of a file replaces the
    whole first section, which is never what the user meant.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in this mapping (first on line {seen[key] + 1}); keep one, merged",
                    key_node.start_mark,
                )
            if isinstance(key, str):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def load_config(path: Path | None, *, local: bool = False) -> Config:
    """Load ``path`` (None: built-in defaults); ``local`` forces the embedded backend."""
    if path is None:
        data: Any = {}
        origin = DEFAULTS_ORIGIN
    else:
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(origin, ["file not found (create it with 'thumbdrop init', or fix --config)"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(origin, [f"cannot read file: {exc}"]) from None
        try:
            data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(origin, [f"{where}not valid YAML: {problem}"]) from None
        if data is None:
            data = {}
    return parse_config(data, origin=origin, local=local)


def load(config: str | None, *, local: bool = False) -> Config:
    """The config a command names (--config, else $THUMBDROP_CONFIG, else the user config dir, else the defaults)."""
    return load_config(find_config_path(config), local=local)


def parse_config(data: Any, *, origin: str = DEFAULTS_ORIGIN, local: bool = False) -> Config:
    """Validate a plain mapping against the schema; raise ConfigError listing every problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(origin, [f"the top level must be a mapping of sections, got {_type_name(data)}"])
    cfg = _build(Config, data, "", problems)
    if isinstance(cfg, Config):
        cfg.origin = origin
        if local:
            cfg.backend.endpoint_url = "local"
            cfg.backend.s3_endpoint_url = cfg.backend.sqs_endpoint_url = cfg.backend.sns_endpoint_url = None
        _cross_checks(cfg, problems)
    if problems:
        raise ConfigError(origin, problems)
    assert isinstance(cfg, Config)
    return cfg


def _build(cls: type, data: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            close = _closest(str(key), list(fields))
            hint = f" (did you mean {close!r}?)" if close else f" (valid keys: {', '.join(fields)})"
            problems.append(f"{prefix}{key}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = data.get(name)
            if value is None:  # an empty section ('queues:') means its defaults
                value = {}
            if not isinstance(value, dict):
                problems.append(f"{path}: must be a mapping of keys, got {_type_name(value)}")
                continue
            kwargs[name] = _build(hint, value, path + ".", problems)  # type: ignore[arg-type]
            continue
        if name in data:
            value = data[name]
        elif path in PATH_FIELDS:
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        else:
            continue  # the dataclass default applies as it is
        before = len(problems)
        coerced = _coerce(value, hint, path, problems)
        if len(problems) > before:
            continue
        coerced = _expand(coerced, path, problems)
        if len(problems) > before:
            continue
        check = f.metadata.get("check")
        if check is not None and coerced is not None:
            msg = check(coerced)
            if msg:
                problems.append(f"{path}: {msg}")
                continue
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - schema bug, not user input
        problems.append(f"{prefix or '<top>'}: {exc}")
        return None


def _coerce(value: Any, hint: Any, path: str, problems: list[str]) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], path, problems)
    if origin is list:
        (item_type,) = get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is expected: accept it
        if not isinstance(value, list):
            problems.append(f"{path}: must be a list, got {_type_name(value)}")
            return None
        out = []
        for i, item in enumerate(value):
            out.append(_coerce(item, item_type, f"{path}[{i}]", problems))
        return out
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{path}: must be true or false, got {value!r}")
        return None
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{path}: must be a whole number, got {value!r}")
        return None
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.append(f"{path}: must be a number, got {value!r}")
        return None
    if hint is str:
        if value is None:
            problems.append(f"{path}: must be a string, got null")
            return None
        if isinstance(value, (dict, list)):
            problems.append(f"{path}: must be a string, got {_type_name(value)}")
            return None
        if isinstance(value, bool):
            problems.append(f"{path}: must be a string, got {value!r} (quote it)")
            return None
        return str(value)
    raise TypeError(f"schema type {hint!r} not supported")  # pragma: no cover


def _expand(value: Any, path: str, problems: list[str]) -> Any:
    """``$VAR`` in every string, ``~`` in path fields; an unset variable is an error."""
    base = re.sub(r"\[\d+\]$", "", path)
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value and "~" not in value:
        return value
    expanded = os.path.expandvars(value)
    missing = _UNSET_VAR.findall(expanded)
    if missing:
        names = ", ".join("$" + m.strip("{}") for m in missing)
        problems.append(f"{path}: environment variable {names} is not set")
        return None
    if base in PATH_FIELDS:
        expanded = os.path.expanduser(expanded)
    return expanded


def _cross_checks(cfg: Config, problems: list[str]) -> None:
    """Rules between keys: shared buckets need disjoint prefixes, watch folder names differ."""
    if cfg.source.bucket == cfg.thumbnails.bucket:
        sp, tp = cfg.source.prefix, cfg.thumbnails.prefix
        if sp.startswith(tp) or tp.startswith(sp):
            problems.append(
                "thumbnails.prefix: source and thumbnails share bucket "
                f"{cfg.source.bucket!r}, so their prefixes must be disjoint (neither a prefix of the other); "
                f"got source.prefix={sp!r}, thumbnails.prefix={tp!r}. Use e.g. 'originals/' and 'thumbs/'"
            )
    _event_mode(cfg, problems)
    if cfg.queues.events == cfg.queues.pull:
        problems.append("queues.pull: must differ from queues.events")
    if cfg.queues.via_sns and cfg.queues.events_topic == cfg.queues.pull_topic:
        problems.append("queues.pull_topic: must differ from queues.events_topic")
    if not cfg.watch.folders and "uploader" in cfg.roles:
        problems.append("watch.folders: the uploader role needs at least one folder")
    names: dict[str, str] = {}
    for i, folder in enumerate(cfg.watch.folders):
        name = Path(folder).name
        if len(cfg.watch.folders) > 1 and name in names:
            problems.append(
                f"watch.folders[{i}]: folder name {name!r} is also the name of {names[name]!r}; with several "
                "folders each name becomes the first part of its keys, so rename one of them"
            )
        names.setdefault(name, folder)
        for j, other in enumerate(cfg.watch.folders[:i]):
            a, b = Path(folder), Path(other)
            if a == b or a in b.parents or b in a.parents:
                problems.append(
                    f"watch.folders[{i}]: {folder!r} overlaps watch.folders[{j}] {other!r}; "
                    "watch folders must not contain each other (list only the outer one)"
                )
        problems.extend(_inside_watch_folder(i, folder, cfg))
        if os.path.exists(folder) and not os.path.isdir(folder):
            problems.append(f"watch.folders[{i}]: {folder!r} is a file, not a folder; list the folder that holds it")
    problems.extend(policy_problems(cfg))
    if cfg.transfer.multipart_chunksize_mb > cfg.transfer.multipart_threshold_mb * 1024:
        problems.append("transfer.multipart_chunksize_mb: larger than any file that would use it")


def _event_mode(cfg: Config, problems: list[str]) -> None:
    """Settle queues.mode (the old via_sns maps onto it) and the per-service endpoints."""
    q = cfg.queues
    if q.mode is None:
        q.mode = "sns" if q.via_sns else "sqs"
    elif q.via_sns and q.mode != "sns":
        problems.append(
            f"queues.via_sns: true contradicts queues.mode: {q.mode}; remove via_sns (deprecated: mode: sns replaces it)"
        )
    if q.mode == "sns":
        q.via_sns = True  # the code paths still read via_sns
    # Backend reads it: in poll mode its SQS/SNS clients refuse every call (no queue is ever touched).
    object.__setattr__(cfg.backend, "poll_mode", q.mode == "poll")
    shard = cfg.worker.shard
    if shard is not None:
        n, sep, m = str(shard).partition("/")
        if not (sep and n.isdigit() and m.isdigit() and 0 <= int(n) < int(m)):
            problems.append(f"worker.shard: {shard!r} is not 'N/M' with 0 <= N < M (e.g. '0/2' and '1/2' for two workers)")
    b = cfg.backend
    for key in ("s3_endpoint_url", "sqs_endpoint_url", "sns_endpoint_url"):
        value = getattr(b, key)
        if value == "local":
            problems.append(f"backend.{key}: 'local' is only valid for backend.endpoint_url; give a URL or null")
        elif value and b.endpoint_url == "local":
            problems.append(
                f"backend.{key}: a separate endpoint needs a real backend; set backend.endpoint_url to a URL or null "
                "(AWS) instead of 'local'"
            )


def _inside_watch_folder(i: int, folder: str, cfg: Config) -> list[str]:
    """Local folders thumbdrop writes must not overlap a watch folder: their files would be uploaded as sources."""
    if "uploader" not in cfg.roles:
        return []
    watched = Path(os.path.abspath(folder))
    problems = []
    for key, value, why, around in (
        ("local.thumbnails_dir", cfg.local.thumbnails_dir, "pulled thumbnails would be uploaded as new images", True),
        ("local.state_dir", cfg.local.state_dir, "the agent's own files and downloads would be uploaded", False),
    ):
        if not value:
            continue
        path = Path(os.path.abspath(value))
        # A thumbnails folder around the watch folder is refused too: pruning thumbnails would walk the inbox.
        if path == watched or watched in path.parents or (around and path in watched.parents):
            problems.append(
                f"{key}: {value!r} overlaps watch.folders[{i}] {folder!r}; {why}. "
                f"Use a folder outside the watch folder, e.g. a sibling of it"
            )
    return problems


def _closest(word: str, choices: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return match[0] if match else None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)
