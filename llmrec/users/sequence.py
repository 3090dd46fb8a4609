"""SASRec-style causal transformer over item sequences: the classical next-item recommender and the user encoder.

Layout: item indices are 1-based (0 is padding) and sequences are right-padded, so position ``t`` sees only
items ``0..t`` and its state equals the state of that prefix encoded alone (learned positions count from the
start of the window). That makes one causal pass train every prefix target at once, and lets the same
states serve as the user encoder later.

Input embedding = learned ID embedding (+ a projection of frozen item text vectors) (+ semantic-ID code
embeddings) + rating embedding + position. The output scores are tied to the same item table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from llmrec.config import Config
from llmrec.data.schema import UserHistory
from llmrec.errors import ConfigError, DataError
from llmrec.io import atomic_dir
from llmrec.users.fast_dropout import bit_dropout

logger = logging.getLogger(__name__)

POOLINGS = ("last", "mean", "profile", "query")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ITEMS_FILE = "items.json"


@dataclass
class SequenceEncoderConfig(Config):
    """Architecture of :class:`SequenceEncoder`.

    ``item_vector_dim`` > 0 adds a learned projection of frozen item vectors (e.g. MiniLM title embeddings) to the
    ID embedding; ``code_sizes`` (one codebook size per level) adds semantic-ID code embeddings;
    ``n_rating_levels`` > 0 adds a rating embedding (ratings are rounded and clipped to ``1..n_rating_levels``).
    ``pooling``/``n_user_vectors`` choose what :meth:`SequenceEncoder.user_states` emits.
    """

    n_items: int = 0
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_mult: int = 4
    max_len: int = 200
    dropout: float = 0.2
    item_vector_dim: int = 0
    code_sizes: tuple[int, ...] = ()
    n_rating_levels: int = 0
    pooling: str = "last"
    n_user_vectors: int = 1
    recent_window: int = 10  # ``profile`` pooling: the items its "recent" slot averages

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ConfigError(f"n_items must be >= 1, got {self.n_items}")
        if self.d_model < 1 or self.n_layers < 1 or self.n_heads < 1 or self.ffn_mult < 1:
            raise ConfigError("d_model, n_layers, n_heads and ffn_mult must be >= 1")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.max_len < 1:
            raise ConfigError(f"max_len must be >= 1, got {self.max_len}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.item_vector_dim < 0 or self.n_rating_levels < 0 or any(s < 1 for s in self.code_sizes):
            raise ConfigError("item_vector_dim and n_rating_levels must be >= 0 and code sizes >= 1")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not 1 <= self.n_user_vectors <= 32:
            raise ConfigError(f"n_user_vectors must be in 1..32, got {self.n_user_vectors}")
        if self.recent_window < 1:
            raise ConfigError(f"recent_window must be >= 1, got {self.recent_window}")


def history_chunks(real: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, T, k]`` one-hot chunk of each position of right-padded histories (``real`` = not padding): chunk c
    covers positions ``[c*len/k, (c+1)*len/k)``; padding is in no chunk, and rows shorter than k leave some chunks
    empty. The chunks of ``user_states(pooling="mean")``, also the text-alignment targets' chunks."""
    lengths = real.sum(1).clamp(min=1)
    pos = torch.arange(real.shape[1], device=real.device)[None, :]
    chunk = torch.div(pos * k, lengths[:, None], rounding_mode="floor")
    chunk = torch.where(real, chunk, torch.full_like(chunk, k))
    return F.one_hot(chunk, k + 1)[..., :k]


