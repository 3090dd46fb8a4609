"""SASRec-style encoder: learning, causality, pooling, save/load and determinism on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.data.schema import UserHistory
from llmrec.data.splits import leave_one_out
from llmrec.errors import ConfigError, DataError
from llmrec.users.pretrain import PretrainConfig, evaluate_examples, pretrain, train_sequence_model
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
