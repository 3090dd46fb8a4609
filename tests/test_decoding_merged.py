"""Decoding runs a LoRA-merged copy of the model (llmrec.lm.merged): same scores as the unmerged model, rebuilt
whenever the adapter changes, never used where it would be wrong (user states, adapter disabled)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_genrec import plm  # noqa: F401  (the fixture)

from llmrec.lm.decoding import constrained_beam_search, score_all_items
from llmrec.lm.merged import DecodingCopy, adapter_fingerprint, can_merge_for_decoding


def _perturb_lora(model, amount: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(amount)  # lora_B starts at zero: make the adapter matter


def test_merged_copy_scores_equal_the_unmerged_model(plm):  # noqa: F811
    _perturb_lora(plm.model, 0.05)
    history = [str(i) for i in range(6)]
    plm.model.eval()
    unmerged = score_all_items(plm.model, plm.encode_prompt(history), plm.index)
    decoding = plm.decoding_model()
    assert decoding is not plm.model and can_merge_for_decoding(plm.model)
    assert not any("lora_" in n for n, _ in decoding.named_parameters())  # really merged
    merged = plm.score_items(history)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-4)  # fp32: the same up to rounding
    recs = plm.recommend(history, k=5)
    plain = constrained_beam_search(plm.model, [plm.encode_prompt(history)], plm.index, k=5,
                                    exclude=[[plm.item_row[h] for h in history]],
                                    pad_token_id=plm.tokenizer.pad_token_id or 0)[0]
    assert [r["item_id"] for r in recs] == [plm.item_ids[r.item_index] for r in plain]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw_fused"])
def test_copy_is_reused_until_the_adapter_changes(plm, optimizer):  # noqa: F811
    first = plm.decoding_model()
    assert plm.decoding_model() is first  # nothing changed: no rebuild
    key = adapter_fingerprint(plm.model)
    history = [str(i) for i in range(6)]
    before = plm.score_items(history)
    # an optimizer step changes the adapter in place: the next decode must see it. Fused AdamW (the Trainer's
    # default on CPU) does not bump the tensors' version counters, so only the value snapshot can tell.
    params = [p for p in plm.model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5) if optimizer == "sgd" else torch.optim.AdamW(params, lr=0.05, fused=True)
    plm.model.train()
    ids = torch.tensor([plm.encode_prompt(history) + list(plm.index.token_ids(0))])
    plm.model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert adapter_fingerprint(plm.model) == key  # same tensors, new values
    second = plm.decoding_model()
    assert second is not first
    after = plm.score_items(history)
    assert not np.allclose(before, after)
    plm.model.eval()
    np.testing.assert_allclose(after, score_all_items(plm.model, plm.encode_prompt(history), plm.index),
                               rtol=1e-4, atol=1e-4)


def test_not_merged_with_the_adapter_disabled_or_without_peft(plm, tiny_llama):  # noqa: F811
    copy = DecodingCopy()
    assert copy.get(tiny_llama.model) is tiny_llama.model  # a plain transformers model is decoded as it is
    with plm.model.disable_adapter():
        assert not can_merge_for_decoding(plm.model)
        assert copy.get(plm.model) is plm.model
    assert copy.get(plm.model) is not plm.model


def test_decoding_copy_is_in_eval_mode_whatever_mode_the_model_is_in(plm):  # noqa: F811
    """decoding_model() no longer switches the whole PEFT model to eval when it decodes with the merged copy (20 ms
    a call); the copy itself is always in eval mode, so a model left in train mode decodes the same."""
    history = [str(i) for i in range(6)]
    want = plm.recommend(history, k=5)
    plm.model.train()
    decoding = plm.decoding_model()
    assert decoding is not plm.model and not any(m.training for m in decoding.modules())
    assert plm.recommend(history, k=5) == want
