"""Score a saved generative recommender (a PersonalLM directory) on MovieLens-100k leave-one-out.

    .venv/bin/python scripts/eval_genrec.py --model adapters/trained/genrec-cf --split valid --beams 10 20

Full-catalogue ranking metrics of the trie-constrained beam search (history items excluded) for each beam width,
on the validation targets (for choosing decoding settings) or the test targets (report once). Decoding settings
are chosen on validation only. With --sasrec, shallow fusion: every beam is ranked by its LLM log-probability + w x
the SASRec log-probability mass of the items under its prefix, for each w in --prior-weights (keys "BEAMS@wW").
Several --sasrec directories (seeds) fuse their renormalised mean log-probability (a product of experts).
Under `torchrun --nproc_per_node N` / `accelerate launch` the users are split across the processes (same metrics);
rank 0 prints and writes.

    .venv/bin/python scripts/eval_genrec.py --model DIR --sasrec adapters/trained/sasrec --prior-weights 0.5 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time

from llmrec.cli_args import add_hardware_args, apply_hardware_args


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--split", choices=["valid", "test"], default="valid")
    p.add_argument("--beams", type=int, nargs="+", default=[10],
                   help="beam widths to score; 0 = exact ranking of every catalogue item (slow)")
    p.add_argument("--sasrec", nargs="+", default=[],
                   help="shallow fusion: SequenceEncoder directories trained on the same split whose next-item "
                   "log-probabilities (their mean, renormalised, for several) are added to the LLM's, weighted by "
                   "each --prior-weights value")
    p.add_argument("--prior-weights", type=float, nargs="+", default=[1.0])
    p.add_argument("--users", type=int, default=0, help="first N users of the split (0 = all)")
    p.add_argument("--batch-users", type=int, default=16)
    p.add_argument("--max-history", type=int, default=0,
                   help="history items in the prompt (0 = the model's own max_history setting)")
    p.add_argument("--results", help="write a JSON report here")
    add_hardware_args(p)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch  # heavy imports after parsing: --help stays instant

    from llmrec import distributed
    from llmrec.data import leave_one_out, load_dataset
    from llmrec.io import write_json_atomic
    from llmrec.lm.personal import PersonalLM
    from llmrec.training.genrec import evaluate_genrec
    from llmrec.users.pretrain import ensemble_log_prior
    from llmrec.users.sequence import SequenceEncoder

    dtype = apply_hardware_args(args)
    distributed.init()  # under a launcher: one device per process before the model loads
    data = load_dataset(args.dataset)
    split = leave_one_out(data.histories())
    examples = split.valid if args.split == "valid" else split.test
    examples = examples[: args.users] if args.users else examples
    plm = PersonalLM.load(args.model, dtype=dtype)
    if args.max_history:
        plm.config = dataclasses.replace(plm.config, max_history=args.max_history)
    prior, weights = None, [None]
    if args.sasrec:
        prior = ensemble_log_prior([SequenceEncoder.load(d) for d in args.sasrec], [e.history for e in examples],
                                   plm.item_ids)
        weights = args.prior_weights
    rows = {}
    for beams in args.beams:
        for weight in weights:
            t0 = time.perf_counter()
            summary, _, per_user = evaluate_genrec(plm, examples, beams=beams, batch_users=args.batch_users,
                                                   log_prior=prior, prior_weight=weight or 0.0)
            key = str(beams) if weight is None else f"{beams}@w{weight:g}"
            rows[key] = {**summary, "decode_seconds_per_user": round(per_user, 4),
                         "wall_seconds": round(time.perf_counter() - t0, 1)}
            if distributed.is_main():
                print(f"beams {key}: " + json.dumps(rows[key]), flush=True)
    if args.results and distributed.is_main():
        from llmrec.runinfo import run_info

        info = run_info(None, command="python scripts/eval_genrec.py " + " ".join(sys.argv[1:]))
        write_json_atomic(args.results, {"model": args.model, "split": args.split, "users": len(examples),
                                         "max_history": plm.config.max_history, "sasrec": args.sasrec or None,
                                         "dtype": dtype, "torch_threads": torch.get_num_threads(), "by_beams": rows,
                                         "command": info["command"], "machine": info["machine"],
                                         "versions": info["versions"]})


if __name__ == "__main__":
    main()
