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


def test_libraries_that_switch_dropout_off_by_type_reach_it(tiny_llama):
    # trl's disable_dropout (on by default in DPOTrainer, on in our GRPO) sets p = 0 on every nn.Dropout: the
    # policy's log-probs must then be its eval-mode ones, the same as the reference's
    from trl.trainer.utils import disable_dropout_in_model

    model = with_lora(tiny_llama.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # an adapter that changes the output, so dropout would show
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        model.train()
        assert not torch.allclose(model(input_ids=ids).logits, ref, atol=1e-4)  # dropout on
        disable_dropout_in_model(model)
        assert all(d.p == 0 for d in _dropouts(model))
        torch.testing.assert_close(model(input_ids=ids).logits, ref)


def test_saved_and_loaded_personal_lm_gets_the_fast_adapter_paths(tiny_llama_dir, ml100k, tmp_path):
    """Bit dropout, compute-dtype LoRA and the row-lookup SID embedding (llmrec.lm.personal._fast_adapters) on a
    PersonalLM built and on one loaded from its folder (it may train on: genrec-pref, resumed runs)."""
    from helpers import random_sid_personal_lm
    from peft.tuners.lora.layer import Linear as LoraLinear

    from llmrec.lm.personal import PersonalLM

    plm = random_sid_personal_lm(tiny_llama_dir, ml100k)
    plm.save(tmp_path / "m")
    for model in (plm.model, PersonalLM.load(tmp_path / "m").model):
        assert _dropouts(model) and all(isinstance(d, BitDropout) for d in _dropouts(model))
        layers = [m for m in model.modules() if type(m) is LoraLinear]
        assert layers and all(not layer.cast_input_dtype_enabled for layer in layers)
        assert [type(m).__name__ for m in model.modules() if type(m).__name__ == "RowLookupTrainableTokens"]
