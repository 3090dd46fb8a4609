"""A LoRA-merged copy of a PEFT model for decoding, rebuilt only when the adapter's weights change.

Unmerged, every decoding forward runs each LoRA pair as two extra small matmuls per adapted projection (for a
135M model at 10 beams ~40 % of a single user's decoding time on CPU). Merging in place and unmerging after is not
exact in bf16 (W + BA - BA != W after rounding, and the drift would accumulate over the evaluations of a training
run), so decoding runs a separate merged copy instead: one more set of base weights in memory, built in about a
second, and rebuilt when any adapter tensor changed, so it can never decode with stale weights. "Changed" is
decided by comparing the adapter tensors with a snapshot taken at the last build (a few MB for LoRA, ~1 ms), not by
tensor version counters: ``torch.optim.AdamW(fused=True)`` — the Trainer's default optimizer on CPU — updates
parameters in place without bumping them, which left validation during training decoding the first copy.

Used on CPU only: on a GPU the LoRA overhead is a smaller share of a step and the extra copy of a large model's
weights costs scarce device memory; quantized (bitsandbytes) or sharded models are never copied.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _adapter_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, p) for name, p in model.named_parameters() if "lora_" in name or "trainable_tokens" in name]


def adapter_fingerprint(model: nn.Module, tensors: list[tuple[str, torch.Tensor]] | None = None) -> tuple[Any, ...]:
    """Changes whenever an adapter tensor is replaced or the active adapter/mode changes; in-place changes of
    the values are caught by :class:`DecodingCopy`'s snapshot (version counters miss fused optimizers).
    ``tensors``: the model's adapter tensors when the caller has them (each walk of the model costs ~10 ms)."""
    tensors = _adapter_tensors(model) if tensors is None else tensors
    state = tuple((name, p.data_ptr(), p.dtype, p.device, tuple(p.shape)) for name, p in tensors)
    return (id(model), tuple(getattr(model, "active_adapters", ()) or ()), state)


def adapter_snapshot(tensors: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
    return [p.detach().clone() for _, p in tensors]


def same_adapter_values(tensors: list[tuple[str, torch.Tensor]], snapshot: list[torch.Tensor]) -> bool:
    return len(tensors) == len(snapshot) and all(
        torch.equal(p.detach(), s) for (_, p), s in zip(tensors, snapshot, strict=True))


def can_merge_for_decoding(model: nn.Module) -> bool:
    """A PEFT LoRA model on CPU, unquantized and unsharded, with its adapter enabled."""
    try:
        from peft import PeftModel
        from peft.tuners.lora import LoraModel
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return False
    if not isinstance(model, PeftModel) or not isinstance(model.base_model, LoraModel):
        return False
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if not layers or any(layer.disable_adapters or layer.merged for layer in layers):
        return False
    first = next(model.parameters())
    if first.device.type != "cpu" or getattr(model, "is_loaded_in_4bit", False) or getattr(
            model, "is_loaded_in_8bit", False) or getattr(model.base_model.model, "is_quantized", False):
        return False
    from llmrec.distributed import world_size

    return world_size() == 1


def merged_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with its LoRA (and trainable-token rows) merged into the base weights, in eval mode."""
    merged = copy.deepcopy(model).merge_and_unload()
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


class DecodingCopy:
    """Holds the merged copy of one model and rebuilds it when :func:`adapter_fingerprint` changes."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._model: nn.Module | None = None
        self._snapshot: list[torch.Tensor] = []

    def get(self, model: nn.Module) -> nn.Module:
        """The module to decode with: the merged copy where :func:`can_merge_for_decoding`, else ``model``."""
        if not can_merge_for_decoding(model):
            self.clear()
            return model
        tensors = _adapter_tensors(model)  # one walk of the model per call: single-user decoding feels each
        key = adapter_fingerprint(model, tensors)
        if key != self._key or self._model is None or not same_adapter_values(tensors, self._snapshot):
            self._model = None  # free the stale copy before building the next one
            self._model = merged_copy(model)
            self._key, self._snapshot = key, adapter_snapshot(tensors)
            logger.debug("decoding: rebuilt the LoRA-merged copy")
        return self._model

    def clear(self) -> None:
        self._key, self._model, self._snapshot = None, None, []
