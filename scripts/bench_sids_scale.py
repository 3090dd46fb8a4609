"""Benchmark semantic-ID building at scale: both quantizers on synthetic item vectors (100k and 1M x 384), next to
a plain faiss residual quantizer measured in the same run; rows go into ``eval/results/scale.json``
(``sid_building``; the file's other sections are kept).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_sids_scale.py             # 100k and 1M -> scale.json
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_sids_scale.py --sizes 20000 --out /tmp/s.json   # quick
    .venv/bin/python scripts/bench_sids_scale.py --table      # print the markdown table of --out (no rerun)

Vectors: ``n`` points around ``n / 100`` Gaussian centres in 384-d (MiniLM's width), varying within a cluster
along a shared 16-d subspace (std 0.35) plus isotropic noise (0.05), L2-normalised like sentence-embedding output;
generated in chunks, float32, seeded. RQ-VAE trains on a 100k-item sample (``max_train_items``) and encodes all.
Every measurement runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own: it includes the
interpreter, torch + faiss and the input array itself (``input_mb``; 1M x 384 float32 = 1,465 MB), so read
``peak_mb - input_mb`` as the quantizer's own memory. Timed: fit + encode (collision-aware last level) and the
table (disambiguation level, uniqueness check); ``cpu_s`` is the process's CPU time over the same span, the
better figure on a shared machine (one thread: about the wall time on a free core). Threads pinned to one
(OMP/MKL/OpenBLAS env, faiss, torch).
The reference is faiss's ``ResidualQuantizer`` (3 x 8 bits, beam 1, trained on the same 65,536-row sample size,
codes computed in chunks): the same residual k-means without collision handling or a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
DIM = 384


def synthetic(n: int, dim: int = DIM, seed: int = 0, chunk: int = 65536, rank: int = 16):
    """``[n, dim]`` float32 clustered, L2-normalised vectors, built chunk by chunk (no float64 [n, dim]).

    Within a cluster items vary mostly along a shared ``rank``-dimensional subspace (std 0.35 per dimension,
    as sentence embeddings concentrate their variance in few directions) plus a little isotropic noise (0.05):
    purely isotropic 384-d noise has no structure for deeper levels to find, unlike real item text."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(10, n // 100), dim), dtype=np.float32)
    basis = rng.standard_normal((rank, dim), dtype=np.float32) / np.sqrt(rank)
    x = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        block = centers[rng.integers(0, len(centers), hi - lo)]
        block += 0.35 * (rng.standard_normal((hi - lo, rank), dtype=np.float32) @ basis)
        block += 0.05 * rng.standard_normal((hi - lo, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[lo:hi] = block
    return x


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def quantizer_config(kind: str, n: int, epochs: int, batch: int, train_items: int = 100_000):
    """3 x 256 codes, one thread, defaults otherwise; RQ-VAE with ``epochs`` epochs of ``batch``-row batches over
    a sample of at most ``train_items`` items."""
    from llmrec.items.quantizers import QuantizerConfig, RQVAEConfig

    rqvae = RQVAEConfig(batch_size=batch, max_epochs=epochs, patience=epochs,
                        max_train_items=train_items) if kind == "rqvae" else RQVAEConfig()
    return QuantizerConfig(kind=kind, levels=3, codebook_size=256, num_threads=1, rqvae=rqvae)


def run_llmrec(kind: str, n: int, epochs: int, batch: int) -> dict:
    import faiss  # noqa: F401  (imports are not what is timed: torch and its optimizer import take seconds)
    import numpy as np
    import torch

    from llmrec.hardware import peak_memory_mb
    from llmrec.items.diagnostics import diagnostics
    from llmrec.items.quantizers import make_quantizer
    from llmrec.items.semantic_ids import SemanticIds

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    x = synthetic(n)
    config = quantizer_config(kind, n, epochs, batch)
    rss0 = current_rss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    q = make_quantizer(config)
    codes = q.fit(x)
    t1 = time.perf_counter()
    sids = SemanticIds.from_quantized([f"i{i}" for i in range(n)], codes, q.codebook_sizes, quantizer=q)
    t2, c2 = time.perf_counter(), time.process_time()
    report = diagnostics(sids)
    out = {"items": n, "dim": int(x.shape[1]), "quantizer": kind, "fit_encode_s": round(t1 - t0, 2),
           "table_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2), "cpu_s": round(c2 - c0, 2),
           "peak_mb": peak_memory_mb(),
           "input_mb": round(x.nbytes / 2**20, 1), "rss_before_mb": round(rss0, 1),
           "codebook_sizes": list(sids.codebook_sizes), "collision_rate": round(report["collision_rate"], 6),
           "max_collision_group": report["max_collision_group"],
           "utilization": [round(u, 4) for u in report["utilization"]],
           "unique_fraction": sids.unique_fraction}
    if kind == "rqvae":  # the other settings are the defaults (QuantizerConfig / RQVAEConfig), listed in "configs"
        out["rqvae_batch_size"], out["rqvae_max_epochs"] = config.rqvae.batch_size, config.rqvae.max_epochs
        out["rqvae_train_items"] = min(n, config.rqvae.max_train_items or n)
        out["rqvae_epochs"] = len(q.history)
        out["rqvae_val_loss"] = [round(h["val_loss"], 4) for h in q.history]
        out["rqvae_steps"] = len(q.history) * int(np.ceil(out["rqvae_train_items"] * (1 - config.rqvae.val_fraction)
                                                          / batch))
    return out


def run_reference(n: int) -> dict:
    """faiss ResidualQuantizer, 3 x 8 bits, beam 1, trained on 256 * 256 sampled rows; codes in chunks."""
    import faiss
    import numpy as np

    from llmrec.hardware import peak_memory_mb

    faiss.omp_set_num_threads(1)
    x = synthetic(n)
    rss0 = current_rss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    rq = faiss.ResidualQuantizer(x.shape[1], 3, 8)
    rq.max_beam_size = 1
    rq.train_type = faiss.ResidualQuantizer.Train_default
    sample = x if n <= 65536 else x[np.sort(np.random.default_rng(0).choice(n, 65536, replace=False))]
    rq.train(np.ascontiguousarray(sample))
    codes = np.concatenate([rq.compute_codes(x[lo:lo + 65536])
                            for lo in range(0, n, 65536)])
    t1, c1 = time.perf_counter(), time.process_time()
    distinct = len(np.unique(codes.view(np.dtype((np.void, codes.shape[1])))))
    return {"items": n, "dim": int(x.shape[1]), "quantizer": "faiss ResidualQuantizer 3x8 (reference)",
            "fit_encode_s": round(t1 - t0, 2), "total_s": round(t1 - t0, 2), "cpu_s": round(c1 - c0, 2),
            "peak_mb": peak_memory_mb(),
            "input_mb": round(x.nbytes / 2**20, 1), "rss_before_mb": round(rss0, 1),
            "collision_rate": round(1 - distinct / n, 6)}


def measure(args: list[str]) -> dict:
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(section: dict) -> str:
    lines = ["| quantizer | items x dim | fit + encode s | table s | total s | CPU s | peak MB | input MB | code sizes "
             "| collision rate | RQ-VAE epochs |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in section["rows"]:
        if "error" in r:
            lines.append(f"| {r.get('quantizer', '?')} | {r.get('items', '?')} | error: {r['error']} |")
            continue
        sizes = "x".join(str(s) for s in r.get("codebook_sizes", [])) or "-"
        lines.append(f"| {r['quantizer']} | {r['items']:,} x {r['dim']} | {r['fit_encode_s']} | {r.get('table_s', '-')} "
                     f"| {r['total_s']} | {r.get('cpu_s', '-')} | {r['peak_mb']:.0f} | {r['input_mb']:.0f} | {sizes} | {r['collision_rate']} "
                     f"| {r.get('rqvae_epochs', '-')} |")
    lines.append(f"\n`{section['command']}`; threads: {section['threads']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rqvae-epochs", type=int, nargs="+", default=[2],
                        help="RQ-VAE epochs per size (the last value repeats for further sizes)")
    parser.add_argument("--rqvae-batch", type=int, default=1024)
    parser.add_argument("--out", default=str(ROOT / "eval" / "results" / "scale.json"))
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out's sid_building")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n = args.child[0], int(args.child[1])
        result = run_reference(n) if kind == "reference" else run_llmrec(kind, n, int(args.child[2]),
                                                                         int(args.child[3]))
        print(json.dumps(result))
        return
    out = Path(args.out)
    if args.table:
        print(markdown(json.loads(out.read_text())["sid_building"]))
        return

    from llmrec.hardware import load_at_end, load_at_start, machine_facts
    from llmrec.io import write_json_atomic

    existing = json.loads(out.read_text()) if out.exists() else {}
    rows = []
    command = ("OMP_NUM_THREADS=1 python scripts/bench_sids_scale.py " + " ".join(sys.argv[1:])).strip()
    section = {
        "benchmark": "semantic-ID building: quantizer fit + encode (collision-aware) + table, synthetic vectors",
        "command": command,
        "threads": "1 (OMP/MKL/OpenBLAS env, faiss and torch)",
        "load": load_at_start(),  # what else ran (load_at_end after each row)
        "vectors": "n points around n/100 Gaussian centres in 384-d, within-cluster variation along a shared 16-d "
                   "subspace (std 0.35) + isotropic noise 0.05, L2-normalised, float32",
        "rows": rows,
        "configs": {kind: quantizer_config(kind, 0, 1, args.rqvae_batch).to_dict() for kind in ("rkmeans", "rqvae")},
    }
    for i, n in enumerate(args.sizes):
        epochs = args.rqvae_epochs[min(i, len(args.rqvae_epochs) - 1)]
        for child in (["rkmeans", str(n), "0", "0"], ["rqvae", str(n), str(epochs), str(args.rqvae_batch)],
                      ["reference", str(n)]):
            t0 = time.perf_counter()
            row = measure(child)
            row.setdefault("quantizer", child[0])
            row.setdefault("items", n)
            row["wall_s"] = round(time.perf_counter() - t0, 1)  # with data generation and imports
            rows.append(row)
            print(json.dumps(row), flush=True)
            section["machine"] = machine_facts()
            section["load"] = load_at_end(section["load"])
            write_json_atomic(out, _insert(existing, section))  # after every row: a killed run keeps its rows
    print(markdown(section))


def _insert(existing: dict, section: dict) -> dict:
    """``existing`` with ``sid_building`` set, placed after ``rows`` (the data-layer rows stay as they are)."""
    result: dict = {}
    for key, value in existing.items():
        if key != "sid_building":
            result[key] = value
        if key == "rows":
            result["sid_building"] = section
    result.setdefault("sid_building", section)
    return result


if __name__ == "__main__":
    main()
