"""The fused RMSNorm (llmrec.lm.fused_norm) gives transformers' LlamaRMSNorm output and gradients, and the switch
on a model changes no parameter and can be undone."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from llmrec.lm.fused_norm import FusedRMSNorm, rms_norm, use_fused_rms_norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("train_weight", [False, True])
def test_matches_transformers_rms_norm(dtype, train_weight):
    torch.manual_seed(0)
    norm = LlamaRMSNorm(48, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    norm.weight.requires_grad_(train_weight)
    x = (torch.randn(3, 5, 48) * 3).to(dtype)
    grad = torch.randn(3, 5, 48).to(dtype)

    def run(fn):
        xi = x.clone().requires_grad_()
        norm.weight.grad = None
        out = fn(xi)
        out.backward(grad)
        return out.detach().float(), xi.grad.float(), None if norm.weight.grad is None else norm.weight.grad.float()

    ref, ref_gx, ref_gw = run(norm)
    out, gx, gw = run(lambda t: rms_norm(t, norm.weight, norm.variance_epsilon))
    if dtype == torch.bfloat16:
        assert torch.equal(out, ref)  # the same single rounding of the fp32 result
        tol = dict(rtol=2e-2, atol=2e-2)  # transformers rounds g * w to bf16 before the fp32 backward; this does not
    else:
        tol = dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(gx, ref_gx, **tol)
    assert (gw is None) == (not train_weight)
    if train_weight:
        torch.testing.assert_close(gw, ref_gw, **tol)


def test_gradient_is_the_exact_derivative():
    x = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.rand(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rms_norm(a, b, 1e-6), (x, w))


def test_switch_on_a_model(tiny_llama):
    model = tiny_llama.model
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    count = use_fused_rms_norm(model)
    try:
        assert count == 2 * model.config.num_hidden_layers + 1
        assert use_fused_rms_norm(model) == 0  # idempotent
        assert all(isinstance(m, FusedRMSNorm) for m in model.modules() if "RMSNorm" in type(m).__name__)
        assert model.state_dict().keys() == before.keys()
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=1e-5, atol=1e-5)
    finally:
        assert use_fused_rms_norm(model, undo=True) == count
    assert not any(isinstance(m, FusedRMSNorm) for m in model.modules())
