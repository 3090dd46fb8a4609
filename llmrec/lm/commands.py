"""CLI: `llmrec recommend --model DIR --user 42`."""

from __future__ import annotations

import argparse
import json

from llmrec.cli_args import add_hardware_args, apply_hardware_args, nonempty_text, positive_int
from llmrec.errors import DataError

DATA_HELP = ("dataset name or config file (default: the dataset the model was trained on, as recorded in its "
             "directory; ml-100k for a base model or a directory saved without one)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="top-K items for a user from a trained PersonalLM directory")
    p.add_argument("--model", required=True, help="PersonalLM directory (from llmrec train genrec)")
    p.add_argument("--user", required=True, help="user id in the dataset")
    p.add_argument("--data", "--dataset", dest="data", default=None, help=DATA_HELP)
    p.add_argument("-k", type=positive_int, default=10)
    p.add_argument("--beams", type=positive_int, default=None)
    p.add_argument("--include-history", action="store_true", help="allow items the user already has")
    p.add_argument("--sasrec", nargs="+", default=[],
                   help="shallow fusion with this SASRec directory (llmrec train sasrec), or several (seeds: their "
                   "renormalised mean log-prob): beams are ranked by LLM log-prob + --prior-weight x SASRec log-prob")
    p.add_argument("--prior-weight", type=float, default=1.0)
    p.add_argument("--json", action="store_true")
    add_pickle_arg(p)
    add_hardware_args(p)
    p.set_defaults(func=_recommend)
    register_text(sub)


def add_pickle_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-pickle", action="store_true",
                   help="UNSAFE: accept pickle-based weights (*.bin, *.pt) in the model directory, read with "
                   "torch.load(weights_only=True); by default only safetensors load")


def _user_history(args: argparse.Namespace):
    """The dataset (``--data``, else the one recorded in the model directory) and the chronological history of
    ``--user`` (a clear error for an unknown user)."""
    from pathlib import Path

    from llmrec.data import load_dataset
    from llmrec.lm.model_dir import LEGACY_DATASET, load_model_dataset

    data, where = None, args.data
    if args.data is not None:
        data = load_dataset(args.data)
    elif Path(args.model).is_dir():
        data = load_model_dataset(args.model)
        where = f"{args.model} (its training data)"
    if data is None:  # a base model, or a directory saved before models recorded their data: the old default
        data, where = load_dataset(LEGACY_DATASET), LEGACY_DATASET
    hist = data.histories().get(str(args.user))
    if hist is None:
        raise DataError(f"unknown user {args.user!r} ({len(data.histories())} users)", path=where, field="user")
    return data, hist


def _recommend(args: argparse.Namespace) -> int:
    from llmrec.lm.model_dir import validate_model_dir
    from llmrec.lm.personal import PersonalLM

    dtype = apply_hardware_args(args)
    validate_model_dir(args.model, allow_pickle=args.allow_pickle)  # a damaged model fails before the data loads
    data, hist = _user_history(args)
    plm = PersonalLM.load(args.model, dtype=dtype, allow_pickle=args.allow_pickle)
    prior = None
    if args.sasrec:
        from llmrec.users.pretrain import ensemble_log_prior
        from llmrec.users.sequence import SequenceEncoder

        prior = ensemble_log_prior([SequenceEncoder.load(d) for d in args.sasrec], [hist], plm.item_ids)
    recs = plm.recommend(list(hist.item_ids), k=args.k, num_beams=args.beams,
                         exclude_history=not args.include_history, log_prior=prior, prior_weight=args.prior_weight)
    if args.json:
        print(json.dumps({"user": str(args.user), "recommendations": recs}))
        return 0
    print(f"user {args.user}: last {data.vocabulary.interacted}")
    for item_id in hist.item_ids[-5:]:
        print(f"    {plm.titles.get(item_id, item_id)}")
    print("recommended:")
    for rank, r in enumerate(recs, 1):
        print(f"{rank:3d}. {r['title']}  (item {r['item_id']}, {'fused score' if args.sasrec else 'log-prob'} {r['score']:.2f})")
    return 0


def register_text(sub: argparse._SubParsersAction) -> None:
    for name, help_ in (("answer", "answer a question about a user from their history"),
                        ("profile", "write a short natural-language profile of a user")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--model", default="smollm2-135m", help="PersonalLM directory, hub id or local model folder")
        p.add_argument("--user", required=True)
        p.add_argument("--data", "--dataset", dest="data", default=None, help=DATA_HELP)
        p.add_argument("--max-items", type=positive_int, default=20, help="history items shown to the model")
        p.add_argument("--use-adapter", action="store_true", help="keep a PersonalLM's adapter on (default off)")
        if name == "answer":
            p.add_argument("question", type=nonempty_text)
            p.add_argument("--options", default="", help="comma-separated answer options, as the soft-prompt model "
                           "was trained with (e.g. 'yes,no')")
            p.add_argument("--answer-kind", help="what to answer with, as in training: the dataset's category "
                           "noun (e.g. 'category'), 'number', 'word yes or no', 'title', or a worked form such as "
                           "'favourite category overall, then lately, then yes or no (e.g. A, B: yes)'")
        add_pickle_arg(p)
        add_hardware_args(p)
        p.set_defaults(func=_text, kind=name)


def _text(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmrec.lm.model_dir import validate_model_dir
    from llmrec.lm.personal import PersonalLM

    dtype = apply_hardware_args(args)
    model = Path(args.model)
    if (model / "llmrec_config.json").is_file():  # a damaged model fails before the data loads
        validate_model_dir(model, allow_pickle=args.allow_pickle)
    elif model.is_dir() and not any(model.glob("*.safetensors")):  # a base model folder with pickled weights only
        from llmrec.filecheck import refuse_pickles

        refuse_pickles(model, allow=args.allow_pickle)
    data, hist = _user_history(args)
    if (Path(args.model) / "llmrec_config.json").is_file():
        plm = PersonalLM.load(args.model, dtype=dtype, allow_pickle=args.allow_pickle)
    else:
        plm = PersonalLM.from_base(args.model, data.items, dtype=dtype, vocabulary=data.vocabulary)
    if args.kind == "answer":
        options = tuple(o.strip() for o in args.options.split(",") if o.strip())
        print(plm.answer(hist, args.question, data, max_items=args.max_items, use_adapter=args.use_adapter,
                         options=options, answer_kind=args.answer_kind))
    else:
        print(plm.profile(hist, data, max_items=args.max_items, use_adapter=args.use_adapter))
    return 0
