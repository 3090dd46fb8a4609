"""Compute-dtype LoRA (llmrec.lm.lora_compute): over a bf16 base the fp32 adapters multiply in bf16 instead of casting
the activations to fp32; the result and the gradients match peft's own path to bf16 precision, a fp32 model is
bit-for-bit unchanged, and parameters (hence saved adapters) stay fp32 and untouched."""

from __future__ import annotations

import copy

import torch

from llmrec.lm.lora_compute import ComputeDtypeLinear, use_compute_dtype_lora
from llmrec.lm.personal import with_lora


def _lora_linears(model):
    from peft.tuners.lora.layer import Linear as LoraLinear

    return [m for m in model.modules() if type(m) is LoraLinear]


def _randomise_b(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in _lora_linears(model):
            for b in layer.lora_B.values():
                b.weight.copy_(torch.randn(b.weight.shape, generator=g) * 0.05)


def _loss_and_grads(model, ids):
    model.zero_grad()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach().float(), out.loss.detach().float(), grads


def test_bf16_base_computes_lora_in_bf16_and_matches_peft(tiny_llama):
    model = with_lora(tiny_llama.model.to(torch.bfloat16))
    layers = _lora_linears(model)
    assert layers and all(not layer.cast_input_dtype_enabled for layer in layers)  # with_lora applied it
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)  # master weights
    _randomise_b(model)
    for layer in layers:  # dropout off so both paths see the same inputs
        for name in layer.lora_dropout:
            layer.lora_dropout[name].p = 0.0
    seen: list[torch.dtype] = []
    hook = layers[0].lora_A["default"].register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    logits, loss, grads = _loss_and_grads(model, ids)
    assert seen == [torch.bfloat16]  # the adapter's product stayed in the activations' dtype

    assert use_compute_dtype_lora(model, undo=True) == len(layers)
    assert all(layer.cast_input_dtype_enabled for layer in layers)
    ref_logits, ref_loss, ref_grads = _loss_and_grads(model, ids)
    hook.remove()
    assert seen == [torch.bfloat16, torch.float32]  # peft's path casts the input up
    assert abs(float(loss - ref_loss)) < 0.02 * float(ref_loss)
    assert torch.allclose(logits, ref_logits, atol=0.1, rtol=0.05)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert g.dtype == torch.float32, name
        cos = torch.nn.functional.cosine_similarity(g.flatten().float(), ref_grads[name].flatten().float(), dim=0)
        assert cos > 0.99, (name, float(cos))


def test_fp32_model_is_unchanged_and_switch_is_idempotent(tiny_llama):
    model = with_lora(tiny_llama.model)
    _randomise_b(model)
    model.eval()
    layers = _lora_linears(model)
    assert all(type(layer.lora_A["default"]) is ComputeDtypeLinear for layer in layers)
    assert use_compute_dtype_lora(model) == 0  # already applied
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        state = copy.deepcopy(model.state_dict())
        use_compute_dtype_lora(model, undo=True)
        assert all(type(layer.lora_A["default"]) is torch.nn.Linear for layer in layers)
        theirs = model(input_ids=ids).logits
    assert torch.equal(ours, theirs)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

