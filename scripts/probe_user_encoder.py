"""Linear probe of the soft-prompt user encoder: do its k pooled states carry the interest-perception answers?

    OMP_NUM_THREADS=1 .venv/bin/python scripts/probe_user_encoder.py --out eval/results/uqa_probe_ml100k.json

Pretrains the same encoder as scripts/bench_uqa.py (SASRec-style, frozen MiniLM item vectors, the last 15 items,
next-item CE), freezes it, and fits a multinomial logistic regression from its k = 4 chunk-mean states to the
answers of the UQA train questions; accuracy on the test questions against the majority answer. If the probe beats
the majority but the soft-prompted LLM does not, the information is in the vectors and the LLM has not learned
to read it (an alignment-budget problem, not an encoder problem). No LLM involved; about a minute on one core.
"""

from __future__ import annotations

import argparse
import collections
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from llmrec.users.sequence import SequenceEncoder

TASKS = ("longterm_genre", "recent_genre", "interest_shift")


def pooled_states(encoder: SequenceEncoder, examples, index: dict[str, int], max_items: int, k: int) -> torch.Tensor:
    import torch

    rows = [[index[i] for i in ex.context.item_ids[-max_items:]] for ex in examples]
    x = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for r, row in enumerate(rows):
        x[r, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        return encoder.user_states(x, k=k).reshape(len(rows), -1)


def probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """Standardised features -> softmax regression (Adam, weight decay); returns test predictions."""
    import torch

    torch.manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    lin = torch.nn.Linear(x_train.shape[1], n_classes)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(x_train), y_train).backward()
        opt.step()
    with torch.no_grad():
        return lin(x_test).argmax(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="eval/results/uqa_probe_ml100k.json")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-items", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import numpy as np  # heavy imports after parsing: --help stays instant
    import torch

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.io import write_json_atomic
    from llmrec.items.encoders import encode_items
    from llmrec.tasks.uqa import build_uqa
    from llmrec.users.pretrain import PretrainConfig, train_sequence_model
    from llmrec.users.sequence import SequenceEncoderConfig

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    vectors = torch.from_numpy(encode_items(data, show_progress=False))
    cfg = SequenceEncoderConfig(n_items=len(data.items), d_model=64, n_layers=2, n_heads=2, max_len=args.max_items,
                                dropout=0.2, pooling="mean", item_vector_dim=int(vectors.shape[1]))
    encoder = train_sequence_model(split, data.item_ids, cfg, PretrainConfig(max_epochs=40, patience=5, seed=args.seed),
                                   vectors).model.eval()
    index = {item: n + 1 for n, item in enumerate(data.item_ids)}
    results = {}
    for task in TASKS:
        train = build_uqa(data, split="train", tasks=(task,), seed=args.seed)
        test = build_uqa(data, split="test", tasks=(task,), seed=args.seed)
        labels = sorted({e.answer for e in train + test})
        li = {a: i for i, a in enumerate(labels)}
        pred = probe(pooled_states(encoder, train, index, args.max_items, args.k),
                     torch.tensor([li[e.answer] for e in train]),
                     pooled_states(encoder, test, index, args.max_items, args.k), len(labels), args.seed)
        gold = torch.tensor([li[e.answer] for e in test])
        majority = collections.Counter(e.answer for e in train).most_common(1)[0][0]
        results[task] = {"probe_accuracy": round(float((pred == gold).float().mean()), 4),
                         "majority_accuracy": round(float(np.mean([e.answer == majority for e in test])), 4),
                         "train_questions": len(train), "test_questions": len(test)}
        print(task, results[task], flush=True)
    write_json_atomic(args.out, {
        "command": f"python scripts/probe_user_encoder.py --k {args.k} --max-items {args.max_items} --seed {args.seed}",
        "encoder": cfg.to_dict() | {"item_vectors": "all-MiniLM-L6-v2 (frozen)"},
        "probe": "standardised k x d_model chunk-mean states -> softmax regression, 300 Adam steps, lr 1e-2, wd 1e-4",
        "tasks": results, "seconds": round(time.perf_counter() - t0, 1),
        "machine": "2 shared CPU cores, 1 torch thread",
    })


if __name__ == "__main__":
    main()
