"""Generative recommendation: constrained decoding invariants, PersonalLM save/load, a tiny training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrec.data.schema import Interaction, InteractionData, Item
from llmrec.data.splits import leave_one_out
from llmrec.errors import LlmrecError
from llmrec.items.semantic_ids import SemanticIds
from llmrec.lm.decoding import (
    PrefixIndex,
    constrained_beam_search,
    score_all_items,
    shared_prefix_cache,
    with_room,
)
from llmrec.lm.personal import PersonalLM, PersonalLMConfig

N_ITEMS = 40


def _catalogue_data(n_users: int = 12) -> InteractionData:
    """Items 0..39; each user walks the catalogue in steps of 1 from a random start (a learnable pattern)."""
    items = {str(i): Item(str(i), f"Movie number {i}", {"year": "1990", "genres": ["Drama"]}) for i in range(N_ITEMS)}
    rng = np.random.default_rng(0)
    inter = []
    for u in range(n_users):
        start = int(rng.integers(0, N_ITEMS))
        for t in range(10):
            inter.append(Interaction(f"u{u}", str((start + t) % N_ITEMS), 1000 + t, 4.0))
    return InteractionData("synthetic", items, inter)


def _sids() -> SemanticIds:
    rng = np.random.default_rng(1)
    quantized = np.stack([rng.integers(0, 6, N_ITEMS), rng.integers(0, 4, N_ITEMS)], axis=1)
    return SemanticIds.from_quantized([str(i) for i in range(N_ITEMS)], quantized, (6, 4))


@pytest.fixture
def plm(tiny_llama_dir) -> PersonalLM:
    data = _catalogue_data()
    vectors = np.random.default_rng(2).normal(size=(N_ITEMS, 16)).astype(np.float32)
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=8)
    return PersonalLM.create(_sids(), data.items, cfg, item_vectors=vectors)


def _tiny_model(vocab: int = 120):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def _index() -> PrefixIndex:
    codes = np.unique(np.random.default_rng(0).integers(0, 4, size=(40, 3)), axis=0)
    return PrefixIndex(codes, [100, 104, 108])


def test_beam_search_returns_distinct_valid_items_and_matches_exact_scores():
    model, index = _tiny_model(), _index()
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16]]
    full = constrained_beam_search(model, prompts, index, k=5, num_beams=index.n_items)
    narrow = constrained_beam_search(model, prompts, index, k=5, num_beams=5)
    for u, prompt in enumerate(prompts):
        exact = score_all_items(model, prompt, index)
        top = np.argsort(-exact, kind="stable")[:5]
        assert [r.item_index for r in full[u]] == top.tolist()
        np.testing.assert_allclose([r.score for r in full[u]], exact[top], atol=1e-4)
        for recs in (full[u], narrow[u]):
            rows = [r.item_index for r in recs]
            assert len(rows) == len(set(rows)) == 5
            assert all(0 <= r < index.n_items for r in rows)
            # scores are real item log-probabilities, best first
            assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
            np.testing.assert_allclose([r.score for r in recs], exact[rows], atol=1e-4)


def test_batched_equals_single_and_is_deterministic():
    model, index = _tiny_model(), _index()
    prompts = [[5, 6, 7, 8], [9, 10]]
    batched = constrained_beam_search(model, prompts, index, k=4)
    again = constrained_beam_search(model, prompts, index, k=4)
    single = [constrained_beam_search(model, [p], index, k=4)[0] for p in prompts]
    as_rows = lambda res: [[r.item_index for r in rs] for rs in res]  # noqa: E731
    assert as_rows(batched) == as_rows(again) == as_rows(single)


def test_exclusion_removes_items_and_dead_prefixes():
    model, index = _tiny_model(), _index()
    best = constrained_beam_search(model, [[5, 6]], index, k=3)[0]
    banned = [r.item_index for r in best]
    after = constrained_beam_search(model, [[5, 6]], index, k=3, exclude=[banned])[0]
    assert not set(banned) & {r.item_index for r in after}
    # exclude everything but two items: exactly those two come back
    keep = {3, 7}
    only = constrained_beam_search(model, [[5, 6]], index, k=5,
                                   exclude=[[i for i in range(index.n_items) if i not in keep]])[0]
    assert {r.item_index for r in only} == keep
    with pytest.raises(ValueError, match="no item left"):
        constrained_beam_search(model, [[5]], index, k=2, exclude=[list(range(index.n_items))])


def _prompt_caches(g: torch.Generator):
    """Two DynamicCaches holding the same random prompt states (2 layers of 2 rows, 3 heads, 5 tokens), and them."""
    from transformers import DynamicCache

    kv = [(torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g)) for _ in range(2)]
    plain, other = DynamicCache(), DynamicCache()
    for i, (k, v) in enumerate(kv):
        plain.update(k, v, i)
        other.update(k.clone(), v.clone(), i)
    return plain, other, kv


def test_cache_with_room_behaves_as_the_dynamic_cache():
    """The beam-search cache writes appended tokens in place; reorders and appends give what DynamicCache gives."""
    g = torch.Generator().manual_seed(0)
    plain, roomy, _ = _prompt_caches(g)
    roomy = with_room(roomy, 2)
    for step, sel in enumerate((torch.tensor([0, 0, 1, 1, 1]), torch.tensor([4, 2, 0, 1, 3]), torch.tensor([1, 1]))):
        for cache in (plain, roomy):
            cache.reorder_cache(sel)
        for i in range(2):
            new = (torch.randn(len(sel), 3, 1, 4, generator=g), torch.randn(len(sel), 3, 1, 4, generator=g))
            a, b = plain.update(*new, i), roomy.update(*new, i)  # the third append outgrows the room
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), (step, i)
        assert plain.get_seq_length() == roomy.get_seq_length() == 6 + step


def test_shared_prefix_cache_holds_what_the_dynamic_cache_holds():
    """The beam-search cache that keeps each prompt's states once: after reorders (beams of one prompt, then rows
    that leave their prompt's block, which fall back to a copy per row) and appends, prefix + own states per row
    equal DynamicCache's, and so does the sequence length that transformers builds masks from."""
    from transformers import DynamicCache

    from llmrec.lm.attention import ATTENTION, set_attention

    model = _tiny_model()
    set_attention(model, ATTENTION)
    g = torch.Generator().manual_seed(0)
    plain, shared, kv = _prompt_caches(g)
    shared = shared_prefix_cache(model, shared, 2)
    sels = (torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([2, 0, 0, 4, 3, 3]), torch.tensor([3, 1, 5]))
    for step, sel in enumerate(sels):
        for cache in (plain, shared):
            cache.reorder_cache(sel)
        for i in range(2):
            new = (torch.randn(len(sel), 3, 1, 4, generator=g), torch.randn(len(sel), 3, 1, 4, generator=g))
            want, got = plain.update(*new, i), shared.update(*new, i)  # the third append outgrows the room
            prefix = got[0].shared_prefix
            per = len(sel) // prefix.keys.shape[0]  # the rows reading each stored prefix
            assert per == (3 if step < 2 else 1)
            for full, mine, pre in zip(want, got, prefix, strict=True):
                rows = torch.arange(len(sel)) // per
                assert torch.equal(full, torch.cat([pre.index_select(0, rows), mine], dim=2)), (step, i)
        assert plain.get_seq_length() == shared.get_seq_length() == 6 + step
    set_attention(model, "sdpa")  # a kernel that does not read shared prefixes: the roomy cache instead
    other = DynamicCache()
    other.update(*kv[0], 0)
    assert type(shared_prefix_cache(model, other, 2).layers[0]).__name__ == "RoomyLayer"


