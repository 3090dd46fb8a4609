"""Attention kernel choice for CPU: plain matmul attention for short sequences, SDPA for long ones.

Why: on CPU, PyTorch's SDPA kernel (``_scaled_dot_product_flash_attention_for_cpu``) is built for long sequences;
at the lengths llmrec trains on (genrec windows ~70 tokens, QA prompts a few hundred) its backward alone took
~23 % of a SmolLM2-135M LoRA training step in bf16 (torch profiler, 8 x 72 tokens, 44 ms per layer call for a
[8, 9, 72, 72] score matrix), and matmul ("eager") attention made the whole step 1.43x faster side by side
(scripts/bench_throughput.py records the attention in use; eval/results/throughput.json: 1.26x for the whole
genrec step in bf16 beside another job). In fp32 SDPA's backward is not slow and matmul attention gained nothing
(genrec 1.03x, the longer QA rows 0.93x in the same run), so only bf16/fp16 go to it. Matmul attention keeps
the ``[batch, heads, q, k]`` scores for the backward, so above :data:`EAGER_MAX_SCORES` score entries per layer
(e.g. long text histories) the call goes to SDPA, which does not. GPUs always get SDPA.

``load_causal_lm(attention=...)`` / ``LLMREC_ATTENTION`` (``auto`` | ``sdpa`` | ``eager`` | ``llmrec_cpu``) choose;
``auto`` is :data:`ATTENTION` on CPU and the model's default elsewhere. The masks are transformers' own
(``sdpa_mask``: boolean, or None where SDPA would use ``is_causal``), so padding and packed windows (position-id
restarts) are masked exactly as under SDPA.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch.nn import functional as F

from llmrec.errors import ConfigError

ATTENTION = "llmrec_cpu"
MATMUL_DTYPES = (torch.bfloat16, torch.float16)  # where SDPA's CPU kernel is the slow one (see the module doc)
EAGER_MAX_SCORES = 1 << 22  # score entries per layer call (4M: 8 MB in bf16, kept for the backward)
CHOICES = ("auto", "sdpa", "eager", ATTENTION)


def _mask_scores(module, scores: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``scores`` ``[b, kv_heads, groups, q, k]`` with masked keys at the dtype's lowest value (not -inf: a fully
    masked row gives a uniform row, not NaN); the causal mask is applied here when transformers passed none (it
    leaves that to SDPA's ``is_causal``)."""
    b, kv_heads, groups, q_len, k_len = scores.shape
    low = torch.finfo(scores.dtype).min
    if attention_mask is None:
        if q_len > 1 and getattr(module, "is_causal", True):
            keep = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
            scores = scores.masked_fill(~keep, low)
        return scores
    mask = attention_mask[..., :k_len]
    mask = mask.view(mask.shape[0], -1, 1, *mask.shape[-2:]) if mask.shape[1] == 1 else mask.view(
        mask.shape[0], kv_heads, groups, *mask.shape[-2:])
    return scores.masked_fill(~mask, low) if mask.dtype == torch.bool else scores + mask


