"""Jinja prompt templates, rendered in a sandbox with StrictUndefined (a missing variable is an error)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from llmrec.errors import ConfigError
from llmrec.package_data import data_candidates, prompt_dirs
from llmrec.prompting import compile_template, render_template


def resolve_template_path(name: str, relative_to: str | Path | None = None) -> Path:
    """Beside the task file (``relative_to``), else a user or built-in ``prompts/`` file.

    A task file is untrusted input (task files get shared): with ``relative_to`` the template must resolve
    (symlinks followed) inside the task file's folder, a user prompts folder (``--prompts-dir``,
    ``$LLMREC_PROMPTS``) or the built-in prompts, so ``prompt: /proc/self/environ`` or ``../../secret`` is
    refused. Without ``relative_to`` (a path given in code or on the command line) any file is taken.
    """
    path = Path(name)
    candidates = [path] if path.is_absolute() else []
    if relative_to and not path.is_absolute():
        candidates.append(Path(relative_to).parent / path)
    candidates += data_candidates(path)
    for cand in candidates:
        if cand.is_file():
            if relative_to:
                _check_inside(cand, name, relative_to)
            return cand
    raise ConfigError(f"prompt template {name!r} not found (looked in {', '.join(str(c) for c in candidates)})")


def allowed_prompt_roots(relative_to: str | Path) -> list[Path]:
    """Folders a task file's prompt may come from: the task's folder, the user's and the built-in prompts."""
    return [Path(relative_to).parent, *prompt_dirs()]


def _check_inside(cand: Path, name: str, relative_to: str | Path) -> None:
    real = cand.resolve()
    roots = allowed_prompt_roots(relative_to)
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        raise ConfigError(
            f"{relative_to}: field 'prompt': {name!r} is {real}, outside the folders a task's prompt may come from "
            f"({', '.join(str(r) for r in roots)}); put the template beside the task file or pass its folder "
            "with llmrec --prompts-dir")


@lru_cache(maxsize=64)
def _compile(path: str, mtime: float) -> jinja2.Template:
    try:
        source = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 at byte {exc.start}; re-save the template as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the template: {exc.strerror or exc}") from None
    return compile_template(source, path)


def load_template(name: str, relative_to: str | Path | None = None) -> jinja2.Template:
    path = resolve_template_path(name, relative_to)
    return _compile(str(path), path.stat().st_mtime)


def render(template: jinja2.Template, variables: dict[str, Any], record: str | None = None) -> str:
    """Render; an undefined variable is a DataError naming the template and record, a sandbox violation (or
    an include, a huge range) a ConfigError naming the template."""
    # keep a trailing space: completion-style prompts end mid-line ("Title [categories]: ")
    return render_template(template, variables, record=record).lstrip().rstrip("\n")
