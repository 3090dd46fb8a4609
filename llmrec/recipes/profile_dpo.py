"""`llmrec train profile-dpo`: align the profile writer with DPO (trl's DPOTrainer) on what helps a reader.

For training users (disjoint from the held-out test users), the zero-shot writer drafts several candidate profiles
of a training-cut context (``pairs.variants``: grounded / ungrounded prompt, greedy / sampled); the zero-shot reader
answers the next training items' category and rating with each, and a candidate's reward is its gain over no
profile. The best and worst valid candidates (rewards ``pairs.margin`` apart) make a chosen / rejected pair; a LoRA
on the writer trains with DPO against the zero-shot writer. Validation and test items are never used for pairs.

The output is a model folder (``llmrec profile --model DIR --use-adapter``) plus results.json, config.yaml and
run.json; checkpoints and the scored candidates go to ``<out>.checkpoints`` and a killed run resumes from them.
Unless ``--test.skip``, held-out users' test items judge the aligned writer against the zero-shot writer, the
template profile and no profile (zero-shot reader; paired bootstrap 95% CIs). With ``--test.reader_users N`` the
same four profile kinds are also read by a FINE-TUNED reader: per kind, a fresh LoRA reader learns the downstream
rows of N further users (disjoint from the test and DPO users) with that kind's profiles, then reads the test users.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmrec.errors import ConfigError
from llmrec.recipes.common import RecipeBase, write_records
from llmrec.recipes.common import load_data as load_recipe_data
from llmrec.recipes.config import RecipeConfig, opt, section

logger = logging.getLogger(__name__)
CANDIDATES_FILE = "candidates.json"
READER_DIR = "fine-tuned-reader"
KINDS = ("none", "template", "zero_shot", "aligned")
COMPARISONS = (("aligned", "zero_shot"), ("aligned", "none"), ("zero_shot", "none"), ("template", "none"),
               ("aligned", "template"))


@dataclasses.dataclass
class ProfileDpoPairsConfig(RecipeConfig):
    """Candidate profiles and preference pairs (llmrec.training.profile_pref.ProfilePairConfig)."""

    users: int = opt(80, "training users that get candidates (a seeded sample, disjoint from the test users)")
    variants: tuple[str, ...] = opt(("grounded@0", "grounded@1", "grounded@1", "ungrounded@1"),
                                    "one candidate per variant: grounded|ungrounded @ temperature (0 = greedy)")
    heldout_items: int = opt(2, "training items after the context whose questions score a candidate")
    margin: float = opt(0.05, "chosen must beat rejected by at least this reward")
    pairs_per_user: int = opt(1, "rejected candidates per user (the worst that clear the margin)")
    genre_weight: float = opt(1.0, "reward weight of the gain in log-prob of the true category")
    rating_weight: float = opt(1.0, "reward weight of the drop in expected-rating absolute error")
    min_words: int = opt(8, "shorter candidates are invalid (never in a pair)")
    max_items: int = opt(20, "history items shown to the writer")
    max_new_tokens: int = opt(64, "profile length cap in tokens (writing and evaluation)")
    gen_batch: int = opt(8, "profiles generated per batch")


@dataclasses.dataclass
class ProfileDpoTrainConfig(RecipeConfig):
    """DPO (trl DPOTrainer; llmrec.training.profile_pref.ProfileDPOTrainConfig)."""

    adapter: str = opt("lora", "LoRA preset (adapters/*.yaml) trained on the writer")
    beta: float = opt(0.1, "DPO beta (strength of the pull towards the zero-shot writer, inverted)")
    loss_type: tuple[str, ...] = opt(("sigmoid",), "trl DPO loss type(s)")
    lr: float = opt(5e-4, "peak learning rate (cosine schedule)")
    epochs: float = opt(2.0, "epochs over the pairs")
    max_steps: int = opt(-1, "stop after this many optimizer steps (-1 = use epochs)")
    batch_size: int = opt(4, "pairs per device batch")
    gradient_accumulation_steps: int = opt(1, "batches per optimizer step")
    save_steps: int = opt(0, "checkpoint every N steps (0 = every epoch)")
    logging_steps: int = opt(5, "log the DPO loss every N steps")
    report_to: tuple[str, ...] = opt((), "trackers for transformers.Trainer (empty = none)")
    time_budget: float = opt(0.0, "minutes of training before stopping cleanly (0 = no budget)")
    checkpoints: str | None = opt(None, "checkpoint folder (none = <out>.checkpoints); resumed from if present")
    seed: int = opt(0, "seed of the user samples, the sampling and training")


@dataclasses.dataclass
class ProfileDpoTestConfig(RecipeConfig):
    """The held-out comparison at the end."""

    skip: bool = opt(False, "train and save only")
    users: int = opt(100, "held-out users (test item: history[-1]), excluded from training")
    reader_users: int = opt(0, "fine-tuned reader: training users of one LoRA reader per profile kind (0 = the "
                               "zero-shot reader only); disjoint from the test and DPO users")
    reader_epochs: float = opt(2.0, "fine-tuned reader: epochs over its rows")
    reader_lr: float = opt(1e-3, "fine-tuned reader: peak learning rate")


@dataclasses.dataclass
class ProfileDpoRecipeConfig(RecipeBase):
    out: str = opt("runs/profile-dpo", "output directory: the aligned writer's model folder + results.json")
    base_model: str = opt("smollm2-135m", "the writer's (and the zero-shot reader's) base model")
    pairs: ProfileDpoPairsConfig = section(ProfileDpoPairsConfig, "candidate profiles and preference pairs")
    train: ProfileDpoTrainConfig = section(ProfileDpoTrainConfig, "DPO training")
    test: ProfileDpoTestConfig = section(ProfileDpoTestConfig, "held-out comparison")


def library_configs(config: ProfileDpoRecipeConfig):
    """The recipe's sections as the library's configs -> ``(ProfilePairConfig, ProfileDPOTrainConfig)``."""
    from llmrec.training import profile_pref as pp

    p, t = config.pairs, config.train
    pairs = pp.ProfilePairConfig(
        users=p.users, variants=p.variants, heldout_items=p.heldout_items, margin=p.margin,
        pairs_per_user=p.pairs_per_user, genre_weight=p.genre_weight, rating_weight=p.rating_weight,
        min_words=p.min_words, max_items=p.max_items, max_new_tokens=p.max_new_tokens, gen_batch=p.gen_batch,
        seed=t.seed)
    train = pp.ProfileDPOTrainConfig(
        output_dir=t.checkpoints or f"{Path(config.out)}.checkpoints", adapter=t.adapter, beta=t.beta,
        loss_type=t.loss_type, epochs=t.epochs, max_steps=t.max_steps, learning_rate=t.lr, batch_size=t.batch_size,
        grad_accum=t.gradient_accumulation_steps, save_steps=t.save_steps, logging_steps=t.logging_steps,
        report_to=t.report_to, time_budget_minutes=t.time_budget, seed=t.seed)
    return pairs, train


def scored_candidates(model, tokenizer, reader, data, tasks, pair_cfg, cache: Path) -> dict[str, Any]:
    """Write and score every training user's candidates, or read them back from ``cache`` when it was written for
    the same pair config and users (a resumed run skips the slow part). The written texts are stored before the
    scoring starts, so a run killed while scoring does not write them again."""
    from llmrec.io import write_json_atomic
    from llmrec.training.profile_pref import Candidate, score_candidates, write_candidates

    key = json.loads(json.dumps({"pairs": pair_cfg.to_dict(), "users": [t.user_id for t in tasks],
                                 "contexts": [len(t.context) for t in tasks]}))
    stored = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
    if stored and stored.get("key") != key:
        logger.info("candidates: %s was written for another config; writing them again", cache)
        stored = {}
    if "candidates" in stored:
        logger.info("candidates: reusing %s", cache)
        return {"candidates": {u: [Candidate(**c) for c in cs] for u, cs in stored["candidates"].items()},
                "seconds": stored["seconds"], "reused": True}
    seconds = dict(stored.get("seconds", {}))
    if "texts" in stored:
        logger.info("candidates: reusing the texts written in %s; scoring them", cache)
        texts = stored["texts"]
    else:
        t0 = time.perf_counter()
        texts = write_candidates(model, tokenizer, data, tasks, pair_cfg)
        seconds["write"] = time.perf_counter() - t0
        write_json_atomic(cache, {"key": key, "seconds": seconds, "texts": texts})
    t0 = time.perf_counter()
    candidates = score_candidates(reader, tasks, texts, pair_cfg.variants, pair_cfg)
    seconds["score"] = time.perf_counter() - t0
    write_json_atomic(cache, {"key": key, "seconds": seconds, "texts": texts, "candidates": {
        u: [dataclasses.asdict(c) for c in cs] for u, cs in candidates.items()}})
    return {"candidates": candidates, "seconds": seconds, "reused": False}


def candidate_report(candidates, pairs) -> dict[str, Any]:
    """How the candidates and pairs came out: validity and mean reward per variant, pairs per variant."""
    import numpy as np

    by_variant: dict[str, list] = {}
    for cs in candidates.values():
        for c in cs:
            by_variant.setdefault(c.variant, []).append(c)
    return {
        "users": len(candidates),
        "candidates": sum(len(cs) for cs in candidates.values()),
        "variants": {v: {"n": len(cs), "valid_share": round(float(np.mean([c.valid for c in cs])), 4),
                         "mean_reward": round(float(np.nanmean([c.reward for c in cs if c.valid])), 4)
                         if any(c.valid for c in cs) else None,
                         "chosen": sum(p.chosen_variant == v for p in pairs),
                         "rejected": sum(p.rejected_variant == v for p in pairs)} for v, cs in by_variant.items()},
        "pairs": len(pairs),
        "mean_reward_gap": round(float(np.mean([p.chosen_reward - p.rejected_reward for p in pairs])), 4)
        if pairs else None,
    }


def evaluate_writers(writer, base, tokenizer, data, examples, pair_cfg, seed: int) -> dict[str, Any]:
    """The held-out comparison: profiles of each test context by kind (none, template, zero-shot writer = ``base``,
    aligned writer = ``writer``), read by the zero-shot reader (``base``), paired CIs (see ``COMPARISONS``)."""
    import numpy as np

    from llmrec.evaluation.models import HFModel
    from llmrec.evaluation.profile_reader import compare_kinds, read_examples
    from llmrec.tasks.profile import template_profile
    from llmrec.training.profile_pref import sample_profiles, writer_prompt

    contexts = {ex.user_id: ex.context for ex in examples}  # test split: one context per user
    users = sorted(contexts, key=lambda u: (len(u), u))
    prompts = [writer_prompt(contexts[u], data, max_items=pair_cfg.max_items, grounded=True) for u in users]
    profiles: dict[str, dict[str, str | None]] = {"none": dict.fromkeys(users),
                                                  "template": {u: template_profile(contexts[u], data) for u in users}}
    seconds: dict[str, float] = {}
    for kind, model in (("zero_shot", base), ("aligned", writer)):
        t0 = time.perf_counter()
        texts = sample_profiles(model, tokenizer, prompts, temperature=0.0, max_new_tokens=pair_cfg.max_new_tokens,
                                batch=pair_cfg.gen_batch, show_progress=True)
        seconds[f"write_{kind}_per_user"] = (time.perf_counter() - t0) / len(users)
        profiles[kind] = dict(zip(users, texts, strict=True))
    reader = HFModel(loaded=(base, tokenizer))
    logps = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        logps[kind] = read_examples(reader, profiles[kind], examples)
        seconds[f"read_{kind}_per_example"] = (time.perf_counter() - t0) / len(examples)
        logger.info("read %s: %.0f s", kind, time.perf_counter() - t0)
    result = compare_kinds(logps, examples, COMPARISONS, seed=seed)
    result.update(
        users=len(users), examples={t: sum(ex.task == t for ex in examples) for t in ("next_genre", "rating")},
        profile_tokens_mean={k: round(float(np.mean([len(tokenizer.encode(t, add_special_tokens=False))
                                                      for t in v.values() if t])), 1)
                             for k, v in profiles.items() if k != "none"},
        identical_to_zero_shot=round(float(np.mean([profiles["aligned"][u] == profiles["zero_shot"][u]
                                                    for u in users])), 4),
        seconds={k: round(v, 3) for k, v in seconds.items()},
        example_profiles=[{"user_id": u, **{k: profiles[k][u] for k in KINDS if k != "none"}} for u in users[:3]],
    )
    return result


def context_key(example) -> str:
    """A profile describes one (user, context length): a user's reader-training and test rows have different
    contexts."""
    return f"{example.user_id}@{len(example.context)}"


def reader_examples(data, *, users: int, exclude: Sequence[str], seed: int) -> list:
    """The fine-tuned reader's training rows: one seeded training cut for each of ``users`` users outside
    ``exclude`` (profile of history[:c] -> category / rating of history[c]; training items only)."""
    from llmrec.evaluation.profile_reader import sample_users
    from llmrec.tasks.profile import build_profile_tasks

    excluded = set(exclude)
    rows = [ex for ex in build_profile_tasks(data, split="train", seed=seed, train_cuts_per_user=1)
            if ex.user_id not in excluded]
    chosen = set(sample_users(rows, users, seed))
    return [ex for ex in rows if ex.user_id in chosen]


def kind_profiles(writer, base, tokenizer, data, examples, pair_cfg, cache: Path,
                  key: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every profile kind of every example's context (keyed by :func:`context_key`): none, template, the zero-shot
    writer's (``base``) and the aligned writer's, greedy as in :func:`evaluate_writers`; cached in ``cache`` and
    reused while ``key`` (the run's settings) is unchanged."""
    from llmrec.io import write_json_atomic
    from llmrec.tasks.profile import template_profile
    from llmrec.training.profile_pref import sample_profiles, writer_prompt

    contexts = {context_key(ex): ex.context for ex in examples}
    keys = sorted(contexts)
    stored = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
    if stored.get("keys") != keys or stored.get("key") != key:
        stored = {"keys": keys, "key": key, "profiles": {
            "none": dict.fromkeys(keys), "template": {k: template_profile(contexts[k], data) for k in keys}}}
    prompts = [writer_prompt(contexts[k], data, max_items=pair_cfg.max_items, grounded=True) for k in keys]
    for kind, model in (("zero_shot", base), ("aligned", writer)):
        if kind in stored["profiles"]:
            continue
        texts = sample_profiles(model, tokenizer, prompts, temperature=0.0, max_new_tokens=pair_cfg.max_new_tokens,
                                batch=pair_cfg.gen_batch, show_progress=True)
        stored["profiles"][kind] = dict(zip(keys, texts, strict=True))
        write_json_atomic(cache, stored)  # a killed run keeps the kinds already written
    return stored["profiles"]


