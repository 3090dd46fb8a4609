"""Generative-recommendation benchmark table: popularity, SASRec and llmrec on ml-100k, plus the pipeline's
training throughput against a bare forward+backward loop on the same batches, and decoding speed.

    .venv/bin/python scripts/bench_genrec.py --threads 1 --steps 12 \
        --llm-results eval/results/genrec_llm_ml100k.json --baselines eval/results/baselines_ml100k.json \
        --model-dir adapters/trained/genrec-ml100k --out eval/results/genrec_ml100k.json

The llmrec row comes from `llmrec train genrec` (its <out>/results.json); baselines from scripts/bench_baselines.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time

from llmrec.cli_args import add_hardware_args, apply_hardware_args


def throughput(steps: int, batch_size: int, seed: int, dtype: str = "auto") -> dict:
    """Tokens/s of GenRecTrainer.train (no evaluation) vs a bare loop over the Trainer's own dataloader."""
    import torch
    from transformers import TrainerCallback, TrainingArguments

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.items import SemanticIdConfig, build_semantic_ids
    from llmrec.items.encoders import encode_items
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.tasks.genrec import build_genrec_rows
    from llmrec.training.collate import CausalCollator
    from llmrec.training.genrec import GenRecTrainer
    from llmrec.training.throughput import bare_loop_tokens_per_second

    class StepClock(TrainerCallback):
        """Wall-clock time at the end of every optimizer step."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    vectors = encode_items(data, show_progress=False)
    sids, _ = build_semantic_ids(data, SemanticIdConfig(), vectors=vectors, show_progress=False)
    out = {}
    for mode in ("pipeline", "bare", "pipeline_again"):
        torch.manual_seed(seed)
        plm = PersonalLM.create(sids, data.items, PersonalLMConfig(max_history=20, seed=seed, dtype=dtype),
                                item_vectors=vectors, vocabulary=data.vocabulary)
        rows = build_genrec_rows(plm, split.train, max_windows=2).rows
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch_size,
                                     learning_rate=1e-3, use_cpu=True, report_to=[], save_strategy="no",
                                     eval_strategy="no", remove_unused_columns=False, disable_tqdm=True,
                                     train_sampling_strategy="group_by_length", seed=seed, logging_steps=steps)
            trainer = GenRecTrainer(model=plm.model, args=args, train_dataset=rows,
                                    data_collator=CausalCollator(plm.tokenizer.pad_token_id), plm=plm)
            if mode == "bare":
                loader = trainer.get_train_dataloader()
                batches = [b for _, b in zip(range(steps + 1), loader, strict=False)]
                out[mode] = bare_loop_tokens_per_second(plm.model, batches, steps=steps, lr=1e-3)
            else:
                # Same batches as the bare loop (the Trainer's own dataloader); the first step is warm-up for
                # both, so the figure is steady-state throughput, as in a long run.
                loader = trainer.get_train_dataloader()
                sizes = [int(b["attention_mask"].sum()) for _, b in zip(range(steps + 1), loader, strict=False)]
                stamps = StepClock()
                trainer.add_callback(stamps)
                trainer.args.max_steps = steps + 1
                t0 = time.perf_counter()
                trainer.train()
                total = time.perf_counter() - t0
                secs = stamps.times[-1] - stamps.times[0]
                out[mode] = {"tokens": sum(sizes[1:]), "seconds": secs, "tokens_per_second": sum(sizes[1:]) / secs,
                             "steps": steps, "train_call_seconds_incl_setup": total}
    pipe = statistics.median([out["pipeline"]["tokens_per_second"], out["pipeline_again"]["tokens_per_second"]])
    out["pipeline_over_bare"] = pipe / out["bare"]["tokens_per_second"]
    return out


def decode_speed(model_dir: str, users: int, seed: int, dtype: str = "auto") -> dict:
    from llmrec.data import leave_one_out, load_dataset
    from llmrec.lm.personal import PersonalLM

    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    plm = PersonalLM.load(model_dir, dtype=dtype)
    hist = [list(e.history.item_ids) for e in split.test[:users]]
    plm.recommend_batch(hist[:2], k=10)  # warm-up
    times = []
    for bs in (1, 16):
        t0 = time.perf_counter()
        for i in range(0, len(hist), bs):
            plm.recommend_batch(hist[i:i + bs], k=10, num_beams=10)
        times.append({"batch_users": bs, "ms_per_user": 1000 * (time.perf_counter() - t0) / len(hist)})
    return {"users": len(hist), "beams": 10, "runs": times}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="eval/results/genrec_ml100k.json")
    p.add_argument("--llm-results", default="eval/results/genrec_llm_ml100k.json")
    p.add_argument("--baselines", default="eval/results/baselines_ml100k.json")
    p.add_argument("--model-dir", default="adapters/trained/genrec-ml100k")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--decode-users", type=int, default=48)
    add_hardware_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-decode", action="store_true", help="keep the decoding figures already in --out")
    p.add_argument("--skip-throughput", action="store_true", help="keep the throughput figures already in --out")
    args = p.parse_args()
    import torch  # heavy imports after parsing: --help stays instant

    from llmrec.io import write_json_atomic

    apply_hardware_args(args)
    llm = json.load(open(args.llm_results, encoding="utf-8"))
    base = json.load(open(args.baselines, encoding="utf-8"))
    result = {
        "command": "python scripts/bench_genrec.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": {"cpu_cores": 2, "torch_threads": torch.get_num_threads(), "dtype": args.dtype,
                    "python": platform.python_version(),
                    "torch": torch.__version__, "note": "shared machine: other jobs ran concurrently"},
        "protocol": "leave-one-out, full catalogue (1,682 items), user's rated items removed, 943 test users",
        "llmrec": {"test": llm["test"], "test_users": llm["test_users"], "train": {
            k: llm["train"][k] for k in ("steps", "train_seconds", "tokens_per_epoch", "best_valid_ndcg@10")},
            "valid_curve": llm["train"]["valid_curve"], "config": llm["config"]},
        "baselines": base,
        "throughput": (json.load(open(args.out, encoding="utf-8"))["throughput"] if args.skip_throughput
                       else throughput(args.steps, args.batch_size, args.seed, args.dtype)),
        "decoding": (json.load(open(args.out, encoding="utf-8"))["decoding"] if args.skip_decode
                     else decode_speed(args.model_dir, args.decode_users, args.seed, args.dtype)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    write_json_atomic(args.out, result)
    print(json.dumps({"throughput": result["throughput"]["pipeline_over_bare"], "decoding": result["decoding"]}, indent=1))


if __name__ == "__main__":
    main()
