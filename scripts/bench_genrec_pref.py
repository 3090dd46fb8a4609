"""The preference-aligned generative recommender against the supervised one, SASRec and the SASRec-fused hybrid.

    llmrec train genrec-pref --config smollm2-135m/genrec-pref --init adapters/trained/genrec-cf \\
        --out adapters/trained/genrec-cf-pref
    llmrec train sasrec --config sasrec/ml-100k --out adapters/trained/sasrec
    llmrec train sasrec --config sasrec/ml-100k --train.seed 1 --out adapters/trained/sasrec-seed1
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 scripts/bench_genrec_pref.py --threads 1 \\
        --supervised adapters/trained/genrec-cf --aligned adapters/trained/genrec-cf-pref \\
        --sasrec adapters/trained/sasrec adapters/trained/sasrec-seed1 --out eval/results/genrec_pref_ml100k.json

Protocol (ml-100k leave-one-out, history items excluded, trie-constrained beam search): the aligned model's
checkpoint was chosen by the recipe on validation NDCG@10 (its ``results.json`` curve is copied in); the weight of
its shallow fusion with the SASRec ensemble (the renormalised mean of the ``--sasrec`` models' log-probabilities)
is chosen here on validation over ``--prior-weights``; the supervised model's fusion uses ``--supervised-weight``
(2: the committed hybrid's validation choice, eval/results/genrec_fusion_ensemble_ml100k.json). Test is scored
once for each list, and every claim is a paired bootstrap 95 % interval of the per-user NDCG@10 difference. Under
``torchrun`` / ``accelerate launch`` the users are split across the processes (same metrics); rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from llmrec.cli_args import add_hardware_args, apply_hardware_args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supervised", required=True, help="the supervised PersonalLM (the --init of genrec-pref)")
    p.add_argument("--aligned", required=True, help="the genrec-pref output directory")
    p.add_argument("--sasrec", nargs="+", required=True, help="SASRec directories: the first alone is the "
                   "baseline, all of them the ensemble the LLMs are fused with")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--prior-weights", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--supervised-weight", type=float, default=2.0)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--users", type=int, default=0, help="first N users of each split (0 = all): quick checks")
    p.add_argument("--earlier", nargs="*", default=[], metavar="LABEL=TRAINER_STATE",
                   help="earlier (stopped) runs to record: their validation curves from a checkpoint's "
                   "trainer_state.json, under the label that says their settings")
    p.add_argument("--out", default="eval/results/genrec_pref_ml100k.json")
    add_hardware_args(p)
    args = p.parse_args(argv)
    from llmrec import distributed
    from llmrec.data.split_view import columnar_split
    from llmrec.evaluation.ranking import bootstrap_ci, ranking_metrics, topk_from_scores
    from llmrec.io import write_json_atomic
    from llmrec.lm.personal import PersonalLM
    from llmrec.runinfo import run_info
    from llmrec.training.genrec import evaluate_genrec
    from llmrec.users.pretrain import ensemble_log_prior
    from llmrec.users.sequence import SequenceEncoder

    dtype = apply_hardware_args(args)
    distributed.init()
    t0 = time.perf_counter()
    recipe = json.loads((Path(args.aligned) / "results.json").read_text(encoding="utf-8"))
    # the recipe restores the supervised weights when no aligned checkpoint beat them on validation: then the
    # "aligned" model is the supervised one and there is nothing to load or score on test
    kept_init = recipe.get("train", {}).get("selected") == "init"
    if not kept_init:
        models = {"supervised": PersonalLM.load(args.supervised, dtype=dtype),
                  "aligned": PersonalLM.load(args.aligned, dtype=dtype)}
        split = columnar_split(models["aligned"].load_dataset(), "leave_one_out")
        sasrecs = [SequenceEncoder.load(d) for d in args.sasrec]
        item_ids = models["aligned"].item_ids

    def priors(examples):
        histories = [ex.history for ex in examples]
        return histories, ensemble_log_prior(sasrecs[:1], histories, item_ids), \
            ensemble_log_prior(sasrecs, histories, item_ids)

    def decode(name, examples, prior=None, weight=0.0):
        started = time.perf_counter()
        summary, lists, per_user = evaluate_genrec(models[name], examples, beams=args.beams, log_prior=prior,
                                                   prior_weight=weight, show_progress=distributed.is_main())
        return lists, {"seconds": round(time.perf_counter() - started, 1), "seconds_per_user": per_user}

    def evaluate() -> dict:
        # validation: the aligned model's fusion weight
        valid = list(split.valid)[: args.users or None]
        _, _, valid_ens = priors(valid)
        valid_targets = [ex.target for ex in valid]
        sweep = {}
        for w in args.prior_weights:
            lists, _ = decode("aligned", valid, valid_ens, w)
            sweep[w] = ranking_metrics(lists, valid_targets, ks=(10,))["ndcg@10"]
        best_w = max(sweep, key=lambda w: (sweep[w], -w))

        # test, once per list
        test = list(split.test)[: args.users or None]
        histories, test_one, test_ens = priors(test)
        exclude = [h.item_ids for h in histories]
        lists = {"sasrec": topk_from_scores(test_one, item_ids, exclude=exclude, k=10),
                 "sasrec_ensemble": topk_from_scores(test_ens, item_ids, exclude=exclude, k=10)}
        timing = {}
        lists["supervised"], timing["supervised"] = decode("supervised", test)
        lists["aligned"], timing["aligned"] = decode("aligned", test)
        lists["supervised_fused"], timing["supervised_fused"] = decode("supervised", test, test_ens,
                                                                       args.supervised_weight)
        lists["aligned_fused"], timing["aligned_fused"] = decode("aligned", test, test_ens, best_w)
        targets = [ex.target for ex in test]
        results = {k: ranking_metrics(v, targets, ks=(10,)) for k, v in lists.items()}
        pairs = [("aligned", "sasrec"), ("aligned", "supervised"), ("supervised", "sasrec"),
                 ("aligned_fused", "sasrec_ensemble"), ("aligned_fused", "supervised_fused"),
                 ("aligned_fused", "sasrec"), ("supervised_fused", "sasrec_ensemble")]
        paired = {}
        for a, b in pairs:
            d = results[a].per_example["ndcg@10"] - results[b].per_example["ndcg@10"]
            paired[f"{a}_minus_{b}"] = {"mean": round(float(d.mean()), 4),
                                        "ci95": [round(x, 4) for x in bootstrap_ci(d, n_boot=args.n_boot, seed=0)]}
        return {
            "validation": {"aligned_fused_ndcg@10_by_weight": {str(w): round(v, 4) for w, v in sweep.items()},
                           "chosen_weight": best_w, "supervised_weight": args.supervised_weight,
                           "users": len(valid)},
            "test": {"users": len(test),
                     "ndcg@10": {k: round(r["ndcg@10"], 4) for k, r in results.items()},
                     "recall@10": {k: round(r["recall@10"], 4) for k, r in results.items()},
                     "paired_ndcg@10": paired},
            "decode": timing,
        }

    scored = {"test": None, "validation": None, "decode": None} if kept_init else evaluate()
    if not distributed.is_main():
        return 0
    out = {
        "benchmark": f"preference-aligned ({recipe.get('method', 'dpo').upper()}) generative recommender vs "
                     "supervised, SASRec and the SASRec-fused hybrid, ml-100k leave-one-out (issue 20 item 1)",
        "command": ("python" if distributed.world_size() == 1 else
                    f"torchrun --nproc_per_node {distributed.world_size()}")
        + " scripts/bench_genrec_pref.py " + " ".join(sys.argv[1:]),
        "recipe_config": recipe.get("config"),
        "protocol": __doc__.split("Protocol ", 1)[1].split("\n\n")[0].replace("\n", " "),
        "models": {"supervised": args.supervised, "aligned": args.aligned, "sasrec": args.sasrec},
        "beams": args.beams,
        "selected": "init (no aligned checkpoint beat the supervised model on validation; test not scored)"
                    if kept_init else "aligned",
        **scored,
        "recipe": {k: recipe.get(k) for k in ("method", "pairs", "train", "test", "total_seconds", "dtype")},
        "earlier_runs": {label: [{k: h[k] for k in ("step", "eval_ndcg_at_10", "eval_recall_at_10") if k in h}
                                 for h in json.loads(Path(path).read_text(encoding="utf-8"))["log_history"]
                                 if "eval_ndcg_at_10" in h]
                         for label, path in (e.split("=", 1) for e in args.earlier)},
        "seconds": round(time.perf_counter() - t0, 1),
        "processes": distributed.world_size(),
        "run": run_info(vars(args)),
    }
    write_json_atomic(args.out, json.loads(json.dumps(out, default=float)))
    print(json.dumps(out["test"] or out["selected"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
