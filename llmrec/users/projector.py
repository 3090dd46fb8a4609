"""Projector: user-encoder states -> soft tokens in the LLM's embedding space."""

from __future__ import annotations

import math

import torch
from torch import nn


class Projector(nn.Module):
    """Two-layer MLP to the LLM hidden size; outputs are L2-normalised and multiplied by a learned scale.

    The scale starts at the mean norm of the LLM's token embeddings (``init_norm``), so soft tokens enter at the
    magnitude the LLM expects without a hand-picked constant, and training can move it.
    """

    def __init__(self, d_in: int, d_out: int, init_norm: float, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = hidden or max(d_in, d_out)
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))
        self.log_scale = nn.Parameter(torch.tensor(math.log(max(init_norm, 1e-6)), dtype=torch.float32))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        out = self.mlp(states)
        return out / out.norm(dim=-1, keepdim=True).clamp(min=1e-6) * self.log_scale.exp()
