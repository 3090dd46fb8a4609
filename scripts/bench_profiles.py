"""Profile-generation benchmark on MovieLens-100k: does a profile TEXT help a reader LLM on downstream tasks?

    OMP_NUM_THREADS=1 .venv/bin/python -u scripts/bench_profiles.py --threads 1 --users 150

Profile kinds: ``none``, ``template`` (top genres, mean rating, decade; no LLM), ``generated`` (the offline
SmolLM2-135M-Instruct, zero-shot, greedy, from the movie list only: ``PersonalLM.profile(grounded=False)``) and
``generated_grounded`` (the default ``PersonalLM.profile``: the writer also sees the template's facts and its
reply starts with "This user"). The same model, zero-shot, reads
each profile and answers the user's held-out test movie: next_genre (argmax of the summed option log-probs over the
genres -> accuracy) and rating (option log-probs of "1".."5": argmax -> MAE, and the expected rating under their
softmax -> MAE, the primary rating figure). No free generation in the reader, so parse failures decide nothing.
A 135M reader answers nearly the same option for every prompt, so each kind is also read with contextual
calibration (Zhao et al. 2021): option log-probs minus those of the same question without a profile, i.e. what
the profile itself adds (for ``none`` that is uniform).
Deltas vs ``none`` are paired by example with a seeded percentile-bootstrap 95% CI. Two non-LLM references
(majority primary genre / mean rating of the user's context) put the numbers in scale.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmrec.cli_args import add_hardware_args, apply_hardware_args
from llmrec.evaluation.profile_reader import (  # noqa: F401 - re-exported for bench_profiles_reader
    delta,
    outcomes_of,
    sample_users,
    score_options_cached,
)

if TYPE_CHECKING:  # torch and the LLM load in main(): --help stays fast
    from llmrec.evaluation.models import HFModel
    from llmrec.lm.personal import PersonalLM
    from llmrec.tasks.profile import ProfileExample

KINDS = ("none", "template", "generated", "generated_grounded")
N_EXAMPLES = 5


def generate_profiles(plm: PersonalLM, reader: HFModel, contexts: dict[str, Any], data, *, batch: int,
                      max_items: int, max_new_tokens: int, grounded: bool) -> tuple[dict[str, str], list[float]]:
    """Profiles per user and seconds per user per batch. ``batch == 1`` calls ``plm.profile`` itself; a larger
    batch sends the same prompt (``profile_write_prompt`` in the chat template) to greedy ``reader.generate``."""
    from llmrec.lm.personal import PROFILE_PREFIX
    from llmrec.tasks.profile import profile_write_prompt

    def prompt(u: str) -> str:
        return profile_write_prompt(contexts[u], data, max_items=max_items, grounded=grounded)

    users = sorted(contexts, key=lambda u: len(prompt(u)))
    profiles, seconds = {}, []
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        t0 = time.perf_counter()
        if batch == 1:
            texts = [plm.profile(contexts[chunk[0]], data, max_items=max_items, max_new_tokens=max_new_tokens,
                                 grounded=grounded)]
        else:
            texts = reader.generate([prompt(u) for u in chunk], max_new_tokens,
                                    answer_prefix=PROFILE_PREFIX if grounded else "")
        seconds.append((time.perf_counter() - t0) / len(chunk))
        profiles.update(zip(chunk, texts, strict=True))
        print(f"  profiles {len(profiles)}/{len(users)}  {seconds[-1]:.1f} s/user", flush=True)
    return profiles, seconds


def read(reader: HFModel, profiles: dict[str, str | None], examples: Sequence[ProfileExample]) -> dict[str, Any]:
    """Option log-probs of every example under one profile kind, and the seconds each reading took."""
    from llmrec.tasks.profile import profile_downstream_prompt

    logps, seconds = [], []
    for ex in examples:
        t0 = time.perf_counter()
        options = list(ex.options or ())
        logps.append(score_options_cached(reader, profile_downstream_prompt(profiles[ex.user_id], ex), options))
        seconds.append(time.perf_counter() - t0)
    return {"logps": logps, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="eval/results/profiles_ml100k.json")
    p.add_argument("--users", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-items", type=int, default=20, help="history movies shown to the profile writer")
    p.add_argument("--max-new-tokens", type=int, default=96, help="profile length cap (PersonalLM.profile default)")
    p.add_argument("--gen-batch", type=int, default=8,
                   help="profiles generated per batch (1 = one plm.profile call per user; same prompt, greedy)")
    add_hardware_args(p)
    args = p.parse_args()
    apply_hardware_args(args)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from llmrec.data import load_dataset
    from llmrec.evaluation.models import HFModel
    from llmrec.io import write_json_atomic
    from llmrec.lm.personal import PersonalLM
    from llmrec.tasks.profile import (
        build_profile_tasks,
        majority_context_genre,
        mean_context_rating,
        template_profile,
    )

    t_start = time.perf_counter()
    data = load_dataset("ml-100k")
    rows = build_profile_tasks(data, split="test", seed=args.seed)
    users = sample_users(rows, args.users, args.seed)
    chosen = set(users)
    examples = [ex for ex in rows if ex.user_id in chosen]
    contexts = {ex.user_id: ex.context for ex in examples}  # test split: both rows share the context

    plm = PersonalLM.from_base("smollm2-135m", catalogue=data.items, dtype=args.dtype, vocabulary=data.vocabulary)
    reader = HFModel(loaded=(plm.model, plm.tokenizer))
    tok = plm.tokenizer

    written, gen_seconds, gen_wall = {}, {}, {}
    for kind, grounded in (("generated", False), ("generated_grounded", True)):
        t0 = time.perf_counter()
        written[kind], gen_seconds[kind] = generate_profiles(
            plm, reader, contexts, data, batch=args.gen_batch, max_items=args.max_items,
            max_new_tokens=args.max_new_tokens, grounded=grounded)
        gen_wall[kind] = time.perf_counter() - t0
    generated = written["generated_grounded"]
    profiles: dict[str, dict[str, str | None]] = {
        "none": dict.fromkeys(users),
        "template": {u: template_profile(contexts[u], data) for u in users},
        **written,
    }
    example_users = users[:N_EXAMPLES]
    batch_check = None
    if args.gen_batch > 1:  # does batching (left padding, bf16) change what the public API would have written?
        same = [plm.profile(contexts[u], data, max_items=args.max_items, max_new_tokens=args.max_new_tokens)
                == generated[u] for u in example_users]  # the default (grounded) writer
        batch_check = f"{sum(same)}/{len(same)} example profiles identical to one-by-one plm.profile calls"

    readings = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        readings[kind] = read(reader, profiles[kind], examples)
        print(f"  read {kind}: {time.perf_counter() - t0:.0f} s", flush=True)
    outcomes = {kind: outcomes_of(r["logps"], examples) for kind, r in readings.items()}
    no_profile = readings["none"]["logps"]
    calibrated = {kind: outcomes_of([lp - base for lp, base in zip(r["logps"], no_profile, strict=True)], examples)
                  for kind, r in readings.items()}

    genre_ex = [ex for ex in examples if ex.task == "next_genre"]
    rating_ex = [ex for ex in examples if ex.task == "rating"]
    def summary(o: dict[str, Any], base: dict[str, Any], kind: str) -> dict[str, Any]:
        res: dict[str, Any] = {
            "next_genre": {"accuracy": round(float(o["hits"].mean()), 4), "n": len(o["hits"])},
            "rating": {"mae_expected": round(float(o["err_expected"].mean()), 4),
                       "mae_argmax": round(float(o["err_argmax"].mean()), 4), "n": len(o["err_expected"])},
            "argmax_answers": {task: dict(c.most_common()) for task, c in o["picked"].items()},
        }
        if kind != "none":
            res["next_genre"]["delta_vs_none"] = delta(o["hits"], base["hits"], args.seed)
            res["rating"]["delta_vs_none_expected"] = delta(o["err_expected"], base["err_expected"], args.seed)
            res["rating"]["delta_vs_none_argmax"] = delta(o["err_argmax"], base["err_argmax"], args.seed)
        return res

    results: dict[str, Any] = {}
    for kind in KINDS:
        texts = [t for t in profiles[kind].values() if t]
        results[kind] = {
            **summary(outcomes[kind], outcomes["none"], kind),
            "calibrated": summary(calibrated[kind], calibrated["none"], kind),
            "profile_tokens_mean": round(float(np.mean([len(tok.encode(t, add_special_tokens=False))
                                                        for t in texts])), 1) if texts else 0.0,
            "reader_seconds_per_example_median": round(statistics.median(readings[kind]["seconds"]), 3),
        }
    first_line = "Movies this user watched"  # the writing prompt's opening: a profile starting so copies it
    for kind, texts in written.items():
        results[kind]["echoes_prompt_share"] = round(float(np.mean([texts[u].startswith(first_line)
                                                                    for u in users])), 4)
        results[kind]["generation_seconds_per_user"] = {
            "median_over_batches": round(statistics.median(gen_seconds[kind]), 2),
            "mean": round(gen_wall[kind] / len(users), 2), "batch": args.gen_batch}

    majority = [majority_context_genre(ex.context, data) for ex in genre_ex]
    means = [(m, float(ex.answer)) for ex in rating_ex if (m := mean_context_rating(ex.context)) is not None]
    references = {
        "note": "non-LLM references computed from the user's context alone; not profile kinds",
        "majority_context_genre_accuracy": round(float(np.mean([m == ex.answer for m, ex in
                                                                zip(majority, genre_ex, strict=True)])), 4),
        "mean_context_rating_mae": round(float(np.mean([abs(m - gold) for m, gold in means])), 4),
        "mean_context_rating_n": len(means),
    }
    out = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} .venv/bin/python -u "
                   + " ".join(sys.argv),
        "args": vars(args),
        "machine": {"cpu_cores": 2, "torch_threads": torch.get_num_threads(), "dtype": args.dtype, "device": str(reader.device),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "note": "shared machine: two training jobs ran concurrently on the 2 cores"},
        "model": "SmolLM2-135M-Instruct (offline default 'smollm2-135m', bf16), zero-shot; writer and reader",
        "design": "test split (history[:-1] -> history[-1]); reader scores options by log-likelihood "
                  "(genre: argmax of summed option log-probs; rating: argmax and softmax-expected over '1'..'5'); "
                  "primary rating metric: mae_expected; deltas are kind - none, paired by example, bootstrap "
                  "95% CI (1000 resamples); negative rating deltas = lower error = better; 'calibrated': option "
                  "log-probs minus the no-profile prompt's (contextual calibration, Zhao et al. 2021)",
        "users": len(users), "examples": {"next_genre": len(genre_ex), "rating": len(rating_ex)},
        "kinds": results,
        "references_no_llm": references,
        "generation_batch_check": batch_check,
        "example_profiles": [{"user_id": u, "template": profiles["template"][u],
                              "generated": written["generated"][u], "generated_grounded": generated[u]}
                             for u in example_users],
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json_atomic(args.out, out)
    os.chmod(args.out, 0o644)

    print(f"\n{len(users)} users, {len(genre_ex)} genre + {len(rating_ex)} rating examples; reader SmolLM2-135M")
    print(f"{'kind':<10} {'genre acc':>9} {'d vs none [95% CI]':>24} {'MAE exp':>8} {'d vs none [95% CI]':>24} "
          f"{'MAE argmax':>10} {'tokens':>6}")
    for kind, r in [(k, v) for k, v in results.items()] + [(k + "/cal", v["calibrated"]) for k, v in results.items()]:
        g, rt = r["next_genre"], r["rating"]

        def ci(d: dict[str, float] | None) -> str:
            return f"{d['value']:+.3f} [{d['ci_low']:+.3f},{d['ci_high']:+.3f}]" if d else "-"

        print(f"{kind:<10} {g['accuracy']:>9.3f} {ci(g.get('delta_vs_none')):>24} {rt['mae_expected']:>8.3f} "
              f"{ci(rt.get('delta_vs_none_expected')):>24} {rt['mae_argmax']:>10.3f} {r.get('profile_tokens_mean', '')!s:>6}")
    print(f"non-LLM references: majority context genre acc {references['majority_context_genre_accuracy']:.3f}, "
          f"mean context rating MAE {references['mean_context_rating_mae']:.3f}")
    for kind in written:
        print(f"{kind}: {results[kind]['generation_seconds_per_user']}, echoes prompt "
              f"{results[kind]['echoes_prompt_share']:.0%}")
    print(f"{batch_check}; wrote {args.out}")


if __name__ == "__main__":
    main()
