"""Preference stage of the generative recommender (issue 20): ranking rewards and pair construction on hand-made
cases, a tiny DPO run through trl that widens the chosen-vs-rejected margin, resume, save/load, and
`llmrec train genrec-pref` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_genrec import N_ITEMS, _catalogue_data, _sids

from llmrec.data.schema import UserHistory
from llmrec.data.splits import leave_one_out
from llmrec.errors import ConfigError
from llmrec.lm.personal import PersonalLM, PersonalLMConfig
from llmrec.training.preference import (
    GenrecPrefTrainConfig,
    PairConfig,
    build_preference_pairs,
    pair_margins,
    preference_dataset,
    preference_prompts,
    ranking_reward,
    select_rejected,
    train_genrec_pref,
)


def _history(user: str, items: str) -> UserHistory:
    ids = tuple(items.split())
    return UserHistory(user, ids, tuple(range(len(ids))), (None,) * len(ids))


# ------------------------------------------------------------------------------------------------ hand-made
def test_ranking_rewards_on_hand_made_lists():
    ranked = ["a", "b", "c", "d"]
    assert ranking_reward(ranked, "a", kind="hit") == 1.0
    assert ranking_reward(ranked, "b", kind="rr") == 0.5
    assert ranking_reward(ranked, "c", kind="ndcg") == pytest.approx(1 / math.log2(4))
    assert ranking_reward(ranked, "a", kind="ndcg") == 1.0
    assert ranking_reward(ranked, "d", kind="hit", k=3) == 0.0  # past the cut-off
    assert ranking_reward(ranked, "z", kind="rr") == 0.0
    with pytest.raises(ConfigError, match="reward kind"):
        ranking_reward(ranked, "a", kind="map")


def test_select_rejected_skips_target_own_items_unknown_and_repeats():
    ranked = ["t", "v", "x", "x", "ghost", "h", "y", "z", "w"]
    got = select_rejected(ranked, target="t", forbidden={"v", "h"}, catalogue={"t", "v", "x", "h", "y", "z", "w"},
                          n=3)
    assert got == ["x", "y", "z"]
    assert select_rejected(ranked, target="t", forbidden={"v"}, catalogue=set(ranked), n=2, taken={"x"}) == [
        "ghost", "h"]
    assert select_rejected(["t", "v"], target="t", forbidden={"v"}, catalogue={"t", "v"}, n=3) == []


def test_preference_prompts_take_the_newest_training_positions_and_forbid_held_out_items():
    train = {"u1": _history("u1", "a b c d"), "u2": _history("u2", "e"), "u3": _history("u3", "f g")}
    held = {"u1": {"v1", "t1"}, "u3": {"v3"}}
    prompts = preference_prompts(train, held, positions=2)
    assert [(p.user_id, p.history, p.target) for p in prompts] == [
        ("u1", ("a", "b", "c"), "d"), ("u1", ("a", "b"), "c"), ("u3", ("f",), "g")]  # u2: no item before its only one
    assert prompts[0].forbidden == {"a", "b", "c", "d", "v1", "t1"}  # later training items are right answers too
    assert prompts[2].forbidden == {"f", "g", "v3"}
    assert len(preference_prompts(train, held, users=2, seed=1)) <= 2
    with pytest.raises(ConfigError, match="beams"):
        PairConfig(beam_negatives=5, beams=5)


# ------------------------------------------------------------------------------------------------ tiny model
@pytest.fixture
def init_dir(tiny_llama_dir, tmp_path):
    """A saved 'supervised' tiny PersonalLM over the 40-item synthetic catalogue (the starting point of DPO)."""
    data = _catalogue_data(n_users=24)
    vectors = np.random.default_rng(2).normal(size=(N_ITEMS, 16)).astype(np.float32)
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=8)
    PersonalLM.create(_sids(), data.items, cfg, item_vectors=vectors).save(tmp_path / "init", data=data)
    return tmp_path / "init"


def _split():
    split = leave_one_out(_catalogue_data(n_users=24).histories())
    held = {}
    for e in split.valid + split.test:
        held.setdefault(e.user_id, set()).add(e.target)
    return split, held


def test_pairs_from_beams_and_sasrec_are_valid_distinct_and_never_held_out(init_dir, monkeypatch):
    plm = PersonalLM.load(init_dir, dtype="fp32")
    split, held = _split()
    prompts = preference_prompts(split.train, held, positions=2)
    # SASRec ranks the forbidden items and the target first: none of them may come out as a negative
    import llmrec.users.pretrain as pretrain

    def fake_prior(model, histories, item_ids):
        rows = np.tile(-np.arange(len(item_ids), dtype=np.float64), (len(histories), 1))
        for r, p in enumerate(prompts):
            for item in p.forbidden | {p.target}:
                rows[r, item_ids.index(item)] = 100.0
        return rows

    monkeypatch.setattr(pretrain, "sequence_log_prior", fake_prior)
    cfg = PairConfig(beam_negatives=2, sasrec_negatives=2, beams=4)
    pairs, report = build_preference_pairs(plm, prompts, cfg, sasrec=object(), show_progress=False)
    assert report["pairs"] == len(pairs) == 4 * len(prompts)
    assert report["pairs_by_source"] == {"beam": 2 * len(prompts), "sasrec": 2 * len(prompts)}
    assert set(report["beam_reward"]) == {"hit", "rr", "ndcg"}
    by_prompt = {}
    for pair in pairs:
        by_prompt.setdefault((pair.user_id, pair.history), []).append(pair)
    for p in prompts:
        group = by_prompt[(p.user_id, p.history)]
        rejected = [x.rejected for x in group]
        assert all(x.chosen == p.target for x in group)  # chosen = the true next item
        assert len(set(rejected)) == len(rejected)  # distinct
        assert p.target not in rejected and not set(rejected) & p.forbidden  # never the target, own or held-out items
        assert not set(rejected) & held[p.user_id]
        assert set(rejected) <= set(plm.item_ids)  # valid catalogue items
    with pytest.raises(ConfigError, match="sasrec"):
        build_preference_pairs(plm, prompts, cfg, show_progress=False)
    # the text rows trl tokenizes: the genrec prompt, SID strings as completions
    ds = preference_dataset(plm, pairs[:3])
    assert ds[0]["prompt"] == plm.history_prompt(pairs[0].history) and ds[0]["chosen"] == plm.sid_string(pairs[0].chosen)


def _train_cfg(tmp_path, **kw) -> GenrecPrefTrainConfig:
    base = dict(output_dir=str(tmp_path / "ck"), max_steps=6, learning_rate=5e-3, batch_size=8, eval_users=4,
                eval_steps=3, eval_beams=3, logging_steps=1, beta=0.5, init_is_candidate=False,
                early_stopping_patience=10)
    return GenrecPrefTrainConfig(**(base | kw))


def test_tiny_dpo_widens_the_margin_saves_loads_and_resumes(init_dir, tmp_path):
    plm = PersonalLM.load(init_dir, dtype="fp32")
    split, held = _split()
    prompts = preference_prompts(split.train, held)
    pairs, _ = build_preference_pairs(plm, prompts, PairConfig(beam_negatives=1, beams=3), show_progress=False)
    before = pair_margins(plm, pairs)
    report = train_genrec_pref(plm, pairs, split.valid, _train_cfg(tmp_path, max_steps=4, eval_steps=2))
    after = pair_margins(plm, pairs)
    assert report["steps"] == 4 and report["selected"] == "aligned" and report["valid_before"]["ndcg@10"] >= 0
    assert report["best_valid_ndcg@10"] is not None and len(report["valid_curve"]) == 2
    assert after.mean() > before.mean() + 0.05, (before.mean(), after.mean())  # DPO moved the margin the right way
    assert (after > before).mean() > 0.5
    # only the default adapter: trl's reference is our merged copy, no "ref" adapter left in the model
    assert list(plm.model.peft_config) == ["default"]
    out = plm.save(tmp_path / "aligned", data=_catalogue_data(n_users=24))
    again = PersonalLM.load(out, dtype="fp32")
    np.testing.assert_allclose(pair_margins(again, pairs), after, atol=1e-4)
    history = list(split.test[0].history.item_ids)
    loaded, trained = again.recommend(history, k=5), plm.recommend(history, k=5)
    assert [r["item_id"] for r in loaded] == [r["item_id"] for r in trained]
    # scores equal up to float rounding (each decodes its own LoRA-merged copy)
    np.testing.assert_allclose([r["score"] for r in loaded], [r["score"] for r in trained], rtol=1e-5)
    assert not (out / "ref").exists()
    # a longer budget on the same checkpoints resumes (the reference is the --init model again)
    fresh = PersonalLM.load(init_dir, dtype="fp32")
    resumed = train_genrec_pref(fresh, pairs, split.valid, _train_cfg(tmp_path, max_steps=6, eval_steps=2))
    assert resumed["resumed_from"].endswith("checkpoint-4") and resumed["steps"] == 6


def test_supervised_model_stays_when_no_checkpoint_beats_it(init_dir, tmp_path, monkeypatch):
    import llmrec.training.genrec as genrec

    plm = PersonalLM.load(init_dir, dtype="fp32")
    split, held = _split()
    pairs, _ = build_preference_pairs(plm, preference_prompts(split.train, held), PairConfig(beam_negatives=1,
                                      beams=2), show_progress=False)
    initial = {n: p.detach().clone() for n, p in plm.model.named_parameters()}
    scores = iter([0.5, 0.2, 0.1])  # validation NDCG@10: the supervised model, then each aligned checkpoint

    def fake_eval(plm, examples, **kw):
        value = next(scores)
        return {"ndcg@10": value, "recall@10": value}, [], 0.0

    monkeypatch.setattr(genrec, "evaluate_genrec", fake_eval)
    report = train_genrec_pref(plm, pairs, split.valid, _train_cfg(tmp_path, max_steps=2, eval_steps=1,
                                                                    init_is_candidate=True))
    assert report["valid_before"]["ndcg@10"] == 0.5 and report["best_valid_ndcg@10"] == 0.2
    assert report["selected"] == "init"
    assert all(torch.equal(initial[n], p) for n, p in plm.model.named_parameters())


def test_collator_drops_the_eos_trl_appends(init_dir):
    from llmrec.training.preference import SidPreferenceCollator

    plm = PersonalLM.load(init_dir, dtype="fp32")
    eos = plm.tokenizer.eos_token_id
    sid = plm.index.token_ids(0)
    batch = SidPreferenceCollator(plm.tokenizer.pad_token_id, eos)(
        [{"prompt_ids": [5, 6, 7], "chosen_ids": [*sid, eos], "rejected_ids": [*plm.index.token_ids(1), eos]}])
    assert batch["completion_mask"].sum(-1).tolist() == [len(sid), len(sid)]
    assert batch["input_ids"][0, 3:].tolist() == sid and eos not in batch["input_ids"][:, 3:].tolist()


# ------------------------------------------------------------------------------------------------ CLI
def ml100k_init(tiny_llama_dir, ml100k, tmp_path):
    """A tiny PersonalLM over ml-100k's catalogue (random 3-level SIDs) saved with its data: an --init for the CLI."""
    from llmrec.items.semantic_ids import SemanticIds

    item_ids = list(ml100k.items)
    codes = np.random.default_rng(0).permutation(16 ** 3)[: len(item_ids)]
    sids = SemanticIds.from_quantized(item_ids, np.stack([codes // 256, codes // 16 % 16, codes % 16], 1),
                                      (16, 16, 16))
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=8)
    return PersonalLM.create(sids, ml100k.items, cfg).save(tmp_path / "init", data=ml100k)


def test_train_genrec_pref_end_to_end(tiny_llama_dir, ml100k, tmp_path, capsys):
    from llmrec.cli import main
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    ml100k_init(tiny_llama_dir, ml100k, tmp_path)
    item_ids = list(ml100k.items)
    torch.manual_seed(0)
    SequenceEncoder(SequenceEncoderConfig(n_items=len(item_ids), d_model=16, n_heads=2, max_len=16),
                    item_ids).save(tmp_path / "sas")
    out = tmp_path / "pref"
    assert main(["train", "genrec-pref", "--config", "tiny/genrec-pref", "--init", str(tmp_path / "init"),
                 "--sasrec", str(tmp_path / "sas"), "--pairs.sasrec_negatives", "1", "--out", str(out),
                 "--data", "none"]) == 0  # none: the dataset the --init model recorded
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert results["pairs"]["pairs_by_source"] == {"beam": 8, "sasrec": 8}
    assert results["train"]["steps"] == 2 and results["test_users"] == 4 and "ndcg@10" in results["test"]
    assert "before" in results["train"]["pair_margin"] and results["train"]["valid_users"] == 4
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == "genrec-pref" and (out / "config.yaml").is_file()
    assert results["train"]["tokens_per_second"] > 0 and results["train"]["selected"] in ("aligned", "init")
    assert (tmp_path / "pref.checkpoints" / "checkpoint-2").is_dir()
    # the same model-directory format: recommend needs only --model
    assert main(["recommend", "--model", str(out), "--user", "1", "-k", "3", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)["recommendations"]
    assert len({r["item_id"] for r in recs}) == 3
    assert main(["train", "genrec-pref", "--config", "tiny/genrec-pref", "--out", str(tmp_path / "x")]) == 2
    assert "--init" in capsys.readouterr().err


def test_a_sid_loss_model_is_refused_before_training(init_dir, tmp_path):
    # its beams are normalised over the SID rows, DPOTrainer's log-probs over the whole vocabulary
    plm = PersonalLM.load(init_dir, dtype="fp32")
    plm.genrec_loss = "sid"
    split, _ = _split()
    with pytest.raises(ConfigError, match="'sid' genrec loss"):
        train_genrec_pref(plm, [], split.valid, _train_cfg(tmp_path))
