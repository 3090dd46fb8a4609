"""llmrec: an LLM personalization toolkit.

The public API is imported lazily so that ``import llmrec`` is instant; its one side effect is a few precise
filters for library messages a user cannot act on (:mod:`llmrec.quiet`).
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

from llmrec.quiet import quiet_libraries  # noqa: E402  (precise filters for library noise; imports nothing heavy)

quiet_libraries()
