"""Training throughput, one run, same batches: the measured matmul peak (fp32 and bf16), a bare Hugging Face
forward+backward+AdamW loop, llmrec's genrec step (and its variants) and the soft-prompt QA step, as tokens/s,
FLOPs per token, % of peak and peak RSS (llmrec.benchmarks.throughput).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_throughput.py --threads 1 \
        --out eval/results/throughput.json

``--quick`` (with ``--base-model`` a tiny local model) runs a couple of steps on a few users: a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

NOTES = [
    "One process; the machine's load average at the start and end of the run is recorded (load_average): other "
    "jobs on the cores depress absolute tokens/s and GFLOP/s (the matmul peak is measured under the same load), "
    "so compare the rows with each other first.",
    "Tokens/s, GFLOP/s and % of peak are medians over the timed steps (after warm-up) of each step's own figure; "
    "a Trainer step is timed from the previous step's end (data loading, optimizer, scheduler and callbacks "
    "included). 'real' tokens exclude padding, 'computed' = rows x padded width.",
    "% of peak = achieved GFLOP/s (FLOPs computed, see flops_formula) / the fastest GEMM of the model's shapes "
    "in the row's dtype; pct_of_mix_ceiling uses the rate of all the model's GEMMs weighted as a step runs "
    "them; pct_of_peak_real_tokens counts only the FLOPs of non-padding tokens.",
    "bare_hf_loop replays the exact batches genrec_llmrec's Trainer produced (batches_digest equal); "
    "qa_bare_loop likewise for qa_llmrec. Peak RSS per row = the process's VmHWM reset at the row's start "
    "(data, SIDs and both models stay loaded), so it is the whole process's footprint during that row.",
    "Genrec's tied LM head carries PEFT trainable token rows (the SID rows, trainable_token_indices): the merged "
    "head weight requires grad, so autograd forms the full [vocabulary x hidden] head weight gradient every step, "
    "a third head GEMM per position (head_backward_weight in flops_by_part) that the QA step does not pay and a "
    "SID-only loss or head would avoid.",
    "Run as: OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 10 python scripts/bench_throughput.py ... (PYTHONPATH so the "
    "checkout's llmrec is imported).",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="eval/results/throughput.json")
    p.add_argument("--base-model", default="smollm2-135m")
    p.add_argument("--dtypes", default="auto", help="comma-separated: auto (bf16 on a CPU with native bf16), fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--users", type=int, default=0, help="first N users only (0 = all)")
    p.add_argument("--no-repeat", action="store_true", help="skip the second run of the genrec step")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 steps, 40 users, short GEMM timings")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from llmrec.benchmarks.throughput import ThroughputConfig, run_throughput
    from llmrec.io import write_json_atomic
    from llmrec.runinfo import run_info

    config = ThroughputConfig(base_model=args.base_model, dtypes=tuple(args.dtypes.split(",")), threads=args.threads,
                              steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, users=args.users,
                              repeat=not args.no_repeat, seed=args.seed)
    if args.quick:
        config = ThroughputConfig(base_model=args.base_model, dtypes=config.dtypes, threads=args.threads, steps=2,
                                  warmup=1, batch_size=4, users=args.users or 40, qa_per_task=4, gemm_seconds=0.01,
                                  gemm_repeats=1, repeat=False, seed=args.seed)
    load_start = os.getloadavg()
    result = run_throughput(config)
    info = run_info(config, command="python scripts/bench_throughput.py " + " ".join(argv if argv is not None
                                                                                    else sys.argv[1:]))
    info["machine"]["dtype"] = "/".join(result["dtypes"])
    info["machine"]["load_average"] = {"start": load_start, "end": os.getloadavg(), "cores": os.cpu_count()}
    record = {"benchmark": "training throughput vs the measured matmul peak (issue 18 items 1 and 6)",
              "command": info.pop("command"), "notes": NOTES, **result, **info}
    write_json_atomic(args.out, record)
    print(json.dumps({"summary": result["summary"], "ratios": result["ratios"], "memory": result["memory"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
