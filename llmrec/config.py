"""Dataclass configs: strict construction from dicts (unknown keys are errors), saved as JSON beside artefacts."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from llmrec.errors import ConfigError
from llmrec.io import write_json_atomic

C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    """Base for llmrec configs. Subclasses validate values in ``__post_init__``."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, source: str = "config") -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {unknown} for {cls.__name__}; allowed: {sorted(names)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in data.items():
            kwargs[key] = _coerce(hints.get(key), value, f"{source}.{key}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{source}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid UTF-8 at byte {exc.start}; re-save the config as UTF-8") from None
        except RecursionError:
            raise ConfigError(f"{path}: JSON nested too deeply") from None
        except (OSError, ValueError) as exc:  # ValueError: bad JSON, or an integer over Python's digit limit
            raise ConfigError(f"{path}: cannot read config: {exc}") from None
        return cls.from_dict(data, source=str(path))


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Turn JSON values back into the declared type (tuples, nested configs); reject obvious mismatches."""
    if hint is None or value is None:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _coerce(args[0], value, where)
        return value
    if isinstance(hint, type) and issubclass(hint, Config):
        return value if isinstance(value, hint) else hint.from_dict(value, source=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int subclass in Python, but `"epochs": true` is a mistake, not 1.
    wrong_bool = hint is not bool and isinstance(value, bool)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or wrong_bool):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} ({value!r})")
    return value
