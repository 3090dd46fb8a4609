"""Worker for tests/test_scale_recipes.py: tiny genrec training with a global batch of 4 (per-device batch and
accumulation from the world size), resumed from the last checkpoint in OUT/run if there is one; alone or under
`accelerate launch --config_file llmrec/recipes/accelerate/ddp.yaml` (gloo on CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import test_genrec as tg  # noqa: E402

from llmrec import distributed  # noqa: E402
from llmrec.data.splits import leave_one_out  # noqa: E402
from llmrec.lm.personal import PersonalLM, PersonalLMConfig  # noqa: E402
from llmrec.recipes.multigpu import plan_batch  # noqa: E402
from llmrec.training.genrec import GenRecTrainConfig, train_genrec  # noqa: E402


def main() -> None:
    model_dir, out, max_steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    data = tg._catalogue_data(n_users=16)
    vectors = np.random.default_rng(2).normal(size=(tg.N_ITEMS, 16)).astype(np.float32)
    plm = PersonalLM.create(tg._sids(), data.items, PersonalLMConfig(base_model=model_dir, dtype="fp32", max_history=8),
                            item_vectors=vectors)
    split = leave_one_out(data.histories())
    batch = plan_batch(4, 1)
    cfg = GenRecTrainConfig(output_dir=str(out / "run"), max_steps=max_steps, batch_size=batch.per_device,
                            grad_accum=batch.accumulation, eval_users=3, eval_batch_users=4, eval_steps=2,
                            eval_beams=3, logging_steps=1)
    report = train_genrec(plm, split.train, split.valid, cfg)
    record = {"world": distributed.world_size(), "per_device": batch.per_device, "steps": report["steps"],
              "resumed_from": report["resumed_from"], "valid": report["valid_curve"][-1]["eval_ndcg_at_10"]}
    (out / f"{max_steps}-rank{distributed.rank()}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