def test_beam_search_through_the_shared_prefix_kernel_equals_sdpa(monkeypatch):
    """Beam search with llmrec's CPU attention (prompt states shared by the beams) returns what it returns under
    SDPA with a plain cache: same items, same scores, for prompts of different lengths (left padding)."""
    from llmrec.lm import attention

    model, index = _tiny_model(), _index()
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16]]
    ref = constrained_beam_search(model, prompts, index, k=5, num_beams=7)
    calls = []
    real = attention.shared_prefix_attention
    monkeypatch.setattr(attention, "shared_prefix_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    attention.set_attention(model, attention.ATTENTION)
    got = constrained_beam_search(model, prompts, index, k=5, num_beams=7)
    assert len(calls) == 2 * (index.levels - 1)  # every layer of every step after the prompt
    for mine, want in zip(got, ref, strict=True):
        assert [r.item_index for r in mine] == [r.item_index for r in want]
        np.testing.assert_allclose([r.score for r in mine], [r.score for r in want], atol=1e-5)


def test_prefix_index_rejects_duplicate_ids():
    with pytest.raises(ValueError, match="not unique"):
        PrefixIndex(np.array([[0, 1], [0, 1]]), [10, 20])


def test_personal_lm_recommend_save_load_roundtrip(plm, tmp_path):
    history = ["1", "2", "3"]
    recs = plm.recommend(history, k=5)
    assert len({r["item_id"] for r in recs}) == 5
    assert not set(history) & {r["item_id"] for r in recs}
    assert all(r["title"].startswith("Movie number") for r in recs)
    with_hist = plm.recommend(history, k=N_ITEMS, exclude_history=False)
    assert len(with_hist) == N_ITEMS
    out = plm.save(tmp_path / "plm")
    loaded = PersonalLM.load(out, dtype=None)  # None: the dtype it was saved with (auto may choose another)
    assert [r["item_id"] for r in loaded.recommend(history, k=5)] == [r["item_id"] for r in recs]
    # the evaluation harness opens the same directory and ranks through constrained decoding
    from llmrec.evaluation.models import PersonalLMModel, load_model

    harness_model = load_model(str(out), dtype="fp32")
    assert isinstance(harness_model, PersonalLMModel)
    assert harness_model.recommend([history], 5) == [[r["item_id"] for r in recs]]
    # plain transformers + peft can open the directory
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(json.loads((out / "adapter_config.json").read_text())
                                                ["base_model_name_or_path"])
    base.resize_token_embeddings(len(tok), mean_resizing=False)
    peft_model = PeftModel.from_pretrained(base, out).eval()
    ids = torch.tensor([plm.encode_prompt(history)])
    with torch.no_grad():
        a = peft_model(input_ids=ids).logits
        b = loaded.model(input_ids=ids).logits
    torch.testing.assert_close(a, b.float(), atol=1e-4, rtol=1e-4)


def test_text_generation_never_emits_sid_tokens(plm):
    # make SID tokens overwhelmingly likely, then ask for prose
    with torch.no_grad():
        for name, p in plm.model.named_parameters():
            if "trainable_tokens_delta" in name:
                p.mul_(50)
    ids = torch.tensor([[1, 2, 3]])
    assert (plm.model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)[0, 3:] >= plm.first_sid_id).all()
    out_ids = plm.tokenizer(plm.generate("Say hello", max_new_tokens=6), add_special_tokens=False)["input_ids"]
    assert not any(t >= plm.first_sid_id for t in out_ids)


