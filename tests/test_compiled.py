"""Regional compilation for training (llmrec.lm.compiled, issue 18): the compiled decoder layers compute the same
loss and gradients as the eager ones, only in training, never in a deep copy, and leave no state behind."""

from __future__ import annotations

import copy

import pytest
import torch

from llmrec.lm.compiled import TrainingCompiled, compiled_for_training, compiler_available, decoder_layers
from llmrec.lm.personal import with_lora

pytestmark = pytest.mark.skipif(not compiler_available(), reason="torch.compile (inductor) on CPU needs a C++ compiler")


def _batch(vocab: int, widths=(12, 9)) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for t in widths:  # two widths: the dynamic-shape graph must serve both
        ids = torch.randint(5, vocab, (2, t), generator=g)
        labels = ids.clone()
        labels[:, : t // 2] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def _loss_and_grads(model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_layers_give_the_eager_loss_and_gradients_in_training_only(tiny_llama):
    model = with_lora(tiny_llama.model, {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                         "target_modules": ["q_proj", "v_proj"]})
    model.train()
    batches = _batch(model.config.vocab_size)
    eager = [_loss_and_grads(model, b) for b in batches]
    config = model.get_base_model().config
    use_cache = config.use_cache
    with compiled_for_training(model) as n:
        layers = decoder_layers(model)
        assert n == len(layers) and all(isinstance(layer._compiled_call_impl, TrainingCompiled) for layer in layers)
        assert config.use_cache is False
        compiled = [_loss_and_grads(model, b) for b in batches]
        calls = layers[0]._compiled_call_impl.calls
        assert calls == len(batches)  # one forward per batch (the backward is the compiled graph's own)
        model.eval()
        with torch.no_grad():
            model(**batches[0])  # evaluation: the eager layers
        assert layers[0]._compiled_call_impl.calls == calls
        copied = copy.deepcopy(model)  # the merged decoding copy is built like this
        assert all(layer._compiled_call_impl is None for layer in decoder_layers(copied))
        model.train()
    for (loss_e, grads_e), (loss_c, grads_c) in zip(eager, compiled, strict=True):
        assert loss_c == pytest.approx(loss_e, rel=1e-5)
        assert grads_e.keys() == grads_c.keys() and grads_e
        for name, g in grads_e.items():
            torch.testing.assert_close(grads_c[name], g, rtol=1e-4, atol=1e-6, msg=name)
    assert config.use_cache == use_cache
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(model))


def test_genrec_training_runs_through_the_compiled_layers(tiny_llama_dir, tmp_path, monkeypatch):
    import contextlib

    import numpy as np
    from test_genrec import _catalogue_data, _sids, _tiny_run

    import llmrec.training.genrec as genrec
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig

    seen: dict[str, int] = {}
    real = genrec.compiled_for_training

    @contextlib.contextmanager
    def spy(model, enabled=True):
        with real(model, enabled) as n:
            yield n
            seen.update(n=n, calls=decoder_layers(model)[0]._compiled_call_impl.calls)

    monkeypatch.setattr(genrec, "compiled_for_training", spy)
    vectors = np.random.default_rng(2).normal(size=(40, 16)).astype(np.float32)
    plm = PersonalLM.create(_sids(), _catalogue_data().items, PersonalLMConfig(
        base_model=str(tiny_llama_dir), dtype="fp32", max_history=8), item_vectors=vectors)
    split, cfg = _tiny_run(tmp_path, epochs=2)
    cfg.compile = True
    report = genrec.train_genrec(plm, split.train, split.valid, cfg)
    assert seen["n"] == len(decoder_layers(plm.model)) and seen["calls"] == report["steps"] == 6
    losses = [loss for _, loss in report["loss_curve"]]
    assert losses[-1] < losses[0]
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(plm.model))  # nothing left behind
    summary, _, _ = genrec.evaluate_genrec(plm, split.test, beams=5)
    assert summary["invalid_rate"] == 0.0


def test_compile_refuses_gradient_checkpointing():
    from llmrec.errors import ConfigError
    from llmrec.training.genrec import GenRecTrainConfig

    with pytest.raises(ConfigError, match="compile and gradient_checkpointing"):
        GenRecTrainConfig(compile=True, gradient_checkpointing=True)
