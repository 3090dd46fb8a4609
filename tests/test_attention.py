"""The CPU attention dispatch (llmrec/lm/attention.py) computes what SDPA computes: same outputs and gradients
for causal, padded, grouped-KV, cached and packed inputs, at the kernel and through a whole model."""

from __future__ import annotations

import types

import pytest
import torch
from torch.nn import functional as F

from llmrec.errors import ConfigError
from llmrec.lm import attention
from llmrec.lm.attention import cpu_attention, matmul_attention, resolve_attention


def _module(causal: bool = True, groups: int = 1):
    return types.SimpleNamespace(is_causal=causal, training=False, num_key_value_groups=groups)


def _qkv(b=2, h=4, kv_heads=4, q=7, k=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, q, d, generator=g, requires_grad=True),
            torch.randn(b, kv_heads, k, d, generator=g, requires_grad=True),
            torch.randn(b, kv_heads, k, d, generator=g, requires_grad=True))


def _sdpa(query, key, value, mask):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = _module(groups=query.shape[1] // key.shape[1])
    return sdpa_attention_forward(module, query, key, value, mask, scaling=query.shape[-1] ** -0.5)[0]


@pytest.mark.parametrize("case", ["causal_no_mask", "padding_mask", "grouped_kv", "cached_step", "float_mask"])
def test_matmul_attention_equals_sdpa_with_gradients(case):
    kv_heads = 2 if case == "grouped_kv" else 4
    q_len = 3 if case == "cached_step" else 7
    query, key, value = _qkv(kv_heads=kv_heads, q=q_len)
    mask = None
    if case in ("padding_mask", "float_mask"):
        keep = torch.ones(2, 1, 7, 7, dtype=torch.bool).tril()
        keep[1, :, :, :2] = False  # left padding of the second row
        keep[1, :, :2, 0] = True  # (a fully masked row would be undefined in SDPA; transformers avoids them)
        mask = keep if case == "padding_mask" else torch.zeros(keep.shape).masked_fill(~keep, -1e9)
    # a cached step (3 new queries over 7 keys) without a mask is causal from the end (transformers passes a mask
    # there; SDPA's is_causal would align it to the start), so SDPA gets that mask spelled out
    ref_mask = torch.ones(q_len, 7, dtype=torch.bool).tril(7 - q_len) if case == "cached_step" else mask
    outs = []
    for fn, m in ((lambda *a: matmul_attention(_module(), *a, scaling=query.shape[-1] ** -0.5)[0], mask),
                  (_sdpa, ref_mask)):
        for t in (query, key, value):
            t.grad = None
        out = fn(query, key, value, m)
        out.pow(2).sum().backward()
        outs.append((out.detach(), query.grad.clone(), key.grad.clone(), value.grad.clone()))
    for mine, ref in zip(*outs, strict=True):
        torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mask_heads", [1, 6])
@pytest.mark.parametrize("q_len", [1, 4])
def test_grouped_heads_without_repeating_kv_equal_repeated_kv(q_len, mask_heads):
    """Query heads stacked per KV head (no K/V copy) = transformers' repeat_kv + eager attention, with a padding
    mask per sequence or per head, for a cached decoding step (q = 1) and a short cached chunk."""
    query, key, value = _qkv(b=3, h=6, kv_heads=2, q=q_len, k=9)
    keep = torch.ones(3, mask_heads, q_len, 9, dtype=torch.bool).tril(9 - q_len)
    keep[1, ..., :3] = False  # left padding
    if mask_heads > 1:
        keep[2, 4, :, 5] = False  # one head of one row masks one more key
    outs = []
    for kv_rep, groups in ((False, 3), (True, 1)):
        for t in (query, key, value):
            t.grad = None
        k, v = (key.repeat_interleave(3, 1), value.repeat_interleave(3, 1)) if kv_rep else (key, value)
        out, probs = matmul_attention(_module(groups=groups), query, k, v, keep, scaling=0.3)
        out.pow(2).sum().backward()
        outs.append((out.detach(), probs.detach(), query.grad.clone(), key.grad.clone(), value.grad.clone()))
    assert outs[0][1].shape == (3, 6, q_len, 9)
    for mine, ref in zip(*outs, strict=True):
        torch.testing.assert_close(mine, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mask_heads", [1, 6])
@pytest.mark.parametrize("q_len", [1, 3])
def test_shared_prefix_attention_equals_attention_over_the_repeated_prefix(q_len, mask_heads):
    """Rows attending over [their block's shared prefix; their own keys] (cascade attention, as beam search's cache
    keeps the prompt) = matmul attention over each row's own copy of the prefix, with padding in the prefix, a
    per-head mask and a causal multi-token suffix; the tagged keys reach it through cpu_attention in fp32 too."""
    g = torch.Generator().manual_seed(3)
    n, per, width, s_len = 2, 3, 5, q_len + 1
    prefix_k, prefix_v = torch.randn(n, 2, width, 8, generator=g), torch.randn(n, 2, width, 8, generator=g)
    query = torch.randn(n * per, 6, q_len, 8, generator=g)
    key, value = torch.randn(n * per, 2, s_len, 8, generator=g), torch.randn(n * per, 2, s_len, 8, generator=g)
    total = width + s_len
    keep = torch.ones(n * per, mask_heads, q_len, total, dtype=torch.bool).tril(total - q_len)
    keep[per:, ..., :2] = False  # the second prompt is left-padded: all its rows mask the pad keys
    if mask_heads > 1:
        keep[1, 4, :, width] = False
    full_k = torch.cat([prefix_k.repeat_interleave(per, 0), key], dim=2)
    full_v = torch.cat([prefix_v.repeat_interleave(per, 0), value], dim=2)
    ref, ref_probs = matmul_attention(_module(groups=3), query, full_k, full_v, keep, scaling=0.3)
    shared = attention.SharedPrefix(prefix_k, prefix_v)
    out, probs = attention.shared_prefix_attention(_module(groups=3), query, key, value, keep, shared, scaling=0.3)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=1e-5)
    tagged = key[:]
    tagged.shared_prefix = shared
    via_dispatch, _ = cpu_attention(_module(groups=3), query, tagged, value, keep, scaling=0.3)
    torch.testing.assert_close(via_dispatch, ref, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="prefixes"):
        attention.shared_prefix_attention(_module(groups=3), query[:-1], key[:-1], value[:-1], keep[:-1], shared)


def test_cpu_attention_sends_fp32_and_large_score_matrices_to_sdpa(monkeypatch):
    calls = []
    monkeypatch.setattr(attention, "matmul_attention", lambda *a, **k: calls.append("matmul") or (a[1], None))
    query, key, value = _qkv()
    cpu_attention(_module(), query, key, value, None)
    assert calls == []  # fp32: SDPA (matmul attention only pays in bf16/fp16)
    monkeypatch.setattr(attention, "MATMUL_DTYPES", (torch.float32,))
    cpu_attention(_module(), query, key, value, None)
    monkeypatch.setattr(attention, "EAGER_MAX_SCORES", 2 * 4 * 7 * 7 - 1)
    out, _ = cpu_attention(_module(), query, key, value, None, scaling=8 ** -0.5)
    assert calls == ["matmul"]  # the second call (one entry over the limit) went to SDPA
    torch.testing.assert_close(out, F.scaled_dot_product_attention(query, key, value, is_causal=True).transpose(1, 2))


def test_resolve_attention(monkeypatch):
    monkeypatch.delenv("LLMREC_ATTENTION", raising=False)
    assert resolve_attention(None, "cpu") == "llmrec_cpu"
    assert resolve_attention(None, "cuda:0") is None  # the model's default (SDPA) on GPUs
    assert resolve_attention("sdpa", "cpu") == "sdpa"
    monkeypatch.setenv("LLMREC_ATTENTION", "eager")
    assert resolve_attention(None, "cpu") == "eager"
    with pytest.raises(ConfigError, match="attention must be one of"):
        resolve_attention("flash", "cpu")


def test_model_loss_and_generation_equal_sdpa(tiny_llama_dir, monkeypatch):
    """A padded batch, a packed batch (position-id restarts -> block-diagonal mask) and greedy generation with a
    cache give the SDPA model's losses, gradients and tokens (in fp32, routed to matmul attention to compare
    exactly; bf16 is what takes that route by default)."""
    from llmrec.lm.loading import load_causal_lm

    calls = []
    monkeypatch.setattr(attention, "MATMUL_DTYPES", (torch.float32,))
    real = attention.matmul_attention
    monkeypatch.setattr(attention, "matmul_attention", lambda *a, **k: calls.append(1) or real(*a, **k))

    ref, tok = load_causal_lm(tiny_llama_dir, dtype="fp32", attention="sdpa")
    mine, _ = load_causal_lm(tiny_llama_dir, dtype="fp32")
    assert mine.config._attn_implementation == "llmrec_cpu"
    padded = tok(["a b c d e f g", "h i"], return_tensors="pt", padding=True)
    padded["labels"] = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    packed = {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0]]),
              "use_cache": False}
    for batch in (padded, packed):
        grads = []
        for model in (ref, mine):
            model.zero_grad()
            loss = model(**batch).loss
            loss.backward()
            grads.append((loss.detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
        torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    prompt = tok(["a b c"], return_tensors="pt")
    assert torch.equal(ref.generate(**prompt, max_new_tokens=6, do_sample=False),
                       mine.generate(**prompt, max_new_tokens=6, do_sample=False))
    assert calls  # the llmrec_cpu model really ran matmul attention
