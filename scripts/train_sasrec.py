"""Train and evaluate the SASRec-style encoder on MovieLens-100k (leave-one-out, full-catalogue ranking).

    .venv/bin/python scripts/train_sasrec.py --out /tmp/sasrec            # the tuned defaults
    .venv/bin/python scripts/train_sasrec.py --out /tmp/sasrec_text --item-vectors minilm

Early stopping on validation NDCG@10 (rated items removed); test reported under both protocols. The model
directory gets config.json, model.safetensors, items.json, meta.json (training config, curves) and metrics.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from llmrec.data import leave_one_out, load_dataset
from llmrec.evaluation.ranking import summaries
from llmrec.io import write_json_atomic
from llmrec.users.pretrain import (
    PretrainConfig,
    evaluate_examples,
    train_sequence_model,
    tuned_sasrec_configs,
)
from llmrec.users.sequence import SequenceEncoderConfig


def parse_args() -> argparse.Namespace:
    M, T = tuned_sasrec_configs(n_items=1)  # noqa: N806 - the defaults are the tuned ml-100k settings
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--data", default="ml-100k")
    p.add_argument("--d-model", type=int, default=M.d_model)
    p.add_argument("--layers", type=int, default=M.n_layers)
    p.add_argument("--heads", type=int, default=M.n_heads)
    p.add_argument("--dropout", type=float, default=M.dropout)
    p.add_argument("--max-len", type=int, default=M.max_len)
    p.add_argument("--ratings", action="store_true", help="add a rating embedding (5 levels)")
    p.add_argument("--item-vectors", choices=["none", "minilm"], default="none",
                   help="add frozen MiniLM item text vectors to the ID embedding")
    p.add_argument("--lr", type=float, default=T.lr)
    p.add_argument("--weight-decay", type=float, default=T.weight_decay)
    p.add_argument("--batch-size", type=int, default=T.batch_size)
    p.add_argument("--epochs", type=int, default=T.max_epochs, help="maximum epochs")
    p.add_argument("--patience", type=int, default=T.patience)
    p.add_argument("--windows", choices=["last", "all"], default=T.windows)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core CPU)")
    return p.parse_args()


def item_vectors_for(data, kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    from llmrec.items.encoders import encode_items

    return torch.from_numpy(encode_items(data, show_progress=False))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    split = leave_one_out(data.histories())
    vectors = item_vectors_for(data, args.item_vectors)
    model_cfg = SequenceEncoderConfig(
        n_items=len(data.items), d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
        max_len=args.max_len, dropout=args.dropout, n_rating_levels=5 if args.ratings else 0,
        item_vector_dim=0 if vectors is None else int(vectors.shape[1]),
    )
    train_cfg = PretrainConfig(lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                               max_epochs=args.epochs, patience=args.patience, windows=args.windows, seed=args.seed)
    result = train_sequence_model(split, data.item_ids, model_cfg, train_cfg, vectors)
    t0 = time.perf_counter()
    test_res = evaluate_examples(result.model, split.test)
    test = summaries(test_res)
    ci = {f"{p}/{m}": [round(x, 4) for x in test_res[p].ci(m)] for p in test_res for m in ("recall@10", "ndcg@10")}
    metrics = {
        "valid_rated_removed": {k: round(v, 4) for k, v in result.best_valid.items()},
        "test": test, "test_ci95_bootstrap": ci, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "train_wall_s": round(result.wall_s, 1), "test_eval_s": round(time.perf_counter() - t0, 2),
    }
    result.model.save(args.out, extra={"train_config": train_cfg.to_dict(), "history": result.history,
                                       "item_vectors": args.item_vectors, "data": args.data})
    write_json_atomic(f"{args.out}/metrics.json", metrics)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
