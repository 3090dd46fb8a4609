"""Atomic file output: write to a temporary sibling and rename, so no partial file is ever left; and the guard
that keeps an output from replacing data llmrec did not write (:func:`guard_output`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmrec.errors import ConfigError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` (a folder or a file) as a
    whole. The old output stays until the new one is complete; a swap cut between its two renames is undone the
    next time (the old output, parked as ``.NAME.old``, comes back first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.old")
    if old.exists() and not path.exists() and not path.is_symlink():
        os.replace(old, path)  # killed between the renames below: the previous output was complete
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _normal_permissions(tmp)
        if path.exists() or path.is_symlink():
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _normal_permissions(root: Path) -> None:
    """The modes a plain mkdir()/open() would give under the umask: mkdtemp makes 0700 folders and some writers
    (mkstemp, safetensors) 0600 files, which would leave an output unreadable to the rest of a group."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o777 & ~mask)
        for name in filenames:
            file = os.path.join(dirpath, name)
            if not os.path.islink(file):
                os.chmod(file, (0o666 | (os.stat(file).st_mode & 0o111)) & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def guard_output(path: Path, *, overwrite: bool, ours: Callable[[Path], bool]) -> None:
    """Refuse to write an output at ``path`` where that would destroy data llmrec did not write: an existing file,
    or a non-empty folder for which ``ours(path)`` is False (ours = a previous output of the same kind, replaced
    atomically). ``overwrite`` (``--overwrite``) lifts the refusal. Call it before any slow work."""
    path = Path(path)
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if not path.is_dir():
        raise ConfigError(f"{path}: output path is an existing file; choose another output folder or pass "
                          "--overwrite to replace it")
    if ours(path) or not any(path.iterdir()):
        return
    raise ConfigError(f"{path}: output folder exists, is not empty and was not written by llmrec; choose another "
                      "output folder or pass --overwrite to replace it (its contents are deleted)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
