"""Lazy package exports: public names resolve on first access, so importing a package loads no heavy deps."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, table: dict[str, str | tuple[str, str]], namespace: dict[str, Any]
                 ) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``table`` maps a name to its module (or ``(module, attr)``);
    a resolved value is cached in the package ``namespace``."""

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = target if isinstance(target, tuple) else (target, name)
        value = getattr(importlib.import_module(module), attr)
        namespace[name] = value
        return value

    return __getattr__
