"""Back-of-the-envelope GPU memory per device for LoRA / QLoRA fine-tuning of a decoder-only LM (estimates from
parameter and activation sizes, not measurements). ``python -m llmrec.recipes.memory`` prints the table of
``llmrec/recipes/accelerate/README.md``.

Terms (bytes per device):

- frozen weights: ``params x bytes(dtype)``; with 4-bit NF4 (QLoRA) the linear layers take 0.5 byte + one fp32
  scale per 64 weights, double-quantised to ~0.127 bit/weight (4.127 bits), embeddings and ``lm_head`` stay in
  ``dtype``. FSDP and ZeRO-3 divide them by the world size (plus one gathered layer).
- trainable (LoRA matrices + new token rows): fp32 weight, fp32 gradient and two fp32 AdamW moments = 16 bytes per
  parameter; ZeRO-2 shards gradients and moments, FSDP / ZeRO-3 everything.
- activations kept for backward, per token and layer, in ``dtype`` (2 bytes) with fused (SDPA/flash) attention,
  which stores no ``seq x seq`` scores: attention norm input and output, q, k, v, attention output (4h + 2 kv),
  MLP norm input and output, gate, up, silu(gate), their product (2h + 4i), and LoRA dropout's copy of each
  adapted module's input. Activation checkpointing keeps only each layer's input (h) plus one layer's full set.
- logits: ``batch x seq x vocab`` in ``dtype``, their fp32 copy for the loss and its fp32 gradient (10 bytes
  per element): at short sequences and 150k vocabularies this is the largest activation.
- a fixed 0.75 GiB for the CUDA context, kernels and allocator slack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from llmrec.errors import ConfigError

GIB = 1024**3
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
NF4_BITS = 4.127  # 4-bit codes + double-quantised absmax per 64 weights (QLoRA paper, section 3)
CUDA_CONTEXT_GIB = 0.75
STRATEGIES = ("ddp", "zero2", "zero3", "fsdp")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama/Qwen2-style decoder that memory depends on."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = True

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def linear_params(self) -> int:
        """Weights of the attention and MLP projections (what 4-bit quantisation and all-linear LoRA touch)."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return self.layers * (2 * h * h + 2 * h * kv + 3 * h * i)

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def params(self) -> int:
        """All parameters (norm weights included; biases of Qwen2's q/k/v ignored: < 0.1%)."""
        return self.linear_params() + self.embedding_params() + self.layers * 2 * self.hidden + self.hidden

    def lora_params(self, r: int, target: str = "attention") -> int:
        """LoRA parameters ``r x (in + out)`` per adapted module: ``attention`` = q, k, v, o (the ``lora`` preset),
        ``all-linear`` = also gate, up, down (the ``qlora`` and ``lora-all-linear`` presets)."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        per_layer = r * ((h + h) * 2 + (h + kv) * 2)
        if target == "all-linear":
            per_layer += r * (h + i) * 3
        elif target != "attention":
            raise ConfigError(f"LoRA target must be 'attention' or 'all-linear', got {target!r}")
        return self.layers * per_layer

    def lora_inputs_per_token(self, target: str = "attention") -> int:
        """Elements LoRA dropout stores per token and layer (a copy of each adapted module's input)."""
        return 4 * self.hidden + ((2 * self.hidden + self.intermediate) if target == "all-linear" else 0)


# Published configs (config.json on the Hub) of the default model and two common sizes.
SMOLLM2_135M = ModelShape("SmolLM2-135M", 30, 576, 1536, 9, 3, 49152, True)
QWEN25_1_5B = ModelShape("Qwen2.5-1.5B", 28, 1536, 8960, 12, 2, 151936, True)
QWEN25_7B = ModelShape("Qwen2.5-7B", 28, 3584, 18944, 28, 4, 152064, False)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    trainable: float  # weights + gradients + optimizer state of the trained parameters
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.activations + self.logits + self.overhead

    def gib(self) -> dict[str, float]:
        return {k: round(v / GIB, 2) for k, v in {**dataclasses.asdict(self), "total": self.total}.items()}


def estimate_memory(
    params: int,
    lora_params: int,
    dtype: str = "bf16",
    seq_len: int = 256,
    batch: int = 8,
    layers: int = 30,
    hidden: int = 576,
    *,
    intermediate: int | None = None,
    kv_dim: int | None = None,
    vocab: int = 0,
    embedding_params: int = 0,
    quantized_bits: float | None = None,
    extra_trainable: int = 0,
    lora_inputs_per_token: int = 0,
    activation_checkpointing: bool = False,
    strategy: str = "ddp",
    world_size: int = 1,
) -> MemoryEstimate:
    """Bytes per device to fine-tune ``params`` frozen weights with ``lora_params`` (+ ``extra_trainable``, e.g.
    new token rows) trained in fp32 with AdamW, on ``batch`` sequences of ``seq_len`` tokens per device.

    ``quantized_bits`` (e.g. :data:`NF4_BITS`): the weights except ``embedding_params`` are stored at that width
    (QLoRA). ``strategy``: ``ddp`` replicates everything, ``zero2`` shards gradients and optimizer state,
    ``zero3`` / ``fsdp`` also the weights (one layer is gathered at a time). See the module doc for each term."""
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if min(params, layers, hidden, seq_len, batch, world_size) < 1 or lora_params < 0:
        raise ConfigError("params, layers, hidden, seq_len, batch and world_size must be >= 1, lora_params >= 0")
    width = DTYPE_BYTES[dtype]
    intermediate = intermediate or 4 * hidden
    kv_dim = kv_dim or hidden
    if quantized_bits is not None:
        weights = (params - embedding_params) * quantized_bits / 8 + embedding_params * width
    else:
        weights = params * width
    trainable = (lora_params + extra_trainable) * 16.0
    if strategy in ("zero3", "fsdp"):
        weights = weights / world_size + weights / layers  # own shard + the layer being computed
        trainable /= world_size
    elif strategy == "zero2":
        trainable = (lora_params + extra_trainable) * (4 + 12.0 / world_size)
    tokens = batch * seq_len
    per_layer = (6 * hidden + 2 * kv_dim + 4 * intermediate + lora_inputs_per_token) * width
    if activation_checkpointing:
        activations = tokens * (layers * hidden * width + per_layer)
    else:
        activations = tokens * layers * per_layer
    logits = tokens * vocab * (width + 4 + 4)
    return MemoryEstimate(weights, trainable, activations, logits, CUDA_CONTEXT_GIB * GIB)


def estimate_for(shape: ModelShape, method: str = "lora", *, seq_len: int = 256, batch: int = 8,
                 strategy: str = "ddp", world_size: int = 1, new_tokens: int = 1024,
                 activation_checkpointing: bool = False) -> MemoryEstimate:
    """:func:`estimate_memory` of ``shape`` with the shipped adapter presets: ``lora`` (bf16 weights, r 16 on
    q/k/v/o) or ``qlora`` (NF4 weights, r 16 on every linear layer); ``new_tokens`` trainable embedding rows
    (the semantic-ID tokens; 4 levels x 256 codes at most)."""
    if method not in ("lora", "qlora"):
        raise ConfigError(f"method must be 'lora' or 'qlora', got {method!r}")
    target = "attention" if method == "lora" else "all-linear"
    return estimate_memory(
        shape.params(), shape.lora_params(16, target), "bf16", seq_len, batch, shape.layers, shape.hidden,
        intermediate=shape.intermediate, kv_dim=shape.kv_dim, vocab=shape.vocab,
        embedding_params=shape.embedding_params(), quantized_bits=NF4_BITS if method == "qlora" else None,
        extra_trainable=new_tokens * shape.hidden, lora_inputs_per_token=shape.lora_inputs_per_token(target),
        activation_checkpointing=activation_checkpointing, strategy=strategy, world_size=world_size,
    )


def memory_table(shapes: Sequence[ModelShape] = (SMOLLM2_135M, QWEN25_1_5B, QWEN25_7B), *, seq_len: int = 256,
                 batch: int = 8) -> str:
    """The markdown table of the README: GiB per GPU for each model, LoRA / QLoRA, DDP and 8-GPU FSDP."""
    head = ("| model | params | method | strategy | weights | trainable + grads + AdamW | activations | logits | "
            "total GiB / GPU |\n|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for shape in shapes:
        for method in ("lora", "qlora"):
            for strategy, world in (("ddp", 1), ("fsdp", 8)):
                if method == "qlora" and strategy == "fsdp":
                    continue  # QLoRA is the one-GPU answer; with 8 GPUs shard bf16 weights instead
                for ckpt in (False, True):
                    est = estimate_for(shape, method, seq_len=seq_len, batch=batch, strategy=strategy,
                                       world_size=world, activation_checkpointing=ckpt).gib()
                    label = f"{strategy} x{world}" if strategy != "ddp" else "ddp (any N)"
                    label += ", act. ckpt" if ckpt else ""
                    rows.append(f"| {shape.name} | {shape.params() / 1e9:.2f} B | {method} | {label} | "
                                f"{est['weights']:.2f} | {est['trainable']:.2f} | {est['activations']:.2f} | "
                                f"{est['logits']:.2f} | **{est['total']:.1f}** |")
    note = (f"\nBatch {batch} sequences of {seq_len} tokens per GPU, bf16, LoRA r=16, 1024 trainable "
            "semantic-ID token rows; estimates from parameter and activation sizes (llmrec.recipes.memory), "
            "not measurements.\n")
    return head + "\n".join(rows) + "\n" + note


if __name__ == "__main__":
    print(memory_table())
