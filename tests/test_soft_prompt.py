"""Soft-prompt splice: right positions replaced, gradients reach the right modules, generation, save/load."""

from __future__ import annotations

import pytest
import torch

from llmrec.errors import LlmrecError
from llmrec.lm.soft_prompt import (
    USER_TOKEN,
    SequenceUserEncoder,
    SoftPromptConfig,
    SoftPromptModel,
    add_user_token,
)
from llmrec.users.attention_pool import AttentionPoolConfig, AttentionPoolEncoder
from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

N_ITEMS = 20


def _model(tiny_llama, k=2, train_llm=False, encoder="sequence"):
    torch.manual_seed(0)
    llm, tok = tiny_llama.model, tiny_llama.tokenizer
    uid = add_user_token(tok, llm)
    if train_llm:
        from peft import LoraConfig, get_peft_model

        llm = get_peft_model(llm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    if encoder == "sequence":
        enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=N_ITEMS, d_model=16, n_heads=2,
                                                                        max_len=10, pooling="mean")), k)
    else:
        enc = AttentionPoolEncoder(AttentionPoolConfig(item_dim=8, query_dim=8, n_user_vectors=k),
                                   torch.randn(N_ITEMS, 8))
    return SoftPromptModel(llm, enc, uid, SoftPromptConfig(encoder=encoder, k=k, train_llm=train_llm)), tok


def _batch(tok, k, texts=("About the user", "Hi")):
    prompts = [f"{t} {USER_TOKEN * k} : which genre?" for t in texts]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    items = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])[: len(texts)]
    return enc["input_ids"], enc["attention_mask"], items


def test_splice_replaces_exactly_the_placeholder_positions(tiny_llama):
    model, tok = _model(tiny_llama, k=3)
    ids, mask, items = _batch(tok, 3)
    vectors = model.user_vectors(items)
    assert vectors.shape == (2, 3, model.llm.get_input_embeddings().weight.shape[1])
    spliced = model.splice(ids, vectors)
    plain = model.llm.get_input_embeddings()(ids)
    slots = ids == model.user_token_id
    torch.testing.assert_close(spliced[~slots], plain[~slots])
    torch.testing.assert_close(spliced[slots], vectors.reshape(-1, vectors.shape[-1]))
    # projector scale starts at the LLM's mean embedding norm
    assert torch.allclose(vectors.norm(dim=-1), model.projector.log_scale.exp().expand(2, 3), rtol=1e-4)


def test_wrong_placeholder_count_is_a_clear_error(tiny_llama):
    model, tok = _model(tiny_llama, k=2)
    ids, mask, items = _batch(tok, 1)  # template wrote one placeholder, the model wants two
    with pytest.raises(LlmrecError, match="placeholder"):
        model(input_ids=ids, attention_mask=mask, user_item_idx=items)


@pytest.mark.parametrize("train_llm", [False, True])
def test_gradients_reach_encoder_projector_and_lora_only(tiny_llama, train_llm):
    model, tok = _model(tiny_llama, k=2, train_llm=train_llm)
    ids, mask, items = _batch(tok, 2)
    labels = ids.masked_fill(mask == 0, -100)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=labels, user_item_idx=items).loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any(n.startswith("user_encoder.") for n in changed)
    assert any(n.startswith("projector.") for n in changed)
    lora = {n for n in changed if "lora_" in n}
    assert bool(lora) == train_llm
    frozen_llm = {n for n in changed if n.startswith("llm.") and "lora_" not in n}
    assert not frozen_llm, f"frozen LLM weights changed: {sorted(frozen_llm)[:3]}"


def test_generate_batched_matches_single_rows(tiny_llama):
    model, tok = _model(tiny_llama, k=2, encoder="pool")
    model.eval()
    ids, mask, items = _batch(tok, 2)
    q = torch.randn(2, 8)
    out = model.generate(ids, mask, items, user_query_vec=q, max_new_tokens=4, pad_token_id=tok.pad_token_id)
    for row in range(2):
        keep = mask[row].bool()
        single = model.generate(ids[row:row + 1, keep], mask[row:row + 1, keep], items[row:row + 1],
                                user_query_vec=q[row:row + 1], max_new_tokens=4, pad_token_id=tok.pad_token_id)
        assert out[row].tolist() == single[0].tolist()


def test_user_modules_save_load_roundtrip(tiny_llama, tmp_path):
    model, tok = _model(tiny_llama, k=2)
    model.eval()
    ids, mask, items = _batch(tok, 2)
    before = model.user_vectors(items)
    model.save_user_modules(tmp_path)
    for p in model.projector.parameters():
        torch.nn.init.zeros_(p)
    model.load_user_modules(tmp_path)
    torch.testing.assert_close(model.user_vectors(items), before)


