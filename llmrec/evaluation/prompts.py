"""Jinja prompt templates, rendered in a sandbox with StrictUndefined (a missing variable is an error)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from llmrec.errors import ConfigError, DataError
from llmrec.package_data import data_candidates
from llmrec.prompting import environment


def resolve_template_path(name: str, relative_to: str | Path | None = None) -> Path:
    """Absolute path, else beside the task file (``relative_to``), else a user or built-in ``prompts/`` file."""
    path = Path(name)
    candidates = [path] if path.is_absolute() else []
    if relative_to and not path.is_absolute():
        candidates.append(Path(relative_to).parent / path)
    candidates += data_candidates(path)
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ConfigError(f"prompt template {name!r} not found (looked in {', '.join(str(c) for c in candidates)})")


@lru_cache(maxsize=64)
def _compile(path: str, mtime: float) -> jinja2.Template:
    try:
        return environment().from_string(Path(path).read_text(encoding="utf-8"))
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{path}: template syntax error at line {exc.lineno}: {exc.message}") from None


def load_template(name: str, relative_to: str | Path | None = None) -> jinja2.Template:
    path = resolve_template_path(name, relative_to)
    return _compile(str(path), path.stat().st_mtime)


def render(template: jinja2.Template, variables: dict[str, Any], record: str | None = None) -> str:
    """Render; undefined variables and sandbox violations become a DataError naming the template and record."""
    try:
        # keep a trailing space: completion-style prompts end mid-line ("Title [categories]: ")
        return template.render(**variables).lstrip().rstrip("\n")
    except jinja2.UndefinedError as exc:
        raise DataError(f"prompt needs a variable the example lacks: {exc.message}", record=record) from None
    except jinja2.exceptions.SecurityError as exc:
        raise DataError(f"prompt template tried an unsafe operation: {exc}", record=record) from None
