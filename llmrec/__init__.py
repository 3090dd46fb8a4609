"""llmrec: an LLM personalization toolkit.

The public API is imported lazily so that ``import llmrec`` is instant and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "llmrec.data",
    "leave_one_out": "llmrec.data",
    "InteractionData": "llmrec.data",
    "fetch_resources": ("llmrec.resources", "fetch_all"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'llmrec' has no attribute {name!r}")
    module_name, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value
