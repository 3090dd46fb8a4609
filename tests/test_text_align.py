"""Text alignment of soft prompts: token bags, chunk targets matching the encoder's chunks, and training that
makes each soft token's anchor mixture reproduce its chunk's words (no LLM forward)."""

from __future__ import annotations

import random

import pytest
import torch

from llmrec.errors import ConfigError, DataError
from llmrec.lm.soft_prompt import SequenceUserEncoder, SoftPromptConfig, SoftPromptModel, add_user_token
from llmrec.training.text_align import TextAlignConfig, align_to_text, item_token_bags, slot_targets
from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig, slot_members

ANCHORS = (5, 9, 17, 33)


def test_item_token_bags_counts_tokens_per_item_and_rejects_foreign_tokens():
    bags = item_token_bags([[5, 5, 9], [33]], ANCHORS)
    assert bags.shape == (3, 4)
    assert bags[0].sum() == 0  # padding row
    assert bags[1].tolist() == [2.0, 1.0, 0.0, 0.0]
    assert bags[2].tolist() == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(DataError, match="item index 2"):
        item_token_bags([[5], [6]], ANCHORS)


def test_slot_targets_follow_the_mean_pooling_chunks():
    bags = item_token_bags([[5], [9], [17], [33]], ANCHORS)
    idx = torch.tensor([[1, 2, 3, 4], [1, 0, 0, 0]])
    target, mask = slot_targets(slot_members(idx != 0, 2, "mean"), idx, bags)
    assert target[0, 0].tolist() == [0.5, 0.5, 0.0, 0.0]  # items 1, 2 = the older half
    assert target[0, 1].tolist() == [0.0, 0.0, 0.5, 0.5]
    assert target[1, 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert mask.tolist() == [[True, True], [True, False]]  # one item, two slots: the second is empty
    # the same chunking as SequenceEncoder.user_states(pooling="mean")
    enc = SequenceEncoder(SequenceEncoderConfig(n_items=4, d_model=8, n_heads=2, max_len=4, pooling="mean"))
    enc.eval()
    states = enc(idx)
    torch.testing.assert_close(enc.user_states(idx, k=2)[0, 0], states[0, :2].mean(0))


def test_profile_slot_targets_and_sharpness():
    bags = item_token_bags([[5], [5], [9], [33]], ANCHORS)
    idx = torch.tensor([[1, 2, 3, 4]])
    members = slot_members(idx != 0, 3, "profile", recent_window=2)
    target, mask = slot_targets(members, idx, bags)
    assert target[0, 0].tolist() == [0.5, 0.25, 0.0, 0.25]  # long-term: all four items
    assert target[0, 1].tolist() == [0.0, 0.5, 0.0, 0.5]  # recent: the last two
    assert target[0, 2].tolist() == [0.0, 0.0, 0.0, 1.0]  # the last item
    assert mask.all()
    sharp, _ = slot_targets(members, idx, bags, sharpness=2.0)
    torch.testing.assert_close(sharp[0, 0], torch.tensor([4 / 6, 1 / 6, 0.0, 1 / 6]))  # counts squared
    many = torch.ones(1, 300, 1, dtype=torch.long)  # 300 items of one word, sharpened hard: no float overflow
    hard, _ = slot_targets(many, torch.full((1, 300), 2), bags, sharpness=20.0)
    assert torch.isfinite(hard).all() and hard[0, 0, 0] == 1.0
    with pytest.raises(ConfigError, match="pooling"):
        slot_members(idx != 0, 2, "query")
    with pytest.raises(ConfigError, match="sharpness"):
        TextAlignConfig(sharpness=0)


def _vocab_model(tiny_llama, n_items, k=2, pooling="mean"):
    torch.manual_seed(0)
    llm, tok = tiny_llama.model, tiny_llama.tokenizer
    uid = add_user_token(tok, llm)
    enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=n_items, d_model=16, n_heads=2,
                                                                    max_len=8, pooling=pooling, dropout=0.0,
                                                                    recent_window=2)), k)
    return SoftPromptModel(llm, enc, uid, SoftPromptConfig(k=k, max_items=8, projector="vocab", anchor_ids=ANCHORS))


