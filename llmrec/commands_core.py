"""Core CLI groups: `llmrec resources ...` and `llmrec data ...`."""

from __future__ import annotations

import argparse
import json

from llmrec import resources


def register(sub: argparse._SubParsersAction) -> None:
    res = sub.add_parser("resources", help="fetch and inspect the offline defaults").add_subparsers(
        dest="command", required=True
    )
    p = res.add_parser("fetch", help="fetch SmolLM2-135M, all-MiniLM-L6-v2 and MovieLens-100k into the cache")
    p.add_argument("--cache", help="cache folder (default $LLMREC_CACHE or ~/.cache/llmrec)")
    p.set_defaults(func=_fetch)
    p = res.add_parser("status", help="show which offline defaults are ready")
    p.add_argument("--cache")
    p.set_defaults(func=lambda a: print(json.dumps(resources.status(a.cache), indent=2)))

    data = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="command", required=True)
    p = data.add_parser("info", help="users, items, interactions, density, history lengths")
    p.add_argument("dataset", help="'ml-100k', a MovieLens folder, or a LaMP questions file with --format lamp")
    p.add_argument("--format", choices=["auto", "movielens", "lamp"], default="auto")
    p.add_argument("--outputs", help="LaMP outputs (golds) file to check against the questions")
    p.add_argument("--task", help="LaMP task, e.g. LaMP_3 (checks the profile fields)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_data_info)


def _fetch(args: argparse.Namespace) -> int:
    paths = resources.fetch_all(args.cache)
    for name, path in paths.items():
        print(f"{name:18s} {path}")
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from llmrec.data import load_dataset, load_lamp_outputs, load_lamp_questions
    from llmrec.data.stats import dataset_info, lamp_info
    from llmrec.errors import DataError

    fmt = args.format
    if fmt == "auto":
        fmt = "lamp" if str(args.dataset).endswith(".json") else "movielens"
    if fmt == "lamp":
        questions = load_lamp_questions(args.dataset, args.task)
        n_golds = None
        task = args.task
        if args.outputs:
            outs = load_lamp_outputs(args.outputs, args.task)
            task = outs.task
            missing = [q.id for q in questions if q.id not in outs.golds]
            if missing:
                raise DataError(f"{len(missing)} question id(s) have no gold output, e.g. {missing[0]!r}", path=args.outputs)
            n_golds = len(outs.golds)
        info = lamp_info(questions, task, n_golds)
    else:
        info = dataset_info(load_dataset(args.dataset))
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.6g}"
            print(f"{key:28s} {value}")
    return 0
