"""Typed configuration: one mechanism for every stage.

Each stage declares its configuration as a tree of dataclasses whose fields are made with
:func:`option` (a default plus a one-line doc).  Values are resolved in this order, later wins:

    dataclass defaults  <  YAML file (``--config FILE``)  <  dotted overrides (``train.lr=3e-4``)

Every value is type-checked against the field annotation.  An unknown key, a wrong type, a missing
required key or malformed YAML is a :class:`ConfigError` whose message names the key (with a
did-you-mean suggestion) or the file and line.  Override values are parsed as YAML scalars or
flow lists (``a=[x,y]``), never evaluated as code.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from pipeline.errors import ConfigError
from pipeline.io import write_text

__all__ = ["ConfigError", "REQUIRED", "option", "section", "load_config", "save_config"]


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


def option(default: Any = REQUIRED, doc: str = "", *, factory: Any = None) -> Any:
    """A config field: ``default`` (or ``REQUIRED``), a doc line shown by ``--help``.

    Use ``factory`` for mutable defaults (lists, nested configs)."""
    meta = {"doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, doc: str = "") -> Any:
    """A nested config section (another dataclass), defaulting to its own defaults."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` as a float (YAML 1.1 wants ``3.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# ----------------------------------------------------------------------------- type checking


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list[{_type_name(inner)}]"
    if tp is dict or origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked (and losslessly converted, e.g. int -> float) against ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        hint = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
        extra = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"{key}: {value!r} is not one of {_type_name(tp)}.{extra}")
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single item where a list is expected is the common case
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{key}: expected a mapping of keys, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a resume step or a name that happens to look numeric
    else:
        raise ConfigError(f"{key}: unsupported field type {tp!r}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    short = key.rsplit(".", 1)[-1]
    prefix = key[: -len(short)]
    hint = difflib.get_close_matches(short, known, n=1, cutoff=0.6)
    extra = f" Did you mean '{prefix}{hint[0]}'?" if hint else f" Known keys here: {', '.join(known)}."
    return ConfigError(f"unknown config key {key!r}.{extra}")


# ----------------------------------------------------------------------------- building


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    fields = _fields(cls)
    for key in data:
        if key not in fields:
            raise _unknown_key(prefix + str(key), list(fields))
    kwargs = {}
    for name, (f, tp) in fields.items():
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            sub = data.get(name, {})
            if sub is None:
                sub = {}
            if not isinstance(sub, dict):
                raise ConfigError(f"{key}: expected a section (mapping of keys), got {sub!r}")
            kwargs[name] = _build(tp, sub, key + ".")
        elif name in data:
            kwargs[name] = _coerce(data[name], tp, key)
        elif f.default is REQUIRED:
            raise ConfigError(f"missing required config key {key!r}: {f.metadata.get('doc', '')}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.lr=3e-4'`` -> ``('train.lr', 0.0003)``; values are YAML scalars/flow lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not valid YAML: take it as a plain string
    return key, value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file (and line for syntax errors)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{where}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(cls: type, config_file: str | Path | None = None, overrides: list[str] = ()) -> Any:
    """Resolve a config of type ``cls`` from defaults, an optional YAML file and overrides."""
    tree: dict[str, Any] = read_yaml(config_file) if config_file else {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return _build(cls, tree)


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build (and check) a config from a plain nested dict; errors name keys under ``prefix``."""
    try:
        return _build(cls, data, prefix)
    except ConfigError as e:
        if prefix and prefix not in str(e):  # a validate() message that does not name the section
            raise ConfigError(f"in section {prefix.rstrip('.')!r}: {e}") from None
        raise


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged key by key, later layers winning (``{"train": {"lr": 1}}`` then
    ``{"train": {"seed": 2}}`` -> both keys): how composed configs (``pipeline run``, ``pipeline
    evaluate``) stack a stage's settings."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{'train.lr': 1e-4, ...}``: for hyperparameter logging."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows of (key, type, default, doc) for every key, nested sections flattened."""
    rows = []
    for name, (f, tp) in _fields(cls).items():
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = "REQUIRED" if f.default is REQUIRED else repr(f.default)
        else:
            default = repr(f.default_factory())  # type: ignore[misc]
        rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
    return rows
