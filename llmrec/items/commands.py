"""`llmrec items build` / `llmrec items info`: semantic IDs from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmrec.cli_args import add_hardware_args


def register(sub: argparse._SubParsersAction) -> None:
    items = sub.add_parser("items", help="item tokenizer: semantic IDs").add_subparsers(dest="command", required=True)
    p = items.add_parser("build", help="encode items, quantize, write the semantic-ID table, print diagnostics")
    p.add_argument("--data", default="ml-100k", metavar="NAME|CONFIG",
                   help="'ml-100k', a dataset config (.yaml/.json) or a MovieLens folder")
    p.add_argument("--dataset", dest="data", help=argparse.SUPPRESS)
    p.add_argument("--quantizer", choices=["rkmeans", "rqvae"], default="rkmeans")
    p.add_argument("--out", required=True, help="output folder; a previous table there is replaced atomically, "
                   "anything else is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace --out even when it is a file or a non-empty "
                   "folder that is not a semantic-ID table (its contents are deleted)")
    p.add_argument("--levels", type=int, default=3, help="quantized levels (a disambiguation level is added)")
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", default="all-minilm-l6-v2", help="encoder alias, hub id or local folder")
    p.add_argument("--encoder-kind", choices=["encoder", "causal"], default="encoder")
    p.add_argument("--template", help="item text template (file or string; default: the dataset config's "
                                      "item_text, else prompts/item_text.jinja)")
    p.add_argument("--no-collision-aware", action="store_true", help="plain nearest code on the last level")
    p.add_argument("--config", help="JSON SemanticIdConfig file (overrides the flags above)")
    p.add_argument("--cache", help="llmrec cache folder for the vector cache")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_hardware_args(p, dtype_help="text encoder dtype; auto keeps the encoder config's (float32), so the vectors "
                      "and hence the semantic IDs are the same on every machine (default: auto)")
    p.set_defaults(func=_build)
    p = items.add_parser("info", help="show a saved table's size and one item's ID")
    p.add_argument("table", help="folder written by `llmrec items build`")
    p.add_argument("--item", help="an item id to show")
    p.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from llmrec.data import load_dataset
    from llmrec.hardware import normalize_dtype, set_threads
    from llmrec.io import guard_output
    from llmrec.items.build import SemanticIdConfig, build_semantic_ids
    from llmrec.items.encoders import DEFAULT_TEMPLATE, EncoderConfig
    from llmrec.items.quantizers import QuantizerConfig
    from llmrec.items.semantic_ids import is_sid_table

    guard_output(Path(args.out), overwrite=args.overwrite, ours=is_sid_table)  # before the slow encoding
    data = load_dataset(args.data)
    # The dataset config's item text unless the command line names a template.
    dataset_template = data.config.item_text_template() if data.config is not None else None
    if args.config:
        config = SemanticIdConfig.load(args.config)
    else:
        config = SemanticIdConfig(
            encoder=EncoderConfig(model=args.encoder, kind=args.encoder_kind),
            template=args.template or dataset_template or DEFAULT_TEMPLATE,
            quantizer=QuantizerConfig(kind=args.quantizer, levels=args.levels, codebook_size=args.codebook_size,
                                      seed=args.seed, collision_aware=not args.no_collision_aware),
        )
    set_threads(args.threads)
    if args.dtype != "auto":
        config.encoder = dataclasses.replace(config.encoder, dtype=TORCH_NAMES[normalize_dtype(args.dtype)])
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise here
    sids, report = build_semantic_ids(data, config, cache_dir=args.cache, show_progress=not args.json)
    sids.save(args.out, overwrite=args.overwrite)
    report["out"] = str(args.out)
    if args.json:
        print(json.dumps(report))
        return 0
    for key, value in report.items():
        if isinstance(value, list):
            value = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
        elif isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key:26s} {value}")
    first = sids.item_ids[0]
    print(f"{'example':26s} item {first}: {sids.sid_string(first)}")
    return 0


TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _info(args: argparse.Namespace) -> int:
    from llmrec.items.semantic_ids import SemanticIds

    sids = SemanticIds.load(args.table)
    quantizer = sids.config.get("quantizer")
    print(json.dumps({"items": len(sids), "codebook_sizes": list(sids.codebook_sizes),
                      "vocabulary": len(sids.token_strings()), "collision_rate": sids.collision_rate,
                      "quantizer": quantizer.get("kind") if isinstance(quantizer, dict) else None}))
    if args.item:
        print(f"{args.item}: {sids.sid_string(args.item)}")
    return 0