def test_alignment_makes_soft_tokens_say_their_chunks_words(tiny_llama):
    # two kinds of items (tokens 5 and 33); users watch one kind, then switch to the other
    n_items = 8
    item_tokens = [[5] if i < 4 else [33] for i in range(n_items)]
    rng = random.Random(0)
    histories = []
    for u in range(60):
        first, second = ([1, 2, 3, 4], [5, 6, 7, 8]) if u % 2 else ([5, 6, 7, 8], [1, 2, 3, 4])
        histories.append([rng.choice(first) for _ in range(4)] + [rng.choice(second) for _ in range(4)])
    model = _vocab_model(tiny_llama, n_items)
    llm_before = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    report = align_to_text(model, histories, item_tokens,
                           TextAlignConfig(epochs=30, batch_size=16, learning_rate=1e-2, holdout_fraction=0.2,
                                           windows_per_user=1, min_items=8))
    assert report["heldout_kl_after"] < 0.2 * report["heldout_kl_before"]
    weights = model.projector.logits(model.user_encoder(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]))).softmax(-1)
    assert weights[0, 0, 0] > 0.8 and weights[0, 1, 3] > 0.8  # older chunk -> token 5, recent chunk -> token 33
    assert all(torch.equal(p, llm_before[n]) for n, p in model.llm.named_parameters())  # the LLM is untouched


def test_profile_alignment_separates_long_term_from_recent_taste(tiny_llama):
    # six items of one kind, then the last two of the other: long-term says the first kind, recent the second
    item_tokens = [[5] if i < 4 else [33] for i in range(8)]
    rng = random.Random(0)
    histories = []
    for u in range(60):
        first, second = ([1, 2, 3, 4], [5, 6, 7, 8]) if u % 2 else ([5, 6, 7, 8], [1, 2, 3, 4])
        histories.append([rng.choice(first) for _ in range(6)] + [rng.choice(second) for _ in range(2)])
    model = _vocab_model(tiny_llama, 8, k=3, pooling="profile")
    report = align_to_text(model, histories, item_tokens,
                           TextAlignConfig(epochs=40, batch_size=16, learning_rate=1e-2, holdout_fraction=0.2,
                                           windows_per_user=1, min_items=8, sharpness=4.0))
    assert report["heldout_kl_after"] < 0.3 * report["heldout_kl_before"]
    weights = model.projector.logits(model.user_encoder(torch.tensor([[1, 2, 3, 4, 1, 2, 7, 8]]))).softmax(-1)
    # sharpened long-term slot -> the majority word (target 3^4 : 1 = 0.99); recent and last slots -> the new word
    assert weights[0, 0, 0] > 0.8 and weights[0, 1, 3] > 0.8 and weights[0, 2, 3] > 0.8


def test_alignment_needs_the_vocab_projector_and_real_histories(tiny_llama):
    model = _vocab_model(tiny_llama, 4)
    with pytest.raises(DataError, match="5\\+ items"):
        align_to_text(model, [[1, 2]], [[5]] * 4, TextAlignConfig(holdout_fraction=0.0))
    model.projector = torch.nn.Linear(16, 4)
    with pytest.raises(ConfigError, match="vocab projector"):
        align_to_text(model, [[1, 2, 3, 4, 1]], [[5]] * 4)
    with pytest.raises(ConfigError):
        TextAlignConfig(epochs=0)
    query = _vocab_model(tiny_llama, 4, pooling="query")
    with pytest.raises(ConfigError, match="fixed history positions"):
        align_to_text(query, [[1, 2, 3, 4, 1]], [[5]] * 4)
