"""LoRA's input dropout runs through bit_dropout (llmrec.users.fast_dropout.use_bit_dropout) in every model llmrec
builds or loads with an adapter: same keep rate and scaling, nothing changes in eval mode or in saved files."""

from __future__ import annotations

import torch
from torch import nn

from llmrec.lm.personal import with_lora
from llmrec.users.fast_dropout import BitDropout, use_bit_dropout


def _dropouts(model):
    return [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
            for d in m.lora_dropout.values()]


def test_with_lora_uses_bit_dropout_and_eval_is_unchanged(tiny_llama):
    model = with_lora(tiny_llama.model)
    drops = _dropouts(model)
    assert drops and all(isinstance(d, BitDropout) and d.p == 0.05 for d in drops)
    assert use_bit_dropout(model) == 0  # already swapped
    assert use_bit_dropout(model, undo=True) == len(drops) and use_bit_dropout(model) == len(drops)
    ids = torch.tensor([[5, 6, 7, 8]])
    model.eval()
    with torch.no_grad():
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        assert torch.equal(model(input_ids=ids).logits, base)  # B = 0 at init: the adapter adds nothing
    drop = drops[0].train()
    x = torch.ones(200_000)
    kept = drop(x)
    assert abs(float((kept > 0).float().mean()) - 0.95) < 0.005
    assert torch.allclose(kept[kept > 0], torch.tensor(1 / 0.95))


def test_saved_and_loaded_personal_lm_gets_bit_dropout(tiny_llama_dir, ml100k, tmp_path):
    import numpy as np

    from llmrec.items.semantic_ids import SemanticIds
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig

    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, 8, len(ml100k.items)), rng.integers(0, 8, len(ml100k.items))], axis=1)
    sids = SemanticIds.from_quantized(list(ml100k.items), codes, (8, 8))
    plm = PersonalLM.create(sids, ml100k.items, PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32",
                                                                 sid_init="random"))
    plm.save(tmp_path / "m")
    loaded = PersonalLM.load(tmp_path / "m")
    assert _dropouts(loaded.model) and all(isinstance(d, BitDropout) for d in _dropouts(loaded.model))
