"""Benchmark semantic IDs: both quantizers on ml-100k, and a scaling curve on synthetic clustered vectors.

    .venv/bin/python scripts/bench_semantic_ids.py                      # -> eval/results/semantic_ids.json
    .venv/bin/python scripts/bench_semantic_ids.py --sizes 10000 --repeats 1 --out /tmp/x.json   # quick

Every measurement runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own; the trie's numpy
peak comes from ``tracemalloc`` on a second, untimed build (tracemalloc slows Python loops, so timed steps run
without it). ml-100k encoding is timed with an empty vector cache,
quantizing with cached vectors. Synthetic vectors: ``n`` points around ``n/100`` Gaussian centres in 128-d,
L2-normalised. Timings are noisy: the 2-core machine is shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, dim: int = 128, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // 100), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)]
    x += rng.normal(scale=0.35, size=x.shape).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def one(kind: str, what: str, n: int, repeats: int, max_epochs: int | None) -> dict:
    """One measurement in this (child) process."""
    import numpy as np

    from llmrec.data import load_dataset
    from llmrec.items.build import SemanticIdConfig, build_semantic_ids
    from llmrec.items.encoders import encode_items
    from llmrec.items.quantizers import QuantizerConfig, RQVAEConfig, make_quantizer
    from llmrec.items.semantic_ids import SemanticIds
    from llmrec.items.trie import SidTrie

    rqvae = RQVAEConfig(max_epochs=max_epochs) if max_epochs else RQVAEConfig()
    qcfg = QuantizerConfig(kind=kind, rqvae=rqvae)
    if what == "encode":
        data = load_dataset("ml-100k")
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            encode_items(data, cache_dir=tmp, show_progress=False)
            return {"encode_seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(_rss_mb())}
    if what == "ml-100k":
        data = load_dataset("ml-100k")
        vectors = encode_items(data, show_progress=False)  # cached by the encode step
        runs = []
        for _ in range(repeats):
            sids, report = build_semantic_ids(data, SemanticIdConfig(quantizer=qcfg), vectors=vectors,
                                              show_progress=False)
            runs.append(report)
        out = dict(runs[-1])
        out["quantize_seconds_runs"] = [r["quantize_seconds"] for r in runs]
        out["quantize_seconds"] = statistics.median(out["quantize_seconds_runs"])
        out["deterministic_across_runs"] = len({json.dumps(r["utilization"]) + str(r["collision_rate"])
                                                for r in runs}) == 1
        out["peak_rss_mb"] = round(_rss_mb())
        out["example_sid"] = {i: sids.sid_string(i) for i in ("1", "50", "181")}
        return out
    x = synthetic(n)
    base_rss = _rss_mb()
    start = time.perf_counter()  # timed without tracemalloc (it slows Python-level loops a lot)
    q = make_quantizer(qcfg)
    codes = q.fit(x)
    fit_s = time.perf_counter() - start
    fit_rss = _rss_mb()
    sids = SemanticIds.from_quantized([str(i) for i in range(n)], codes, q.codebook_sizes)
    start = time.perf_counter()
    trie = SidTrie(sids.codes, sids.codebook_sizes)
    trie_s = time.perf_counter() - start
    tracemalloc.start()
    SidTrie(sids.codes, sids.codebook_sizes)
    trie_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rng = np.random.default_rng(0)
    probes = [tuple(int(c) for c in sids.codes[i, :depth]) for i in rng.integers(0, n, 2000) for depth in range(4)]
    start = time.perf_counter()
    for p in probes:
        trie.next_codes(p)
    query_us = (time.perf_counter() - start) / len(probes) * 1e6
    out = {
        "items": n, "dim": int(x.shape[1]), "quantize_seconds": round(fit_s, 2),
        "quantize_rss_growth_mb": round(fit_rss - base_rss), "trie_build_seconds": round(trie_s, 3),
        "trie_tracemalloc_peak_mb": round(trie_peak, 1), "trie_nbytes_mb": round(trie.nbytes / 2**20, 1),
        "trie_next_codes_us": round(query_us, 2), "codebook_sizes": list(sids.codebook_sizes),
        "collision_rate": round(sids.collision_rate, 5), "unique_fraction": sids.unique_fraction,
        "rss_before_mb": round(base_rss), "peak_rss_mb": round(_rss_mb()),
    }
    if kind == "rqvae":
        out["rqvae_epochs"] = len(q.history)
    return out


def child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def versions() -> dict:
    import faiss
    import numpy
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "faiss": faiss.__version__,
            "numpy": numpy.__version__, "transformers": transformers.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--rqvae-sizes", type=int, nargs="*", default=[10_000, 100_000])
    p.add_argument("--rqvae-scaling-epochs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "eval/results/semantic_ids.json"))
    p.add_argument("--one", nargs=5, metavar=("KIND", "WHAT", "N", "REPEATS", "EPOCHS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        kind, what, n, repeats, epochs = args.one
        print(json.dumps(one(kind, what, int(n), int(repeats), int(epochs) or None)))
        return
    import os

    import torch

    from llmrec.io import write_json_atomic

    result = {
        "command": "python " + " ".join([Path(__file__).relative_to(ROOT).as_posix(), *sys.argv[1:]]),
        "machine": {"cpu_cores": os.cpu_count(), "torch_threads_default": torch.get_num_threads(),
                    "quantizer_threads": 1, "note": "shared machine: other jobs ran on the same 2 cores"},
        "versions": versions(),
        "ml-100k": {"encode": child(["rkmeans", "encode", "0", "1", "0"])},
        "scaling": {"rkmeans": [], "rqvae": []},
    }
    for kind in ("rkmeans", "rqvae"):
        result["ml-100k"][kind] = child([kind, "ml-100k", "0", str(args.repeats), "0"])
        print(kind, json.dumps(result["ml-100k"][kind]), flush=True)
    for n in args.sizes:
        result["scaling"]["rkmeans"].append(child(["rkmeans", "synthetic", str(n), "1", "0"]))
        print(json.dumps(result["scaling"]["rkmeans"][-1]), flush=True)
        write_json_atomic(args.out, result)
    for n in args.rqvae_sizes:
        row = child(["rqvae", "synthetic", str(n), "1", str(args.rqvae_scaling_epochs)])
        row["max_epochs"] = args.rqvae_scaling_epochs
        result["scaling"]["rqvae"].append(row)
        print(json.dumps(row), flush=True)
        write_json_atomic(args.out, result)
    write_json_atomic(args.out, result)
    print(table(result))


def table(result: dict) -> str:
    ml = result["ml-100k"]
    lines = ["| quantizer | unique | collisions (nearest -> collision-aware) | utilisation a/b/c | genre coherence "
             "| recon. rel. | quantize s (median) | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for kind in ("rkmeans", "rqvae"):
        r = ml.get(kind, {})
        if "error" in r or not r:
            continue
        util = "/".join(f"{u:.2f}" for u in r["utilization"])
        lines.append(f"| {kind} 3x256 | {r['unique_fraction']:.3f} | {r['collision_rate_nearest']:.4f} -> "
                     f"{r['collision_rate']:.4f} | {util} | {r['category_coherence']:.2f} | "
                     f"{r['reconstruction_rel']:.3f} | {r['quantize_seconds']:.1f} | {r['peak_rss_mb']} |")
    lines.append(f"\nml-100k encode (MiniLM, empty cache): {ml['encode'].get('encode_seconds')} s\n")
    lines += ["| quantizer | items | quantize s | quantize RSS growth MB | trie build s | trie MB "
              "| next_codes us | collision rate | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for kind, rows in result["scaling"].items():
        for r in rows:
            if "error" in r:
                lines.append(f"| {kind} | error: {r['error']} |")
                continue
            lines.append(f"| {kind} | {r['items']:,} | {r['quantize_seconds']} | {r['quantize_rss_growth_mb']} "
                         f"| {r['trie_build_seconds']} | {r['trie_nbytes_mb']} | {r['trie_next_codes_us']} "
                         f"| {r['collision_rate']} | {r['peak_rss_mb']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
