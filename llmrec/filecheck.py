"""Checks of the files llmrec reads back (saved models, semantic-ID tables, Trainer checkpoints), run before a
library parses them: a missing, empty, truncated or pickled file becomes one :class:`ConfigError` naming the file
and what to do, instead of a traceback from deep inside safetensors, tokenizers or torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmrec.errors import ConfigError

# Weights formats that unpickle on load (and so can run code): refused by name unless the user opts in.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or None when it is one. Reads only the header: the file
    must be exactly as long as the header's largest tensor offset says (a cut-off copy is shorter)."""
    path = Path(path)
    if not path.is_file():
        return "file is missing"
    size = path.stat().st_size
    if size == 0:
        return "file is empty"
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "file is truncated (no safetensors header)"
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER or 8 + n > size:
            return "file is truncated or not a safetensors file (header longer than the file)"
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "not a safetensors file (bad tensor entries in its header)"
    if 8 + n + end != size:
        return f"file is truncated ({size} bytes, its header describes {8 + n + end})"
    return None


def check_safetensors(path: str | Path, *, fix: str) -> None:
    """Raise a ConfigError naming ``path`` unless it is a complete safetensors file; ``fix`` says what to do."""
    problem = safetensors_problem(path)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}; {fix}")


def read_json(path: str | Path, *, fix: str, kind: type = dict) -> Any:
    """The JSON value in ``path`` (of type ``kind``); a ConfigError naming the file when it is missing, not UTF-8,
    not JSON (a truncated copy) or of another type."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file is missing; {fix}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); {fix}") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        what = "file is empty" if not path.stat().st_size else f"not valid JSON, truncated? ({exc})"
        raise ConfigError(f"{path}: {what}; {fix}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror}); {fix}") from exc
    if not isinstance(value, kind):
        raise ConfigError(f"{path}: expected a JSON {_json_name(kind)}, got {_json_name(type(value))}; {fix}")
    return value


def pickle_files(directory: str | Path) -> list[Path]:
    """Files under ``directory`` whose names say pickle-based weights (sorted)."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def refuse_pickles(directory: str | Path, *, allow: bool) -> list[Path]:
    """The pickle files in ``directory``; unless ``allow``, a ConfigError naming the first (loading one can run
    arbitrary code). With ``allow`` they are returned: the caller loads them with ``torch.load(weights_only=True)``."""
    found = pickle_files(directory)
    if found and not allow:
        raise ConfigError(f"{found[0]}: pickle-based weights are refused (unpickling can run arbitrary code); llmrec "
                          "loads safetensors only: save the weights as safetensors, or pass --allow-pickle if you trust "
                          "this file (it is then read with torch.load(weights_only=True))")
    return found


def _json_name(kind: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(kind, kind.__name__)
