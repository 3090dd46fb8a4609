"""Text alignment of soft prompts: token bags, chunk targets matching the encoder's chunks, and training that
makes each soft token's anchor mixture reproduce its chunk's words (no LLM forward)."""

from __future__ import annotations

import random

import pytest
import torch

from llmrec.errors import ConfigError, DataError
from llmrec.lm.soft_prompt import SequenceUserEncoder, SoftPromptConfig, SoftPromptModel, add_user_token
from llmrec.training.text_align import TextAlignConfig, align_to_text, chunk_targets, item_token_bags
from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

ANCHORS = (5, 9, 17, 33)


def test_item_token_bags_counts_tokens_per_item_and_rejects_foreign_tokens():
    bags = item_token_bags([[5, 5, 9], [33]], ANCHORS)
    assert bags.shape == (3, 4)
    assert bags[0].sum() == 0  # padding row
    assert bags[1].tolist() == [2.0, 1.0, 0.0, 0.0]
    assert bags[2].tolist() == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(DataError, match="item index 2"):
        item_token_bags([[5], [6]], ANCHORS)


def test_chunk_targets_follow_the_mean_pooling_chunks():
    bags = item_token_bags([[5], [9], [17], [33]], ANCHORS)
    idx = torch.tensor([[1, 2, 3, 4], [1, 0, 0, 0]])
    target, mask = chunk_targets(idx, 2, bags)
    assert target[0, 0].tolist() == [0.5, 0.5, 0.0, 0.0]  # items 1, 2 = the older half
    assert target[0, 1].tolist() == [0.0, 0.0, 0.5, 0.5]
    assert target[1, 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert mask.tolist() == [[True, True], [True, False]]  # one item, two slots: the second is empty
    # the same chunking as SequenceEncoder.user_states(pooling="mean")
    enc = SequenceEncoder(SequenceEncoderConfig(n_items=4, d_model=8, n_heads=2, max_len=4, pooling="mean"))
    enc.eval()
    states = enc(idx)
    torch.testing.assert_close(enc.user_states(idx, k=2)[0, 0], states[0, :2].mean(0))


def _vocab_model(tiny_llama, n_items, k=2):
    torch.manual_seed(0)
    llm, tok = tiny_llama.model, tiny_llama.tokenizer
    uid = add_user_token(tok, llm)
    enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=n_items, d_model=16, n_heads=2,
                                                                    max_len=8, pooling="mean", dropout=0.0)), k)
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


def test_alignment_needs_the_vocab_projector_and_real_histories(tiny_llama):
    model = _vocab_model(tiny_llama, 4)
    with pytest.raises(DataError, match="5\\+ items"):
        align_to_text(model, [[1, 2]], [[5]] * 4, TextAlignConfig(holdout_fraction=0.0))
    model.projector = torch.nn.Linear(16, 4)
    with pytest.raises(ConfigError, match="vocab projector"):
        align_to_text(model, [[1, 2, 3, 4, 1]], [[5]] * 4)
    with pytest.raises(ConfigError):
        TextAlignConfig(epochs=0)