def slot_members(real: torch.Tensor, k: int, pooling: str, recent_window: int = 10) -> torch.Tensor:
    """``[B, T, k]`` 0/1 membership of each position of right-padded histories in each of the k user slots that
    :meth:`SequenceEncoder.user_states` averages (and text alignment fits to the same items' words):

    - ``last``: slot j holds the (k - j)-th most recent item (slots before the first item are empty);
    - ``mean``: k consecutive chronological chunks (:func:`history_chunks`);
    - ``profile``: slot 0 = the whole history (long-term taste), slot 1 = the last ``recent_window`` items (recent
      taste), slots 2..k-1 = the k - 2 most recent items one each, oldest first. Slots overlap on purpose: a user
      profile in k vectors, whose long-term slot summarises items a text prompt would have no room for.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if pooling == "mean":
        return history_chunks(real, k)
    pos = torch.arange(real.shape[1], device=real.device)[None, :]
    from_end = real.sum(1)[:, None] - 1 - pos  # [B, T]: 0 = the most recent item; negative = padding

    def last_items(n: int) -> torch.Tensor:  # [B, T, n]: slot j = the (n - j)-th most recent item
        return (from_end[..., None] == (n - 1 - torch.arange(n, device=real.device))).long()

    if pooling == "last":
        return last_items(k)
    if pooling != "profile":
        raise ConfigError(f"pooling {pooling!r} has no fixed slots (one of last, mean, profile)")
    whole, recent = real.long(), (real & (from_end < recent_window)).long()
    return torch.cat([whole[..., None], recent[..., None], last_items(max(k - 2, 0))], -1)[..., :k]


class SequenceEncoder(nn.Module):
    """Causal transformer: ``forward(item_idx [B, T], ratings) -> states [B, T, d]``; ``score_all`` -> logits."""

    def __init__(self, config: SequenceEncoderConfig, item_ids: Sequence[str] | None = None) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        if item_ids is not None and len(item_ids) != config.n_items:
            raise ConfigError(f"{len(item_ids)} item ids for n_items={config.n_items}")
        self.item_ids = list(item_ids) if item_ids is not None else None
        self._index = {item: i + 1 for i, item in enumerate(self.item_ids or [])}
        self.item_emb = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        if config.item_vector_dim:
            self.register_buffer("item_vectors", torch.zeros(config.n_items + 1, config.item_vector_dim))
            self.vector_proj = nn.Linear(config.item_vector_dim, d, bias=False)
        if config.code_sizes:
            self.register_buffer("item_codes", torch.zeros(config.n_items + 1, len(config.code_sizes), dtype=torch.long))
            self.code_emb = nn.ModuleList(nn.Embedding(size, d) for size in config.code_sizes)
        if config.n_rating_levels:
            self.rating_emb = nn.Embedding(config.n_rating_levels + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d, config.n_heads, d * config.ffn_mult, config.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        if config.pooling == "query":
            self.user_queries = nn.Parameter(torch.randn(config.n_user_vectors, d) * d**-0.5)
            self.pool_attn = nn.MultiheadAttention(d, config.n_heads, batch_first=True)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.d_model**-0.5
        nn.init.normal_(self.item_emb.weight, std=std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        nn.init.normal_(self.pos_emb.weight, std=std)
        for emb in getattr(self, "code_emb", []):
            nn.init.normal_(emb.weight, std=std)

    # ---- inputs ---------------------------------------------------------------------------------------

    def set_item_vectors(self, vectors: torch.Tensor) -> None:
        """Frozen item vectors ``[n_items, item_vector_dim]`` in catalogue order (row i = item index i + 1)."""
        dim = self.config.item_vector_dim
        if not dim or tuple(vectors.shape) != (self.config.n_items, dim):
            raise DataError(f"item vectors must have shape ({self.config.n_items}, {dim}), got {tuple(vectors.shape)}")
        with torch.no_grad():
            self.item_vectors[1:] = vectors.to(self.item_vectors)

    def set_item_codes(self, codes: torch.Tensor) -> None:
        """Semantic-ID codes ``[n_items, levels]`` in catalogue order."""
        sizes = self.config.code_sizes
        if not sizes or tuple(codes.shape) != (self.config.n_items, len(sizes)):
            raise DataError(f"item codes must have shape ({self.config.n_items}, {len(sizes)}), got {tuple(codes.shape)}")
        limits = torch.tensor(sizes)
        if (codes < 0).any() or (codes >= limits).any():
            raise DataError(f"item codes out of range for code sizes {sizes}")
        with torch.no_grad():
            self.item_codes[1:] = codes.long()

    def item_table(self) -> torch.Tensor:
        """Item representations ``[n_items + 1, d]`` (row 0 = padding), used for both input and output."""
        table = self.item_emb.weight
        if self.config.item_vector_dim:
            table = table + self.vector_proj(self.item_vectors)
        if self.config.code_sizes:
            for level, emb in enumerate(self.code_emb):
                table = table + emb(self.item_codes[:, level])
        return table

    def rating_levels(self, ratings: Sequence[float | None]) -> list[int]:
        """Ratings -> embedding indices (0 = unknown), rounded and clipped to ``1..n_rating_levels``."""
        top = self.config.n_rating_levels
        return [0 if r is None or not top else min(max(int(round(r)), 1), top) for r in ratings]

    def item_indices(self, item_ids: Sequence[str], record: object = None) -> list[int]:
        """The encoder's 1-based indices of catalogue items (0 is padding); ``record`` names the history in errors."""
        if self.item_ids is None:
            raise ConfigError("this encoder has no item ids; build it with item_ids=... to encode histories")
        try:
            return [self._index[x] for x in item_ids]
        except KeyError as exc:
            raise DataError(f"unknown item {exc.args[0]!r}", record=record, field="item_ids") from None

    def encode_histories(
        self, histories: Sequence[UserHistory | Sequence[str]], max_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Right-padded ``[B, T]`` item indices (and rating levels) of each history's last ``max_len`` items."""
        max_len = max_len or self.config.max_len
        rows, rates = [], []
        for n, h in enumerate(histories):
            ids = h.item_ids if isinstance(h, UserHistory) else tuple(h)
            if not ids:
                raise DataError("empty history", record=getattr(h, "user_id", n), field="item_ids")
            rows.append(self.item_indices(ids[-max_len:], record=getattr(h, "user_id", n)))
            ratings = h.ratings if isinstance(h, UserHistory) else (None,) * len(ids)
            rates.append(self.rating_levels(ratings[-max_len:]))
        width = max(len(r) for r in rows)
        idx = torch.zeros(len(rows), width, dtype=torch.long)
        lev = torch.zeros(len(rows), width, dtype=torch.long)
        for b, (r, q) in enumerate(zip(rows, rates, strict=True)):
            idx[b, : len(r)] = torch.tensor(r)
            lev[b, : len(q)] = torch.tensor(q)
        return idx, (lev if self.config.n_rating_levels else None)

    # ---- model ----------------------------------------------------------------------------------------

    def forward(self, item_idx: torch.Tensor, ratings: torch.Tensor | None = None) -> torch.Tensor:
        """States ``[B, T, d]``; position ``t`` depends on items ``0..t`` only."""
        if item_idx.dim() != 2:
            raise DataError(f"item_idx must be [batch, time], got shape {tuple(item_idx.shape)}")
        t = item_idx.shape[1]
        if t > self.config.max_len:
            raise DataError(f"sequence length {t} exceeds max_len {self.config.max_len}; keep the last max_len items")
        x = F.embedding(item_idx, self.item_table()) + self.pos_emb.weight[:t]
        if ratings is not None and self.config.n_rating_levels:
            x = x + self.rating_emb(ratings)
        x = self.emb_dropout(x)
        causal = torch.triu(torch.full((t, t), float("-inf"), device=x.device), diagonal=1)
        h = self.blocks(x, mask=causal, is_causal=True)
        return self.final_norm(h)

    def train_states(self, item_idx: torch.Tensor, ratings: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`forward` in training mode with :func:`~llmrec.users.fast_dropout.bit_dropout` at every dropout
        site ``nn.TransformerEncoderLayer`` has (embeddings, attention weights, both residual branches, the FFN
        hidden layer): the same function and parameters, the same mask distribution, ~4x cheaper per step on CPU
        where the per-element Bernoulli draws of ``F.dropout`` cost more than the matrix multiplies."""
        if item_idx.dim() != 2:
            raise DataError(f"item_idx must be [batch, time], got shape {tuple(item_idx.shape)}")
        b, t = item_idx.shape
        if t > self.config.max_len:
            raise DataError(f"sequence length {t} exceeds max_len {self.config.max_len}; keep the last max_len items")
        p, heads = self.config.dropout, self.config.n_heads
        x = F.embedding(item_idx, self.item_table()) + self.pos_emb.weight[:t]
        if ratings is not None and self.config.n_rating_levels:
            x = x + self.rating_emb(ratings)
        x = bit_dropout(x, p)
        causal = torch.triu(torch.full((t, t), float("-inf"), device=x.device), diagonal=1)
        for layer in self.blocks.layers:
            attn = layer.self_attn
            h = layer.norm1(x)
            q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).view(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
            weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + causal, dim=-1)
            a = (bit_dropout(weights, p) @ v).transpose(1, 2).reshape(b, t, -1)
            x = x + bit_dropout(attn.out_proj(a), p)
            h = bit_dropout(F.gelu(layer.linear1(layer.norm2(x))), p)
            x = x + bit_dropout(layer.linear2(h), p)
        return self.final_norm(x)

    def score_all(self, states: torch.Tensor) -> torch.Tensor:
        """Logits over the catalogue ``[..., n_items]`` (column j = item index j + 1) from tied item embeddings."""
        return states @ self.item_table()[1:].T

    def last_states(self, item_idx: torch.Tensor, ratings: torch.Tensor | None = None) -> torch.Tensor:
        """The state at each sequence's last real item ``[B, d]``."""
        states = self(item_idx, ratings)
        last = (item_idx != 0).sum(1).clamp(min=1) - 1
        return states[torch.arange(states.shape[0]), last]

    def user_states(
        self, item_idx: torch.Tensor, ratings: torch.Tensor | None = None, k: int | None = None
    ) -> torch.Tensor:
        """``[B, k, d]`` user vectors: ``last`` = the last k states, ``mean`` = means of k consecutive
        chunks of the history (k = 1: the masked mean), ``profile`` = long-term, recent and last-item slots
        (:func:`slot_members`), ``query`` = k learned queries attending over the states."""
        k = k or self.config.n_user_vectors
        states = self(item_idx, ratings)
        real = item_idx != 0
        lengths = real.sum(1)
        if (lengths == 0).any():
            raise DataError("user_states needs at least one item per history", field="item_ids")
        b = states.shape[0]
        pooling = self.config.pooling
        if pooling == "query":
            if k != self.config.n_user_vectors:
                raise ConfigError(f"query pooling was built for k={self.config.n_user_vectors}, asked for k={k}")
            queries = self.user_queries.unsqueeze(0).expand(b, -1, -1)
            out, _ = self.pool_attn(queries, states, states, key_padding_mask=~real, need_weights=False)
            return out
        # the mean of each slot's states (slot_members); an empty slot (history shorter than k) is zero
        members = slot_members(real, k, pooling, self.config.recent_window).to(states.dtype)  # [B, T, k]
        sums = members.transpose(1, 2) @ states
        counts = members.sum(1).clamp(min=1)[..., None]
        return sums / counts

    # ---- persistence ----------------------------------------------------------------------------------

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """``config.json`` + ``model.safetensors`` (+ ``items.json``, ``extra`` under ``meta.json``), atomically."""
        from safetensors.torch import save_file

        with atomic_dir(path) as tmp:
            self.config.save(tmp / CONFIG_FILE)
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
            if self.item_ids is not None:
                (tmp / ITEMS_FILE).write_text(json.dumps(self.item_ids), encoding="utf-8")
            if extra is not None:
                (tmp / "meta.json").write_text(json.dumps(extra, indent=2, default=str) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SequenceEncoder:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise DataError(f"not a sequence encoder directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})", path=path)
        from llmrec.filecheck import check_safetensors, read_json

        fix = "train it again (`llmrec train sasrec`) or restore the folder from a good copy"
        config = SequenceEncoderConfig.load(path / CONFIG_FILE)
        check_safetensors(path / WEIGHTS_FILE, fix=fix)  # a cut-off copy: one line, not a safetensors traceback
        item_ids = None
        if (path / ITEMS_FILE).is_file():
            item_ids = [str(i) for i in read_json(path / ITEMS_FILE, fix=fix, kind=list)]
        model = cls(config, item_ids)
        state = load_file(str(path / WEIGHTS_FILE), device=str(device))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DataError(f"weights do not match the config: missing {missing}, unexpected {unexpected}",
                            path=path / WEIGHTS_FILE)
        return model.to(device).eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

