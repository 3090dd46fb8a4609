"""llmrec: an LLM personalization toolkit.

The public API is imported lazily so that ``import llmrec`` is instant and has no side effects.
"""

from __future__ import annotations

from llmrec.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "llmrec.data",
    "leave_one_out": "llmrec.data",
    "InteractionData": "llmrec.data",
    "fetch_resources": ("llmrec.resources", "fetch_all"),
}

__all__ = sorted(_LAZY) + ["__version__"]


__getattr__ = lazy_exports("llmrec", _LAZY, globals())
