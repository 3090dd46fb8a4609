"""How complementary are the generative LLM and SASRec? Hit overlap and a reciprocal-rank fusion, per split.

    .venv/bin/python scripts/train_sasrec.py --out adapters/trained/sasrec     # the tuned defaults (README row)
    .venv/bin/python scripts/genrec_sasrec_overlap.py --model adapters/trained/genrec-w50c10-lora \
        --sasrec adapters/trained/sasrec --results eval/results/genrec_sasrec_overlap_ml100k.json

A diagnostic for choosing the next genrec recipe: if the LLM's hits were a subset of SASRec's, only a better LLM
could pass SASRec; hits the other misses mean a hybrid (fusion, or SASRec states fed to the LLM) has headroom.
The fusion is reciprocal-rank fusion with the usual constant 60, not tuned: the LLM's top-10 (beam search, history
excluded) and SASRec's top-50 (history excluded, ties by catalogue index).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from llmrec.data import leave_one_out, load_dataset
from llmrec.io import write_json_atomic
from llmrec.lm.personal import PersonalLM
from llmrec.training.genrec import evaluate_genrec
from llmrec.users.pretrain import score_histories
from llmrec.users.sequence import SequenceEncoder

RRF_K = 60


def ndcg_at_10(ranked: list[str], target: str) -> float:
    return 1 / math.log2(ranked.index(target) + 2) if target in ranked[:10] else 0.0


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
    p.add_argument("--results")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split = leave_one_out(load_dataset("ml-100k").histories())
    plm, sas = PersonalLM.load(args.model), SequenceEncoder.load(args.sasrec)
    col = {item: i for i, item in enumerate(sas.item_ids)}
    out = {"model": args.model, "sasrec": args.sasrec, "beams": args.beams, "rrf_k": RRF_K}
    for name in args.splits:
        examples = split.valid if name == "valid" else split.test
        _, llm_lists, _ = evaluate_genrec(plm, examples, beams=args.beams)
        scores = score_histories(sas, [ex.history for ex in examples])
        counts = {"both": 0, "only_llm": 0, "only_sasrec": 0}
        ndcg = {"llm": 0.0, "sasrec": 0.0, "rrf": 0.0}
        for ex, llm_top, s in zip(examples, llm_lists, scores, strict=True):
            s[[col[i] for i in ex.history.item_ids]] = -np.inf
            sas_top = [sas.item_ids[j] for j in np.argsort(-s, kind="stable")[:50]]
            hit_l, hit_s = ex.target in llm_top[:10], ex.target in sas_top[:10]
            counts["both"] += hit_l and hit_s
            counts["only_llm"] += hit_l and not hit_s
            counts["only_sasrec"] += hit_s and not hit_l
            for key, ranked in (("llm", llm_top), ("sasrec", sas_top), ("rrf", rrf([llm_top[:10], sas_top]))):
                ndcg[key] += ndcg_at_10(ranked, ex.target)
        n = len(examples)
        out[name] = {"users": n, "hits@10": counts, "ndcg@10": {k: round(v / n, 4) for k, v in ndcg.items()}}
        print(name, out[name], flush=True)
    if args.results:
        write_json_atomic(args.results, out)


if __name__ == "__main__":
    main()