def fine_tuned_reader(writer, base, tokenizer, data, test_examples, exclude: Sequence[str], config,
                      dtype: str) -> dict[str, Any]:
    """The held-out comparison read by a fine-tuned reader: per profile kind, a fresh LoRA on the base model trains on
    ``config.test.reader_users`` users' rows with that kind's profiles (same rows, steps and seed for every kind),
    then scores the test examples like the zero-shot reader (paired CIs, see ``COMPARISONS``). Each kind's reader
    checkpoints into ``<checkpoints>/fine-tuned-reader`` and its test log-probs are kept there: a killed run
    resumes per kind."""
    import numpy as np
    import torch

    from llmrec.evaluation.models import HFModel
    from llmrec.evaluation.profile_reader import compare_kinds, read_examples
    from llmrec.io import write_json_atomic
    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.personal import with_lora
    from llmrec.tasks.profile import profile_downstream_prompt
    from llmrec.training.qa import QATrainConfig, qa_rows, train_qa

    seed, test = config.train.seed, config.test
    pair_cfg, train_cfg = library_configs(config)
    train = reader_examples(data, users=test.reader_users, exclude=exclude, seed=seed)
    workdir = Path(train_cfg.output_dir) / READER_DIR
    workdir.mkdir(parents=True, exist_ok=True)
    # what the cached profiles and reads depend on: another writer, reader setting or user sample writes them again
    key = json.loads(json.dumps({"pairs": pair_cfg.to_dict(), "dpo": train_cfg.to_dict(), "base": config.base_model,
                                 "dtype": dtype, "reader": [test.reader_users, test.reader_epochs, test.reader_lr]}))
    profiles = kind_profiles(writer, base, tokenizer, data, train + list(test_examples), pair_cfg,
                             workdir / "profiles.json", key)
    logps: dict[str, list[np.ndarray]] = {}
    reports: dict[str, Any] = {}
    for kind in KINDS:
        done = workdir / f"{kind}.json"
        stored = json.loads(done.read_text(encoding="utf-8")) if done.is_file() else {}
        if stored.get("key") == key:
            logps[kind] = [np.asarray(x) for x in stored["logps"]]
            reports[kind] = stored["train"]
            continue
        torch.manual_seed(seed)
        llm, tok = load_causal_lm(config.base_model, dtype=dtype)
        llm = with_lora(llm, "lora")
        rows = qa_rows([profile_downstream_prompt(profiles[kind][context_key(ex)], ex) for ex in train],
                       [ex.answer for ex in train], tok)
        report = train_qa(llm, rows, tok.pad_token_id, QATrainConfig(
            output_dir=str(workdir / kind), epochs=test.reader_epochs, learning_rate=test.reader_lr, seed=seed))
        llm.eval()
        t0 = time.perf_counter()
        logps[kind] = read_examples(HFModel(loaded=(llm, tok)), profiles[kind], test_examples, key=context_key)
        reports[kind] = {**{k: v for k, v in report.items() if k not in ("loss_curve", "resumed_from")},
                         "read_seconds_per_example": round((time.perf_counter() - t0) / len(test_examples), 3)}
        write_json_atomic(done, {"key": key, "logps": [x.tolist() for x in logps[kind]], "train": reports[kind]})
        logger.info("fine-tuned reader %s: trained and read", kind)
        del llm
    result = compare_kinds(logps, test_examples, COMPARISONS, seed=seed)
    # contextual calibration subtracts the no-profile read of the SAME reader; here every kind has its own reader
    result.pop("calibrated", None)
    result.update(reader="SmolLM2-135M-Instruct + LoRA preset 'lora', one per profile kind",
                  reader_users=len({ex.user_id for ex in train}), reader_rows=len(train), train=reports)
    return result


