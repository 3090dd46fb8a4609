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
    p = data.add_parser("info", help="users, items, interactions, density, history lengths, filters")
    p.add_argument("dataset", nargs="?", help=argparse.SUPPRESS)  # positional form kept for old commands
    p.add_argument("--data", dest="data", metavar="NAME|CONFIG",
                   help="'ml-100k', a dataset config (.yaml/.yml/.json), a MovieLens or RecBole folder, "
                        "or a LaMP questions file (.json)")
    p.add_argument("--dataset", dest="data", help=argparse.SUPPRESS)
    p.add_argument("--format", choices=["auto", "dataset", "lamp", "movielens"], default="auto",
                   help="auto: a .json file that is not a dataset config is read as LaMP questions "
                        "(movielens: the same as dataset)")
    p.add_argument("--outputs", help="LaMP outputs (golds) file to check against the questions")
    p.add_argument("--task", help="LaMP task, e.g. LaMP_3 (checks the profile fields)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_data_info)
    p = data.add_parser("make-bookshop", help="write a small generated bookshop dataset and its config")
    p.add_argument("--out", required=True, help="folder to write (created)")
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--items", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_bookshop)


def _fetch(args: argparse.Namespace) -> int:
    paths = resources.fetch_all(args.cache)
    for name, path in paths.items():
        print(f"{name:18s} {path}")
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from llmrec.data import load_dataset, load_lamp_outputs, load_lamp_questions
    from llmrec.data.filters import format_report
    from llmrec.data.stats import dataset_info, lamp_info
    from llmrec.errors import ConfigError, DataError

    spec = args.data or args.dataset
    if not spec:
        raise ConfigError("data info: name a dataset with --data NAME|CONFIG")
    fmt = args.format
    if fmt == "auto":
        fmt = "lamp" if str(spec).endswith(".json") and not _is_dataset_config(spec) else "dataset"
    if fmt == "lamp":
        questions = load_lamp_questions(spec, args.task)
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
        info = dataset_info(load_dataset(spec))
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            if key == "filters":
                value = format_report(value)
            elif isinstance(value, list) and key != "time_span":
                value = ", ".join(map(str, value))
            elif isinstance(value, dict):
                value = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.6g}"
            print(f"{key:28s} {value}")
    return 0


def _is_dataset_config(spec: str) -> bool:
    """A .json file holding one mapping (a dataset config) rather than a list of LaMP questions."""
    try:
        with open(spec, encoding="utf-8") as f:
            head = f.read(4096).lstrip()
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("{")


def _make_bookshop(args: argparse.Namespace) -> int:
    from llmrec.data.synthetic import write_bookshop

    config = write_bookshop(args.out, n_users=args.users, n_items=args.items, seed=args.seed)
    print(config)
    return 0