def matmul_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, *, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager attention for any model with the standard ``[batch, heads, seq, dim]`` layout:
    softmax in fp32, boolean or additive masks, the causal mask applied here when transformers passed none.
    Grouped KV heads are not repeated: the query heads that share a KV head are stacked along the query axis
    (``[b, kv_heads, groups * q, d]``), which gives the same scores without copying K and V (in KV-cached beam
    search that copy of the whole cache, every layer and step, was 40 % of the time of a batched search)."""
    b, heads, q_len, d = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else d ** -0.5
    # heads h = g_kv * groups + j use KV head g_kv (repeat_interleave's order)
    scores = torch.matmul(query.reshape(b, kv_heads, groups * q_len, d), key.transpose(2, 3)) * scale
    scores = _mask_scores(module, scores.view(b, kv_heads, groups, q_len, k_len), attention_mask)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs.view(b, kv_heads, groups * q_len, k_len), value)
    return out.view(b, heads, q_len, d).transpose(1, 2).contiguous(), probs.view(b, heads, q_len, k_len)


class SharedPrefix(NamedTuple):
    """KV states that consecutive, equal blocks of query rows share (a prompt's cache under its beams):
    ``keys``/``values`` ``[prefixes, kv_heads, length, d]``; of ``rows`` query rows, row ``r`` reads prefix
    ``r // (rows // prefixes)``."""

    keys: torch.Tensor
    values: torch.Tensor


def shared_prefix_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, prefix: SharedPrefix, *,
                            scaling: float | None = None, dropout: float = 0.0,
                            **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`matmul_attention` over ``[prefix of the row's block; the row's own key/value]`` without the prefix
    being copied per row (cascade attention): the queries of a block's rows are stacked like grouped heads and
    multiply its prefix once, their own (short) suffix keys per row; one softmax over both parts. Why: beam search
    otherwise repeats the prompt's cache for every beam and gathers it again at every step (two copies of the
    whole cache per layer, ~15 % of a batched search), and the prompt's keys are read once per user instead of
    once per beam. ``key``/``value``: the rows' own states ``[rows, kv_heads, s, d]``; ``attention_mask`` spans
    prefix then suffix."""
    rows, heads, q_len, d = query.shape
    n, kv_heads, width, _ = prefix.keys.shape
    if rows % n:
        raise ValueError(f"{rows} query rows do not split into equal blocks over {n} prefixes")
    per, s_len = rows // n, key.shape[2]
    groups, gq = heads // kv_heads, heads // kv_heads * q_len
    scale = scaling if scaling is not None else d ** -0.5
    # [rows, heads, q, d] -> [n, kv_heads, per * groups * q, d]: a block's rows as extra query rows of its prefix
    stacked = query.reshape(n, per, kv_heads, gq, d).transpose(1, 2).reshape(n, kv_heads, per * gq, d)
    head = torch.matmul(stacked, prefix.keys.transpose(2, 3))  # [n, kv_heads, per * gq, width]
    head = head.view(n, kv_heads, per, gq, width).transpose(1, 2).reshape(rows, kv_heads, groups, q_len, width)
    tail = torch.matmul(query.reshape(rows, kv_heads, gq, d), key.transpose(2, 3))
    scores = torch.cat([head, tail.view(rows, kv_heads, groups, q_len, s_len)], dim=-1) * scale
    scores = _mask_scores(module, scores, attention_mask)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    p_head, p_tail = probs.split([width, s_len], dim=-1)
    p_head = p_head.reshape(n, per, kv_heads, gq, width).transpose(1, 2).reshape(n, kv_heads, per * gq, width)
    out = torch.matmul(p_head, prefix.values).view(n, kv_heads, per, gq, d).transpose(1, 2)
    out = out.reshape(rows, kv_heads, gq, d) + torch.matmul(p_tail.reshape(rows, kv_heads, gq, s_len), value)
    return (out.reshape(rows, heads, q_len, d).transpose(1, 2).contiguous(),
            probs.view(rows, heads, q_len, width + s_len))


def cpu_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`matmul_attention` on CPU in :data:`MATMUL_DTYPES` up to :data:`EAGER_MAX_SCORES` score entries,
    else transformers' SDPA; keys that carry a ``shared_prefix`` (a cache of shared prefixes, as beam search
    keeps the prompt's) go to :func:`shared_prefix_attention` on any device and dtype: nothing else reads them."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = getattr(key, "shared_prefix", None)
    if prefix is not None:
        return shared_prefix_attention(module, query, key, value, attention_mask, prefix, **kwargs)
    b, h, q_len, _ = query.shape
    if (query.device.type == "cpu" and query.dtype in MATMUL_DTYPES
            and b * h * q_len * key.shape[2] <= EAGER_MAX_SCORES):
        return matmul_attention(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register() -> None:
    """Make :data:`ATTENTION` a name transformers accepts (attention function + SDPA's mask builder)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, cpu_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def resolve_attention(attention: str | None, device: str) -> str | None:
    """The ``attn_implementation`` to load with (None = the model's default): ``attention``, else
    ``LLMREC_ATTENTION``, else ``auto``."""
    choice = attention or os.environ.get("LLMREC_ATTENTION") or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"attention must be one of {', '.join(CHOICES)}, got {choice!r} "
                          f"(argument or LLMREC_ATTENTION)")
    if choice == "auto":
        choice = ATTENTION if str(device) == "cpu" else None
    if choice == ATTENTION:
        register()
    return choice


def transformers_model(model):
    """The outermost transformers model inside ``model`` (itself, or under a PEFT wrapper)."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise ConfigError(f"{type(model).__name__} holds no transformers model")


def current_attention(model) -> str:
    """The attention kernel ``model`` (PEFT-wrapped or not) runs now."""
    return transformers_model(model).config._attn_implementation


def set_attention(model, implementation: str) -> str:
    """Switch a loaded model (PEFT-wrapped or not) to another attention kernel in place; returns the one it had
    (benchmarks compare kernels on one model)."""
    if implementation == ATTENTION:
        register()
    inner = transformers_model(model)
    previous = inner.config._attn_implementation
    inner.set_attn_implementation(implementation)
    return previous
