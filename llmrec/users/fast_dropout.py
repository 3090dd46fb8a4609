"""Dropout from random bits: the same Bernoulli masks in distribution as ``torch.nn.functional.dropout`` at a
fraction of the cost on CPU.

``F.dropout`` draws one Bernoulli sample per element through the generator (~35 ns an element on one core: at
p = 0.5 the SASRec's nine dropouts a step cost more than its matrix multiplies). Here one 64-bit draw gives four
16-bit uniforms; an element is kept when its uniform is at or above ``round(p * 65536)`` of 65,536 levels, so the
keep probability is exact for p a multiple of 1/65,536 (0.5, 0.25, 0.1 to within 1e-5) and the kept values are
scaled by ``1 / (1 - p)`` as ``F.dropout`` does. Deterministic for a ``torch.manual_seed``, but a different stream
from ``F.dropout``'s: the same seed gives different masks.
"""

from __future__ import annotations

import torch

_LEVELS = 1 << 16


def bit_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``x`` with each element zeroed with probability ``p`` (kept ones scaled by ``1 / (1 - p)``) when training."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = x.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    uniform16 = words.view(torch.int16)[:n].view(x.shape)  # signed view: levels -32768..32767
    keep = uniform16 >= round(p * _LEVELS) - _LEVELS // 2
    # bool -> float converts element by element; through uint8 it is vectorised (3x faster)
    return x * keep.view(torch.uint8).to(x.dtype).mul_(1.0 / (1.0 - p))
