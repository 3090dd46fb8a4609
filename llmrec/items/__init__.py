"""Item tokenizer: item text -> vectors -> quantizer codes -> unique semantic IDs with a prefix trie.

Public names are imported lazily so ``import llmrec.items`` does not load torch or faiss.
"""

from __future__ import annotations

from llmrec.lazy import lazy_exports

_LAZY = {
    "EncoderConfig": "llmrec.items.encoders",
    "ItemEncoder": "llmrec.items.encoders",
    "encode_items": "llmrec.items.encoders",
    "item_texts": "llmrec.items.encoders",
    "QuantizerConfig": "llmrec.items.quantizers",
    "RQVAEConfig": "llmrec.items.quantizers",
    "Quantizer": "llmrec.items.quantizers",
    "make_quantizer": "llmrec.items.quantizers",
    "load_quantizer": "llmrec.items.quantizers",
    "SemanticIds": "llmrec.items.semantic_ids",
    "SidTrie": "llmrec.items.trie",
    "diagnostics": "llmrec.items.diagnostics",
    "SemanticIdConfig": "llmrec.items.build",
    "build_semantic_ids": "llmrec.items.build",
    "load_built_semantic_ids": "llmrec.items.build",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports("llmrec.items", _LAZY, globals())
