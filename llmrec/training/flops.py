"""FLOPs of a causal-LM + LoRA training step, counted from the model's shapes, and the matrix-multiply rate this
machine reaches on GEMMs of those shapes: the ceiling a step's tokens/s is compared with.

The count (:data:`FORMULA`) is per batch of ``B`` rows padded to width ``S`` (``T = B x S`` computed tokens):
every linear layer costs ``2 x params`` FLOPs per token forward; the frozen base needs only input gradients in
backward (one more ``2 x params``), LoRA's small matrices need input and weight gradients; attention scores and
the weighted sum cost ``4 x S x heads x head_dim`` per token and layer forward, twice that backward (the CPU
SDPA path with a padding mask computes the full ``S x S`` matrices). The LM head is counted separately because
a loss over a restricted vocabulary (or over target positions only) changes it, and because PEFT's trainable
token rows on a tied head make autograd build the head's full weight gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from typing import Any

import torch

FORMULA = {
    "per_batch": "T = B x S computed tokens (rows x padded width); P_lin = linear (non-embedding) weights of all "
                 "layers; P_lora = sum over adapted linears of r x (in + out); d_attn = heads x head_dim",
    "forward": "2 P_lin T + 2 P_lora T + 4 L S d_attn T + 2 d V_head H",
    "backward": "2 P_lin T (input grads only: the base is frozen) + 4 P_lora T (input + weight grads) "
                "+ 8 L S d_attn T + 2 d V_head H (head input grads) + 2 d V_wgrad H (head weight grads)",
    "head": "H = positions sent through the LM head (every position for the full-vocabulary loss; target "
            "positions for a SID-vocabulary loss), V_head = vocabulary rows scored, V_wgrad = rows whose weight "
            "gradient autograd computes (the whole tied head when PEFT trains some token rows of it: "
            "trainable_token_indices builds the merged weight, so its full gradient is formed; 0 when frozen)",
    "not_counted": "embedding lookups, norms, activations, softmax/cross-entropy, optimizer updates, the "
                   "soft-prompt user encoder and projector (frozen, d_model 64): element-wise or tiny next to "
                   "the GEMMs",
}


@dataclasses.dataclass(frozen=True)
class LmShapes:
    """The matmul shapes of a Llama-style decoder (+ LoRA) that set its FLOPs."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int  # rows of the (resized) output embedding
    lora: tuple[tuple[int, int, int], ...] = ()  # (rank, in_features, out_features) of every adapted linear
    head_weight_grad: bool = False  # the head's weight gradient is formed (PEFT trainable rows on a tied head)

    @classmethod
    def from_model(cls, model) -> LmShapes:
        """Read from a (PEFT-wrapped) causal LM, or a soft-prompt model around one (``.llm``)."""
        model = getattr(model, "llm", model)
        cfg = model.config
        heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        lora = []
        for module in model.modules():
            a = getattr(module, "lora_A", None)
            if isinstance(a, torch.nn.ModuleDict) and len(a):
                first = next(iter(a.values()))
                b = next(iter(module.lora_B.values()))
                lora.append((int(first.out_features), int(first.in_features), int(b.out_features)))
        head = model.get_output_embeddings()
        head_grad = "TrainableTokens" in type(head).__name__ and any(p.requires_grad for p in head.parameters())
        return cls(hidden=int(cfg.hidden_size), intermediate=int(cfg.intermediate_size),
                   layers=int(cfg.num_hidden_layers), heads=heads, kv_heads=int(cfg.num_key_value_heads),
                   head_dim=head_dim, vocab=int(model.get_input_embeddings().weight.shape[0]), lora=tuple(lora),
                   head_weight_grad=head_grad)

    def describe(self) -> dict[str, Any]:
        """The shapes without the per-module LoRA list: its module count, ranks and parameter count instead."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "lora"}
        return out | {"linear_params": self.linear_params(), "lora_modules": len(self.lora),
                      "lora_ranks": sorted({r for r, _, _ in self.lora}), "lora_params": self.lora_params()}

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim

    def linear_params(self) -> int:
        """Weights of one token's pass through the decoder layers (q, k, v, o, gate, up, down), all layers."""
        d, kv = self.hidden, self.kv_heads * self.head_dim
        per_layer = 2 * d * self.attn_dim + 2 * d * kv + 3 * d * self.intermediate
        return per_layer * self.layers

    def lora_params(self) -> int:
        return sum(r * (i + o) for r, i, o in self.lora)

    def gemms(self, tokens: int) -> list[tuple[str, int, int, int, int]]:
        """``(name, m, k, n, count)``: the GEMMs of one forward over ``tokens`` rows, ``count`` times each."""
        d, kv, L = self.hidden, self.kv_heads * self.head_dim, self.layers
        return [("q_proj", tokens, d, self.attn_dim, L), ("kv_proj", tokens, d, kv, 2 * L),
                ("o_proj", tokens, self.attn_dim, d, L), ("gate_up_proj", tokens, d, self.intermediate, 2 * L),
                ("down_proj", tokens, self.intermediate, d, L), ("lm_head", tokens, d, self.vocab, 1)]