def test_bad_input(plm):
    with pytest.raises(LlmrecError, match="empty history"):
        plm.recommend([], k=3)
    with pytest.raises(LlmrecError, match="not in the SID table"):
        plm.recommend(["999"], k=3)


def test_training_step_changes_only_trainable_params(plm):
    from llmrec.tasks.genrec import build_genrec_rows
    from llmrec.training.collate import CausalCollator

    data = _catalogue_data()
    rows = build_genrec_rows(plm, data.histories(), title_alignment=True)
    # 10 items per user with 8-item windows: two windows each (8 + 2 items), every item a target once
    assert rows.sequences == 24 and rows.alignment == 2 * N_ITEMS
    first = rows.rows[0]
    # labels are exactly the SID tokens of the sequence
    assert all((lab != -100) == (tok >= plm.first_sid_id) for tok, lab in zip(first["input_ids"], first["labels"], strict=True))
    batch = CausalCollator(plm.tokenizer.pad_token_id)([rows.rows[i] for i in range(4)])
    before = {n: p.detach().clone() for n, p in plm.model.named_parameters()}
    opt = torch.optim.AdamW([p for p in plm.model.parameters() if p.requires_grad], lr=1e-2)
    plm.model.train()
    plm.model(**batch).loss.backward()
    opt.step()
    for name, p in plm.model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == p.requires_grad, name


