"""Where the built-in prompts, adapter presets and task YAML live, in a checkout and in an installed wheel.

The top-level ``prompts/``, ``adapters/`` and ``eval/tasks/`` folders are the sources; ``setup.py`` maps them
into the wheel as ``llmrec/_data/{prompts,adapters,tasks}``. A source checkout (editable install, or ``llmrec``
imported from the repository root) has no ``llmrec/_data``, so the folders beside the package are used.
A user prompts folder (``$LLMREC_PROMPTS``, ``os.pathsep``-separated, or ``llmrec --prompts-dir``) is searched
before the built-in one, so a template of the same name overrides the shipped one.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from llmrec.errors import ConfigError

PROMPTS_ENV = "LLMREC_PROMPTS"
# package-data folder -> where it lives in a source checkout (relative to the repository root)
CHECKOUT_FOLDERS = {"prompts": "prompts", "adapters": "adapters", "tasks": "eval/tasks"}


def _builtin(name: str) -> Path:
    package = files("llmrec")
    if not isinstance(package, Path):  # a zip import: templates and YAML are read from the file system
        raise ConfigError(f"llmrec is imported from {package}; install it unpacked (pip install) to use its {name}")
    candidates = [package / "_data" / name, package.parent / CHECKOUT_FOLDERS[name]]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise ConfigError(f"built-in {name} folder not found (looked in {', '.join(map(str, candidates))}); "
                      "reinstall llmrec")


def prompts_dir() -> Path:
    """The shipped prompt templates (``prompts/`` in a checkout)."""
    return _builtin("prompts")


def adapters_dir() -> Path:
    """The shipped adapter presets (``adapters/`` in a checkout); trained adapters never go here in a wheel."""
    return _builtin("adapters")


def tasks_dir() -> Path:
    """The built-in evaluation task YAML (``eval/tasks/`` in a checkout)."""
    return _builtin("tasks")


def user_prompt_dirs() -> list[Path]:
    """The user's prompt folders from ``$LLMREC_PROMPTS``, first match wins."""
    return [Path(p) for p in os.environ.get(PROMPTS_ENV, "").split(os.pathsep) if p]


def prompt_dirs() -> list[Path]:
    """Folders searched for a prompt by name: the user's first, then the built-in one."""
    return [*user_prompt_dirs(), prompts_dir()]


def data_candidates(path: str | Path) -> list[Path]:
    """Where a repository-relative data path (``prompts/genrec.jinja``, ``adapters/lora.yaml``,
    ``eval/tasks/uqa.yaml``, as task files and defaults name them) may lie, in search order; [] for others."""
    parts = Path(path).parts
    if len(parts) < 2 or Path(path).is_absolute():
        return []
    if parts[0] == "prompts":
        return [d.joinpath(*parts[1:]) for d in prompt_dirs()]
    if parts[0] == "adapters":
        return [adapters_dir().joinpath(*parts[1:])]
    if parts[:2] == ("eval", "tasks") and len(parts) > 2:
        return [tasks_dir().joinpath(*parts[2:])]
    return []
