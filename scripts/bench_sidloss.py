"""Genrec loss over the semantic-ID vocabulary vs the full vocabulary, and packed batches, on ml-100k.

    OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 10 .venv/bin/python scripts/bench_sidloss.py --steps 300 --eval-steps 150 \
        --out eval/results/genrec_sidloss_ml100k.json

1. Side by side on the same batches (one process, one thread, variants interleaved step by step): seconds per
   forward+backward+AdamW step and window tokens/s of the full-vocabulary loss, the SID-vocabulary loss, and each
   with packed batches; the padding fraction of the computed positions, unpacked and packed.
2. The same budget for each variant (``llmrec train genrec``, same seed, same semantic-ID table, test skipped):
   validation NDCG@10 of loss full, loss sid, loss sid + packing. Each run's folder is kept under ``--work``; a
   finished one is not rerun and an interrupted one resumes from its checkpoint, so rerunning the command
   continues. The SID loss must not be worse on validation.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

VARIANTS = {"full": ["--train.loss", "full"], "sid": ["--train.loss", "sid"],
            "sid_packed": ["--train.loss", "sid", "--train.packing", "true"]}


def base_args(args) -> list[str]:
    return ["--data", "ml-100k", "--dtype", args.dtype, "--threads", "1", "--model.max_history", str(args.max_history),
            "--train.max_windows", "0", "--train.batch_size", str(args.batch_size),
            "--train.max_steps", str(args.steps), "--train.eval_steps", str(args.eval_steps),
            "--train.eval_users", str(args.eval_users), "--train.seed", "0", "--test.skip", "true"]


def side_by_side(args, sids_dir: Path, report) -> dict:
    """Interleaved timing of the four step variants on the same Trainer-ordered batches; ``report(summary)`` after
    every step (a starved machine may not finish). Wall seconds and process CPU seconds are both kept: with one
    thread, CPU seconds are the step's compute whatever else shares the cores."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.hardware import resolve_dtype
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.lm.sid_vocab import sid_vocab_loss
    from llmrec.recipes.genrec import reuse_sids
    from llmrec.tasks.genrec import build_genrec_rows
    from llmrec.training.collate import CausalCollator, PackingCollator, padding_fractions

    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    sids, vectors, _ = reuse_sids(str(sids_dir), data)
    dtype = resolve_dtype(args.dtype)
    plm = PersonalLM.create(sids, data.items, PersonalLMConfig(dtype=dtype, max_history=args.max_history),
                            item_vectors=vectors, vocabulary=data.vocabulary)
    rows = build_genrec_rows(plm, split.train, max_windows=None).rows
    pad = plm.tokenizer.pad_token_id
    padding = padding_fractions(rows, {"unpacked": CausalCollator(pad), "packed": PackingCollator(pad)},
                                args.batch_size)
    ids, labels = list(rows["input_ids"]), list(rows["labels"])
    summary = {"steps": 0, "warmup_steps": args.warmup_steps, "batch_size": args.batch_size,
               "padding_fraction": padding, "windows": len(ids), "variants": {}}
    report(summary)
    order = list(LengthGroupedSampler(args.batch_size, lengths=[len(x) for x in ids],
                                      generator=torch.Generator().manual_seed(0)))
    batches = [[{"input_ids": ids[i], "labels": labels[i]} for i in order[s:s + args.batch_size]]
               for s in range(0, len(order), args.batch_size)][: args.timing_steps + args.warmup_steps]
    model = plm.model
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # same compute, no drift
    vocab = torch.tensor(plm.sid_vocab)
    collators = {"unpacked": CausalCollator(pad), "packed": PackingCollator(pad)}
    names = [f"{loss}_{packing}" for loss in ("full", "sid") for packing in ("unpacked", "packed")]
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, list[int]] = {n: [] for n in names}
    computed: dict[str, list[int]] = {n: [] for n in names}
    for step, windows in enumerate(batches):
        real = sum(len(w["input_ids"]) for w in windows)
        for k in range(len(names)):
            name = names[(k + step) % len(names)]  # rotate the order so no variant always runs first
            loss_kind, packing = name.split("_")
            batch = collators[packing](windows)
            t0, c0 = time.perf_counter(), time.process_time()
            if loss_kind == "sid":
                loss = sid_vocab_loss(model, batch, vocab)
            else:
                loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step >= args.warmup_steps:  # warm-up steps untimed
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                tokens[name].append(real)
                computed[name].append(batch["input_ids"].numel())
        print(f"timing step {step + 1}/{len(batches)}", flush=True)
        if step >= args.warmup_steps:
            summary["steps"] = step + 1 - args.warmup_steps
            summary["variants"] = _timing(names, times, cpu, tokens, computed)
            report(summary)
    return summary


