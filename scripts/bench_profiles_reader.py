"""Profiles judged by a FINE-TUNED reader: does a profile text help a reader that was trained to use it?

    OMP_NUM_THREADS=1 .venv/bin/python -u scripts/bench_profiles_reader.py --threads 1

``scripts/bench_profiles.py`` reads profiles with the zero-shot 135M model, which answers nearly the same option
whatever the profile says. Here, per profile kind (``none``, ``template``, ``generated_grounded`` = the default
``PersonalLM.profile``), a fresh SmolLM2-135M + LoRA reader is fine-tuned on the downstream rows of TRAIN users
(profile of an earlier history cut -> genre / rating of the movie that followed), with the same rows, steps and
seed for every kind; then it reads the TEST users' profiles (history[:-1] -> history[-1], users disjoint from
the train users) and is scored by option log-likelihood as in bench_profiles (genre accuracy, rating MAE of the
softmax-expected rating). Deltas vs ``none`` are paired per example with bootstrap 95% CIs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from typing import Any

import numpy as np
from bench_profiles import delta, generate_profiles, outcomes_of, sample_users, score_options_cached

from llmrec.cli_args import add_hardware_args, apply_hardware_args
from llmrec.tasks.profile import ProfileExample

KINDS = ("none", "template", "generated_grounded")


def key(ex: ProfileExample) -> tuple[str, int]:
    """A profile describes one (user, context length): train and test rows of a user have different contexts."""
    return ex.user_id, len(ex.context)


def pick_rows(rows: list[ProfileExample], users: list[str]) -> list[ProfileExample]:
    chosen = set(users)
    return [ex for ex in rows if ex.user_id in chosen]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="eval/results/profiles_reader_ml100k.json")
    p.add_argument("--train-users", type=int, default=200)
    p.add_argument("--test-users", type=int, default=150)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--max-items", type=int, default=20, help="history movies shown to the profile writer")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--gen-batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    add_hardware_args(p)
    args = p.parse_args()
    apply_hardware_args(args)
    kinds = args.kinds.split(",")
    if "none" not in kinds or any(k not in KINDS for k in kinds):
        p.error(f"--kinds must include none and be among {KINDS}")
    import torch  # torch and the LLM stack load here, after parsing: --help stays fast

    from llmrec.data import load_dataset
    from llmrec.evaluation.models import HFModel
    from llmrec.io import write_json_atomic
    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.personal import PersonalLM, with_lora
    from llmrec.tasks.profile import (
        build_profile_tasks,
        majority_context_genre,
        mean_context_rating,
        profile_downstream_prompt,
        template_profile,
    )
    from llmrec.training.qa import QATrainConfig, qa_rows, train_qa

    t_start = time.perf_counter()
    data = load_dataset("ml-100k")
    test_rows = build_profile_tasks(data, split="test", seed=args.seed)
    test_users = sample_users(test_rows, args.test_users, args.seed)
    test = pick_rows(test_rows, test_users)
    # one train cut per user, users disjoint from the test users
    train_rows = [ex for ex in build_profile_tasks(data, split="train", seed=args.seed, train_cuts_per_user=1)
                  if ex.user_id not in set(test_users)]
    train = pick_rows(train_rows, sample_users(train_rows, args.train_users, args.seed))
    contexts = {key(ex): ex.context for ex in train + test}

    profiles: dict[str, dict[tuple[str, int], str | None]] = {
        "none": dict.fromkeys(contexts), "template": {c: template_profile(h, data) for c, h in contexts.items()}}
    gen_wall = None
    if "generated_grounded" in kinds:
        plm = PersonalLM.from_base("smollm2-135m", catalogue=data.items, dtype=args.dtype,
                                   vocabulary=data.vocabulary)
        t0 = time.perf_counter()
        by_name = {f"{u}@{n}": h for (u, n), h in contexts.items()}  # generate_profiles keys users by str
        texts, _ = generate_profiles(plm, HFModel(loaded=(plm.model, plm.tokenizer)), by_name, data,
                                     batch=args.gen_batch, max_items=args.max_items,
                                     max_new_tokens=args.max_new_tokens, grounded=True)
        gen_wall = time.perf_counter() - t0
        profiles["generated_grounded"] = {(u, int(n)): t for name, t in texts.items() for u, n in [name.split("@")]}
        del plm

    results: dict[str, Any] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        torch.manual_seed(args.seed)
        llm, tok = load_causal_lm(dtype=args.dtype)
        llm = with_lora(llm, "lora")
        rows = qa_rows([profile_downstream_prompt(profiles[kind][key(ex)], ex) for ex in train],
                       [ex.answer for ex in train], tok)
        with tempfile.TemporaryDirectory() as tmp:
            report = train_qa(llm, rows, tok.pad_token_id,
                              QATrainConfig(output_dir=tmp, epochs=args.epochs, learning_rate=args.lr, seed=args.seed))
        llm.eval()
        reader = HFModel(loaded=(llm, tok))
        t0 = time.perf_counter()
        logps = [score_options_cached(reader, profile_downstream_prompt(profiles[kind][key(ex)], ex),
                                      list(ex.options or ())) for ex in test]
        outcomes[kind] = o = outcomes_of(logps, test)
        res: dict[str, Any] = {
            "next_genre": {"accuracy": round(float(o["hits"].mean()), 4), "n": len(o["hits"])},
            "rating": {"mae_expected": round(float(o["err_expected"].mean()), 4),
                       "mae_argmax": round(float(o["err_argmax"].mean()), 4), "n": len(o["err_expected"])},
            "argmax_answers": {task: dict(c.most_common(6)) for task, c in o["picked"].items()},
            "train": {k: v for k, v in report.items() if k not in ("loss_curve", "resumed_from")},
            "mean_prompt_tokens": round(float(np.mean(rows["prompt_len"])), 1),
            "read_seconds_per_example": round((time.perf_counter() - t0) / len(test), 3),
        }
        if kind != "none":
            base = outcomes["none"]
            res["next_genre"]["delta_vs_none"] = delta(o["hits"], base["hits"], args.seed)
            res["rating"]["delta_vs_none_expected"] = delta(o["err_expected"], base["err_expected"], args.seed)
        results[kind] = res
        print(kind, res["next_genre"], res["rating"], flush=True)

    genre_ex = [ex for ex in test if ex.task == "next_genre"]
    rating_ex = [ex for ex in test if ex.task == "rating"]
    means = [(m, float(ex.answer)) for ex in rating_ex if (m := mean_context_rating(ex.context)) is not None]
    out = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} .venv/bin/python -u "
                   + " ".join(sys.argv),
        "args": vars(args),
        "machine": {"cpu_cores": 2, "torch_threads": torch.get_num_threads(), "dtype": args.dtype, "python": platform.python_version(),
                    "torch": torch.__version__, "note": "shared machine: another 1-thread job ran beside it"},
        "model": "writer: SmolLM2-135M-Instruct zero-shot (PersonalLM.profile, grounded); reader: SmolLM2-135M-"
                 "Instruct + LoRA preset 'lora', fine-tuned per profile kind on the train users' rows",
        "design": "train: one seeded history cut per train user (profile of history[:c] -> genre/rating of "
                  "history[c]); test: history[:-1] -> history[-1] of disjoint users; option log-likelihood "
                  "scoring; deltas kind - none paired per example, bootstrap 95% CI (1000 resamples); negative "
                  "rating deltas = lower error = better",
        "train_rows": len(train), "test_rows": {"next_genre": len(genre_ex), "rating": len(rating_ex)},
        "kinds": results,
        "references_no_llm": {
            "majority_context_genre_accuracy": round(float(np.mean(
                [majority_context_genre(ex.context, data) == ex.answer for ex in genre_ex])), 4),
            "mean_context_rating_mae": round(float(np.mean([abs(m - g) for m, g in means])), 4)},
        "generation_seconds_per_context": round(gen_wall / len(contexts), 2) if gen_wall else None,
        "example_profiles": [{"user_id": u, **{k: profiles[k][key(ex)] for k in kinds if k != "none"}}
                             for ex in test[:6:2] for u in [ex.user_id]],
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json_atomic(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