def held_out_split(config: ProfileDpoRecipeConfig, data, pair_cfg):
    """``(test users, their test examples, the DPO users' writer tasks)``: seeded, the test users drawn first and
    kept out of training whether or not the comparison runs."""
    from llmrec.evaluation.profile_reader import sample_users
    from llmrec.tasks.profile import build_profile_tasks
    from llmrec.training.profile_pref import writer_tasks

    seed = config.train.seed
    test_rows = build_profile_tasks(data, split="test", seed=seed)
    test_users = sample_users(test_rows, config.test.users, seed)
    chosen_test = set(test_users)
    test_examples = [ex for ex in test_rows if ex.user_id in chosen_test]
    tasks = writer_tasks(data, users=pair_cfg.users, heldout_items=pair_cfg.heldout_items, tasks=pair_cfg.tasks,
                         exclude=test_users, seed=seed)
    return test_users, test_examples, tasks


def run_fine_tuned_reader(config: ProfileDpoRecipeConfig) -> dict[str, Any]:
    """The fine-tuned reader stage alone, for an aligned writer already saved in ``config.out`` (a run made without
    ``--test.reader_users``); its result is added to ``<out>/results.json`` under ``fine_tuned_reader``."""
    from llmrec.hardware import resolve_dtype
    from llmrec.io import write_json_atomic
    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.personal import PersonalLM

    if config.test.reader_users <= 0:
        raise ConfigError("the fine-tuned reader needs --test.reader_users > 0")
    pair_cfg, _ = library_configs(config)
    data, _ = load_recipe_data(config)
    dtype = resolve_dtype(config.dtype)
    test_users, test_examples, tasks = held_out_split(config, data, pair_cfg)
    writer = PersonalLM.load(config.out, dtype=dtype)
    writer.model.eval()
    base, tok = load_causal_lm(config.base_model, dtype=dtype)
    base.eval()
    result = fine_tuned_reader(writer.model, base, tok, data, test_examples,
                               [*test_users, *(t.user_id for t in tasks)], config, dtype)
    path = Path(config.out) / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    results["fine_tuned_reader"] = result
    write_json_atomic(path, results)
    return result


