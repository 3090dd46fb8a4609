"""Recipe configs: nested dataclasses whose fields carry their help text, loaded from YAML + dotted overrides.

A recipe config is a :class:`RecipeConfig` whose fields are leaves (str, int, float, bool, ``X | None``,
``tuple[X, ...]``) or nested sections (another :class:`RecipeConfig`). Defaults, choices and help live once,
in the field (:func:`opt`, :func:`section`); the same definitions drive

- YAML loading (``--config FILE.yaml`` or a shipped name such as ``smollm2-135m/genrec`` from
  ``llmrec/recipes/configs/``), strict like :meth:`llmrec.config.Config.from_dict` (unknown keys name the key
  and the allowed keys),
- dotted command-line overrides (``--train.lr 1e-3``, ``--model.adapter lora-all-linear``), coerced to the
  field's type, and
- the argparse help (one option per leaf, with its default and choices).

Only the standard library and PyYAML are imported here, so ``llmrec train ... --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llmrec.config import Config
from llmrec.errors import ConfigError

R = TypeVar("R", bound="RecipeConfig")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NONE = ("none", "null", "~")


def opt(default: Any, help: str, *, choices: tuple[Any, ...] | None = None) -> Any:  # noqa: A002 - argparse's name
    """A leaf field: its default, its help text and (optionally) the values it allows."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def section(cls: type[RecipeConfig], help: str) -> Any:  # noqa: A002
    """A nested section field (``--<name>.<leaf>`` on the command line)."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})


@dataclasses.dataclass
class RecipeConfig(Config):
    """Base of recipe configs and their sections: checks every leaf's ``choices``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}: {value!r} is not one of {list(choices)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Config)


def leaves(cls: type[RecipeConfig], prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """Every leaf as ``(dotted name, field, type hint)``, sections expanded depth first."""
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _is_section(hint):
            out += leaves(hint, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, f, hint))
    return out


def parse_value(hint: Any, value: Any, where: str) -> Any:
    """A command-line or YAML value as the field's type (strings are parsed; YAML scalars checked)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if type(None) in typing.get_args(hint) and (
                value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        if len(args) == 1:
            return parse_value(args[0], value, where)
        for arg in args:  # e.g. int | str ("--threads 2" or "--threads auto"): the first type that parses
            try:
                return parse_value(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    if origin is tuple:
        (item, *_) = typing.get_args(hint) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} ({value!r})")
        return tuple(parse_value(item, v, where) for v in value)
    if not isinstance(value, str) or hint is str:
        return value  # Config.from_dict checks the type of non-strings
    text = value.strip()
    try:
        if hint is bool:
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from None
    return value


def _normalize(cls: type[RecipeConfig], data: Any, where: str) -> Any:
    """Parse the string leaves of ``data`` (a YAML mapping) by their field types; unknown keys stay for
    :meth:`Config.from_dict` to reject with the allowed keys named."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints, out = _hints(cls), {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        hint = hints.get(key)
        if hint is None:
            out[key] = value
        elif _is_section(hint):
            out[key] = _normalize(hint, value or {}, f"{where}.{key}")
        else:
            out[key] = parse_value(hint, value, f"{where}.{key}")
            choices = fields[key].metadata.get("choices")
            if choices and out[key] not in choices:
                raise ConfigError(f"{where}.{key}: {out[key]!r} is not one of {list(choices)}")
    return out


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``<model>/<method>``), from ``llmrec/recipes/configs``."""
    root = resources.files("llmrec.recipes") / "configs"
    names = []
    for model in sorted(root.iterdir(), key=lambda p: p.name):
        if model.is_dir():
            names += [f"{model.name}/{f.name[:-5]}" for f in sorted(model.iterdir(), key=lambda p: p.name)
                      if f.name.endswith(".yaml")]
    return names


def read_config_file(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """The mapping in a YAML config file, or in a shipped config by name -> ``(data, source)``."""
    path = Path(name_or_path)
    if path.is_file():
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid UTF-8 at byte {exc.start}; re-save the config as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    else:
        shipped = resources.files("llmrec.recipes") / "configs" / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise ConfigError(f"config {str(name_or_path)!r}: no such file and no shipped config of that name; "
                              f"shipped: {shipped_configs()}")
        text, source = shipped.read_text(encoding="utf-8"), f"{name_or_path} ({shipped})"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return data, source


def set_dotted(data: dict[str, Any], cls: type[RecipeConfig], key: str, value: Any) -> None:
    """``data[a][b] = value`` for ``key = "a.b"``; an unknown key is a ConfigError naming the allowed ones."""
    parts, node, target = key.split("."), data, cls
    for depth, part in enumerate(parts):
        hints = _hints(target)
        if part not in hints:
            where = ".".join(parts[:depth]) or target.__name__
            raise ConfigError(f"unknown config key {key!r}: {where} has {sorted(hints)}")
        if depth == len(parts) - 1:
            if _is_section(hints[part]):
                raise ConfigError(f"{key!r} is a section; set one of its keys, e.g. {key}.{leaves(hints[part])[0][0]}")
            node[part] = value
        else:
            if not _is_section(hints[part]):
                raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[:depth + 1])} is not a section")
            node = node.setdefault(part, {})
            target = hints[part]


def load_config(cls: type[R], config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> R:
    """``cls`` from an optional YAML file / shipped name, then dotted ``overrides`` (strings are parsed)."""
    data, source = read_config_file(config) if config else ({}, cls.__name__)
    for key, value in (overrides or {}).items():
        set_dotted(data, cls, key, value)
    return cls.from_dict(_normalize(cls, data, source), source=source)


def to_yaml(config: RecipeConfig, header: str = "") -> str:
    """The resolved config as YAML (tuples as lists), with an optional ``#`` comment header."""
    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return list(x) if isinstance(x, tuple) else x

    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + yaml.safe_dump(plain(config.to_dict()), sort_keys=False)


