"""SASRec-style encoder: learning, causality, pooling, save/load and determinism on tiny synthetic data; the fast
training path (cheap dropout, fused catalogue loss, window tensors) computes the reference path's function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from llmrec.data.schema import UserHistory
from llmrec.data.splits import leave_one_out
from llmrec.errors import ConfigError, DataError
from llmrec.users.catalogue_loss import catalogue_cross_entropy
from llmrec.users.fast_dropout import bit_dropout
from llmrec.users.pretrain import (
    PretrainConfig,
    _batch,
    encode_batches,
    evaluate_examples,
    fast_next_item_loss,
    lr_factor,
    next_item_loss,
    pretrain,
    train_sequence_model,
    training_windows,
    window_tensors,
)
from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

N_ITEMS = 20
ITEMS = [f"it{i}" for i in range(N_ITEMS)]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are overhead-bound; extra threads only contend on the shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cyclic_split(n_users: int = 60, seed: int = 0):
    """Every user walks the catalogue in order (i -> i + 1 mod N) from a random start: a pure sequential rule."""
    rng = np.random.default_rng(seed)
    histories = {}
    for u in range(n_users):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(6, 15))
        seq = tuple(ITEMS[(start + t) % N_ITEMS] for t in range(length))
        histories[f"u{u}"] = UserHistory(f"u{u}", seq, tuple(range(length)), tuple([3.0] * length))
    return leave_one_out(histories)


def _tiny(**kw) -> SequenceEncoderConfig:
    base = dict(n_items=N_ITEMS, d_model=16, n_layers=1, n_heads=2, max_len=12, dropout=0.1)
    base.update(kw)
    return SequenceEncoderConfig(**base)


def test_learns_a_sequential_pattern_and_loss_falls():
    split = _cyclic_split()
    torch.manual_seed(0)
    model = SequenceEncoder(_tiny(), ITEMS)
    before = evaluate_examples(model, split.test, ks=(1,), protocols=("rated_kept",))["rated_kept"]["recall@1"]
    result = pretrain(model, split, PretrainConfig(lr=2e-2, batch_size=16, max_epochs=12, patience=12, ks=(1, 5),
                                                   select_metric="recall@1"))
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    after = evaluate_examples(result.model, split.test, ks=(1,), protocols=("rated_kept",))["rated_kept"]["recall@1"]
    assert after > 0.8 > before
    assert 1 <= result.best_epoch <= result.epochs_run


def test_causal_states_do_not_see_the_future():
    torch.manual_seed(0)
    model = SequenceEncoder(_tiny(n_layers=2), ITEMS).eval()
    seq = torch.tensor([[3, 7, 1, 9, 12, 4]])
    altered = seq.clone()
    altered[0, 4:] = torch.tensor([15, 2])
    with torch.no_grad():
        full, changed, prefix = model(seq), model(altered), model(seq[:, :4])
    assert torch.allclose(full[:, :4], changed[:, :4], atol=1e-5)
    assert torch.allclose(full[:, :4], prefix, atol=1e-5)  # a prefix encoded alone gets the same states
    assert not torch.allclose(full[:, 4:], changed[:, 4:], atol=1e-5)


def test_right_padding_does_not_change_real_states():
    torch.manual_seed(0)
    model = SequenceEncoder(_tiny(), ITEMS).eval()
    idx, _ = model.encode_histories([ITEMS[:3], ITEMS[:6]])
    assert idx.tolist()[0] == [1, 2, 3, 0, 0, 0]
    with torch.no_grad():
        batched = model.last_states(idx)
        alone = model.last_states(idx[:1, :3])
    assert torch.allclose(batched[0], alone[0], atol=1e-5)
    assert model.score_all(batched).shape == (2, N_ITEMS)


@pytest.mark.parametrize("pooling,k", [("last", 1), ("last", 4), ("mean", 1), ("mean", 3), ("profile", 1),
                                       ("profile", 5), ("query", 4)])
def test_user_states_shape_and_masking(pooling, k):
    torch.manual_seed(0)
    model = SequenceEncoder(_tiny(pooling=pooling, n_user_vectors=k, recent_window=4), ITEMS).eval()
    idx, _ = model.encode_histories([ITEMS[:2], ITEMS[:7]])
    with torch.no_grad():
        out = model.user_states(idx)
        alone = model.user_states(idx[:1, :2])
        states = model(idx)
    assert out.shape == (2, k, 16)
    assert torch.allclose(out[0], alone[0], atol=1e-5)  # padding never leaks into a user's vectors
    if pooling == "mean" and k == 1:
        assert torch.allclose(out[1, 0], states[1, :7].mean(0), atol=1e-5)
    if pooling == "last":
        assert torch.allclose(out[1, -1], states[1, 6], atol=1e-5)
        if k == 4:  # the 2-item history fills only the last two slots
            assert torch.allclose(out[0, :2], torch.zeros(2, 16)) and torch.allclose(out[0, 2], states[0, 0])
    if pooling == "profile":
        assert torch.allclose(out[1, 0], states[1, :7].mean(0), atol=1e-5)  # long-term: every item
    if pooling == "profile" and k == 5:
        assert torch.allclose(out[1, 1], states[1, 3:7].mean(0), atol=1e-5)  # recent: the last 4 (recent_window)
        assert torch.allclose(out[1, 2:], states[1, 4:7], atol=1e-5)  # then the last k - 2 items, oldest first
        assert torch.allclose(out[0, 2], torch.zeros(16))  # a 2-item history leaves the 3rd-last slot empty
        assert torch.allclose(out[0, 3:], states[0, :2], atol=1e-5)


def test_item_vectors_ratings_and_codes_feed_the_embedding():
    torch.manual_seed(0)
    cfg = _tiny(item_vector_dim=8, n_rating_levels=5, code_sizes=(4, 4))
    model = SequenceEncoder(cfg, ITEMS).eval()
    model.set_item_vectors(torch.randn(N_ITEMS, 8))
    model.set_item_codes(torch.randint(0, 4, (N_ITEMS, 2)))
    hist = UserHistory("u", tuple(ITEMS[:4]), (0, 1, 2, 3), (5.0, 1.0, None, 3.4))
    idx, lev = model.encode_histories([hist])
    assert lev.tolist() == [[5, 1, 0, 3]]
    with torch.no_grad():
        with_r, without_r = model(idx, lev), model(idx)
    assert not torch.allclose(with_r, without_r)
    with pytest.raises(DataError):
        model.set_item_vectors(torch.randn(N_ITEMS, 7))
    with pytest.raises(DataError):
        model.set_item_codes(torch.full((N_ITEMS, 2), 4))


def test_bad_input_and_config():
    with pytest.raises(ConfigError):
        SequenceEncoderConfig(n_items=10, d_model=10, n_heads=3)
    with pytest.raises(ConfigError):
        SequenceEncoderConfig.from_dict({"n_items": 10, "layers": 2})
    model = SequenceEncoder(_tiny(), ITEMS)
    with pytest.raises(DataError, match="unknown item 'nope'") as err:
        model.encode_histories([["it1", "nope"]])
    assert err.value.record == 0 and err.value.field == "item_ids"
    assert model.item_indices([ITEMS[2], ITEMS[0]]) == [3, 1]  # 1-based: 0 is padding
    with pytest.raises(ConfigError, match="no item ids"):
        SequenceEncoder(_tiny()).item_indices(["it1"])
    with pytest.raises(DataError, match="empty history"):
        model.encode_histories([[]])
    with pytest.raises(DataError, match="max_len"):
        model(torch.ones(1, 13, dtype=torch.long))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SequenceEncoder(_tiny(item_vector_dim=8, n_rating_levels=5), ITEMS).eval()
    model.set_item_vectors(torch.randn(N_ITEMS, 8))
    model.save(tmp_path / "enc", extra={"note": "test"})
    loaded = SequenceEncoder.load(tmp_path / "enc")
    assert loaded.config == model.config and loaded.item_ids == ITEMS
    idx, lev = model.encode_histories([ITEMS[:5]])
    with torch.no_grad():
        assert torch.equal(model.score_all(model.last_states(idx, lev)), loaded.score_all(loaded.last_states(idx, lev)))
    with pytest.raises(DataError):
        SequenceEncoder.load(tmp_path / "missing")


def test_training_is_deterministic_for_a_seed():
    split = _cyclic_split(n_users=20)
    cfg = PretrainConfig(lr=5e-3, batch_size=8, max_epochs=2, patience=5, seed=7)
    a = train_sequence_model(split, ITEMS, _tiny(), cfg)
    b = train_sequence_model(split, ITEMS, _tiny(), cfg)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_on_epoch_adds_diagnostics_without_changing_training():
    split = _cyclic_split(n_users=20)
    cfg = PretrainConfig(lr=5e-3, batch_size=8, max_epochs=3, patience=5, seed=7)
    seen = []

    def probe(epoch, model):
        seen.append(epoch)
        assert model.training  # validation restored the training mode before the hook
        return {"test_recall@5": evaluate_examples(model, split.test, protocols=("rated_kept",))["rated_kept"]["recall@5"]}

    a = train_sequence_model(split, ITEMS, _tiny(), cfg)
    b = train_sequence_model(split, ITEMS, _tiny(), cfg, on_epoch=probe)
    assert seen == [1, 2, 3] and all("test_recall@5" in h for h in b.history)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["valid_ndcg@10"] for h in a.history] == [h["valid_ndcg@10"] for h in b.history]


# ---- fast training path ----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 0.1, 0.25])
def test_bit_dropout_keeps_1_minus_p_and_rescales(p):
    torch.manual_seed(0)
    y = bit_dropout(torch.ones(400_000), p)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 3e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    x = torch.randn(3, 5)
    assert bit_dropout(x, p, training=False) is x and bit_dropout(x, 0.0) is x
    torch.manual_seed(1)
    a = bit_dropout(torch.ones(1000), p)
    torch.manual_seed(1)
    assert torch.equal(a, bit_dropout(torch.ones(1000), p))  # seeded like F.dropout
    with pytest.raises(ValueError):
        bit_dropout(x, 1.0)


def test_bit_dropout_masks_are_independent_across_elements():
    torch.manual_seed(0)
    kept = (bit_dropout(torch.ones(200_000), 0.5) != 0).float()
    # neighbours (same 64-bit draw and next draw) are uncorrelated: P(both kept) = 1/4
    for lag in (1, 2, 3, 4, 5):
        assert abs((kept[:-lag] * kept[lag:]).mean().item() - 0.25) < 5e-3


def test_train_states_is_forward_without_dropout_and_keeps_causality():
    torch.manual_seed(0)
    model = SequenceEncoder(_tiny(n_layers=2, dropout=0.0, n_rating_levels=5), ITEMS).train()
    idx = torch.tensor([[3, 7, 1, 9, 12, 4], [5, 2, 8, 0, 0, 0]])
    lev = torch.tensor([[1, 2, 3, 4, 5, 1], [2, 2, 2, 0, 0, 0]])
    assert torch.allclose(model.train_states(idx, lev), model(idx, lev), atol=1e-5)
    model = SequenceEncoder(_tiny(n_layers=2, dropout=0.3), ITEMS).train()
    altered = idx.clone()
    altered[0, 4:] = torch.tensor([15, 2])
    torch.manual_seed(3)
    full = model.train_states(idx)
    torch.manual_seed(3)
    changed = model.train_states(altered)
    assert torch.equal(full[:, :4], changed[:, :4])  # the same masks: the future never reaches the past
    assert not torch.allclose(full[0, 4:], changed[0, 4:])
    eval_model = model.eval()
    with torch.no_grad():
        assert torch.allclose(eval_model(idx), SequenceEncoder.forward(eval_model, idx))


@pytest.mark.parametrize("chunk", [7, 1024])
def test_catalogue_cross_entropy_equals_the_unfused_loss_and_gradients(chunk):
    torch.manual_seed(0)
    states = torch.randn(50, 16, requires_grad=True)
    table = (torch.randn(30, 16) * 0.5).requires_grad_()
    targets = torch.randint(0, 30, (50,))
    ref = F.cross_entropy(states @ table.T, targets)
    ref_grads = torch.autograd.grad(ref * 2.0, (states, table))
    fused = catalogue_cross_entropy(states, table, targets, chunk=chunk)
    grads = torch.autograd.grad(fused * 2.0, (states, table))
    assert torch.allclose(fused, ref, atol=1e-6)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-6)
    bf16 = catalogue_cross_entropy(states, table, targets, torch.bfloat16)
    assert abs(bf16.item() - ref.item()) < 0.02
    with pytest.raises(ValueError):
        catalogue_cross_entropy(states, table[:, :8], targets)


def test_window_tensors_give_the_reference_batches_and_loss():
    split = _cyclic_split(n_users=12)
    model = SequenceEncoder(_tiny(max_len=5, dropout=0.0), ITEMS)
    histories = list(split.train.values())
    rows = training_windows(model, histories, "all")
    idx_all, lev_all, lengths = window_tensors(model, histories, "all")
    sel = torch.tensor([4, 0, 9, 2])
    idx, lev = _batch([rows[i] for i in sel.tolist()])
    width = int(lengths[sel].max())
    assert torch.equal(idx_all[sel, :width], idx) and torch.equal(lev_all[sel, :width], lev)
    model.train()
    assert torch.allclose(fast_next_item_loss(model, idx, None), next_item_loss(model, idx, None), atol=1e-5)


def test_encoded_validation_scores_equal_the_reference():
    split = _cyclic_split(n_users=15)
    model = SequenceEncoder(_tiny(), ITEMS)
    examples = split.valid
    encoded = encode_batches(model, [ex.history for ex in examples], batch_size=4)
    a = evaluate_examples(model, examples, batch_size=4)
    b = evaluate_examples(model, examples, batch_size=4, encoded=encoded)
    assert a["rated_removed"].summary == b["rated_removed"].summary


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_fast_pretrain_learns_and_is_deterministic(dtype):
    split = _cyclic_split()
    cfg = PretrainConfig(lr=2e-2, batch_size=16, max_epochs=12, patience=12, ks=(1, 5), select_metric="recall@1",
                         fast=True, dtype=dtype, valid_from=3)
    a = train_sequence_model(split, ITEMS, _tiny(), cfg)
    losses = [h["loss"] for h in a.history]
    assert losses[-1] < 0.5 * losses[0]
    assert "valid_recall@1" not in a.history[1] and "valid_recall@1" in a.history[2]  # valid_from=3
    assert a.best_epoch >= 3
    test = evaluate_examples(a.model, split.test, ks=(1,), protocols=("rated_kept",))["rated_kept"]["recall@1"]
    assert test > 0.8
    b = train_sequence_model(split, ITEMS, _tiny(), cfg)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_fast_options_are_checked():
    with pytest.raises(ConfigError, match="needs fast"):
        PretrainConfig(dtype="bf16")
    with pytest.raises(ConfigError, match="dtype"):
        PretrainConfig(fast=True, dtype="fp16")
    with pytest.raises(ConfigError, match="valid_from"):
        PretrainConfig(max_epochs=5, valid_from=6)
    with pytest.raises(ConfigError, match="schedule"):
        PretrainConfig(schedule="linear")
    with pytest.raises(ConfigError, match="warmup_epochs"):
        PretrainConfig(max_epochs=5, warmup_epochs=5)


def test_lr_factor_warms_up_then_follows_a_half_cosine_to_zero():
    total, warm = 100, 10
    assert [lr_factor(s, total, warm, "cosine") for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_factor(10, total, warm, "cosine") == 1.0
    assert lr_factor(55, total, warm, "cosine") == pytest.approx(0.5)
    assert lr_factor(total, total, warm, "cosine") == pytest.approx(0.0)
    factors = [lr_factor(s, total, warm, "cosine") for s in range(warm, total)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))  # never rises after the warm-up
    assert [lr_factor(s, total, 0, "constant") for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert lr_factor(2, total, 4, "constant") == 0.75


def test_cosine_schedule_drives_the_optimizer_and_constant_changes_nothing(monkeypatch):
    split = _cyclic_split(n_users=20)
    base = dict(lr=5e-3, batch_size=8, max_epochs=3, patience=5, seed=7)
    plain = train_sequence_model(split, ITEMS, _tiny(), PretrainConfig(**base))
    constant = train_sequence_model(split, ITEMS, _tiny(), PretrainConfig(**base, schedule="constant"))
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in constant.history]
    cosine = train_sequence_model(split, ITEMS, _tiny(), PretrainConfig(**base, schedule="cosine", warmup_epochs=1))
    assert [h["loss"] for h in cosine.history] != [h["loss"] for h in plain.history]
    seen: list[float] = []
    original = torch.optim.AdamW.step

    def spy(self, *a, **kw):  # the learning rate each optimizer step runs with
        seen.append(self.param_groups[0]["lr"])
        return original(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train_sequence_model(split, ITEMS, _tiny(), PretrainConfig(**base, schedule="cosine", warmup_epochs=1))
    per_epoch = len(seen) // 3
    assert seen[per_epoch - 1] == pytest.approx(5e-3)  # the warm-up ends with epoch 1 at the full rate
    assert seen[0] < seen[per_epoch - 1] and seen[-1] < 0.1 * 5e-3  # rises, then ends near 0
