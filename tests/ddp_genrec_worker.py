"""Worker for tests/test_ddp.py: a tiny PersonalLM trained for a few steps under `accelerate launch` (gloo, CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import test_genrec as tg  # noqa: E402

from llmrec.data.splits import leave_one_out  # noqa: E402
from llmrec.lm.personal import PersonalLM, PersonalLMConfig  # noqa: E402
from llmrec.training.genrec import GenRecTrainConfig, train_genrec  # noqa: E402


def main() -> None:
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    data = tg._catalogue_data(n_users=16)
    vectors = np.random.default_rng(2).normal(size=(tg.N_ITEMS, 16)).astype(np.float32)
    plm = PersonalLM.create(tg._sids(), data.items, PersonalLMConfig(base_model=model_dir, dtype="fp32", max_history=8),
                            item_vectors=vectors)
    split = leave_one_out(data.histories())
    cfg = GenRecTrainConfig(output_dir=str(out / "run"), max_steps=3, batch_size=4, eval_users=4,
                            eval_batch_users=4, logging_steps=1)
    report = train_genrec(plm, split.train, split.valid, cfg)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    (out / f"rank{rank}.json").write_text(json.dumps({"world": world, "steps": report["steps"]}))


if __name__ == "__main__":
    main()
