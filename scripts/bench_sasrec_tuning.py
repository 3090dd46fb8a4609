"""Re-tune the SASRec baseline's training budget and learning-rate schedule on ml-100k, over seeds: does the shipped
config (40 epochs, patience 8, constant lr) under-train it, and which budget reaches its best validation NDCG@10
fastest? Writes eval/results/sasrec_tuning_ml100k.json.

    OMP_NUM_THREADS=1 nohup nice -n 10 .venv/bin/python scripts/bench_sasrec_tuning.py \
        > runs/bench_sasrec_tuning.log 2>&1 &

Every variant is the shipped recipe config (sasrec/ml-100k) on the fast path (``--train.fast true``: the same model
and objective as the reference path, eval/results/sasrec_speed_ml100k.json "curves") plus the overrides in
VARIANTS, trained once per seed. Selection is on validation only: the variant with the highest mean best-validation
NDCG@10 over the seeds; its test figures are then compared with the shipped config's by a paired bootstrap over
users (per-user test NDCG@10 averaged over the seeds). The test curve after every epoch is a diagnostic (never used
for selection; its cost is excluded from the clocks). Each (variant, seed) run is kept under --state (resume).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "eval" / "results" / "sasrec_tuning_ml100k.json"
STATE = REPO / "runs" / "bench_sasrec_tuning"
TARGET = {"to_best_cpu_s": 60.0, "test_ndcg@10": 0.1018}
FAST_MAX_EPOCHS = 30  # the fast config (sasrec/ml-100k-fast) is selected among budgets this short

# The experiments as data: name -> recipe overrides on top of sasrec/ml-100k with --train.fast true. Every variant
# names its budget explicitly: the recipe defaults moved (to long_constant, selected here), and a finished run under
# --state is only reused when it trained with the settings its variant resolves to now.
VARIANTS: dict[str, dict[str, object]] = {
    "shipped": {"train.epochs": 40, "train.patience": 8},  # the config shipped before this benchmark
    "long_constant": {"train.epochs": 200, "train.patience": 30},
    "cosine_20": {"train.epochs": 20, "train.patience": 20, "train.schedule": "cosine", "train.warmup_epochs": 1},
    "cosine_40": {"train.epochs": 40, "train.patience": 40, "train.schedule": "cosine", "train.warmup_epochs": 1},
    "cosine_80": {"train.epochs": 80, "train.patience": 80, "train.schedule": "cosine", "train.warmup_epochs": 2},
    "cosine_20_lr6e-3": {"train.epochs": 20, "train.patience": 20, "train.schedule": "cosine",
                         "train.warmup_epochs": 1, "train.lr": 6e-3},
    # shorter routes to the 60 s target: validation only where a cosine run's best can be, bigger batches
    # (fewer, better-filled steps) at a higher lr, lighter dropout
    "cosine_40_valid_from_20": {"train.epochs": 40, "train.patience": 40, "train.schedule": "cosine",
                                "train.warmup_epochs": 1, "train.valid_from": 20},
    "cosine_40_bs128_lr6e-3": {"train.epochs": 40, "train.patience": 40, "train.schedule": "cosine",
                               "train.warmup_epochs": 2, "train.batch_size": 128, "train.lr": 6e-3},
    "cosine_30_bs128_lr1e-2": {"train.epochs": 30, "train.patience": 30, "train.schedule": "cosine",
                               "train.warmup_epochs": 2, "train.batch_size": 128, "train.lr": 1e-2},
    "cosine_40_bs64_lr5e-3": {"train.epochs": 40, "train.patience": 40, "train.schedule": "cosine",
                              "train.warmup_epochs": 1, "train.batch_size": 64, "train.lr": 5e-3},
    "cosine_40_dropout0.3": {"train.epochs": 40, "train.patience": 40, "train.schedule": "cosine",
                             "train.warmup_epochs": 1, "model.dropout": 0.3},
    "cosine_30_dropout0.3": {"train.epochs": 30, "train.patience": 30, "train.schedule": "cosine",
                             "train.warmup_epochs": 1, "model.dropout": 0.3},
    "cosine_20_dropout0.3": {"train.epochs": 20, "train.patience": 20, "train.schedule": "cosine",
                             "train.warmup_epochs": 1, "model.dropout": 0.3},
    "cosine_30_dropout0.2": {"train.epochs": 30, "train.patience": 30, "train.schedule": "cosine",
                             "train.warmup_epochs": 1, "model.dropout": 0.2},
}


def variant_configs(data, config_name: str, overrides: dict, seed: int):
    """The (SequenceEncoderConfig, PretrainConfig) a variant trains with for ``seed``."""
    from llmrec.recipes.config import load_config
    from llmrec.recipes.sasrec import SasrecRecipeConfig, encoder_configs

    config = load_config(SasrecRecipeConfig, config_name, {**overrides, "train.fast": True, "train.seed": seed})
    return encoder_configs(config, len(data.items))


def settings(model_cfg, train_cfg) -> dict:
    """What a stored run must match to be reused: the training config and the architecture."""
    import dataclasses

    # through JSON, as stored (tuples become lists)
    return json.loads(json.dumps({"train_config": train_cfg.to_dict(), "model_config": dataclasses.asdict(model_cfg)}))


def one_run(data, split, config_name: str, overrides: dict, seed: int) -> dict:
    from llmrec.users.pretrain import evaluate_examples, train_sequence_model

    model_cfg, train_cfg = variant_configs(data, config_name, overrides, seed)

    def test_ndcg(epoch, model) -> dict:
        return {"test_ndcg@10": evaluate_examples(model, split.test, protocols=("rated_removed",))[
            "rated_removed"].summary["ndcg@10"]}

    result = train_sequence_model(split, data.item_ids, model_cfg, train_cfg, on_epoch=test_ndcg)
    test = evaluate_examples(result.model, split.test, protocols=("rated_removed",))["rated_removed"]
    rows = [h for h in result.history if "valid_ndcg@10" in h]
    best = next(h for h in rows if h["epoch"] == result.best_epoch)
    return {
        **settings(model_cfg, train_cfg), "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "to_best_cpu_s": round(best["cpu_s"], 1), "to_best_wall_s": round(best["elapsed_s"], 1),
        "total_cpu_s": round(rows[-1]["cpu_s"], 1), "cpu_s_per_epoch": round(rows[-1]["cpu_s"] / len(rows), 2),
        "valid_ndcg@10": round(result.best_valid["ndcg@10"], 4), "test_ndcg@10": round(test["ndcg@10"], 4),
        "test_recall@10": round(test["recall@10"], 4),
        "valid_curve": [round(h["valid_ndcg@10"], 4) for h in rows],
        "test_curve": [round(h["test_ndcg@10"], 4) for h in rows],
        "per_user_test_ndcg@10": [round(float(x), 6) for x in test.per_example["ndcg@10"]],
    }


def recipe_run(folder: Path) -> dict:
    """A saved ``llmrec train sasrec`` run: its training settings and its test metrics (metrics.json)."""
    import yaml

    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    return {"folder": str(folder), "train": config["train"], "best_epoch": metrics["best_epoch"], "valid": metrics["valid_rated_removed"],
            "test": metrics["test"]["rated_removed"], "test_ci95_bootstrap": metrics["test_ci95_bootstrap"],
            "train_wall_s": metrics["train_wall_s"]}


def fast_recipe_runs(folders: list[Path]) -> dict:
    """The fast config's recipe runs (:func:`recipe_run` + CPU seconds to the best epoch from the saved history,
    the machine's allocator policy) and how many meet the issue-18 target."""
    by_seed = {}
    for folder in folders:
        run = recipe_run(folder)
        history = json.loads((folder / "meta.json").read_text(encoding="utf-8"))["history"]
        best = next(h for h in history if h["epoch"] == run["best_epoch"])
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        run.update(to_best_cpu_s=round(best["cpu_s"], 1), to_best_wall_s=round(best["elapsed_s"], 1),
                   allocator=info.get("machine", {}).get("allocator"), created=info.get("created"))
        by_seed[f"seed{run['train']['seed']}"] = run
    tests = [r["test"]["ndcg@10"] for r in by_seed.values()]
    times = [r["to_best_cpu_s"] for r in by_seed.values()]
    return {"runs": by_seed, "test_ndcg@10_mean": round(statistics.fmean(tests), 4),
            "to_best_cpu_s_median": statistics.median(times),
            "runs_meeting_target": sum(t >= TARGET["test_ndcg@10"] and c <= TARGET["to_best_cpu_s"]
                                       for t, c in zip(tests, times, strict=True)),
            "target_met_on_median_time_and_mean_test": statistics.median(times) <= TARGET["to_best_cpu_s"]
            and statistics.fmean(tests) >= TARGET["test_ndcg@10"]}


