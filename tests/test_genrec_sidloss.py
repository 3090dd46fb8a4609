"""Genrec loss over the semantic-ID vocabulary (llmrec.lm.sid_vocab) and packed training batches
(llmrec.training.collate.PackingCollator): both must compute what the plain full-vocabulary, padded path does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_genrec import _catalogue_data, _index, _sids, _tiny_model, _tiny_run

from llmrec.errors import ConfigError, LlmrecError
from llmrec.lm.decoding import constrained_beam_search, score_all_items
from llmrec.lm.personal import PersonalLM, PersonalLMConfig
from llmrec.lm.sid_vocab import column_log_softmax, restricted_log_softmax, sid_vocab_loss
from llmrec.lm.target_loss import full_vocab_loss
from llmrec.tasks.genrec import build_genrec_rows
from llmrec.training.collate import CausalCollator, PackingCollator, padding_fraction, padding_fractions


@pytest.fixture
def plm(tiny_llama_dir) -> PersonalLM:
    data = _catalogue_data()
    vectors = np.random.default_rng(2).normal(size=(40, 16)).astype(np.float32)
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=8)
    plm = PersonalLM.create(_sids(), data.items, cfg, item_vectors=vectors)
    torch.manual_seed(3)
    with torch.no_grad():  # trained-looking state: SID rows moved off their initial value, LoRA B non-zero
        for name, p in plm.model.named_parameters():
            if "trainable_tokens_delta" in name or "lora_B" in name:
                p.add_(0.1 * torch.randn_like(p))
    return plm


def _rows(plm, n: int = 6) -> list[dict]:
    """Windows of different lengths (histories of 10 items in windows of 8: an 8-item and a 2-item window)."""
    rows = build_genrec_rows(plm, dict(list(_catalogue_data().histories().items())[:n // 2]), max_windows=None).rows
    return [rows[i] for i in range(len(rows))]


def _target_logp(logits: torch.Tensor, labels: torch.Tensor, cols: list[int] | None) -> torch.Tensor:
    """Log-probability of each target (row-major) from full logits, over ``cols`` only when given."""
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    keep = targets != -100
    if cols is None:
        return logits.log_softmax(-1)[keep].gather(-1, targets[keep].unsqueeze(-1)).squeeze(-1)
    cols_t = torch.tensor(cols)
    sub = logits[..., cols_t].log_softmax(-1)[keep]
    where = {c: i for i, c in enumerate(cols)}
    return sub.gather(-1, torch.tensor([where[int(t)] for t in targets[keep]]).unsqueeze(-1)).squeeze(-1)


def test_sid_loss_is_the_full_loss_restricted_and_renormalised_over_sid_rows(plm):
    batch = CausalCollator(plm.tokenizer.pad_token_id)(_rows(plm))
    assert batch["input_ids"].shape[0] == 6 and (batch["attention_mask"] == 0).any()  # real padding in there
    model = plm.model
    model.eval()  # no LoRA dropout: both passes see the same network (gradients still flow)
    model.zero_grad()
    by_hand = -_target_logp(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"],
                            plm.sid_vocab).mean()
    by_hand.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    vocab = torch.tensor(plm.sid_vocab)
    loss = sid_vocab_loss(model, batch, vocab)
    loss.backward()
    torch.testing.assert_close(loss, by_hand, atol=1e-5, rtol=1e-5)
    delta = [n for n in want if "trainable_tokens_delta" in n]
    assert delta and want[delta[0]].abs().sum() > 0  # the tied SID rows learn through the output side too
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, want[n], atol=1e-5, rtol=1e-4)
    # the SID vocabulary really is smaller than the full one: the two losses differ
    full = -_target_logp(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"], None)
    assert float(full.mean()) > float(loss.detach()) + 1e-3
    # num_items_in_batch: the Trainer's sum / count normalisation
    n_targets = int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(sid_vocab_loss(model, batch, vocab, num_items_in_batch=2 * n_targets), loss / 2)


@pytest.mark.parametrize("packed", [False, True])
def test_full_loss_at_target_positions_is_the_models_own_loss(plm, packed):
    """Loss ``full`` builds logits at the target positions only: the same loss and gradients (LoRA, the tied SID
    rows through both the input and the output side) as ``model(**batch).loss`` over every position, on padded and
    packed batches, with title-alignment (text) targets too."""
    rows = build_genrec_rows(plm, dict(list(_catalogue_data().histories().items())[:3]), max_windows=None,
                             title_alignment=True).rows
    rows = [rows[i] for i in range(len(rows))]
    batch = (PackingCollator(plm.tokenizer.pad_token_id) if packed
             else CausalCollator(plm.tokenizer.pad_token_id))(rows)
    model = plm.model
    model.eval()

    def loss_and_grads(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    want, want_grads = loss_and_grads(lambda: model(**batch).loss)
    got, grads = loss_and_grads(lambda: full_vocab_loss(model, batch))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert any("trainable_tokens_delta" in n and g.abs().sum() > 0 for n, g in grads.items())
    for n, g in grads.items():
        torch.testing.assert_close(g, want_grads[n], atol=1e-5, rtol=1e-4)
    n_targets = int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(full_vocab_loss(model, batch, num_items_in_batch=2 * n_targets), got / 2)
    per_target = full_vocab_loss(model, batch, reduction="none")
    assert per_target.shape == (n_targets,)
    torch.testing.assert_close(per_target.mean(), got)


def test_sid_loss_refuses_text_targets(plm):
    rows = build_genrec_rows(plm, dict(list(_catalogue_data().histories().items())[:1]), title_alignment=True).rows
    batch = CausalCollator(plm.tokenizer.pad_token_id)([rows[i] for i in range(len(rows))])
    with pytest.raises(LlmrecError, match="not a semantic-ID token"):
        sid_vocab_loss(plm.model, batch, torch.tensor(plm.sid_vocab))
    from llmrec.training.genrec import GenRecTrainConfig

    with pytest.raises(ConfigError, match="title_alignment"):
        GenRecTrainConfig(loss="sid", title_alignment=True)
    with pytest.raises(ConfigError, match="loss must be"):
        GenRecTrainConfig(loss="tokens")


def test_beam_scores_are_the_sid_training_log_likelihood(plm, tmp_path):
    history = [str(i) for i in range(7)]
    full_scores = [r["score"] for r in plm.recommend(history, k=5, num_beams=8)]
    plm.genrec_loss = "sid"
    recs = plm.recommend(history, k=5, num_beams=8)
    prompt = plm.encode_prompt(history)
    vocab = torch.tensor(plm.sid_vocab)
    plm.model.eval()
    for r in recs:
        item = plm.index.token_ids(plm.item_row[r["item_id"]])
        ids = torch.tensor([prompt + item])
        labels = torch.tensor([[-100] * len(prompt) + item])
        with torch.no_grad():
            nll = sid_vocab_loss(plm.model, {"input_ids": ids, "labels": labels}, vocab, reduction="none")
        assert len(nll) == len(plm.levels)
        np.testing.assert_allclose(r["score"], -float(nll.sum()), atol=1e-4)
    exact = plm.score_items(history)  # exact scoring uses the same normalisation
    np.testing.assert_allclose([r["score"] for r in recs], exact[[plm.item_row[r["item_id"]] for r in recs]],
                               atol=1e-4)
    assert recs[0]["score"] > full_scores[0]  # renormalised over fewer tokens: higher log-probabilities
    # the choice travels with the saved model, so `llmrec recommend` decodes the same way
    out = plm.save(tmp_path / "m")
    assert json.loads((out / "model.json").read_text())["genrec_loss"] == "sid"
    again = PersonalLM.load(out, dtype=None)
    assert again.genrec_loss == "sid" and again.decode_vocab == plm.sid_vocab
    np.testing.assert_allclose([r["score"] for r in again.recommend(history, k=5, num_beams=8)],
                               [r["score"] for r in recs], atol=1e-4)


def test_sid_normalised_exhaustive_beam_search_equals_exact_scoring():
    model, index = _tiny_model(), _index()
    vocab = list(range(100, 112))  # the three levels' code tokens
    for prompt in ([5, 6, 7, 8], [9, 10]):
        exact = score_all_items(model, prompt, index, vocab=vocab)
        full = score_all_items(model, prompt, index)
        assert (exact > full).all()  # each token renormalised over 12 of 120 tokens
        recs = constrained_beam_search(model, [prompt], index, k=5, num_beams=index.n_items, vocab=vocab)[0]
        top = np.argsort(-exact, kind="stable")[:5]
        assert [r.item_index for r in recs] == top.tolist()
        np.testing.assert_allclose([r.score for r in recs], exact[top], atol=1e-4)


def test_full_vocab_models_save_without_the_field(plm, tmp_path):
    out = plm.save(tmp_path / "m")
    assert "genrec_loss" not in json.loads((out / "model.json").read_text())
    assert PersonalLM.load(out, dtype=None).decode_vocab is None


def test_packed_batches_give_the_same_per_window_loss(plm):
    rows = _rows(plm)
    pad = plm.tokenizer.pad_token_id
    packer = PackingCollator(pad)
    width, plan = packer.plan([len(r["input_ids"]) for r in rows])
    assert len(plan) < len(rows)  # short windows share a row
    unpacked, packed = CausalCollator(pad)(rows), packer(rows)
    assert packed["input_ids"].shape == (len(plan), width) and "attention_mask" not in packed
    model = plm.model
    model.eval()
    with torch.no_grad():
        logp_u = model(input_ids=unpacked["input_ids"], attention_mask=unpacked["attention_mask"]).logits
        logp_p = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
    logp_u, logp_p = logp_u.float().log_softmax(-1), logp_p.float().log_softmax(-1)
    for b, members in enumerate(plan):
        start = 0
        for i in members:
            n = len(rows[i]["input_ids"])
            lab = torch.tensor(rows[i]["labels"][1:])
            keep = lab != -100
            want = logp_u[i, : n - 1][keep].gather(-1, lab[keep].unsqueeze(-1))
            got = logp_p[b, start:start + n - 1][keep].gather(-1, lab[keep].unsqueeze(-1))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            start += n
    # the same targets, so the batch losses agree under both losses
    assert int((packed["labels"] != -100).sum()) == int((unpacked["labels"] != -100).sum())
    vocab = torch.tensor(plm.sid_vocab)
    with torch.no_grad():
        torch.testing.assert_close(sid_vocab_loss(model, packed, vocab), sid_vocab_loss(model, unpacked, vocab),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(**packed).loss, model(**unpacked).loss, atol=1e-5, rtol=1e-5)


def test_padding_fraction_counts_padded_positions(plm):
    rows = build_genrec_rows(plm, _catalogue_data().histories(), max_windows=None).rows
    pad = plm.tokenizer.pad_token_id
    lengths = [len(x) for x in rows["input_ids"]]
    # in order, batches of 2 with no rounding: padding = what each pair lacks of its longer member
    by_hand = sum(2 * max(lengths[i:i + 2]) - sum(lengths[i:i + 2]) for i in range(0, len(lengths), 2))
    got = padding_fraction(rows, CausalCollator(pad, pad_to_multiple_of=None), 2, group_by_length=False)
    assert got == pytest.approx(by_hand / (by_hand + sum(lengths)))
    unpacked = padding_fraction(rows, CausalCollator(pad), 8)
    packed = padding_fraction(rows, PackingCollator(pad), 8)
    assert 0 <= packed < unpacked < 1
    # both collators over one read of the columns and one batch order: the same figures
    assert padding_fractions(rows, {"u": CausalCollator(pad), "p": PackingCollator(pad)}, 8) == {"u": unpacked,
                                                                                                  "p": packed}


def test_training_with_sid_loss_and_packing(plm, tmp_path):
    from llmrec.training.genrec import evaluate_genrec, train_genrec

    split, cfg = _tiny_run(tmp_path, epochs=1)
    cfg.loss, cfg.packing = "sid", True
    report = train_genrec(plm, split.train, split.valid, cfg)
    assert report["loss"] == "sid" and report["packing"] and report["steps"] == 3
    assert report["padding_fraction"] == report["padding_fraction_packed"] <= report["padding_fraction_unpacked"]
    assert report["step_timing"]["tokens_per_second"] > 0
    assert plm.genrec_loss == "sid"
    summary, ranked, _ = evaluate_genrec(plm, split.test, beams=10)
    assert summary["invalid_rate"] == 0.0 and all(len(set(r)) == 10 for r in ranked)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("restricted", [False, True])
def test_column_log_softmax_is_the_block_of_the_full_one(dtype, restricted):
    """Beam search reads only the SID columns: the block must equal those columns of the full (or
    vocabulary-restricted) log-softmax, -inf outside the restricted vocabulary."""
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(0)).to(dtype)
    vocab = torch.tensor([3, 12, 13, 20, 25, 39]) if restricted else None
    block = column_log_softmax(logits, vocab, 10, 30)
    assert block.dtype == torch.float32 and block.shape == (5, 20)
    torch.testing.assert_close(block, restricted_log_softmax(logits, vocab)[:, 10:30], atol=1e-6, rtol=1e-6)
    if restricted:
        assert torch.isinf(block[:, 0]).all() and torch.isfinite(block[:, 2]).all()