def run(config: ProfileDpoRecipeConfig) -> Path:
    """Candidates -> pairs -> DPO -> save the aligned writer to ``config.out`` -> held-out comparison."""
    import torch

    from llmrec.evaluation.models import HFModel
    from llmrec.hardware import resolve_dtype
    from llmrec.io import write_json_atomic
    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.tasks.uqa import item_title
    from llmrec.training.profile_pref import build_profile_pairs, train_profile_dpo, writer_prompt

    t_start = time.perf_counter()
    pair_cfg, train_cfg = library_configs(config)
    seed = config.train.seed
    data, _ = load_recipe_data(config)
    dtype = resolve_dtype(config.dtype)
    test_users, test_examples, tasks = held_out_split(config, data, pair_cfg)
    torch.manual_seed(seed)
    model, tok = load_causal_lm(config.base_model, dtype=dtype)
    reader = HFModel(loaded=(model, tok))  # before DPO the writer's weights are the zero-shot reader's
    ckpt = Path(train_cfg.output_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    cands = scored_candidates(model, tok, reader, data, tasks, pair_cfg, ckpt / CANDIDATES_FILE)
    prompts = {t.user_id: writer_prompt(t.context, data, max_items=pair_cfg.max_items, grounded=True)
               for t in tasks}
    pairs = build_profile_pairs(prompts, cands["candidates"], margin=pair_cfg.margin,
                                pairs_per_user=pair_cfg.pairs_per_user)
    pair_report = candidate_report(cands["candidates"], pairs)
    pair_report.update(seconds=cands["seconds"], reused=cands["reused"],
                       heldout_rows=sum(len(t.examples) for t in tasks))
    logger.info("profile pairs: %s", json.dumps({k: v for k, v in pair_report.items() if k != "variants"}))
    writer, report = train_profile_dpo(model, tok, pairs, train_cfg)
    titles = {i: item_title(it) for i, it in data.items.items()}
    plm = PersonalLM(writer, tok, None, titles, PersonalLMConfig(
        base_model=config.base_model, dtype=dtype, adapter=train_cfg.adapter,
        vocabulary=dataclasses.asdict(data.vocabulary)))
    out = plm.save(config.out, data=data, overwrite=config.overwrite)  # `llmrec profile --model DIR --use-adapter`
    results: dict[str, Any] = {"config": config.to_dict(), "dtype": dtype, "pairs": pair_report, "train": report,
                               "test_users": len(test_users), "train_users": len(tasks)}
    if not config.test.skip:
        base, _ = load_causal_lm(config.base_model, dtype=dtype)  # a clean zero-shot writer and reader
        base.eval()
        results["test"] = evaluate_writers(writer, base, tok, data, test_examples, pair_cfg, seed)
        if config.test.reader_users > 0:
            results["fine_tuned_reader"] = fine_tuned_reader(
                writer, base, tok, data, test_examples, [*test_users, *(t.user_id for t in tasks)], config, dtype)
    results["total_seconds"] = time.perf_counter() - t_start
    write_json_atomic(out / "results.json", results)
    write_records(out, config, "profile-dpo", dtype_resolved=dtype)
    return out