def _timing(names, times, cpu, tokens, computed) -> dict:
    out = {}
    for name in names:
        out[name] = {"median_step_seconds": statistics.median(times[name]), "step_seconds": times[name],
                     "median_step_cpu_seconds": statistics.median(cpu[name]), "step_cpu_seconds": cpu[name],
                     "median_tokens_per_cpu_second": statistics.median(
                         t / s for t, s in zip(tokens[name], cpu[name], strict=True)),
                     "computed_positions": sum(computed[name]), "window_tokens": sum(tokens[name])}
    ref, ref_cpu = out["full_unpacked"]["median_step_seconds"], out["full_unpacked"]["median_step_cpu_seconds"]
    for name in names:
        out[name]["speedup_vs_full_unpacked"] = ref / out[name]["median_step_seconds"]
        out[name]["cpu_speedup_vs_full_unpacked"] = ref_cpu / out[name]["median_step_cpu_seconds"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-steps", type=int, default=150)
    p.add_argument("--eval-users", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--timing-steps", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--work", default="runs/sidloss")
    p.add_argument("--out", default="eval/results/genrec_sidloss_ml100k.json")
    args = p.parse_args(argv)

    from llmrec.cli import main as cli
    from llmrec.hardware import machine_facts, resolve_dtype, set_threads
    from llmrec.io import write_json_atomic
    from llmrec.items.semantic_ids import is_sid_table
    from llmrec.runinfo import package_versions

    set_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sids_dir = work / "sids"
    if not is_sid_table(sids_dir):  # one table for every variant
        cli(["items", "build", "--data", "ml-100k", "--out", str(sids_dir), "--seed", "0", "--threads", "1"])
    partial = work / "partial.json"
    result = json.loads(partial.read_text()) if partial.exists() else {}
    command = ("OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 10 python scripts/bench_sidloss.py "
               + shlex.join(sys.argv[1:] if argv is None else argv))

    def write() -> None:  # after every stage, so an interrupted measurement leaves what it has
        runs = result.get("runs", {})
        full = runs.get("full", {}).get("best_valid_ndcg@10")
        sid = runs.get("sid", {}).get("best_valid_ndcg@10")
        write_json_atomic(partial, result)
        write_json_atomic(args.out, {
            "benchmark": "genrec loss over the semantic-ID vocabulary vs the full vocabulary, packed batches "
                         "(issue 18 items 2 and 3)",
            "command": command,
            "protocol": {"recipe_args": base_args(args), "variants": VARIANTS, "threads": 1,
                         "dtype": resolve_dtype(args.dtype, announce=False),
                         "note": "the same SID table, seed and budget per variant; validation = NDCG@10 of 10-beam "
                                 "constrained search on the same sampled validation users (decoded with the "
                                 "variant's own normalisation); test not scored"},
            "complete": all(v in runs for v in args.variants),
            "side_by_side": result.get("side_by_side"),
            "runs": runs,
            "sid_not_worse_on_validation": (sid >= full) if full is not None and sid is not None else None,
            "machine": machine_facts(),
            "versions": package_versions(),
        })

    if result.get("side_by_side", {}).get("steps", 0) < args.timing_steps:

        def report(summary: dict) -> None:
            result["side_by_side"] = summary
            write()

        side_by_side(args, sids_dir, report)
    runs = result.setdefault("runs", {})
    for name in args.variants:
        out = work / name
        if name not in runs:
            if not (out / "results.json").exists():
                cli(["train", "genrec", *base_args(args), "--sids", str(sids_dir), "--out", str(out),
                     *VARIANTS[name]])
            rep = json.loads((out / "results.json").read_text())["train"]
            runs[name] = {k: rep.get(k) for k in (
                "best_valid_ndcg@10", "valid_curve", "steps", "train_seconds", "train_loss", "step_timing",
                "padding_fraction", "padding_fraction_unpacked", "padding_fraction_packed", "tokens_per_epoch",
                "loss", "packing")}
            write()
    print(json.dumps({k: v.get("best_valid_ndcg@10") for k, v in runs.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
