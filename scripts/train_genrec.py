"""Train and evaluate a generative recommender (SmolLM2-135M + LoRA + semantic IDs) on MovieLens-100k.

    .venv/bin/python scripts/train_genrec.py --out adapters/trained/genrec-ml100k            # defaults
    .venv/bin/python scripts/train_genrec.py --out DIR --model HuggingFaceTB/SmolLM2-360M --epochs 3
    accelerate launch --multi_gpu --num_processes 2 scripts/train_genrec.py --out DIR --max-steps 20
        # 2-process DDP; on a machine without GPUs it runs on the CPU over gloo (tests/test_ddp.py)

Writes the PersonalLM directory to --out (loadable by `llmrec recommend --model DIR --user 42`) and, with
--results, a JSON report (validation curve, test metrics, timings). Resumes from --checkpoints (default: DIR.checkpoints beside --out) if killed; the checkpoints
live outside --out because saving the model replaces --out as a whole (atomic directory swap).
Model selection uses validation NDCG@10 only; test is scored once, at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path

import torch

from llmrec.cli_args import add_hardware_args, apply_hardware_args
from llmrec.data import leave_one_out, load_dataset
from llmrec.io import write_json_atomic
from llmrec.items import SemanticIdConfig, build_semantic_ids
from llmrec.items.collaborative import VECTOR_SOURCES, collaborative_vectors
from llmrec.items.encoders import encode_items
from llmrec.items.quantizers import QuantizerConfig
from llmrec.lm.personal import PersonalLM, PersonalLMConfig
from llmrec.training.genrec import GenRecTrainConfig, evaluate_genrec, train_genrec
from llmrec.users.pretrain import train_sequence_model, tuned_sasrec_configs
from llmrec.users.sequence import SequenceEncoder


def sasrec_for(args: argparse.Namespace, data, split) -> SequenceEncoder | None:
    """A SASRec trained on ``split.train`` only, when collaborative IDs or user states need one."""
    if args.sid_vectors == "text" and not args.user_states:
        return None
    if args.sasrec:
        return SequenceEncoder.load(args.sasrec)
    model_cfg, pretrain_cfg = tuned_sasrec_configs(len(data.items), seed=args.seed)
    return train_sequence_model(split, data.item_ids, model_cfg, pretrain_cfg).model


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoints", help="Trainer checkpoints (default: <out>.checkpoints)")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--adapter", default="lora")
    p.add_argument("--quantizer", default="rkmeans", choices=["rkmeans", "rqvae"])
    p.add_argument("--sid-vectors", default="text", choices=list(VECTOR_SOURCES),
                   help="what the semantic IDs quantize: item text, a trained SASRec's item table, or both")
    p.add_argument("--collaborative-weight", type=float, default=1.0)
    p.add_argument("--sasrec", help="SASRec directory from scripts/train_sasrec.py (trained on the same split); "
                   "collaborative --sid-vectors and --user-states train one with the tuned ml-100k settings "
                   "when omitted")
    p.add_argument("--user-states", action="store_true",
                   help="add the SASRec's state after each history item to that item's last SID token embedding "
                        "(llmrec.lm.user_states; the SASRec stays frozen, a projector trains with the LoRA)")
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--max-windows", type=int, default=3, help="windows per user, newest first (0 = all)")
    p.add_argument("--context-items", type=int, default=0,
                   help="overlap windows by N items that are context only, so those targets see a longer history")
    p.add_argument("--title-alignment", action="store_true")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-users", type=int, default=200)
    p.add_argument("--eval-steps", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=0.0, help="minutes of training before stopping")
    p.add_argument("--test-users", type=int, default=0, help="score only the first N test users (0 = all)")
    p.add_argument("--skip-test", action="store_true",
                   help="train and save only; score test later with eval_genrec.py once a variant is selected on "
                        "validation (so the test split is read once, for the selected model)")
    p.add_argument("--beams", type=int, default=10)
    p.add_argument("--results", help="write a JSON report here")
    p.add_argument("--seed", type=int, default=0)
    add_hardware_args(p)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    apply_hardware_args(args)
    t0 = time.perf_counter()
    data = load_dataset(args.dataset)
    split = leave_one_out(data.histories())
    sid_cfg = SemanticIdConfig(quantizer=QuantizerConfig(kind=args.quantizer, seed=args.seed),
                               vectors=args.sid_vectors, collaborative_weight=args.collaborative_weight)
    vectors = encode_items(data, sid_cfg.encoder, sid_cfg.template, show_progress=False)
    sasrec = sasrec_for(args, data, split)
    collaborative = None if args.sid_vectors == "text" else collaborative_vectors(sasrec, list(data.items))
    sids, sid_report = build_semantic_ids(data, sid_cfg, vectors=vectors, show_progress=False,
                                          collaborative=collaborative)
    plm_cfg = PersonalLMConfig(base_model=args.model, adapter=args.adapter, max_history=args.max_history,
                               seed=args.seed, dtype=args.dtype)
    plm = PersonalLM.create(sids, data.items, plm_cfg, item_vectors=vectors)
    if args.user_states:
        plm.attach_user_states(sasrec)
    train_cfg = GenRecTrainConfig(
        output_dir=args.checkpoints or f"{Path(args.out)}.checkpoints", epochs=args.epochs, max_steps=args.max_steps,
        learning_rate=args.lr, batch_size=args.batch_size, max_windows=args.max_windows or None,
        context_items=args.context_items, title_alignment=args.title_alignment, eval_users=args.eval_users,
        eval_steps=args.eval_steps, eval_beams=args.beams, time_budget_minutes=args.time_budget, seed=args.seed,
    )
    report = train_genrec(plm, split.train, split.valid, train_cfg)
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    plm.save(args.out)
    command = "python scripts/train_genrec.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
        if v is not None and v is not False)
    config = {"model": plm_cfg.to_dict(), "train": train_cfg.to_dict()}
    if args.skip_test:
        if args.results:
            write_json_atomic(args.results, {"command": command, "config": config, "train": report,
                                             "total_seconds": time.perf_counter() - t0})
        return
    test = split.test[: args.test_users] if args.test_users else split.test
    summary, _, per_user = evaluate_genrec(plm, test, beams=args.beams, show_progress=True)
    result = {
        "command": command,
        "semantic_ids": {k: sid_report[k] for k in ("unique_fraction", "collision_rate", "utilization")},
        "config": config,
        "train": report,
        "test": summary,
        "test_users": len(test),
        "decode_seconds_per_user": per_user,
        "total_seconds": time.perf_counter() - t0,
        # peak resident memory of this process (training + test decoding), Linux ru_maxrss is in KiB
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps({"test": summary, "decode_seconds_per_user": per_user,
                      "train_seconds": report["train_seconds"]}, indent=2))
    if args.results:
        write_json_atomic(args.results, result)


if __name__ == "__main__":
    main()
