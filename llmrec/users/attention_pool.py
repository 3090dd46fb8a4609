"""Input-aware attention pooling (PPlug-style): history items weighted by their similarity to the question."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from llmrec.config import Config
from llmrec.errors import ConfigError


@dataclasses.dataclass
class AttentionPoolConfig(Config):
    item_dim: int = 384  # frozen sentence-encoder vectors of history items
    query_dim: int = 384  # frozen sentence-encoder vector of the current question
    n_user_vectors: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.n_user_vectors <= 32:
            raise ConfigError("n_user_vectors must be in 1..32")


class AttentionPoolEncoder(nn.Module):
    """``forward(item_idx [B,T] (0 = pad), query_vec [B,q]) -> [B, k, d]``.

    History items are rows of a frozen table of sentence-encoder vectors (row 0 = padding). Each of the k heads
    maps the query through its own trainable linear map; the weights are a softmax over the dot products with
    the history vectors, with a learned temperature.
    """

    def __init__(self, config: AttentionPoolConfig, item_vectors: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        if item_vectors.ndim != 2 or item_vectors.shape[1] != config.item_dim:
            raise ConfigError(f"item_vectors must be [n_items, {config.item_dim}], got {tuple(item_vectors.shape)}")
        table = torch.cat([torch.zeros(1, config.item_dim), item_vectors.float()])
        self.register_buffer("item_vectors", table, persistent=True)
        self.output_dim = config.item_dim
        k = config.n_user_vectors
        self.query_maps = nn.Linear(config.query_dim, k * config.item_dim)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        with torch.no_grad():  # start every head at "similarity to the question itself"
            eye = torch.eye(config.query_dim, config.item_dim)
            self.query_maps.weight.copy_(eye.repeat(k, 1) + 0.01 * torch.randn(k * config.item_dim, config.query_dim))
            self.query_maps.bias.zero_()

    def forward(self, item_idx: torch.Tensor, query_vec: torch.Tensor | None = None,
                ratings: torch.Tensor | None = None) -> torch.Tensor:
        if query_vec is None:
            raise ConfigError("the input-aware pool needs the question's vector (query_vec)")
        item_vecs = self.item_vectors[item_idx]
        mask = item_idx != 0
        b, t, d = item_vecs.shape
        k = self.config.n_user_vectors
        q = self.query_maps(query_vec).view(b, k, d)
        logits = torch.einsum("bkd,btd->bkt", q, item_vecs) * self.log_temperature.exp() * d**0.5
        logits = logits.masked_fill(~mask.bool()[:, None, :], float("-inf"))
        weights = logits.softmax(-1)
        return weights @ item_vecs
