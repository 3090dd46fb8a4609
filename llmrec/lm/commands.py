"""CLI: `llmrec recommend --model DIR --user 42`."""

from __future__ import annotations

import argparse
import json

from llmrec.errors import DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="top-K items for a user from a trained PersonalLM directory")
    p.add_argument("--model", required=True, help="PersonalLM directory (from scripts/train_genrec.py)")
    p.add_argument("--user", required=True, help="user id in the dataset")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--beams", type=int, default=None)
    p.add_argument("--include-history", action="store_true", help="allow items the user already has")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_recommend)


def _recommend(args: argparse.Namespace) -> int:
    from llmrec.data import load_dataset
    from llmrec.lm.personal import PersonalLM

    data = load_dataset(args.dataset)
    hist = data.histories().get(str(args.user))
    if hist is None:
        raise DataError(f"unknown user {args.user!r} ({len(data.histories())} users)", path=args.dataset, field="user")
    plm = PersonalLM.load(args.model)
    recs = plm.recommend(list(hist.item_ids), k=args.k, num_beams=args.beams,
                         exclude_history=not args.include_history)
    if args.json:
        print(json.dumps({"user": str(args.user), "recommendations": recs}))
        return 0
    print(f"user {args.user}: last watched")
    for item_id in hist.item_ids[-5:]:
        print(f"    {plm.titles.get(item_id, item_id)}")
    print("recommended:")
    for rank, r in enumerate(recs, 1):
        print(f"{rank:3d}. {r['title']}  (item {r['item_id']}, log-prob {r['score']:.2f})")
    return 0