def write_fast_runs_only(folders: list[Path], out: Path, argv: list[str] | None) -> int:
    """The fast config's recipe runs alone (:func:`fast_recipe_runs`), with this machine's facts: the time-to-best
    target checked on a machine the sweep did not run on."""
    from llmrec.io import write_json_atomic
    from llmrec.runinfo import run_info

    if not folders:
        raise SystemExit("--fast-runs-only needs --fast-recipe-runs FOLDER ...")
    command = "python scripts/bench_sasrec_tuning.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record = {"benchmark": "SASRec fast config (sasrec/ml-100k-fast) recipe runs: CPU seconds to the best validation "
                           "epoch and test NDCG@10, per seed, one thread",
              "target_issue_18": TARGET, "fast_recipe_runs": fast_recipe_runs(folders)}
    write_json_atomic(out, {**record, **run_info(None, command=command)})
    return 0


def summarise(runs: dict[str, dict[int, dict]], fast_max_epochs: int = FAST_MAX_EPOCHS) -> dict:
    from llmrec.evaluation.ranking import bootstrap_ci

    def mean(name: str, key: str) -> float:
        return round(statistics.fmean(r[key] for r in runs[name].values()), 4)

    table = {}
    for name, by_seed in runs.items():
        tests = [r["test_ndcg@10"] for r in by_seed.values()]
        table[name] = {
            "seeds": sorted(by_seed), "valid_ndcg@10_mean": mean(name, "valid_ndcg@10"),
            "test_ndcg@10_mean": mean(name, "test_ndcg@10"),
            "test_ndcg@10_sd": round(statistics.stdev(tests), 4) if len(tests) > 1 else None,
            "test_ndcg@10_by_seed": tests, "best_epoch_by_seed": [r["best_epoch"] for r in by_seed.values()],
            "to_best_cpu_s_median": round(statistics.median(r["to_best_cpu_s"] for r in by_seed.values()), 1),
            "total_cpu_s_median": round(statistics.median(r["total_cpu_s"] for r in by_seed.values()), 1),
            "runs_meeting_target": sum(r["to_best_cpu_s"] <= TARGET["to_best_cpu_s"]
                                       and r["test_ndcg@10"] >= TARGET["test_ndcg@10"] for r in by_seed.values()),
        }
    selected = max(table, key=lambda n: table[n]["valid_ndcg@10_mean"])
    # the fast config: the best mean validation among budgets of at most fast_max_epochs (also on validation only)
    short = [n for n, by_seed in runs.items()
             if all(r.get("train_config", {}).get("max_epochs", 10**9) <= fast_max_epochs for r in by_seed.values())]
    fast = max(short, key=lambda n: table[n]["valid_ndcg@10_mean"]) if short else None
    out = {"table": table, "selected_on_validation": selected, "selected": {"variant": selected, **table[selected]},
           "selected_fast": ({"variant": fast, "max_epochs_allowed": fast_max_epochs, **table[fast]} if fast
                             else None),
           "variants_meeting_target_every_seed": [n for n, row in table.items()
                                                  if row["runs_meeting_target"] == len(row["seeds"])]}
    if "shipped" in runs and selected != "shipped":
        seeds = sorted(set(runs[selected]) & set(runs["shipped"]))
        per_user = {n: np.mean([runs[n][s]["per_user_test_ndcg@10"] for s in seeds], axis=0)
                    for n in (selected, "shipped")}
        diff = per_user[selected] - per_user["shipped"]
        lo, hi = bootstrap_ci(diff)
        out["selected_vs_shipped_test_ndcg@10"] = {
            "seeds": seeds, "difference": round(float(diff.mean()), 4), "ci95_paired_bootstrap": [round(lo, 4),
                                                                                                  round(hi, 4)]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sasrec/ml-100k")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ", ".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--state", type=Path, default=STATE, help="finished runs are kept here (resume)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--recipe-runs", type=Path, nargs="*", default=[],
                    help="`llmrec train sasrec` output folders of the selected config (e.g. seeds 0 and 1, the "
                         "models fusion uses): their metrics.json and config are added to the record")
    ap.add_argument("--fast-recipe-runs", type=Path, nargs="*", default=[],
                    help="`llmrec train sasrec --config sasrec/ml-100k-fast` output folders (one per seed): recorded "
                         "with their CPU seconds to the best epoch, measured with the code of the run")
    ap.add_argument("--fast-runs-only", action="store_true",
                    help="write only the --fast-recipe-runs record to --out (another machine's runs of the fast "
                         "config, without the sweep)")
    args = ap.parse_args(argv)
    if args.fast_runs_only:
        return write_fast_runs_only(args.fast_recipe_runs, args.out, argv)

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.hardware import load_at_end, load_at_start, set_threads
    from llmrec.io import write_json_atomic
    from llmrec.runinfo import run_info

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = set_threads(1)
    load = load_at_start()
    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    args.state.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 nice -n 10 python scripts/bench_sasrec_tuning.py " + " ".join(sys.argv[1:])
    runs: dict[str, dict[int, dict]] = {}

    def write() -> None:  # after every run, so a stopped benchmark still leaves what it measured
        record = {
            "benchmark": "SASRec training budget and learning-rate schedule re-tuned on ml-100k validation, over "
                         "seeds, fast path, one thread",
            "command": command, "recipe_config": args.config, "threads": threads, "target_issue_18": TARGET,
            "variants": {n: VARIANTS[n] for n in names},
            "notes": ["Every variant: the recipe config + --train.fast true + the overrides; selection on the mean "
                      "best-validation NDCG@10 over seeds, test reported (rated items removed).",
                      "CPU seconds exclude the per-epoch test diagnostic; on a shared machine they are the "
                      "comparable figure, but a loaded machine still inflates them: compare cpu_s_per_epoch of "
                      "the runs (each run is stored as measured, the record of an invocation only re-summarises "
                      "the stored ones).",
                      "fast_recipe_runs: `llmrec train sasrec --config sasrec/ml-100k-fast` per seed, timed by "
                      "the code of that run (its allocator policy is recorded)."],
            **summarise(runs),
            "runs": {n: {s: {k: v for k, v in r.items() if k != "per_user_test_ndcg@10"} for s, r in by_seed.items()}
                     for n, by_seed in runs.items()},
            "load": load_at_end(load),
        }
        if args.recipe_runs:
            runs_by_seed = [recipe_run(d) for d in args.recipe_runs]
            record["recipe_runs"] = {f"seed{r['train']['seed']}": r for r in runs_by_seed}
        if args.fast_recipe_runs:
            record["fast_recipe_runs"] = fast_recipe_runs(args.fast_recipe_runs)
        write_json_atomic(args.out, {**record, **run_info(None, command=command)})

    for seed in seeds:  # seed-major: a stopped run leaves every variant with the same seeds done
        for name in names:
            path = args.state / f"{name}_seed{seed}.json"
            if path.is_file():
                stored = json.loads(path.read_text(encoding="utf-8"))
                want = settings(*variant_configs(data, args.config, VARIANTS[name], seed))
                # runs stored before the architecture was recorded carry the training config only
                if all(stored.get(key, want[key]) == want[key] for key in want):
                    runs.setdefault(name, {})[seed] = stored
                    continue
                print(f"{path}: trained with other settings than {name} resolves to now; training again",
                      flush=True)
            t0 = time.perf_counter()
            run = one_run(data, split, args.config, VARIANTS[name], seed)
            run["measured_wall_s"] = round(time.perf_counter() - t0, 1)
            write_json_atomic(path, run)
            runs.setdefault(name, {})[seed] = run
            print(f"{name} seed {seed}: best epoch {run['best_epoch']}/{run['epochs_run']}, valid "
                  f"{run['valid_ndcg@10']}, test {run['test_ndcg@10']}, to best {run['to_best_cpu_s']} CPU-s",
                  flush=True)
            write()
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
