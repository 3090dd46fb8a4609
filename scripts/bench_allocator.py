"""The C allocator policy side by side: the same workloads in child processes with ``LLMREC_MALLOC=system``
(glibc's defaults) and ``LLMREC_MALLOC=keep`` (freed memory kept for reuse, llmrec's default; see
llmrec.hardware.configure_allocator), alternating, one thread each. Writes eval/results/allocator.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_allocator.py --rounds 3

Workloads:

- ``sasrec``: SASRec training steps (the shipped sasrec/ml-100k config's fast path, batch 32, the dtype ``auto``
  chooses): CPU ms per step and minor page faults per step, median over ``--sasrec-steps`` steps after warm-up.
- ``throughput``: scripts/bench_throughput.py with few steps (genrec and QA/soft-prompt training steps of
  SmolLM2-135M + LoRA, the rows of eval/results/throughput.json): tokens/s per row, and the child's page faults.
- ``decoding``: scripts/bench_decoding.py's llmrec beam search on an untrained genrec model (s/user, batched and
  single).

Every workload runs ``--rounds`` times per policy, the policies alternating within a round, so both see the same
neighbours; the ratios compare the medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("system", "keep")


def sasrec_child(steps: int) -> dict:
    """Runs inside the child: SASRec fast-path steps -> CPU ms and minor faults per step."""
    import numpy as np
    import torch

    from llmrec.hardware import configure_allocator, resolve_dtype, set_threads
    from llmrec.recipes.common import load_data
    from llmrec.recipes.config import load_config
    from llmrec.recipes.sasrec import SasrecRecipeConfig, encoder_configs
    from llmrec.users import pretrain
    from llmrec.users.sequence import SequenceEncoder

    set_threads(1)
    config = load_config(SasrecRecipeConfig, "sasrec/ml-100k", {})
    data, split = load_data(config)
    model_cfg, train_cfg = encoder_configs(config, len(data.items))
    torch.manual_seed(0)
    model = SequenceEncoder(model_cfg, data.item_ids)
    idx_all, _, lengths = pretrain._window_tensors(model, split, "all")
    dtype = torch.bfloat16 if resolve_dtype("auto", announce=False) == "bf16" else torch.float32
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, fused=True)
    order = np.random.default_rng(0).permutation(len(lengths))
    bs, warmup = train_cfg.batch_size, 5
    cpu, faults = [], []
    for k in range(warmup + steps):
        sel = torch.from_numpy(order[(k * bs) % len(order):][:bs])
        idx = idx_all[sel, : int(lengths[sel].max())]
        f0, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
        loss = pretrain.fast_next_item_loss(model, idx, None, dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if k >= warmup:
            cpu.append((time.process_time() - c0) * 1000)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"policy": configure_allocator(), "dtype": str(dtype).removeprefix("torch."), "batch_size": bs,
            "steps": steps, "cpu_ms_per_step": statistics.median(cpu),
            "minor_faults_per_step": statistics.median(faults),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(args: list[str], policy: str, out: Path) -> tuple[dict, dict]:
    """Run ``python args`` with ``policy``; returns (the JSON it wrote to ``out``, its rusage figures)."""
    env = {**os.environ, "LLMREC_MALLOC": policy, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = {"wall_s": round(time.perf_counter() - t0, 1), "minor_faults": after.ru_minflt - before.ru_minflt,
             "user_s": round(after.ru_utime - before.ru_utime, 1), "sys_s": round(after.ru_stime - before.ru_stime, 1)}
    return json.loads(out.read_text(encoding="utf-8")), usage


def throughput_rows(record: dict) -> dict:
    return {name: row["real_tokens_per_second"] for dtype_rows in record["rows"].values()
            for name, row in dtype_rows.items() if isinstance(row, dict) and "real_tokens_per_second" in row}


def decoding_rows(record: dict) -> dict:
    return {f"{dtype}/{name}": row["median_s_per_user"] for dtype, run in record["runs"].items()
            for name, row in run.items() if isinstance(row, dict) and "median_s_per_user" in row}


def summarise(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict]:
    """Per workload: medians over rounds for each policy and ``keep_speedup`` (> 1: keep is faster; tokens/s
    ratios for throughput rows, system/keep time ratios otherwise); workloads missing a policy are left out."""
    summary: dict[str, dict] = {}
    for w, by_policy in runs.items():
        if not all(by_policy.get(pol) for pol in POLICIES):
            continue
        if w == "sasrec":
            med = {pol: {k: statistics.median(x[k] for x in by_policy[pol])
                         for k in ("cpu_ms_per_step", "minor_faults_per_step")} for pol in POLICIES}
            summary[w] = {**med, "keep_speedup": med["system"]["cpu_ms_per_step"] / med["keep"]["cpu_ms_per_step"]}
            continue
        rate = w == "throughput"  # tokens/s (higher is better) vs seconds per user
        key = "real_tokens_per_second" if rate else "median_s_per_user"
        med = {pol: {n: statistics.median(x[key][n] for x in by_policy[pol]) for n in by_policy["keep"][0][key]}
               for pol in POLICIES}
        speed = {n: med["keep"][n] / med["system"][n] if rate else med["system"][n] / med["keep"][n]
                 for n in med["keep"]}
        faults = {pol: statistics.median(x["minor_faults"] for x in by_policy[pol]) for pol in POLICIES}
        summary[w] = {f"median_{key}": med, "keep_speedup": speed, "child_minor_faults_median": faults}
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "eval" / "results" / "allocator.json")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workloads", default="sasrec,throughput,decoding")
    p.add_argument("--sasrec-steps", type=int, default=60)
    p.add_argument("--throughput-args", default="--steps 4 --warmup 1 --users 80 --no-repeat",
                   help="extra arguments of scripts/bench_throughput.py")
    p.add_argument("--decoding-args", default="--users 24 --batch 12 --dtypes auto --searches llmrec",
                   help="extra arguments of scripts/bench_decoding.py")
    p.add_argument("--child", choices=("sasrec",), help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.child_out.write_text(json.dumps(sasrec_child(args.sasrec_steps)), encoding="utf-8")
        return 0

    from llmrec.hardware import load_at_end, load_at_start, machine_facts
    from llmrec.io import write_json_atomic
    from llmrec.runinfo import package_versions

    load = load_at_start()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    runs: dict[str, dict[str, list]] = {w: {pol: [] for pol in POLICIES} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="llmrec-alloc-") as tmp:
        out = Path(tmp) / "child.json"
        for r in range(args.rounds):
            for w in workloads:
                for policy in POLICIES if r % 2 == 0 else POLICIES[::-1]:
                    if w == "sasrec":
                        cmd = [__file__, "--child", "sasrec", "--child-out", str(out),
                               "--sasrec-steps", str(args.sasrec_steps)]
                        record, usage = _child(cmd, policy, out)
                        figures = record
                    elif w == "throughput":
                        cmd = ["scripts/bench_throughput.py", "--threads", "1", "--out", str(out),
                               *args.throughput_args.split()]
                        record, usage = _child(cmd, policy, out)
                        figures = {"real_tokens_per_second": throughput_rows(record),
                                   "peak_rss_mb": record["memory"]["genrec_peak_rss_mb"],
                                   "allocator": record["machine"].get("allocator")}
                    else:
                        cmd = ["scripts/bench_decoding.py", "--threads", "1", "--out", str(out),
                               *args.decoding_args.split()]
                        record, usage = _child(cmd, policy, out)
                        figures = {"median_s_per_user": decoding_rows(record),
                                   "allocator": record["machine"].get("allocator")}
                    runs[w][policy].append({**figures, **usage})
                    print(r, w, policy, json.dumps(figures)[:300], usage, flush=True)
    summary = summarise(runs)
    record = {
        "benchmark": "C allocator policy: LLMREC_MALLOC=system (glibc defaults) vs keep (llmrec's default), "
                     "alternating child processes, one thread",
        "command": "OMP_NUM_THREADS=1 python scripts/bench_allocator.py " + " ".join(sys.argv[1:]),
        "rounds": args.rounds, "summary": summary, "runs": runs, "load": load_at_end(load),
        "machine": machine_facts(), "versions": package_versions(),
        "notes": ["keep_speedup > 1: keep is faster (tokens/s ratio, or system/keep for times)",
                  "minor faults: the child's, from getrusage(RUSAGE_CHILDREN); sasrec: per step inside the child"],
    }
    write_json_atomic(args.out, record)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