def step_flops(shapes: LmShapes, *, rows: int, width: int, head_positions: int | None = None,
               head_rows: int | None = None, head_weight_rows: int | None = None) -> dict[str, float]:
    """FLOPs of one training step on ``rows x width`` computed tokens (see :data:`FORMULA`), by part.
    ``head_positions`` defaults to every position, ``head_rows`` to the whole vocabulary; ``head_weight_rows``:
    the head rows that get a weight gradient (default: the whole vocabulary, as a PEFT merged matrix costs)."""
    tokens = rows * width
    h = tokens if head_positions is None else head_positions
    v = shapes.vocab if head_rows is None else head_rows
    w = shapes.vocab if head_weight_rows is None else head_weight_rows
    attn = 4 * shapes.layers * width * shapes.attn_dim * tokens
    parts = {
        "linear_forward": 2 * shapes.linear_params() * tokens,
        "linear_backward": 2 * shapes.linear_params() * tokens,
        "lora_forward": 2 * shapes.lora_params() * tokens,
        "lora_backward": 4 * shapes.lora_params() * tokens,
        "attention_forward": attn,
        "attention_backward": 2 * attn,
        "head_forward": 2 * shapes.hidden * v * h,
        "head_backward_input": 2 * shapes.hidden * v * h,
        "head_backward_weight": 2 * shapes.hidden * w * h if shapes.head_weight_grad else 0,
    }
    parts = {k: float(x) for k, x in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def _time_gemm(fn, min_seconds: float, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` timed runs of at least ``min_seconds`` each (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        times.append(elapsed / n)
    return statistics.median(times)


def matmul_peak(shapes: LmShapes, tokens: int, dtype: torch.dtype, *, min_seconds: float = 0.2,
                repeats: int = 3) -> dict[str, Any]:
    """GFLOP/s of this machine's GEMMs on the model's shapes at ``tokens`` rows in ``dtype``: each shape as the
    forward ``x @ W.T`` and the input-gradient ``dy @ W``; ``peak`` = the fastest, ``mix`` = the rate of one
    forward+input-grad pass over all of them weighted by how often the model runs each (a reachable ceiling)."""
    gen = torch.Generator().manual_seed(0)
    out: list[dict[str, Any]] = []
    mix_flops = mix_seconds = 0.0
    for name, m, k, n, count in shapes.gemms(tokens):
        w = torch.randn(n, k, generator=gen).to(dtype)
        x = torch.randn(m, k, generator=gen).to(dtype)
        dy = torch.randn(m, n, generator=gen).to(dtype)
        with torch.no_grad():
            for form, fn in (("forward x@W.T", functools.partial(torch.nn.functional.linear, x, w)),
                             ("input_grad dy@W", functools.partial(torch.mm, dy, w))):
                seconds = _time_gemm(fn, min_seconds, repeats)
                flops = 2.0 * m * k * n
                out.append({"gemm": name, "form": form, "m": m, "k": k, "n": n, "gflops": flops / seconds / 1e9})
                mix_flops += count * flops
                mix_seconds += count * seconds
    return {"tokens": tokens, "dtype": str(dtype).replace("torch.", ""),
            "peak_gflops": max(r["gflops"] for r in out), "mix_gflops": mix_flops / mix_seconds / 1e9,
            "gemms": out}
