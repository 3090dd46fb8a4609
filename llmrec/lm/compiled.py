"""Regional compilation: each decoder layer of a causal LM through ``torch.compile`` (inductor), for training.

Why (issue 18): a bf16 LoRA step of SmolLM2-135M on CPU spends a third of its time outside the matrix multiplies:
casts between the bf16 base weights and the fp32 LoRA weights, the elementwise work of RMSNorm, SiLU gating, rotary
embeddings and dropout. Inductor fuses those into a few loops. Compiling the whole model took minutes per batch
shape on one core; the decoder layers all run the same code with different parameters, so compiling each layer
shares one compiled graph, compiled once with dynamic shapes (~1 minute on one core) and reused by every batch
width. Measured: 1.35x on the layer stack of a LoRA step in bf16 on one
core (eval/results/throughput.json has the Trainer rows).

Training only: the compiled call runs when the layer is in training mode with gradients on. Validation and
KV-cached decoding run the eager layer, because a cache's per-layer state would make dynamo recompile per layer,
and a deep copy (the merged decoding copy of :mod:`llmrec.lm.merged`) gets plain eager layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from llmrec.errors import ConfigError


def compiler_available() -> bool:
    """Whether inductor can build CPU kernels here: it needs a C++ compiler (``$CXX``, g++, c++ or clang++)."""
    import os
    import shutil

    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return any(shutil.which(n) for n in names)


class TrainingCompiled:
    """Stands in for ``nn.Module.compile``'s compiled call of one layer (``module._compiled_call_impl``, which
    ``nn.Module.__call__`` runs instead of the eager call when set): the compiled call in training with gradients,
    the eager one otherwise."""

    def __init__(self, layer: nn.Module, **compile_kwargs: Any) -> None:
        self.layer = layer
        self.compiled = torch.compile(layer._call_impl, **compile_kwargs)
        self.calls = 0  # compiled calls made (tests: the training forward really went through it)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.layer.training and torch.is_grad_enabled():
            self.calls += 1
            return self.compiled(*args, **kwargs)
        return self.layer._call_impl(*args, **kwargs)

    def __deepcopy__(self, memo: dict) -> None:
        return None  # a copied layer is eager: this object's compiled call belongs to the original layer


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of the transformers model inside ``model`` (PEFT, soft-prompt or user-state wrapped)."""
    from llmrec.lm.attention import transformers_model

    inner = transformers_model(model)
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise ConfigError(f"{type(inner).__name__} has no decoder layers to compile")
    return layers


def compile_decoder_layers(model: nn.Module, **compile_kwargs: Any) -> int:
    """Compile every decoder layer of ``model`` for training, in place; returns how many. ``dynamic=True`` unless
    given: one compilation serves every batch shape (automatic dynamic shapes would compile a static graph for the
    first shape and again for the second)."""
    compile_kwargs.setdefault("dynamic", True)
    if not compiler_available():
        raise ConfigError("compile needs a C++ compiler for torch.compile's CPU kernels (set $CXX or install g++); "
                          "or train without compile")
    layers = decoder_layers(model)
    for layer in layers:
        if not isinstance(getattr(layer, "_compiled_call_impl", None), TrainingCompiled):
            layer._compiled_call_impl = TrainingCompiled(layer, **compile_kwargs)
    return len(layers)


def uncompile_decoder_layers(model: nn.Module) -> int:
    """Undo :func:`compile_decoder_layers`; returns how many layers were compiled."""
    undone = 0
    for layer in decoder_layers(model):
        if isinstance(getattr(layer, "_compiled_call_impl", None), TrainingCompiled):
            layer._compiled_call_impl = None
            undone += 1
    return undone


@contextlib.contextmanager
def compiled_for_training(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """``with compiled_for_training(model, enabled) as n:`` the decoder layers compiled for the block (``n`` of
    them, 0 when not ``enabled``), eager again after it: a saved or returned model carries no compiled state.
    Inside, the model's config says ``use_cache=False`` unless a call asks for a cache (decoding does): a training
    forward that builds a KV cache would hand every layer a differently initialised cache object, and dynamo
    would recompile per layer."""
    from llmrec.lm.attention import transformers_model

    if not enabled:
        yield 0
        return
    config = transformers_model(model).config
    use_cache = config.use_cache
    n = compile_decoder_layers(model)
    config.use_cache = False
    try:
        yield n
    finally:
        config.use_cache = use_cache
        uncompile_decoder_layers(model)
