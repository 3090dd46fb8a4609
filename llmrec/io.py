"""Atomic file output: write to a temporary sibling and rename, so no partial file is ever left.

Also: :func:`guard_output` (never write over data llmrec did not make unless told to), :func:`recover_dir`
(undo a folder swap a kill interrupted) and :func:`dumps_json` (always valid JSON: NaN/inf become null).
"""

from __future__ import annotations

import json
import os
import re
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
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` as a whole.

    The old ``path`` stays in place until the new one is complete. The swap is one atomic exchange where the
    kernel offers it (Linux ``renameat2(RENAME_EXCHANGE)``); elsewhere it is two renames via ``.NAME.old``, and
    :func:`recover_dir` (run here first, and by commands before they look at an output) puts ``.NAME.old``
    back if a kill came between them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _normal_permissions(tmp)
        if path.exists() or path.is_symlink():
            if _exchange(tmp, path):  # tmp now holds the old output
                shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
            else:
                old = _old_name(path)
                _remove(old)
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _old_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


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


def recover_dir(path: str | Path) -> bool:
    """If ``path`` is missing but ``.NAME.old`` (the previous output, parked by a folder swap that a kill
    interrupted) exists, move it back; returns whether it did."""
    path = Path(path)
    old = _old_name(path)
    if not (path.exists() or path.is_symlink()) and old.exists():
        os.replace(old, path)
        return True
    return False


_RENAME_EXCHANGE = 2
_renameat2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the platform or file system cannot."""
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        if os.name == "posix":
            import ctypes

            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
            except (OSError, AttributeError):
                pass
    if not _renameat2:
        return False
    at_cwd = -100  # AT_FDCWD
    return _renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def guard_output(path: str | Path, *, overwrite: bool, ours: Callable[[Path], bool],
                 option: str = "--out") -> None:
    """Refuse to write an output (folder or file) over data llmrec did not make, unless ``overwrite``.

    Allowed without ``overwrite``: a missing path, an empty folder, or a folder or file ``ours(path)``
    recognises (an earlier output of the same command, e.g. by its marker file or header). Refused: any other
    existing file or non-empty folder. Raises :class:`ConfigError` naming ``option`` and the path.
    """
    path = Path(path)
    recover_dir(path)
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir():
        try:
            empty = next(path.iterdir(), None) is None
        except OSError as exc:
            raise ConfigError(f"{option} {path}: cannot read the folder: {exc.strerror or exc}") from None
        if empty or ours(path):
            return
        raise ConfigError(f"{option} {path}: the folder is not empty and was not written by llmrec; choose "
                          "another path or pass --overwrite to replace it")
    if ours(path):
        return
    raise ConfigError(f"{option} {path}: an existing file that llmrec did not write is in the way; choose "
                      "another path or pass --overwrite to replace it")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, dumps_json(obj, indent=indent) + "\n")


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always gives valid JSON: NaN and +-inf (undefined metrics) become ``null``."""
    kwargs.setdefault("default", _json_default)
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:  # a non-finite float somewhere: rare, so only then walk the object
        return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def finite_json(obj: Any) -> Any:
    """A copy of a JSON-able object with every non-finite float replaced by None."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if type(obj).__module__ == "numpy":
        return finite_json(_json_default(obj))
    return obj


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


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]*")


def check_path_name(name: Any, *, where: str) -> str:
    """``name`` if it is safe to use as one file or folder name inside an output folder (letters, digits and
    ``_ . + = @ -``, not starting with a dot, no ``..``, no separators, at most 128 characters); else a
    :class:`ConfigError` that starts with ``where`` (the file and field the name came from)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: expected a non-empty name, got {name!r}")
    if len(name) > 128 or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{where}: {name!r} cannot be used as a file name (it becomes a path under the output "
                          "folder): use letters, digits and _ . + = @ - only, no '..', '/' or leading dot")
    return name
