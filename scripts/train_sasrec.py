"""Train the SASRec baseline: `llmrec train sasrec` (llmrec.recipes.sasrec); every option is the recipe's.

    .venv/bin/python scripts/train_sasrec.py --out /tmp/sasrec                      # the tuned ml-100k defaults
    .venv/bin/python scripts/train_sasrec.py --out /tmp/sasrec_text --model.item_vectors minilm
    .venv/bin/python scripts/train_sasrec.py --help
"""

import sys

from llmrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "sasrec", *sys.argv[1:]]))
