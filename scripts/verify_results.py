"""Re-run a declared subset of the committed results and report each figure next to the committed one.

    python scripts/verify_results.py --cheap                        # CI: popularity, rkmeans IDs, harness baselines (~1 min)
    OMP_NUM_THREADS=1 python scripts/verify_results.py --out eval/results/verify.json   # + SASRec, RQ-VAE (~10 min)

Each check names the committed JSON figures it reproduces and an absolute tolerance: exact for deterministic
counting (popularity, rating baselines), small for quantizers (faiss / torch versions move k-means and RQ-VAE a
little), 0.01 NDCG for SASRec (one seed; differences below that are noise at 943 users). Exit status 1 when a
figure is outside its tolerance. Needs the offline defaults in the cache (`llmrec resources fetch`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS_DIR = REPO / "eval" / "results"


@dataclass(frozen=True)
class Check:
    """A re-run: ``run(workdir)`` -> measured figures; ``committed`` maps each figure to ``"file:json/path"``."""

    name: str
    what: str
    cheap: bool
    tolerance: float
    committed: dict[str, str]
    run: Callable[[Path], dict[str, float]]


def committed_value(ref: str, results_dir: Path = RESULTS_DIR) -> Any:
    stem, _, path = ref.partition(":")
    node: Any = json.loads((results_dir / f"{stem}.json").read_text(encoding="utf-8"))
    for part in path.split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def compare(measured: dict[str, float], committed: dict[str, float], tolerance: float) -> list[dict[str, Any]]:
    """One row per committed figure: both values, the difference and whether it is within the tolerance."""
    rows = []
    for figure, want in committed.items():
        got = measured.get(figure)
        diff = None if got is None else round(float(got) - float(want), 6)
        rows.append({"figure": figure, "committed": want, "measured": got, "diff": diff, "tolerance": tolerance,
                     "ok": diff is not None and abs(diff) <= tolerance})
    return rows


def _cli(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "llmrec.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llmrec {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


# ---- the checks -------------------------------------------------------------------------------------------------

def run_popularity(_: Path) -> dict[str, float]:
    from llmrec.data import leave_one_out, load_dataset
    from llmrec.evaluation.ranking import full_catalogue_metrics, summaries
    from llmrec.users.baselines import Popularity

    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    out = {}
    for stage, examples in (("valid", split.valid), ("test", split.test)):
        pop = Popularity.from_split(split, stage, data.item_ids)
        res = full_catalogue_metrics(pop.scores(len(examples)), data.item_ids, [e.target for e in examples],
                                     [e.history.item_ids for e in examples])
        for metric, value in summaries(res)["rated_removed"].items():
            out[f"{stage}/{metric}"] = value
    return out


def _sid_diagnostics(kind: str) -> dict[str, float]:
    from llmrec.data import load_dataset
    from llmrec.items.build import SemanticIdConfig, build_semantic_ids
    from llmrec.items.quantizers import QuantizerConfig

    data = load_dataset("ml-100k")
    _, report = build_semantic_ids(data, SemanticIdConfig(quantizer=QuantizerConfig(kind=kind)), show_progress=False)
    out = {k: report[k] for k in ("unique_fraction", "collision_rate", "collision_rate_nearest", "reconstruction_rel")}
    # the committed file predates the category rename: genre coherence = category coherence on ml-100k
    out["genre_coherence"] = report.get("category_coherence", report.get("genre_coherence"))
    for level, value in enumerate(report["utilization"]):
        out[f"utilization/{level}"] = value
    return out


def run_harness_baselines(work: Path) -> dict[str, float]:
    _cli(["eval", "run", "--model", "baseline:user-mean", "--model", "baseline:global-mean", "--tasks",
          "ml100k_rating", "--sample", "100", "--seed", "0", "--n-boot", "1000", "--no-report", "--no-progress",
          "--out", str(work / "harness")], work)
    results = json.loads((work / "harness" / "results.json").read_text(encoding="utf-8"))
    variants = results["tasks"]["ml100k_rating"]["variants"] if "tasks" in results else results["ml100k_rating"]
    out = {}
    for name in ("baseline:user-mean", "baseline:global-mean"):
        metrics = variants[name]["metrics"] if "metrics" in variants[name] else variants[name]
        for m in ("mae", "rmse"):
            for key in ("value", "ci_low", "ci_high"):
                out[f"{name}/{m}" + ("" if key == "value" else f"/{key}")] = metrics[m][key]
    return out


def run_sasrec(work: Path) -> dict[str, float]:
    _cli(["train", "sasrec", "--config", "sasrec/ml-100k", "--threads", "1", "--out", str(work / "sasrec")], work)
    metrics = json.loads((work / "sasrec" / "metrics.json").read_text(encoding="utf-8"))
    return {f"test/{m}": metrics["test"]["rated_removed"][m] for m in ("recall@10", "ndcg@10", "recall@5", "ndcg@5")}


def _metrics(prefix: str, stages: tuple[str, ...], metrics: tuple[str, ...], ref: str) -> dict[str, str]:
    return {f"{s}/{m}": f"{ref}/{s}/rated_removed/{m}" for s in stages for m in metrics}


RANKING = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr")
SID_FIGURES = ("unique_fraction", "collision_rate", "collision_rate_nearest", "reconstruction_rel", "genre_coherence",
               "utilization/0", "utilization/1", "utilization/2")
CHECKS = [
    Check("popularity", "exact-count popularity on the ml-100k leave-one-out split (valid and test, rated removed)",
          True, 1e-4, _metrics("", ("valid", "test"), RANKING, "baselines_ml100k:popularity"), run_popularity),
    Check("semantic_ids_rkmeans", "llmrec items build --data ml-100k (rkmeans, 3 x 256, default config): diagnostics",
          True, 0.02, {f: f"semantic_ids:ml-100k/rkmeans/{f}" for f in SID_FIGURES},
          lambda _: _sid_diagnostics("rkmeans")),
    Check("harness_rating_baselines", "llmrec eval run --model baseline:user-mean --model baseline:global-mean "
          "--tasks ml100k_rating --sample 100 --seed 0", True, 1e-3,
          {f"{b}/{m}" + ("" if k == "value" else f"/{k}"): f"harness_ml100k:variants/{b}/metrics/{m}/{k}"
           for b in ("baseline:user-mean", "baseline:global-mean") for m in ("mae", "rmse")
           for k in ("value", "ci_low", "ci_high")}, run_harness_baselines),
    Check("semantic_ids_rqvae", "RQ-VAE semantic IDs on ml-100k (default config, 100 epochs, early stop): diagnostics",
          False, 0.05, {f: f"semantic_ids:ml-100k/rqvae/{f}" for f in SID_FIGURES},
          lambda _: _sid_diagnostics("rqvae")),
    Check("sasrec", "llmrec train sasrec --config sasrec/ml-100k --threads 1 (seed 0): test, rated removed",
          False, 0.01, {f"test/{m}": f"sasrec_tuning_ml100k:recipe_runs/seed0/test/{m}"
                        for m in ("recall@10", "ndcg@10", "recall@5", "ndcg@5")}, run_sasrec),
]


def verify(cheap: bool, only: list[str] | None = None, results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    from llmrec.runinfo import run_info

    chosen = [c for c in CHECKS if (c.cheap or not cheap) and (not only or c.name in only)]
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        for check in chosen:
            work = Path(tmp) / check.name
            work.mkdir()
            start = time.perf_counter()
            measured = check.run(work)
            committed = {f: committed_value(ref, results_dir) for f, ref in check.committed.items()}
            rows = compare(measured, committed, check.tolerance)
            checks.append({"name": check.name, "what": check.what, "seconds": round(time.perf_counter() - start, 1),
                           "ok": all(r["ok"] for r in rows), "figures": rows})
            print(f"{check.name}: {'ok' if checks[-1]['ok'] else 'DIFFERS'} ({checks[-1]['seconds']} s)", flush=True)
            for r in rows:
                print(f"  {r['figure']:<34} committed {r['committed']!s:<22} measured {r['measured']!s:<22} "
                      f"diff {r['diff']!s:<12} {'ok' if r['ok'] else f'> {check.tolerance}'}", flush=True)
    info = run_info(None, command="python scripts/verify_results.py" + (" --cheap" if cheap else ""))
    return {"benchmark": "verify", "mode": "cheap" if cheap else "full", "command": info["command"],
            "created": info["created"], "ok": all(c["ok"] for c in checks), "checks": checks,
            "machine": info["machine"], "versions": info["versions"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cheap", action="store_true", help="only the checks that take seconds (CI)")
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CHECKS], help="run just these checks")
    parser.add_argument("--out", type=Path, help="write the report here (eval/results/verify.json for a full run)")
    args = parser.parse_args(argv)
    report = verify(args.cheap, args.only)
    if args.out:
        from llmrec.io import write_json_atomic

        write_json_atomic(args.out, report)
    print("all figures within tolerance" if report["ok"] else "some figures differ (see above)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
