"""A busy machine: the same SmolLM2-135M + LoRA forward+backward+AdamW step, quiet and beside a CPU-bound
neighbour, for each thread count and OpenMP wait policy (each configuration in its own process, because OpenMP
reads its environment once, when torch loads).

    .venv/bin/python scripts/bench_busy.py --steps 6 --out eval/results/busy_machine.json

The neighbour is ``--neighbours`` Python busy loops (each takes one core the whole time). A fair run beside one
neighbour on a 2-core machine gets one core: its step should be no slower than the quiet 1-thread step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BUSY_LOOP = "while True: pass"


def worker(threads: str, steps: int, warmup: int, batch: int, seq: int, dtype: str) -> dict:
    """One configuration: runs in a fresh process whose OpenMP environment the parent set."""
    from llmrec.hardware import configure_openmp

    if threads == "auto":  # what llmrec's CLI does: wait policy before torch loads, then threads from the load
        configure_openmp()  # PASSIVE only when the machine is busy now
    import torch

    from llmrec.hardware import machine_facts, resolve_dtype, set_threads
    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.personal import with_lora

    chosen = set_threads(threads if threads == "auto" else int(threads))
    torch.manual_seed(0)
    model, _ = load_causal_lm("smollm2-135m", dtype=resolve_dtype(dtype))
    model = with_lora(model, "lora")
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 49152, (batch, seq))
    times = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return {"threads_used": chosen, "step_seconds": times, "median_step_seconds": statistics.median(times),
            "tokens_per_second": batch * seq / statistics.median(times),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
            "dtype": resolve_dtype(dtype, announce=False), "machine": machine_facts()}


def run_config(args, threads: str, policy: str, neighbours: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy == "spincount0":
        env["GOMP_SPINCOUNT"] = "0"
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(neighbours)]
    try:
        time.sleep(1.0 if hogs else 0.0)  # neighbour running before we start (and seen by threads=auto)
        cmd = [sys.executable, __file__, "--worker", "--threads", threads, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq),
               "--dtype", args.dtype]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update({"threads": threads, "policy": policy, "neighbours": neighbours})
    print(f"threads={threads} policy={policy} neighbours={neighbours}: median {res['median_step_seconds']:.3f}s "
          f"({res['threads_used']} threads)", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="eval/results/busy_machine.json")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=100)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--neighbours", type=int, default=1)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--policies", default="default,passive")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.threads, args.steps, args.warmup, args.batch, args.seq, args.dtype)))
        return
    rows = []
    for threads in args.threads.split(","):
        for policy in args.policies.split(","):
            for neighbours in (0, args.neighbours):
                rows.append(run_config(args, threads, policy, neighbours))
    # llmrec's own choice (configure_openmp + --threads auto), quiet and busy
    for neighbours in (0, args.neighbours):
        rows.append(run_config(args, "auto", "llmrec", neighbours))

    def med(threads: str, policy: str, neighbours: int) -> float:
        return next(r["median_step_seconds"] for r in rows
                    if r["threads"] == threads and r["policy"] == policy and r["neighbours"] == neighbours)

    quiet_best = min(r["median_step_seconds"] for r in rows if r["neighbours"] == 0)
    table = []
    for r in rows:
        if r["neighbours"] == 0:
            continue
        quiet = med(r["threads"], r["policy"], 0)
        table.append({"threads": r["threads"], "threads_used": r["threads_used"], "policy": r["policy"],
                      "quiet_s": quiet, "busy_s": r["median_step_seconds"], "busy_over_quiet": r["median_step_seconds"] / quiet,
                      "busy_over_best_quiet": r["median_step_seconds"] / quiet_best})
    from llmrec.hardware import machine_facts
    from llmrec.io import write_json_atomic
    from llmrec.runinfo import package_versions

    result = {
        "command": "python scripts/bench_busy.py " + " ".join(f"--{a.replace('_', '-')} {v}"
                                                              for a, v in vars(args).items() if a != "worker"),
        "what": (f"SmolLM2-135M + LoRA forward+backward+AdamW step, {args.batch}x{args.seq} tokens, dtype "
                 f"{args.dtype}; median of {args.steps} steps after {args.warmup} warm-up; quiet vs beside "
                 f"{args.neighbours} CPU-bound Python busy loop(s); one process per configuration. policy "
                 "'llmrec' = --threads auto + llmrec.hardware.configure_openmp (PASSIVE only when others already run)"),
        "fair_share_note": "beside one busy neighbour on a 2-core machine a fair run gets 1 core: "
                           "busy_over_best_quiet near 1-2 is proportional; far above 2 is oversubscription",
        "table": table,
        "runs": [{k: v for k, v in r.items() if k != "machine"} for r in rows],
        "machine": machine_facts(),
        "versions": package_versions(),
    }
    write_json_atomic(args.out, result)
    for t in table:
        print(t)


if __name__ == "__main__":
    main()
