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


class VocabProjector(nn.Module):
    """Soft tokens as mixtures of the LLM's own token embeddings: ``softmax(MLP(state)) @ E[anchors]``.

    Arbitrary projected vectors lie off the embedding manifold and a small LLM learns to read them slowly; a
    mixture of real token embeddings (e.g. the words of the catalogue's titles and categories) is input the LLM
    already understands, so the encoder only has to learn *which* words describe the user. The embedding rows
    are read from the LLM at every call (nothing copied or saved); the last layer starts at zero, i.e. every
    soft token starts as the mean anchor embedding.
    """

    def __init__(self, d_in: int, embedding: nn.Embedding, anchor_ids: list[int], hidden: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if not anchor_ids:
            raise ValueError("VocabProjector needs at least one anchor token id")
        self.embedding = [embedding]  # a list keeps the LLM's module out of this module's parameters/state
        self.register_buffer("anchor_ids", torch.tensor(sorted(set(anchor_ids)), dtype=torch.long), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, len(self.anchor_ids)))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Unnormalised mixture weights over ``anchor_ids`` (sorted), ``[..., n_anchors]``."""
        return self.mlp(states)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        weights = self.logits(states).softmax(-1)
        anchors = self.embedding[0].weight[self.anchor_ids].float()
        return weights @ anchors
