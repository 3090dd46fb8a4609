"""Benchmark the evaluation harness on ml100k_rating and time its scoring and retrieval.

    .venv/bin/python scripts/bench_harness.py                      # ~15-25 min on 2 shared CPU cores
    .venv/bin/python scripts/bench_harness.py --users 40 --quick   # smoke run

Writes eval/results/harness_ml100k.json (+ report.html in --out) and prints a markdown table: the default
model (SmolLM2-135M-Instruct, bf16) with no profile vs RAG-k (BM25 / dense / recency / random), scored by
option probabilities (expected rating over "1".."5", raw and batch-calibrated) and by free generation,
beside the user-mean / global-mean baselines; MAE/RMSE with 95 % bootstrap CIs and parse-failure rates.
Predictions are cached in --out, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmrec.cli_args import add_hardware_args, apply_hardware_args  # noqa: E402
from llmrec.evaluation.runner import RunConfig, run  # noqa: E402
from llmrec.io import write_json_atomic  # noqa: E402


def time_scoring(n: int = 10_000, repeats: int = 3) -> dict[str, float]:
    """Median seconds for `eval score` on n synthetic predictions per output type (CIs off and on)."""
    from llmrec.evaluation.scoring import score_files

    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    tags = ["comedy", "action", "classic", "romance", "sci-fi"]
    cases = {
        "LaMP_3": (lambda: str(rng.randint(1, 5)), lambda: rng.choice(["1", "2", "3", "4", "5", "4.5", "n/a"])),
        "LaMP_2": (lambda: rng.choice(tags), lambda: rng.choice(tags + ["nonsense"])),
        "LaMP_4": (lambda: " ".join(rng.choices(words, k=10)), lambda: " ".join(rng.choices(words, k=10))),
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task, (gold, pred) in cases.items():
            g = {"task": task, "golds": [{"id": str(i), "output": gold()} for i in range(n)]}
            p = {"task": task, "golds": [{"id": str(i), "output": pred()} for i in range(n)]}
            gp, pp = Path(tmp) / "g.json", Path(tmp) / "p.json"
            gp.write_text(json.dumps(g))
            pp.write_text(json.dumps(p))
            for n_boot in (0, 1000):
                secs = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    score_files(task, gp, pp, n_boot=n_boot)
                    secs.append(time.perf_counter() - t)
                out[f"{task}_{n}_boot{n_boot}_s"] = round(statistics.median(secs), 3)
    return out


def time_retrieval(n_questions: int = 1000, profile_size: int = 100) -> dict[str, float]:
    """Seconds to pick k=5 of 100 profile items for 1,000 questions (real ml-100k profiles; synthetic text)."""
    from llmrec.evaluation.builders import build_examples
    from llmrec.evaluation.tasks import load_registry
    from llmrec.retrieval import ProfileDoc, get_retriever, select_profile

    spec = load_registry().tasks["ml100k_rating"]
    exs = [e for e in build_examples(spec) if len(e.docs) >= profile_size]
    exs = (exs * (n_questions // max(len(exs), 1) + 1))[:n_questions]
    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    synth = [([ProfileDoc(" ".join(rng.choices(words, k=40)), j) for j in range(profile_size)],
              " ".join(rng.choices(words, k=15))) for _ in range(n_questions)]
    out = {"n_questions": n_questions, "profile_size": profile_size, "ml100k_users_with_100_items": len(set(
        e.user_id for e in exs))}
    for name in ("bm25", "recency", "random", "dense"):
        r = get_retriever(name)
        t = time.perf_counter()
        if hasattr(r, "prepare"):
            r.prepare([x for e in exs for x in [e.query] + [d.text for d in e.docs[-profile_size:]]])
        t_prep = time.perf_counter() - t
        t = time.perf_counter()
        for i, e in enumerate(exs):
            select_profile(r, e.query, e.docs[-profile_size:], 5, 256, key=str(i))
        out[f"{name}_ml100k_s"] = round(time.perf_counter() - t, 3)
        if name == "dense":
            out["dense_encode_s"] = round(t_prep, 3)
        if name == "bm25":
            r = get_retriever(name)
            t = time.perf_counter()
            for i, (docs, q) in enumerate(synth):
                select_profile(r, q, docs, 5, 256, key=str(i))
            out["bm25_synthetic_40_token_docs_s"] = round(time.perf_counter() - t, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "harness_ml100k"))
    ap.add_argument("--results", default=str(ROOT / "eval/results/harness_ml100k.json"))
    ap.add_argument("--quick", action="store_true", help="skip the free-generation run")
    ap.add_argument("--k-sweep", default="", help="extra BM25 k values for the metric-vs-k plot, e.g. 1,5")
    ap.add_argument("--timings-only", action="store_true",
                    help="only the scoring and retrieval timings -> eval/results/harness_timings.json")
    add_hardware_args(ap)
    args = ap.parse_args()
    if args.timings_only:
        import platform

        timing = {"command": "python scripts/bench_harness.py --timings-only",
                  "machine": {"cpus": 2, "python": platform.python_version(),
                              "note": "run with no other job on the machine"},
                  "scoring": time_scoring(), "retrieval": time_retrieval()}
        write_json_atomic(ROOT / "eval/results/harness_timings.json", timing)
        print(json.dumps(timing, indent=1))
        return
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    apply_hardware_args(args)  # the committed figures ran in bf16 (an AMX CPU): --dtype bf16 reproduces them
    t_all = time.perf_counter()
    common = dict(out=args.out, model="smollm2-135m", sample=args.users, dtype=args.dtype, n_boot=1000, seed=0,
                  progress=False, report=False)
    chat, completion = "ml100k_rating", "ml100k_rating_completion"
    runs = [
        RunConfig(tasks=(chat,), **common, retrievers=("none", "bm25", "dense", "recency", "random"), ks=(args.k,),
                  method="score_options", baselines=("user-mean", "global-mean")),
        RunConfig(tasks=(completion,), **common, retrievers=("none", "bm25", "recency"), ks=(args.k,),
                  method="score_options"),
    ]
    if not args.quick:
        runs.append(RunConfig(tasks=(chat,), **common, retrievers=("none",), method="generate"))
    if args.k_sweep:
        ks = tuple(int(k) for k in args.k_sweep.split(","))
        runs.append(RunConfig(tasks=(completion,), **common, retrievers=("recency",), ks=ks, method="score_options"))
    merged: dict = {}
    for cfg in runs:
        res = run(cfg)
        if not merged:
            merged = res
        for task, tres in res["tasks"].items():
            merged["tasks"].setdefault(task, tres)["variants"].update(tres["variants"])
    # Free generation is also scored leniently (first number in the text) from the same predictions.
    from llmrec.evaluation.scoring import score_files

    for task, tres in merged["tasks"].items():
        task_dir = Path(args.out) / task
        for name in [n for n in tres["variants"] if n.endswith("/gen")]:
            pred = task_dir / f"{name.replace('/', '_')}.predictions.json"
            res = score_files(task, task_dir / "golds.json", pred, mode="lenient")
            tres["variants"][name + " (lenient)"] = {"retriever": "none", "k": 0, "method": "generate, lenient",
                                                     "metrics": res["metrics"]}
    from llmrec.evaluation.report import write_report

    write_report(merged, Path(args.out) / "report.html")
    # Gain of the best personalized variant over no profile with the same prompt and method.
    gains = []
    for task, tres in merged["tasks"].items():
        vs = tres["variants"]
        for name, row in vs.items():
            if name.startswith(("baseline", "no-profile")) or "/" not in name:
                continue
            ref = "no-profile/" + name.split("/", 1)[1]
            if ref in vs:
                mae, ref_mae = row["metrics"]["mae"]["value"], vs[ref]["metrics"]["mae"]["value"]
                gains.append({"task": task, "variant": name, "mae": mae, "no_profile": ref, "no_profile_mae": ref_mae,
                              "mae_gain": ref_mae - mae, "mae_gain_relative": (ref_mae - mae) / ref_mae})
    gains.sort(key=lambda g: g["mae"])
    summary = {"best_personalized": gains[0] if gains else None,
               "largest_gain": max(gains, key=lambda g: g["mae_gain"]) if gains else None, "all_gains": gains}
    variants = {f"{'completion: ' if t == completion else ''}{n}": v
                for t, tres in merged["tasks"].items() for n, v in tres["variants"].items()}
    out = {
        "command": " ".join(["python scripts/bench_harness.py", f"--users {args.users}", f"--k {args.k}"]
                            + (["--quick"] if args.quick else []) + ([f"--k-sweep {args.k_sweep}"] if args.k_sweep else [])),
        "machine": {"cpus": "2 cores, shared with other jobs (timings are noisy)", "torch_threads":
                    torch.get_num_threads(), "device": "cpu", "dtype": args.dtype},
        "versions": merged["versions"],
        "protocol": f"ml100k_rating (chat prompt) and ml100k_rating_completion (completion prompt, no chat template), "
                    f"leave-one-out test rating of {args.users} users (seeded sample, seed 0); "
                    f"profile = the user's earlier ratings, k={args.k} retrieved within 256 whitespace tokens; "
                    "95% percentile bootstrap CIs (1000 resamples, seed 0)",
        "summary": summary,
        "variants": {n: {"method": v["method"], "metrics": v["metrics"], "timings": v.get("timings", {})}
                     for n, v in variants.items()},
        "timing": {"scoring": time_scoring(), "retrieval": time_retrieval()},
        "total_s": round(time.perf_counter() - t_all, 1),
    }
    write_json_atomic(args.results, out)
    print("| variant | MAE [95% CI] | RMSE [95% CI] | parse failures |\n|---|---|---|---|")
    for n, v in variants.items():
        m = v["metrics"]
        print(f"| {n} | {m['mae']['value']:.3f} [{m['mae']['ci_low']:.3f}, {m['mae']['ci_high']:.3f}] | "
              f"{m['rmse']['value']:.3f} [{m['rmse']['ci_low']:.3f}, {m['rmse']['ci_high']:.3f}] | "
              f"{m['parse_failure_rate']['value']:.1%} |")
    print(json.dumps(summary))
    print(json.dumps(out["timing"]))


if __name__ == "__main__":
    main()
