"""The trainable SID rows are looked up without rebuilding the embedding matrix (llmrec.lm.trainable_rows): the
same embeddings and the same gradient for peft's delta as peft's own ``index_copy`` forward, on a PersonalLM."""

from __future__ import annotations

import torch
from helpers import random_sid_personal_lm

from llmrec.lm.trainable_rows import use_row_lookup_embeddings


def _embed_layer(model):
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer)
              and isinstance(m.base_layer, torch.nn.Embedding)]
    assert len(layers) == 1
    return layers[0]


def test_row_lookup_equals_peft_forward_and_delta_gradient(tiny_llama_dir, ml100k):
    plm = random_sid_personal_lm(tiny_llama_dir, ml100k)
    layer = _embed_layer(plm.model)
    assert type(layer).__name__ == "RowLookupTrainableTokens"  # PersonalLM switched it
    assert use_row_lookup_embeddings(plm.model) == 0
    name = layer.active_adapters[0]
    delta = layer.trainable_tokens_delta[name]
    with torch.no_grad():  # make the delta differ from the frozen rows so a wrong row would show
        delta.add_(torch.randn_like(delta))
    sid = list(layer.token_indices[name])
    ids = torch.tensor([[5, sid[0], 7, sid[3], sid[0]], [sid[1], 9, 10, 11, sid[2]]])
    labels = ids.clone()

    def run():
        plm.model.zero_grad()
        out = plm.model(input_ids=ids, labels=labels)
        out.loss.backward()
        return out.logits.detach(), delta.grad.detach().clone()

    logits, grad = run()
    assert use_row_lookup_embeddings(plm.model, undo=True) == 1
    assert type(layer).__name__ == "TrainableTokensLayer"
    ref_logits, ref_grad = run()
    assert torch.equal(logits, ref_logits)
    assert torch.allclose(grad, ref_grad, atol=1e-6, rtol=1e-5)
    assert grad[[0, 1, 2, 3]].abs().sum() > 0  # the rows used in the batch get their gradient
    with torch.no_grad():
        embedded = layer(ids)
    assert use_row_lookup_embeddings(plm.model) == 1
    with torch.no_grad():
        assert torch.equal(layer(ids), embedded)
        plm.model.eval()
        with plm.model.disable_adapter():  # disabled adapters: the frozen rows, through peft's own path
            base = layer(ids)
    assert torch.equal(base, layer.base_layer(ids))
