"""LoRA adapters that keep fp32 weights but multiply in the activations' dtype (mixed precision, no autocast).

Over a bf16 base model peft keeps the adapter weights in fp32 (``autocast_adapter_dtype=True``, so that AdamW's small
updates are not rounded away) and casts every adapted projection's input up to fp32 to match them. Per adapted linear
and step that is a bf16 -> fp32 copy of the activations, dropout and two matmuls in fp32, a fp32 sum with the bf16
base output and its cast back, and the same casts again in backward: on a SmolLM2-135M genrec step on one core,
``aten::copy_`` of activations was as large a share of the step as all matrix multiplies (torch profiler). Here the
small adapter weights are cast to the input's dtype instead, as ``torch.autocast`` does for a matmul: the master
weights, their gradients and the optimizer stay fp32, the activations stay in the base model's dtype. A fp32 model
(or bf16 adapters) is unchanged: the cast only happens where the dtypes differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ComputeDtypeLinear(nn.Linear):
    """``nn.Linear`` whose weight (and bias) are cast to the input's dtype for the product; the gradient flows back
    to the stored dtype through the cast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype == x.dtype:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def use_compute_dtype_lora(model: nn.Module, *, undo: bool = False) -> int:
    """Make every plain LoRA linear of ``model`` (peft ``lora.Linear`` without a variant such as DoRA) compute in its
    input's dtype: its ``lora_A``/``lora_B`` become :class:`ComputeDtypeLinear` (same parameters, so saved adapters are
    the same files) and peft's cast of the input to the adapter dtype is switched off. Returns how many layers
    changed; ``undo=True`` restores peft's behaviour (benchmarks time the step as it was)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    changed = 0
    for module in model.modules():
        if type(module) is not LoraLinear or module.lora_variant:
            continue
        linears = [lin for name in module.lora_A for lin in (module.lora_A[name], module.lora_B[name])]
        if any(type(lin) not in (nn.Linear, ComputeDtypeLinear) for lin in linears):
            continue
        if module.cast_input_dtype_enabled == undo:  # already as asked
            continue
        for lin in linears:
            lin.__class__ = nn.Linear if undo else ComputeDtypeLinear
        module.cast_input_dtype_enabled = undo
        changed += 1
    return changed
