"""Classical recommendation baselines on MovieLens-100k: exact-count popularity and a tuned SASRec (CE loss).

    nohup .venv/bin/python scripts/bench_baselines.py > /tmp/bench_baselines.log 2>&1 &

Protocol: per-user chronological leave-one-out, all 1,682 items ranked, both protocols (rated items removed =
main, kept). SASRec is tuned on VALIDATION NDCG@10 only, by coordinate ascent from a base config (one factor
at a time, a change is kept only if validation improves); test is reported for the selected config, and for
the same config with frozen MiniLM item text vectors added. Writes eval/results/baselines_ml100k.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "eval" / "results" / "baselines_ml100k.json"
BASE = {"d_model": 64, "n_layers": 2, "dropout": 0.2, "max_len": 50, "lr": 3e-3, "windows": "last"}
# one factor at a time, in this order; each alternative is tried against the best config so far
AXES = [("dropout", [0.5]), ("d_model", [128]), ("n_layers", [1]), ("max_len", [200]), ("lr", [1e-3]),
        ("windows", ["all"])]
MODEL_KEYS = ("d_model", "n_layers", "dropout", "max_len")
CORNAC = {"model": "cornac SASRec (ANCHORS.md, same protocol)", "recall@5": 0.1135, "recall@10": 0.1750,
          "ndcg@5": 0.0740, "ndcg@10": 0.0937}


def popularity(split, ids) -> dict:
    from llmrec.evaluation.ranking import full_catalogue_metrics, summaries
    from llmrec.users.baselines import Popularity

    out = {}
    for stage, examples in (("valid", split.valid), ("test", split.test)):
        pop = Popularity.from_split(split, stage, ids)
        res = full_catalogue_metrics(pop.scores(len(examples)), ids, [e.target for e in examples],
                                     [e.history.item_ids for e in examples])
        out[stage] = summaries(res)
    return out


def train(split, ids, params: dict, args, vectors=None):
    from llmrec.users.pretrain import PretrainConfig, train_sequence_model
    from llmrec.users.sequence import SequenceEncoderConfig

    model_cfg = SequenceEncoderConfig(n_items=len(ids), n_heads=2, item_vector_dim=0 if vectors is None else
                                      int(vectors.shape[1]), **{k: params[k] for k in MODEL_KEYS})
    train_cfg = PretrainConfig(lr=params["lr"], windows=params["windows"], batch_size=32, weight_decay=0.1,
                               max_epochs=args.max_epochs, patience=args.patience, seed=args.seed)
    return train_sequence_model(split, ids, model_cfg, train_cfg, vectors), model_cfg, train_cfg


def trial_row(params: dict, result) -> dict:
    return {**params, "valid_ndcg@10": round(result.best_valid["ndcg@10"], 4),
            "valid_recall@10": round(result.best_valid["recall@10"], 4), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "train_wall_s": round(result.wall_s, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-text", action="store_true", help="skip the MiniLM item-vector variant")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    import numpy as np  # heavy imports after parsing: --help stays instant
    import torch

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.evaluation.ranking import summaries
    from llmrec.io import write_json_atomic
    from llmrec.users.pretrain import evaluate_examples

    torch.set_num_threads(args.threads)
    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    ids = data.item_ids
    pop = popularity(split, ids)
    print("popularity test:", json.dumps(pop["test"]), flush=True)

    tuning, best, best_res = [], dict(BASE), None
    best_res = train(split, ids, best, args)
    tuning.append(trial_row(best, best_res[0]))
    print("trial", tuning[-1], flush=True)
    for name, values in AXES:
        for value in values:
            params = {**best, name: value}
            res = train(split, ids, params, args)
            tuning.append(trial_row(params, res[0]))
            print("trial", tuning[-1], flush=True)
            if res[0].best_valid["ndcg@10"] > best_res[0].best_valid["ndcg@10"]:
                best, best_res = params, res
    result, model_cfg, train_cfg = best_res
    sasrec = {"params": best, "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
              "parameters": result.model.num_parameters(), "valid": {k: round(v, 4) for k, v in result.best_valid.items()},
              "test": summaries(evaluate_examples(result.model, split.test)), "best_epoch": result.best_epoch,
              "epochs_run": result.epochs_run, "train_wall_s": round(result.wall_s, 1),
              "curve_valid_ndcg@10": [round(h["valid_ndcg@10"], 4) for h in result.history]}
    print("sasrec test:", json.dumps(sasrec["test"]), flush=True)

    text = None
    if not args.no_text:
        from llmrec.items.encoders import encode_items

        t0 = time.perf_counter()
        vectors = torch.from_numpy(encode_items(data, show_progress=False))
        enc_s = time.perf_counter() - t0
        res, _, _ = train(split, ids, best, args, vectors)
        text = {"params": best, "item_vectors": "all-MiniLM-L6-v2 (frozen, projected, added to the ID embedding)",
                "encode_s": round(enc_s, 1), "valid": {k: round(v, 4) for k, v in res.best_valid.items()},
                "test": summaries(evaluate_examples(res.model, split.test)), "best_epoch": res.best_epoch,
                "epochs_run": res.epochs_run, "train_wall_s": round(res.wall_s, 1)}
        print("sasrec+text test:", json.dumps(text["test"]), flush=True)

    import transformers

    report = {
        "benchmark": "baselines_ml100k",
        "command": "nohup .venv/bin/python scripts/bench_baselines.py > /tmp/bench_baselines.log 2>&1 &",
        "protocol": "per-user chronological leave-one-out (last = test, second-to-last = validation), 943 users, "
                    "all 1,682 items ranked; rated_removed = the user's history items cannot be recommended (main; "
                    "ml-100k has no repeat ratings), rated_kept = nothing removed; ties by catalogue index; MRR from "
                    "the full rank; model selection and early stopping on validation NDCG@10 (rated removed) only",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "note": "shared machine: other jobs ran on the same 2 cores, "
                    "so wall times are noisy upper bounds"},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "transformers": transformers.__version__},
        "seed": args.seed,
        "popularity": {"counts": "exact: valid = training histories; test = training histories + validation items",
                       **pop},
        "sasrec": sasrec,
        "sasrec_text": text,
        "tuning": {"method": "coordinate ascent on validation NDCG@10 from base", "base": BASE,
                   "axes": [{"name": n, "values": v} for n, v in AXES],
                   "fixed": {"n_heads": 2, "ffn_mult": 4, "batch_size": 32, "weight_decay": 0.1,
                             "max_epochs": args.max_epochs, "patience": args.patience, "optimizer": "AdamW"},
                   "trials": tuning},
        "reference": CORNAC,
    }
    write_json_atomic(args.out, report)
    print(markdown(report))


def markdown(r: dict) -> str:
    rows = [("popularity (exact counts)", r["popularity"]["test"], None),
            ("SASRec (CE, tuned on validation)", r["sasrec"]["test"], r["sasrec"]["train_wall_s"])]
    if r.get("sasrec_text"):
        rows.append(("SASRec + MiniLM item vectors", r["sasrec_text"]["test"], r["sasrec_text"]["train_wall_s"]))
    lines = ["| model | R@5 | R@10 | N@5 | N@10 | MRR | N@10 (rated kept) | train s |", "|---|---|---|---|---|---|---|---|"]
    for name, t, wall in rows:
        m, k = t["rated_removed"], t["rated_kept"]
        lines.append(f"| {name} | {m['recall@5']:.4f} | {m['recall@10']:.4f} | {m['ndcg@5']:.4f} | {m['ndcg@10']:.4f} "
                     f"| {m['mrr']:.4f} | {k['ndcg@10']:.4f} | {wall if wall is not None else '-'} |")
    c = r["reference"]
    lines.append(f"| {c['model']} | {c['recall@5']:.4f} | {c['recall@10']:.4f} | {c['ndcg@5']:.4f} | "
                 f"{c['ndcg@10']:.4f} | - | 0.0541 | 395 |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
