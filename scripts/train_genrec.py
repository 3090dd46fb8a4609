"""Train a generative recommender: `llmrec train genrec` (llmrec.recipes.genrec); every option is the recipe's.

    .venv/bin/python scripts/train_genrec.py --config smollm2-135m/genrec --out DIR     # the selected ml-100k run
    .venv/bin/python scripts/train_genrec.py --out DIR --model.base_model HuggingFaceTB/SmolLM2-360M --train.epochs 3
    accelerate launch --multi_gpu --num_processes 2 scripts/train_genrec.py --out DIR --train.max_steps 20
        # DDP: every process trains, rank 0 saves and scores test
"""

import sys

from llmrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "genrec", *sys.argv[1:]]))
