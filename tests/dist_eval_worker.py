"""Worker for tests/test_distributed.py: genrec beam search, SASRec ranking and `llmrec eval run` on tiny models,
run alone or under `torchrun --nproc_per_node 2` (gloo, CPU); writes what each rank computed to rank<R>.json."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import test_genrec as tg  # noqa: E402

from llmrec import distributed  # noqa: E402
from llmrec.data.splits import leave_one_out  # noqa: E402
from llmrec.evaluation.ranking import summaries  # noqa: E402
from llmrec.evaluation.runner import RunConfig, run  # noqa: E402
from llmrec.lm.personal import PersonalLM, PersonalLMConfig  # noqa: E402
from llmrec.training.genrec import evaluate_genrec  # noqa: E402
from llmrec.users.pretrain import evaluate_examples, sequence_log_prior  # noqa: E402
from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig  # noqa: E402

LAMP = Path(__file__).parent / "fixtures" / "lamp"


class HashModel:
    """A deterministic stand-in LLM whose answers depend on the prompt (so a misplaced answer shows)."""

    name = "hash"

    def _h(self, prompt: str) -> int:
        return int(hashlib.sha256(prompt.encode()).hexdigest(), 16)

    def generate(self, prompts, max_new_tokens):
        return [str(1 + self._h(p) % 5) for p in prompts]

    def score_options(self, prompts, options):
        rows = [np.random.default_rng(self._h(p) % 2**32).normal(size=len(options)) for p in prompts]
        return np.log(np.exp(rows) / np.exp(rows).sum(axis=1, keepdims=True))


def main() -> None:
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    world = distributed.init()
    torch.manual_seed(0)
    data = tg._catalogue_data(n_users=11)  # 11 users: blocks of 6 and 5 over 2 ranks
    split = leave_one_out(data.histories())
    vectors = np.random.default_rng(2).normal(size=(tg.N_ITEMS, 16)).astype(np.float32)
    plm = PersonalLM.create(tg._sids(), data.items, PersonalLMConfig(base_model=model_dir, dtype="fp32", max_history=8),
                            item_vectors=vectors)
    torch.manual_seed(0)
    sasrec = SequenceEncoder(SequenceEncoderConfig(n_items=tg.N_ITEMS, d_model=16, n_layers=1, max_len=8),
                             data.item_ids).eval()
    prior = sequence_log_prior(sasrec, [e.history for e in split.test], plm.item_ids)
    record: dict = {"world": world, "rank": distributed.rank(), "local_users": len(distributed.shard(split.test))}
    for name, kw in {"beam": {"beams": 5}, "fusion": {"beams": 5, "log_prior": prior, "prior_weight": 0.5},
                     "exact": {"beams": 0}}.items():
        summary, ranked, _ = evaluate_genrec(plm, split.test, batch_users=4, show_progress=False, **kw)
        record[f"genrec_{name}"] = {"summary": summary, "ranked": ranked}
    sas = evaluate_examples(sasrec, split.test, batch_size=4)
    record["sasrec"] = {"summary": summaries(sas, digits=12),
                        "ranks": {p: r.per_example["rank"].tolist() for p, r in sas.items()}}
    cfg = RunConfig(tasks=("lamp_3",), out=str(out / "eval"), model="hash", n_boot=50, progress=False, batch_size=1,
                    task_args={"questions": str(LAMP / "lamp3_dev_questions.json"),
                               "outputs": str(LAMP / "lamp3_dev_outputs.json")},
                    retrievers=("none", "bm25"), ks=(1,), report=False)
    for method in ("generate", "score_options"):
        res = run(RunConfig(**{**cfg.to_dict(), "method": method}), model=HashModel())
        record[f"eval_{method}"] = {v: r["metrics"] for v, r in res["tasks"]["lamp_3"]["variants"].items()}
    distributed.barrier()
    if distributed.is_main():
        record["eval_files"] = sorted(str(p.relative_to(out)) for p in (out / "eval").rglob("*.json"))
        record["predictions"] = json.loads((out / "eval" / "lamp_3" / "bm25@1_gen.predictions.json").read_text())
    (out / f"rank{record['rank']}.json").write_text(json.dumps(record, sort_keys=True))


if __name__ == "__main__":
    main()
