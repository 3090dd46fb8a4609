"""How complementary are the generative LLM and SASRec? Hit overlap and a reciprocal-rank fusion, per split.

    .venv/bin/python scripts/train_sasrec.py --out adapters/trained/sasrec     # the tuned defaults (README row)
    .venv/bin/python scripts/genrec_sasrec_overlap.py --model adapters/trained/genrec-w50c10-lora \
        --sasrec adapters/trained/sasrec --results eval/results/genrec_sasrec_overlap_ml100k.json
    .venv/bin/python scripts/train_sasrec.py --out adapters/trained/sasrec-seed1 --train.seed 1
    .venv/bin/python scripts/genrec_sasrec_overlap.py --threads 1 --model adapters/trained/genrec-w50c10-lora \
        --sasrec adapters/trained/sasrec --splits test --prior-weight 1 --sasrec-ensemble adapters/trained/sasrec-seed1 \
        --results eval/results/genrec_fusion_paired_ml100k.json   # + shallow fusion (w chosen on validation), 2-seed SASRec

A diagnostic for choosing the next genrec recipe: if the LLM's hits were a subset of SASRec's, only a better LLM
could pass SASRec; hits the other misses mean a hybrid (fusion, or SASRec states fed to the LLM) has headroom.
The fusion is reciprocal-rank fusion with the usual constant 60, not tuned: the LLM's top-10 (beam search, history
excluded) and SASRec's top-50 (history excluded, ties by catalogue index). Every list's NDCG@10 is also compared
with SASRec's user by user: a paired bootstrap 95 % interval of the mean difference.
"""

from __future__ import annotations

import argparse

from llmrec.cli_args import add_hardware_args, apply_hardware_args

RRF_K = 60


def rrf(lists: list[list[str]]) -> list[str]:
    score: dict[str, float] = {}
    for ranked in lists:
        for r, item in enumerate(ranked):
            score[item] = score.get(item, 0.0) + 1 / (RRF_K + r)
    return sorted(score, key=lambda i: -score[i])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="PersonalLM directory (generative recommender)")
    p.add_argument("--sasrec", required=True, help="SequenceEncoder directory trained on the same split")
    p.add_argument("--splits", nargs="+", default=["valid", "test"], choices=["valid", "test"])
    p.add_argument("--beams", type=int, default=10)
    p.add_argument("--prior-weight", type=float, default=0.0,
                   help="> 0: also score the shallow fusion (LLM + w x SASRec inside the beam search)")
    p.add_argument("--sasrec-ensemble", nargs="+", default=[],
                   help="more SASRec directories (other seeds): their renormalised mean log-prob with --sasrec as list "
                        "'sasrec_ensemble', the like-for-like reference for fusing a second model into SASRec; with "
                        "--prior-weight also 'fusion_ensemble' (the LLM fused with the ensemble), compared with it")
    p.add_argument("--n-boot", type=int, default=2000, help="paired bootstrap draws for NDCG@10 differences")
    p.add_argument("--results")
    add_hardware_args(p)
    args = p.parse_args()
    import torch  # heavy imports after parsing: --help stays instant

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.evaluation.ranking import bootstrap_ci, ranking_metrics, topk_from_scores
    from llmrec.io import write_json_atomic
    from llmrec.lm.personal import PersonalLM
    from llmrec.training.genrec import evaluate_genrec
    from llmrec.users.pretrain import ensemble_log_prior, score_histories, sequence_log_prior
    from llmrec.users.sequence import SequenceEncoder

    apply_hardware_args(args)
    split = leave_one_out(load_dataset("ml-100k").histories())
    plm, sas = PersonalLM.load(args.model, dtype=args.dtype), SequenceEncoder.load(args.sasrec)
    out = {"model": args.model, "sasrec": args.sasrec, "beams": args.beams, "rrf_k": RRF_K,
           "prior_weight": args.prior_weight, "sasrec_ensemble": args.sasrec_ensemble,
           "torch_threads": torch.get_num_threads(), "dtype": args.dtype}
    for name in args.splits:
        examples = split.valid if name == "valid" else split.test
        targets = [ex.target for ex in examples]
        _, llm_lists, _ = evaluate_genrec(plm, examples, beams=args.beams)
        sas_lists = topk_from_scores(score_histories(sas, [ex.history for ex in examples]), sas.item_ids,
                                     exclude=[ex.history.item_ids for ex in examples], k=50)
        lists = {"llm": llm_lists, "sasrec": sas_lists,
                 "rrf": [rrf([a[:10], b]) for a, b in zip(llm_lists, sas_lists, strict=True)]}
        if args.prior_weight > 0:
            prior = sequence_log_prior(sas, [ex.history for ex in examples], plm.item_ids)
            _, lists["fusion"], _ = evaluate_genrec(plm, examples, beams=args.beams, log_prior=prior,
                                                    prior_weight=args.prior_weight)
        if args.sasrec_ensemble:
            histories = [ex.history for ex in examples]
            members = [sas] + [SequenceEncoder.load(d) for d in args.sasrec_ensemble]
            logp = ensemble_log_prior(members, histories, plm.item_ids)
            lists["sasrec_ensemble"] = topk_from_scores(logp, plm.item_ids, exclude=[h.item_ids for h in histories],
                                                        k=10)
            if args.prior_weight > 0:
                _, lists["fusion_ensemble"], _ = evaluate_genrec(plm, examples, beams=args.beams, log_prior=logp,
                                                                 prior_weight=args.prior_weight)
        results = {key: ranking_metrics(ranked, targets, ks=(10,)) for key, ranked in lists.items()}
        # paired bootstrap over users of (model - SASRec) NDCG@10: does the difference exclude 0?
        base = results["sasrec"].per_example["ndcg@10"]
        diffs = {key: r.per_example["ndcg@10"] - base for key, r in results.items() if key != "sasrec"}
        if "fusion_ensemble" in results:  # like for like: the fused ensemble against the ensemble alone
            diffs["fusion_ensemble_minus_sasrec_ensemble"] = (results["fusion_ensemble"].per_example["ndcg@10"]
                                                              - results["sasrec_ensemble"].per_example["ndcg@10"])
        paired = {key: {"mean": round(float(d.mean()), 4),
                        "ci95": [round(x, 4) for x in bootstrap_ci(d, n_boot=args.n_boot, seed=0)]}
                  for key, d in diffs.items()}
        hit_l, hit_s = (results[key].per_example["recall@10"] > 0 for key in ("llm", "sasrec"))
        counts = {"both": int((hit_l & hit_s).sum()), "only_llm": int((hit_l & ~hit_s).sum()),
                  "only_sasrec": int((hit_s & ~hit_l).sum())}
        out[name] = {"users": len(examples), "hits@10": counts,
                     "ndcg@10": {key: round(r["ndcg@10"], 4) for key, r in results.items()},
                     "ndcg@10_minus_sasrec": paired}
        print(name, out[name], flush=True)
    if args.results:
        write_json_atomic(args.results, out)


if __name__ == "__main__":
    main()
