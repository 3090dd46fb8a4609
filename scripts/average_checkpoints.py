"""Average the adapter weights of several checkpoints of one run into a new PersonalLM directory.

    .venv/bin/python scripts/average_checkpoints.py --template adapters/trained/genrec-cf \
        --sources adapters/trained/genrec-cf adapters/trained/genrec-cf.checkpoints/checkpoint-1400 \
                  adapters/trained/genrec-cf.checkpoints/checkpoint-1989 --out adapters/trained/genrec-cf-avg

``--template`` is a saved PersonalLM (tokenizer, semantic IDs, catalogue, config are copied from it); every
source is a PersonalLM directory or a Trainer ``checkpoint-N`` of the same run. Choose the set on validation
(``scripts/eval_genrec.py --split valid``), never on test.
"""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--template", required=True, help="saved PersonalLM directory to copy everything but the weights from")
    p.add_argument("--sources", nargs="+", required=True, help="adapter directories to average (two or more)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a model directory")
    args = p.parse_args()
    from llmrec.lm.averaging import write_averaged_model  # heavy imports after parsing: --help stays instant

    print(write_averaged_model(args.template, args.sources, args.out, overwrite=args.overwrite))


if __name__ == "__main__":
    main()
