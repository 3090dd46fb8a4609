"""Profile-writer alignment (issue 20 item 2): held-out rows from training items only, the reader-gain reward and
pair construction on hand-made cases, a tiny DPO run through trl that widens the chosen-vs-rejected margin, resume
from a checkpoint, and `llmrec train profile-dpo` end to end (model folder saved, loaded, writing with its adapter)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llmrec.data.schema import UserHistory
from llmrec.errors import ConfigError, LlmrecError
from llmrec.evaluation.profile_reader import downstream_gain
from llmrec.tasks.profile import ProfileExample
from llmrec.training.profile_pref import (
    Candidate,
    ProfileDPOTrainConfig,
    ProfilePair,
    ProfilePairConfig,
    Variant,
    build_profile_pairs,
    candidate_reward,
    completion_text,
    is_valid_profile,
    pair_margins,
    preference_dataset,
    train_profile_dpo,
    writer_tasks,
)

GENRES = ("Action", "Comedy", "Drama")


def _example(task: str, answer: str) -> ProfileExample:
    options = GENRES if task == "next_genre" else ("1", "2", "3", "4", "5")
    return ProfileExample("u", task, UserHistory("u", ("a",), (0,), (None,)), "i", "Film (1990)", ("Drama",),
                          answer, options, "train")


# ------------------------------------------------------------------------------------------------ hand-made
def test_variants_parse_and_configs_refuse_bad_values():
    assert Variant.parse("grounded@0.7") == Variant(True, 0.7)
    assert Variant.parse("ungrounded@0") == Variant(False, 0.0) and str(Variant(False, 1.0)) == "ungrounded@1"
    for bad in ("facts@1", "grounded@hot", "grounded@-1"):
        with pytest.raises(ConfigError, match="variant"):
            Variant.parse(bad)
    with pytest.raises(ConfigError, match="two variants"):
        ProfilePairConfig(variants=("grounded@0",))
    with pytest.raises(ConfigError, match="unknown task"):
        ProfilePairConfig(tasks=("title",))
    with pytest.raises(ConfigError, match="beta"):
        ProfileDPOTrainConfig(beta=0)


def test_downstream_gain_on_hand_made_reads():
    genre = _example("next_genre", "Drama")
    flat = np.zeros(3)
    # the profile moves the reader towards the true category: gain = log 0.8 - log(1/3)
    sharp = np.log(np.array([0.1, 0.1, 0.8]))
    assert downstream_gain(sharp, flat, genre) == pytest.approx(math.log(0.8) - math.log(1 / 3))
    assert downstream_gain(flat, sharp, genre) == pytest.approx(-(math.log(0.8) - math.log(1 / 3)))
    assert downstream_gain(sharp + 5.0, sharp, genre) == pytest.approx(0.0)  # option log-probs are renormalised
    rating = _example("rating", "5")
    uniform = np.zeros(5)  # expected rating 3 -> error 2
    on_five = np.log(np.array([1e-9, 1e-9, 1e-9, 1e-9, 1.0]))  # expected ~5 -> error ~0
    assert downstream_gain(on_five, uniform, rating) == pytest.approx(2.0, abs=1e-6)
    assert downstream_gain(uniform, uniform, rating) == 0.0


def test_candidate_reward_averages_per_task_then_weights():
    rows = [_example("next_genre", "Drama"), _example("rating", "5"), _example("rating", "1")]
    base = [np.zeros(3), np.zeros(5), np.zeros(5)]
    good = [np.log(np.array([0.1, 0.1, 0.8])), np.log(np.array([1e-9] * 4 + [1.0])), np.zeros(5)]
    g = math.log(0.8) - math.log(1 / 3)
    assert candidate_reward(good, base, rows) == pytest.approx(g + (2.0 + 0.0) / 2, abs=1e-6)
    assert candidate_reward(good, base, rows, genre_weight=0.0, rating_weight=2.0) == pytest.approx(2.0, abs=1e-6)
    assert candidate_reward(base, base, rows) == 0.0


def test_valid_profiles_are_long_enough_and_not_the_item_list():
    assert is_valid_profile("This user likes dark thrillers and rates comedies low overall.")
    assert not is_valid_profile("This user likes")
    assert not is_valid_profile("This user watched, oldest first, with their ratings: Heat (1995) 5/5 ...")


def test_pairs_take_the_best_against_the_worst_valid_candidates_past_the_margin():
    c = {"u1": [Candidate("This user A a a a", "grounded@0", 0.30, True),
                Candidate("This user B b b b", "grounded@1", 0.10, True),
                Candidate("This user C c c c", "grounded@1", -0.20, True),
                Candidate("This user D", "ungrounded@1", float("nan"), False),  # invalid: never in a pair
                Candidate("This user E e e e", "ungrounded@1", 0.28, True)],
         "u2": [Candidate("This user same", "grounded@0", 0.5, True),
                Candidate("This user same", "grounded@1", 0.1, True)],  # identical texts: no pair
         "u3": [Candidate("This user X x x", "grounded@0", 0.02, True),
                Candidate("This user Y y y", "grounded@1", 0.0, True)]}  # gap under the margin
    prompts = {u: f"prompt of {u}" for u in c}
    pairs = build_profile_pairs(prompts, c, margin=0.05)
    assert [(p.user_id, p.chosen, p.rejected) for p in pairs] == [("u1", "This user A a a a", "This user C c c c")]
    p = pairs[0]
    assert p.chosen_reward - p.rejected_reward >= 0.05 and p.prompt == "prompt of u1"
    two = build_profile_pairs(prompts, c, margin=0.05, pairs_per_user=3)
    assert [x.rejected for x in two] == ["This user C c c c", "This user B b b b"]  # E is within the margin
    for x in two:
        assert x.chosen_reward - x.rejected_reward >= 0.05
        assert all(cand.valid for cand in c[x.user_id] if cand.text in (x.chosen, x.rejected))
    assert build_profile_pairs(prompts, c, margin=0.0)[-1].user_id == "u3"


def test_completions_must_continue_the_fixed_reply_start():
    assert completion_text("This user likes noir.") == " likes noir."
    with pytest.raises(LlmrecError, match="This user"):
        completion_text("Movies this user watched")


def test_writer_tasks_judge_on_training_items_only(ml100k):
    tasks = writer_tasks(ml100k, users=40, heldout_items=3, exclude=["1", "2"], seed=0)
    assert len(tasks) == 40 and not {"1", "2"} & {t.user_id for t in tasks}
    histories = ml100k.histories()
    for t in tasks:
        full = histories[t.user_id]
        cut = len(t.context)
        assert tuple(t.context.item_ids) == tuple(full.item_ids[:cut])
        val_test = set(full.item_ids[-2:])
        allowed = set(full.item_ids[cut:min(cut + 3, len(full) - 2)])
        for ex in t.examples:
            assert ex.item_id in allowed and ex.item_id not in val_test, (t.user_id, ex.item_id)
            assert ex.context == t.context and ex.split == "train"
    assert writer_tasks(ml100k, users=40, heldout_items=3, exclude=["1", "2"], seed=0) == tasks  # seeded


# ------------------------------------------------------------------------------------------------ tiny model
def _pairs() -> list[ProfilePair]:
    out = []
    for n, (good, bad) in enumerate([("likes quiet dramas and rates them high.", "watched watched watched."),
                                     ("prefers old comedies over new action films.", "Heat Heat Heat Heat."),
                                     ("rates thrillers highly and avoids musicals.", "1995 1995 1995 1995.")]):
        out.append(ProfilePair(f"u{n}", f"Write a profile of user {n}.", "This user " + good, "This user " + bad,
                               1.0, 0.0, "grounded@0", "grounded@1"))
    return out


def _train(tiny_llama, tmp_path, **kw):
    cfg = ProfileDPOTrainConfig(output_dir=str(tmp_path / "ckpt"), learning_rate=5e-3, batch_size=3,
                                logging_steps=1, **kw)
    return train_profile_dpo(tiny_llama.model, tiny_llama.tokenizer, _pairs(), cfg)


def test_tiny_dpo_widens_the_chosen_over_rejected_margin(tiny_llama, tmp_path):
    pairs = _pairs()
    before = pair_margins(tiny_llama.model, tiny_llama.tokenizer, pairs)
    model, report = _train(tiny_llama, tmp_path, max_steps=4, save_steps=4)
    after = pair_margins(model, tiny_llama.tokenizer, pairs)
    assert report["pair_margin"]["before"] == pytest.approx(float(before.mean()), abs=1e-4)  # B = 0: the base
    assert after.mean() > before.mean() + 0.05 and (after > before).all()
    assert report["steps"] == 4 and report["pairs"] == 3 and report["resumed_from"] is None
    with model.disable_adapter():  # the reference (zero-shot writer) is untouched
        ref = pair_margins(model, tiny_llama.tokenizer, pairs)
    np.testing.assert_allclose(ref, before, atol=1e-4)
    row = preference_dataset(tiny_llama.tokenizer, pairs)[0]
    assert row["chosen"] == " likes quiet dramas and rates them high." and row["prompt"].endswith("This user")


def test_dpo_resumes_from_the_last_checkpoint(tiny_llama, tmp_path, _tiny_llama_loaded):
    import copy

    _, first = _train(tiny_llama, tmp_path, max_steps=2, save_steps=1)
    assert (tmp_path / "ckpt" / "checkpoint-2").is_dir() and first["resumed_from"] is None
    fresh = copy.deepcopy(_tiny_llama_loaded.model)
    model, second = train_profile_dpo(fresh, tiny_llama.tokenizer, _pairs(), ProfileDPOTrainConfig(
        output_dir=str(tmp_path / "ckpt"), learning_rate=5e-3, batch_size=3, logging_steps=1, max_steps=3,
        save_steps=1))
    assert second["resumed_from"].endswith("checkpoint-2") and second["steps"] == 3
    assert [h["step"] for h in second["dpo_curve"]] == [1, 2, 3]  # the log history came back with the state


def test_train_profile_dpo_end_to_end_saves_a_loadable_writer(tmp_path, tiny_llama_dir, monkeypatch):
    from llmrec.cli import main
    from llmrec.lm.model_dir import is_model_dir
    from llmrec.lm.personal import PersonalLM

    out = tmp_path / "writer"
    args = ["train", "profile-dpo", "--config", "tiny/profile-dpo", "--base_model", str(tiny_llama_dir),
            "--out", str(out)]
    assert main(args) == 0
    assert is_model_dir(out) and (out / "config.yaml").is_file() and (out / "run.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["pairs"]["pairs"] >= 1 and results["train"]["steps"] == 2
    assert results["test_users"] == 3 and set(results["test"]["raw"]["kinds"]) == {"none", "template", "zero_shot",
                                                                                    "aligned"}
    d = results["test"]["raw"]["deltas"]["aligned_vs_zero_shot"]["rating_mae_expected"]
    assert d["ci_low"] <= d["value"] <= d["ci_high"]
    # the held-out users never gave pairs: their test items judge the writers only
    cands = json.loads((tmp_path / "writer.checkpoints" / "candidates.json").read_text())
    test_users = {p["user_id"] for p in results["test"]["example_profiles"]}
    assert test_users and not test_users & set(cands["candidates"])

    plm = PersonalLM.load(out, dtype="fp32")
    assert plm.sids is None and "default" in plm.model.peft_config
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [k for k in saved if "lora_B" in k]
    assert lora_b and any(float(saved[k].abs().sum()) > 0 for k in lora_b)  # trained, not the zero init
    params = dict(plm.model.named_parameters())
    k = lora_b[0]
    name = next(n for n in params if n.endswith(k.replace(".weight", ".default.weight").split("base_model.")[-1]))
    assert torch.equal(params[name].detach(), saved[k])
    text = plm.profile(plm.load_dataset().histories()["1"], plm.load_dataset(), max_items=5, max_new_tokens=4,
                       use_adapter=True)
    assert text.startswith("This user")

    # rerun: the scored candidates are read back, training resumes from its last checkpoint (nothing left to do)
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["pairs"]["reused"] is True and again["train"]["resumed_from"].endswith("checkpoint-2")

    # the fine-tuned reader stage on the saved writer: its users are neither test nor DPO users; resumes per kind
    import llmrec.training.qa as qa
    from llmrec.recipes.config import load_config
    from llmrec.recipes.profile_dpo import ProfileDpoRecipeConfig, run_fine_tuned_reader

    config = load_config(ProfileDpoRecipeConfig, "tiny/profile-dpo", {
        "base_model": str(tiny_llama_dir), "out": str(out), "test.reader_users": "4", "test.reader_epochs": "1"})
    ft = run_fine_tuned_reader(config)
    assert set(ft["raw"]["kinds"]) == {"none", "template", "zero_shot", "aligned"} and ft["reader_users"] == 4
    assert "calibrated" not in ft  # one reader per kind: no shared no-profile read to calibrate against
    assert ft["train"]["aligned"]["steps"] >= 1
    keys = json.loads((tmp_path / "writer.checkpoints" / "fine-tuned-reader" / "profiles.json").read_text())["keys"]
    reader_users = {k.split("@")[0] for k in keys} - test_users
    assert len(reader_users) == 4 and not reader_users & set(cands["candidates"])
    assert json.loads((out / "results.json").read_text())["fine_tuned_reader"] == json.loads(json.dumps(ft))
    monkeypatch.setattr(qa, "train_qa", lambda *a, **k: pytest.fail("a finished kind was trained again"))
    assert run_fine_tuned_reader(config)["raw"] == ft["raw"]
    other = load_config(ProfileDpoRecipeConfig, "tiny/profile-dpo", {
        "base_model": str(tiny_llama_dir), "out": str(out), "test.reader_users": "4", "test.reader_epochs": "2"})
    with pytest.raises(pytest.fail.Exception, match="trained again"):  # another reader setting: not reused
        run_fine_tuned_reader(other)


def test_candidate_cache_keeps_the_written_texts_when_scoring_is_cut_short(tmp_path, monkeypatch):
    import llmrec.training.profile_pref as pp
    from llmrec.recipes.profile_dpo import scored_candidates

    calls: list[str] = []
    monkeypatch.setattr(pp, "write_candidates",
                        lambda *a, **k: calls.append("write") or {"u1": ["This user a b", "This user c d"]})

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pp, "score_candidates", killed)
    tasks = [pp.WriterTask("u1", UserHistory("u1", ("a",), (0,), (None,)), ())]
    cfg = ProfilePairConfig(variants=("grounded@0", "grounded@1"))
    cache = tmp_path / "candidates.json"
    with pytest.raises(KeyboardInterrupt):
        scored_candidates(None, None, None, None, tasks, cfg, cache)
    assert json.loads(cache.read_text())["texts"] == {"u1": ["This user a b", "This user c d"]}
    monkeypatch.setattr(pp, "score_candidates", lambda reader, ts, texts, variants, c: {
        u: [Candidate(t, v, float(i), True) for i, (t, v) in enumerate(zip(xs, variants, strict=True))]
        for u, xs in texts.items()})
    first = scored_candidates(None, None, None, None, tasks, cfg, cache)
    assert calls == ["write"] and first["reused"] is False and first["candidates"]["u1"][1].reward == 1.0
    again = scored_candidates(None, None, None, None, tasks, cfg, cache)
    assert again["reused"] is True and again["candidates"] == first["candidates"] and calls == ["write"]
    other = ProfilePairConfig(variants=("grounded@0", "ungrounded@1"))  # another config: written again
    scored_candidates(None, None, None, None, tasks, other, cache)
    assert calls == ["write", "write"]


def test_time_budget_stops_a_trainer_without_evaluation_cleanly(tmp_path):
    # profile-writer DPO has no eval dataset: asking it to evaluate at the budget's end crashed the run
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from llmrec.training.genrec import TimeBudgetCallback

    for strategy, evaluates in (("no", False), ("steps", True)):
        args = TrainingArguments(output_dir=str(tmp_path), eval_strategy=strategy, eval_steps=5, use_cpu=True)
        control = TimeBudgetCallback(0.0).on_step_end(args, TrainerState(), TrainerControl())
        assert control.should_training_stop and control.should_save and control.should_evaluate is evaluates