def _tiny_run(tmp_path, epochs: int):
    """The split and config of the tiny training runs: 24 users, 3 batches of 8 per epoch."""
    from llmrec.training.genrec import GenRecTrainConfig

    split = leave_one_out(_catalogue_data(n_users=24).histories())
    cfg = GenRecTrainConfig(output_dir=str(tmp_path / "run"), epochs=epochs, learning_rate=1e-2, batch_size=8,
                            eval_users=8, eval_batch_users=8, logging_steps=1, early_stopping_patience=10)
    return split, cfg


def test_tiny_training_run_learns_and_resumes(plm, tmp_path):
    from llmrec.training.genrec import evaluate_genrec, train_genrec

    split, cfg = _tiny_run(tmp_path, epochs=3)
    report = train_genrec(plm, split.train, split.valid, cfg)
    assert report["steps"] == 9 and report["best_valid_ndcg@10"] is not None
    losses = [loss for _, loss in report["loss_curve"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    summary, ranked, _ = evaluate_genrec(plm, split.test, beams=10)
    assert summary["invalid_rate"] == 0.0
    assert all(len(r) == 10 and len(set(r)) == 10 for r in ranked)
    # a second call finds the finished run's checkpoints and resumes instead of starting over
    again = train_genrec(plm, split.train, split.valid, cfg)
    assert again["resumed_from"] is not None


def test_checkpoint_averaging_is_the_weight_mean_and_loads(plm, tmp_path):
    from safetensors.torch import load_file

    from llmrec.lm.averaging import average_adapter_weights, write_averaged_model

    a = plm.save(tmp_path / "a")
    with torch.no_grad():
        for p in plm.model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    b = plm.save(tmp_path / "b")
    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert any(not torch.equal(wa[n], wb[n]) for n in wa)
    avg = average_adapter_weights([a, b])
    for name in wa:
        torch.testing.assert_close(avg[name], (wa[name].float() + wb[name].float()).div(2).to(wa[name].dtype))
    out = write_averaged_model(a, [a, b], tmp_path / "avg")
    loaded = PersonalLM.load(out)
    recs = loaded.recommend([str(i) for i in range(5)], k=5)
    assert len({r["item_id"] for r in recs}) == 5
    with pytest.raises(LlmrecError, match="at least two"):
        average_adapter_weights([a])
    cfg = json.loads((b / "adapter_config.json").read_text())
    (b / "adapter_config.json").write_text(json.dumps({**cfg, "r": cfg["r"] * 2}))
    with pytest.raises(LlmrecError, match=r"adapter config differs .*\['r'\]"):
        average_adapter_weights([a, b])
    with pytest.raises(LlmrecError, match="no adapter_model.safetensors"):
        average_adapter_weights([a, tmp_path])


def test_evaluate_exact_ranking_equals_exhaustive_beam_search(plm):
    from llmrec.training.genrec import evaluate_genrec

    split = leave_one_out(_catalogue_data().histories())
    exact, exact_lists, _ = evaluate_genrec(plm, split.valid, beams=0)
    wide, wide_lists, _ = evaluate_genrec(plm, split.valid, beams=N_ITEMS)
    assert exact_lists == wide_lists  # beam search as wide as the catalogue is exhaustive
    assert exact == wide and exact["invalid_rate"] == 0.0
    for e, items in zip(split.valid, exact_lists, strict=True):
        assert len(set(items)) == 10 and not set(items) & set(e.history.item_ids)


def test_history_windows_with_context_make_every_item_a_target_once():
    from llmrec.tasks.genrec import history_windows

    items = [str(i) for i in range(23)]
    wins = history_windows(items, 8, None, context=3)
    # newest first; every window but the oldest starts with 3 context-only items from the next older one
    assert wins[0] == (items[15:23], 3)
    assert wins[1] == (items[10:18], 3)
    targets = [i for win, n_ctx in wins for i in win[n_ctx:]]
    assert sorted(targets, key=int) == items
    assert wins[-1][1] == 0 and wins[-1][0][0] == "0"
    assert history_windows(items, 8, None) == [(items[15:23], 0), (items[7:15], 0), (items[:7], 0)]
    with pytest.raises(ValueError, match="context"):
        history_windows(items, 8, None, context=7)


def test_context_items_are_masked_in_the_labels(plm):
    from llmrec.tasks.genrec import build_genrec_rows

    data = _catalogue_data()
    plain = build_genrec_rows(plm, data.histories())
    ctx = build_genrec_rows(plm, data.histories(), context=3)
    n_sid = len(plm.levels)
    # same targets overall (each item once), more sequences, and the newest window's first 3 items are context
    assert plain.target_tokens == ctx.target_tokens
    first = ctx.rows[0]
    sid_labels = [lab for tok, lab in zip(first["input_ids"], first["labels"], strict=True) if tok >= plm.first_sid_id]
    assert sid_labels[:3 * n_sid] == [-100] * (3 * n_sid) and -100 not in sid_labels[3 * n_sid:]


# ------------------------------------------------------------------------------------- user-state tokens
def _with_user_states(plm: PersonalLM) -> PersonalLM:
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    torch.manual_seed(3)
    cfg = SequenceEncoderConfig(n_items=N_ITEMS, d_model=16, n_heads=2, max_len=16, dropout=0.3)
    plm.attach_user_states(SequenceEncoder(cfg, plm.item_ids))
    return plm


def test_user_states_shift_only_item_slots_causally_and_roundtrip(plm, tmp_path):
    history = [str(i) for i in range(3, 13)]
    plain = plm.recommend(history, k=5)
    _with_user_states(plm)
    assert plm.recommend(history, k=5) == plain  # zero-initialised projector: exactly the plain model
    torch.nn.init.normal_(plm.user_states.projector[-1].weight, std=1.0)
    window = plm.prompt_items(history)
    ids = torch.tensor([plm.encode_prompt(history)])
    idx = plm.user_state_inputs([window])["user_item_idx"]
    base = plm.model.get_input_embeddings()(ids)
    shifted = plm.user_states.embed(ids, idx)
    lo, hi = plm.user_states.slot_ids
    slots = (ids[0] >= lo) & (ids[0] < hi)
    assert int(slots.sum()) == len(window) == 8
    assert torch.equal((shifted != base).any(-1)[0], slots)  # only each item's last SID token moves
    # causal: changing the newest item leaves every earlier slot's shift as it was
    other = plm.user_states.embed(ids, torch.cat([idx[:, :-1], torch.tensor([[40]])], 1))
    last = int(torch.nonzero(slots)[-1])
    assert torch.equal(other[0, :last], shifted[0, :last]) and not torch.equal(other[0, last], shifted[0, last])
    with pytest.raises(LlmrecError, match="slot token"):
        plm.user_states.embed(ids, idx[:, :-1])
    with pytest.raises(LlmrecError, match="same item ids"):
        plm.attach_user_states(type(plm.user_states.encoder)(plm.user_states.encoder.config))
    recs = plm.recommend(history, k=5)
    assert recs != plain and len({r["item_id"] for r in recs}) == 5 and not set(history) & {r["item_id"] for r in recs}
    # beam search as wide as the catalogue = exact scoring, with the states in the prompt pass of both
    from llmrec.training.genrec import evaluate_genrec

    split = leave_one_out(_catalogue_data().histories())
    _, exact_lists, _ = evaluate_genrec(plm, split.valid, beams=0)
    _, wide_lists, _ = evaluate_genrec(plm, split.valid, beams=N_ITEMS)
    assert exact_lists == wide_lists
    loaded = PersonalLM.load(plm.save(tmp_path / "plm"), dtype=None)
    assert loaded.user_states is not None and not loaded.user_states.training
    assert [r["item_id"] for r in loaded.recommend(history, k=5)] == [r["item_id"] for r in recs]


def test_user_state_training_trains_projector_not_encoder_and_resumes(plm, tmp_path):
    from llmrec.tasks.genrec import build_genrec_rows
    from llmrec.training.genrec import evaluate_genrec, train_genrec

    _with_user_states(plm)
    with pytest.raises(Exception, match="title alignment"):
        build_genrec_rows(plm, _catalogue_data().histories(), title_alignment=True)
    encoder_before = {k: v.clone() for k, v in plm.user_states.encoder.state_dict().items()}
    projector_before = {k: v.clone() for k, v in plm.user_states.projector.state_dict().items()}
    split, cfg = _tiny_run(tmp_path, epochs=2)
    report = train_genrec(plm, split.train, split.valid, cfg)
    assert report["steps"] == 6 and report["best_valid_ndcg@10"] is not None
    assert all(torch.equal(v, plm.user_states.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(projector_before["2.weight"], plm.user_states.projector[2].weight)
    assert not plm.user_states.encoder.training  # its dropout never ran while the LLM trained
    summary, ranked, _ = evaluate_genrec(plm, split.test, beams=10)
    assert summary["invalid_rate"] == 0.0 and all(len(set(r)) == 10 for r in ranked)
    again = train_genrec(plm, split.train, split.valid, cfg)  # resumes adapter + projector from the checkpoint
    assert again["resumed_from"] is not None


# ------------------------------------------------------------------------------------------ shallow fusion
def test_prefix_log_mass_is_the_prior_mass_under_each_prefix():
    index = _index()
    prior = np.log(np.random.default_rng(4).dirichlet(np.ones(index.n_items)))
    mass = index.log_mass(prior, excluded=[0, 5])
    for p in [tuple(index.codes[3, :1]), tuple(index.codes[7, :2]), tuple(index.codes[9])]:
        under = [i for i in range(index.n_items) if tuple(index.codes[i, :len(p)]) == p and i not in (0, 5)]
        assert mass[p] == pytest.approx(np.log(np.exp(prior[under]).sum()))
    assert mass[tuple(index.codes[0])] == -np.inf
    with pytest.raises(ValueError, match="one value per item"):
        index.log_mass(prior[:-1])


def test_fusion_weight_zero_is_plain_and_exact_equals_exhaustive_beam(plm):
    from llmrec.training.genrec import evaluate_genrec

    split = leave_one_out(_catalogue_data().histories())
    prior = np.log(np.random.default_rng(5).dirichlet(np.ones(N_ITEMS) * 0.3, size=len(split.valid)))
    _, plain, _ = evaluate_genrec(plm, split.valid, beams=10)
    _, zero, _ = evaluate_genrec(plm, split.valid, beams=10, log_prior=prior, prior_weight=0.0)
    assert zero == plain
    _, exact, _ = evaluate_genrec(plm, split.valid, beams=0, log_prior=prior, prior_weight=0.7)
    _, wide, _ = evaluate_genrec(plm, split.valid, beams=N_ITEMS, log_prior=prior, prior_weight=0.7)
    assert exact == wide and exact != plain
    # a dominant prior: the lists become the prior's own top 10 (history excluded)
    _, ruled, _ = evaluate_genrec(plm, split.valid, beams=N_ITEMS, log_prior=prior, prior_weight=1e4)
    for e, row, items in zip(split.valid, prior, ruled, strict=True):
        order = [plm.item_ids[j] for j in np.argsort(-row, kind="stable") if plm.item_ids[j] not in e.history.item_ids]
        assert items == order[:10]
    recs = plm.recommend(list(split.valid[0].history.item_ids), k=3, num_beams=N_ITEMS, log_prior=prior[:1],
                         prior_weight=0.7)
    assert [r["item_id"] for r in recs] == exact[0][:3]
    assert recs[0]["score"] >= recs[1]["score"] >= recs[2]["score"]


def test_sequence_log_prior_columns_follow_the_recommender(plm):
    from llmrec.users.pretrain import sequence_log_prior
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    torch.manual_seed(0)
    order = list(reversed(plm.item_ids))
    enc = SequenceEncoder(SequenceEncoderConfig(n_items=N_ITEMS, d_model=16, n_heads=2, max_len=16), order).eval()
    hist = _catalogue_data().histories()["u0"]
    lp = sequence_log_prior(enc, [hist], plm.item_ids)
    assert lp.shape == (1, N_ITEMS) and np.exp(lp).sum() == pytest.approx(1.0)
    from llmrec.users.pretrain import score_histories

    raw = score_histories(enc, [hist])[0]
    assert np.argmax(lp[0]) == plm.item_ids.index(order[int(np.argmax(raw))])
    with pytest.raises(Exception, match="same catalogue"):
        sequence_log_prior(enc, [hist], plm.item_ids[:-1])


def test_ensemble_log_prior_is_a_renormalised_mean(plm):
    from llmrec.users.pretrain import ensemble_log_prior, sequence_log_prior
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    cfg = SequenceEncoderConfig(n_items=N_ITEMS, d_model=16, n_heads=2, max_len=16)
    torch.manual_seed(0)
    a = SequenceEncoder(cfg, list(plm.item_ids)).eval()
    b = SequenceEncoder(cfg, list(reversed(plm.item_ids))).eval()  # another seed, another column order
    hists = list(_catalogue_data().histories().values())[:3]
    la, lb = (sequence_log_prior(m, hists, plm.item_ids) for m in (a, b))
    np.testing.assert_allclose(ensemble_log_prior([a], hists, plm.item_ids), la, atol=1e-9)
    both = ensemble_log_prior([a, b], hists, plm.item_ids)
    np.testing.assert_allclose(np.exp(both).sum(axis=1), 1.0)
    # log p = (la + lb) / 2 - log Z: differences between items are the mean's
    np.testing.assert_allclose(both - both[:, :1], (la + lb) / 2 - ((la + lb) / 2)[:, :1], atol=1e-9)
    assert not np.allclose(both, la)
    with pytest.raises(Exception, match="at least one"):
        ensemble_log_prior([], hists, plm.item_ids)


def test_recommend_cli_with_and_without_fusion(tiny_llama_dir, ml100k, tmp_path, capsys):
    from llmrec.cli import main
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    item_ids = list(ml100k.items)
    rng = np.random.default_rng(0)
    codes = rng.permutation(16 ** 3)[: len(item_ids)]
    sids = SemanticIds.from_quantized(item_ids, np.stack([codes // 256, codes // 16 % 16, codes % 16], 1), (16, 16, 16))
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=8)
    PersonalLM.create(sids, ml100k.items, cfg).save(tmp_path / "plm")
    torch.manual_seed(0)
    SequenceEncoder(SequenceEncoderConfig(n_items=len(item_ids), d_model=16, n_heads=2, max_len=16),
                    item_ids).save(tmp_path / "sas")
    args = ["recommend", "--model", str(tmp_path / "plm"), "--user", "1", "-k", "5", "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)["recommendations"]
    assert main([*args, "--sasrec", str(tmp_path / "sas"), "--prior-weight", "1000"]) == 0
    fused = json.loads(capsys.readouterr().out)["recommendations"]
    seen = set(ml100k.histories()["1"].item_ids)
    for recs in (plain, fused):
        assert len({r["item_id"] for r in recs}) == 5 and not seen & {r["item_id"] for r in recs}
    assert fused != plain
    SequenceEncoder(SequenceEncoderConfig(n_items=len(item_ids), d_model=16, n_heads=2, max_len=16),
                    item_ids).save(tmp_path / "sas1")  # another seed: an ensemble prior
    assert main([*args, "--sasrec", str(tmp_path / "sas"), str(tmp_path / "sas1"), "--prior-weight", "1000"]) == 0
    both = json.loads(capsys.readouterr().out)["recommendations"]
    assert len({r["item_id"] for r in both}) == 5 and not seen & {r["item_id"] for r in both} and both != fused
    assert main(["recommend", "--model", str(tmp_path / "plm"), "--user", "nobody"]) == 2


def test_decoding_merges_sid_rows_for_speed_and_restores_them_exactly(plm):
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    from llmrec.lm.decoding import merged_trainable_tokens

    model = plm.model
    model.eval()
    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer)]
    assert layers  # the SID rows are PEFT trainable tokens
    with torch.no_grad():
        model.get_input_embeddings().token_adapter.trainable_tokens_delta["default"].add_(0.5)  # differ from base
        base = layers[0].base_layer.weight.detach().clone()
        ids = torch.tensor([[plm.sid_token_ids[0], plm.sid_token_ids[-1], 5]])
        plain = model(input_ids=ids).logits
        with merged_trainable_tokens(model):
            assert all(layer.merged for layer in layers)
            assert not torch.equal(layers[0].base_layer.weight, base)
            fast = model(input_ids=ids).logits
    assert not any(layer.merged for layer in layers)
    assert torch.equal(layers[0].base_layer.weight, base)  # a copy back, not a subtraction: exact
    torch.testing.assert_close(fast, plain)