def test_vocab_projector_mixes_anchor_embeddings_and_learns(tiny_llama):
    from llmrec.errors import ConfigError

    torch.manual_seed(0)
    llm, tok = tiny_llama.model, tiny_llama.tokenizer
    uid = add_user_token(tok, llm)
    anchors = (5, 9, 17, 33)
    enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=N_ITEMS, d_model=16, n_heads=2,
                                                                    max_len=10, pooling="mean")), 2)
    model = SoftPromptModel(llm, enc, uid, SoftPromptConfig(k=2, projector="vocab", anchor_ids=anchors))
    ids, mask, items = _batch(tok, 2)
    vectors = model.user_vectors(items)
    table = llm.get_input_embeddings().weight[list(anchors)].float()
    torch.testing.assert_close(vectors, table.mean(0).expand_as(vectors))  # starts as the mean anchor
    out = model(ids, mask, labels=ids, user_item_idx=items)
    out.loss.backward()
    assert model.projector.mlp[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in llm.parameters())  # the frozen LLM (and its embedding) get nothing
    assert not any(n.startswith("projector.embedding") for n, _ in model.named_parameters())
    with pytest.raises(ConfigError, match="anchor_ids"):
        SoftPromptConfig(projector="vocab")


@pytest.mark.parametrize("adapter", ["lora", None])
def test_build_soft_prompt_lm_wires_llm_encoder_and_vocab_anchors(tiny_llama_dir, adapter):
    from llmrec.lm.soft_prompt import build_soft_prompt_lm, text_token_ids

    enc = SequenceEncoder(SequenceEncoderConfig(n_items=N_ITEMS, d_model=16, n_heads=2, max_len=10, pooling="mean"))
    model, tok, llm = build_soft_prompt_lm(enc, 3, base_model=str(tiny_llama_dir), adapter=adapter, max_items=10,
                                           projector="vocab", anchor_texts=["Drama, Comedy", "Toy Story (1995)"],
                                           dtype="fp32")
    assert model.user_encoder.encoder is enc and model.user_encoder.k == 3
    assert model.user_token_id == tok.convert_tokens_to_ids(USER_TOKEN)
    expected = sorted({t for ids in text_token_ids(tok, ["Drama, Comedy", "Toy Story (1995)"]) for t in ids})
    assert list(model.config.anchor_ids) == expected
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == ({"llm", "user_encoder", "projector"} if adapter else {"user_encoder", "projector"})
    assert model.config.train_llm is bool(adapter)
    if adapter:  # after text alignment the user side is frozen and only LoRA trains
        model.freeze_user_modules()
        assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"llm"}


def test_loss_from_logits_at_answer_positions_equals_the_llm_loss(tiny_llama):
    """With labels, the forward builds logits at the answer positions only: the same loss and gradients as the
    LLM's own forward over every position (left padding, a prompt masked out of the labels)."""
    model, tok = _model(tiny_llama, k=2, train_llm=True)
    ids, mask, items = _batch(tok, 2)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : ids.shape[1] - 3] = -100  # the answer: the last three tokens of each row
    model.eval()  # no dropout: both passes see the same network

    def run(targets_only: bool):
        model.zero_grad()
        SoftPromptModel.logits_at_targets_only = targets_only
        try:
            out = model(input_ids=ids, attention_mask=mask, labels=labels, user_item_idx=items)
        finally:
            SoftPromptModel.logits_at_targets_only = True
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
        return out, grads

    ours, grads = run(True)
    theirs, want = run(False)
    assert ours.logits is None and theirs.logits is not None
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == want.keys() and any("lora_" in n for n in grads)
    for n, g in grads.items():
        torch.testing.assert_close(g, want[n], atol=1e-5, rtol=1e-4)
    # the Trainer's num_items_in_batch (accumulation): sum / count on both paths, not a per-micro-batch mean
    n_targets = int((labels[:, 1:] != -100).sum())
    with torch.no_grad():
        for targets_only in (True, False):
            SoftPromptModel.logits_at_targets_only = targets_only
            try:
                half = model(input_ids=ids, attention_mask=mask, labels=labels, user_item_idx=items,
                             num_items_in_batch=2 * n_targets).loss
            finally:
                SoftPromptModel.logits_at_targets_only = True
            torch.testing.assert_close(half, theirs.loss.detach() / 2, atol=1e-5, rtol=1e-5)