# ------------------------------------------------------------------------------------------------ argparse
_DEST = "cfg__"


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        names = "|".join(_type_name(a) for a in args if a is not type(None))
        return names + ("|none" if type(None) in args else "")
    if origin is tuple:
        return _type_name(typing.get_args(hint)[0]) + ",..."
    return getattr(hint, "__name__", str(hint)).upper()


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[RecipeConfig],
                         aliases: dict[str, str] | None = None) -> None:
    """``--config`` plus one ``--dotted.name`` option per leaf of ``cls`` (help and defaults from the fields).

    ``aliases`` maps hidden extra spellings to a leaf (``{"--dataset": "data"}``)."""
    parser.add_argument("--config", metavar="FILE|NAME",
                        help="YAML config file or shipped config name (e.g. smollm2-135m/genrec); "
                             "the options below override it")
    groups: dict[str, argparse._ArgumentGroup] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            groups[f.name] = parser.add_argument_group(f.name, f.metadata.get("help"))
    for name, f, hint in leaves(cls):
        group = groups.get(name.split(".")[0], parser) if "." in name else parser
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        choices = f.metadata.get("choices")
        text = f.metadata.get("help", "")
        text += f" (default: {default})"
        metavar = "|".join(map(str, choices)) if choices else _type_name(hint)
        flag = {"nargs": "?", "const": "true"} if hint is bool else {}  # `--test.skip` alone means true
        group.add_argument(f"--{name}", dest=_DEST + name, default=argparse.SUPPRESS, metavar=metavar,
                           help=text.replace("%", "%%"), **flag)
    for alias, name in (aliases or {}).items():
        parser.add_argument(alias, dest=_DEST + name, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def config_from_args(cls: type[R], args: argparse.Namespace) -> R:
    """The config the parsed options describe: ``--config`` (if any) with the given dotted options on top."""
    overrides = {k[len(_DEST):]: v for k, v in vars(args).items() if k.startswith(_DEST)}
    return load_config(cls, getattr(args, "config", None), overrides)
