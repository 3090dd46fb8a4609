"""Benchmark the data layer at scale: load + validate + histories (index) + leave-one-out split of synthetic
Parquet interactions, next to a plain pyarrow + numpy reference doing the same work, measured in the same run.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_data_scale.py     # 100k..20M -> eval/results/scale.json
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_data_scale.py --sizes 100000 --out /tmp/s.json
    .venv/bin/python scripts/bench_data_scale.py --table        # eval/results/scale.json -> scale.md (no rerun)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_data_scale.py --rows 100000 1000000   # row building only:
        # -> the "row_building" section of scale.json (other sections kept)

Row building (``--rows``): genrec training rows (``llmrec.tasks.genrec_rows``: ``datasets.map`` into cached Arrow
files) for the leave-one-out training histories, with the SmolLM2 tokenizer and a synthetic semantic-ID table
(3 levels x 256 random codes + the disambiguation level, the recipe's default shape), prompt ``genrec``,
``max_history`` 20 and 3 windows per user (the genrec recipe's defaults). Per size, in fresh subprocesses: a cold
build with 1 worker, the same again (a cache hit), a cold build with 2 workers; then, at the largest size up to
1M, a few LoRA training steps of the real SmolLM2-135M (fp32, 1 thread) on batches of those rows.

Synthetic data: ``n`` interactions by ``n/50`` users over ``n/20`` items; history lengths are log-normal
(median ~25, long tail, at least 5); item popularity is Zipf (exponent 1.0 over popularity rank); each user's
events are spaced by exponential gaps (with some same-second ties) and the file is written in global time
order, as a log is, so users interleave. Ratings 1-5. Ids are strings (``U0000042``, ``I0001234``).

Every measurement runs in a fresh subprocess, so its peak RSS (``ru_maxrss``, via
``llmrec.hardware.peak_memory_mb``) is its own and includes the interpreter and its imports. Threads are
pinned to one (OMP/MKL/OpenBLAS env, pyarrow's CPU and I/O pools). Timings are wall-clock on a shared
machine (other jobs were running), so read them as the ratio to the reference measured alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "ARROW_NUM_THREADS": "1"}


def _pin_threads() -> None:
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def generate(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``items.parquet`` and ``interactions.parquet`` (see the module docstring)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, n // 50), max(10, n // 20)
    lengths = np.maximum(5, rng.lognormal(mean=np.log(25), sigma=1.0, size=n_users)).astype(np.int64)
    lengths = np.maximum(5, np.round(lengths * (n / lengths.sum()))).astype(np.int64)
    lengths[-1] += n - lengths.sum()  # exact total (the last user absorbs the rounding)
    if lengths[-1] < 5:
        lengths[np.argmax(lengths)] -= 5 - lengths[-1]
        lengths[-1] = 5
    user = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    ranks = rng.permutation(n_items)
    p = 1.0 / np.arange(1, n_items + 1)
    item = ranks[rng.choice(n_items, size=n, p=p / p.sum())]
    start = rng.integers(1_500_000_000, 1_650_000_000, size=n_users)
    gaps = rng.exponential(86_400.0, size=n).astype(np.int64)
    gaps[rng.random(n) < 0.05] = 0  # same-second ties: file order must decide
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    cum = np.cumsum(gaps)
    ts = start[user] + cum - np.repeat(cum[offsets[:-1]], lengths)
    order = np.argsort(ts, kind="stable")  # a log: global time order, users interleaved
    user_ids = pa.array(np.char.add("U", np.char.zfill(np.arange(n_users).astype(str), 7)))
    item_ids = pa.array(np.char.add("I", np.char.zfill(np.arange(n_items).astype(str), 7)))
    folder.mkdir(parents=True, exist_ok=True)
    items_path, inter_path = folder / "items.parquet", folder / "interactions.parquet"
    pq.write_table(pa.table({"item_id": item_ids, "title": pa.array([f"Item {k}" for k in range(n_items)]),
                             "category": pa.array([f"c{k % 50}" for k in range(n_items)])}), items_path)
    pq.write_table(pa.table({
        "user_id": user_ids.take(pa.array(user[order])), "item_id": item_ids.take(pa.array(item[order])),
        "timestamp": pa.array(ts[order]), "rating": pa.array(rng.integers(1, 6, size=n)[order].astype(np.float64)),
    }), inter_path)
    return items_path, inter_path


# ---------------------------------------------------------------- children (one measurement each)


def run_llmrec(items: str, inter: str, python_views: bool) -> dict:
    from llmrec.data import load_generic
    from llmrec.hardware import peak_memory_mb

    _pin_threads()
    t0 = time.perf_counter()
    data = load_generic(items, inter, rating_range=(1, 5))
    t1 = time.perf_counter()
    table = data.table
    lengths = table.lengths  # histories are the CSR offsets, built while loading
    t2 = time.perf_counter()
    split = data.split_index("leave_one_out")
    t3 = time.perf_counter()
    out = {"load_validate_s": t1 - t0, "histories_index_s": t2 - t1, "split_s": t3 - t2, "total_s": t3 - t0,
           "peak_mb": peak_memory_mb(), "users": table.n_users, "items": len(data.items),
           "interactions": len(table), "test_examples": len(split.test), "max_history": int(lengths.max())}
    if python_views:  # the lazy Python-object view the rest of the library reads (not on the hot path)
        t4 = time.perf_counter()
        data.histories()
        out["histories_dict_s"] = time.perf_counter() - t4
        out["peak_mb_with_histories_dict"] = peak_memory_mb()
    return out


def run_reference(items: str, inter: str) -> dict:
    """The same work in plain pyarrow + numpy: read, check (unknown items, missing values, rating range),
    code users by first appearance and items by catalogue, stable sort by user then time, offsets, split."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from llmrec.hardware import peak_memory_mb

    _pin_threads()
    t0 = time.perf_counter()
    catalogue = pq.read_table(items, columns=["item_id", "title"])
    table = pq.read_table(inter, columns=["user_id", "item_id", "timestamp", "rating"])
    item = pc.index_in(table["item_id"], value_set=catalogue["item_id"].combine_chunks())
    assert item.null_count == 0 and table["user_id"].null_count == 0 and table["timestamp"].null_count == 0
    rating = table["rating"].to_numpy()
    assert bool(((rating >= 1) & (rating <= 5) | np.isnan(rating)).all())
    users = table["user_id"].combine_chunks()
    uniq = pc.unique(users)
    user = pc.index_in(users, value_set=uniq).to_numpy().astype(np.int32)
    item = item.to_numpy().astype(np.int32)
    ts = table["timestamp"].to_numpy()
    t1 = time.perf_counter()
    order = np.lexsort((ts, user))
    user, item, ts, rating = user[order], item[order], ts[order], rating[order].astype(np.float32)
    offsets = np.zeros(len(uniq) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=len(uniq)), out=offsets[1:])
    t2 = time.perf_counter()
    ends = offsets[1:]
    held = np.diff(offsets) >= 3
    test, valid = ends[held] - 1, ends[held] - 2
    t3 = time.perf_counter()
    return {"load_validate_s": t1 - t0, "histories_index_s": t2 - t1, "split_s": t3 - t2, "total_s": t3 - t0,
            "peak_mb": peak_memory_mb(), "users": len(uniq), "interactions": len(ts), "test_examples": len(test),
            "valid_examples": len(valid)}


ROW_SETTINGS = {"prompt": "genrec", "max_history": 20, "max_windows": 3, "levels": 3, "codebook_size": 256}


def synthetic_sids(item_ids: list[str], seed: int = 0):
    """Random codes in the recipe's default shape (``ROW_SETTINGS``) plus the disambiguation level."""
    import numpy as np

    from llmrec.items.semantic_ids import SemanticIds

    rng = np.random.default_rng(seed)
    k, levels = ROW_SETTINGS["codebook_size"], ROW_SETTINGS["levels"]
    return SemanticIds.from_quantized(item_ids, rng.integers(0, k, size=(len(item_ids), levels)), (k,) * levels)


def _rows_inputs(items: str, inter: str):
    """Data, columnar split, SmolLM2 tokenizer with the synthetic SID tokens, the row maker."""
    from transformers import AutoTokenizer

    from llmrec.data import load_generic
    from llmrec.data.split_view import columnar_split
    from llmrec.resources import smollm2_dir
    from llmrec.tasks.genrec_rows import row_maker
    from llmrec.tasks.uqa import item_title

    t0 = time.perf_counter()
    data = load_generic(items, inter, rating_range=(1, 5))
    split = columnar_split(data)
    t1 = time.perf_counter()
    sids = synthetic_sids(data.item_ids)
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    tok.add_tokens(sids.token_strings())
    levels = [lv for lv, size in enumerate(sids.codebook_sizes) if size > 1]
    titles = {i: item_title(it) for i, it in data.items.items()}
    maker = row_maker(tok, sids, levels, titles, split.train, prompt=ROW_SETTINGS["prompt"],
                      max_history=ROW_SETTINGS["max_history"], max_windows=ROW_SETTINGS["max_windows"])
    t2 = time.perf_counter()
    return data, split, sids, maker, {"load_split_s": t1 - t0, "tokenizer_sids_maker_s": t2 - t1}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def run_rows(items: str, inter: str, num_proc: int, cache: str) -> dict:
    """Build (or read back) the genrec rows; time, rows, tokens, peak RSS of this process and of its workers."""
    import resource

    from llmrec.hardware import peak_memory_mb
    from llmrec.tasks.genrec_rows import build_rows

    _pin_threads()
    data, split, _, maker, out = _rows_inputs(items, inter)
    out.update(peak_mb_before_rows=peak_memory_mb(), rss_mb_before_rows=_rss_mb())
    t0 = time.perf_counter()
    rows = build_rows(maker, split.train, num_proc=num_proc, cache_root=cache)
    out["rows_s"] = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out.update(cached=rows.cached, num_proc=num_proc, rows=len(rows.rows), tokens=rows.tokens,
               target_tokens=rows.target_tokens, users=len(split.train), interactions=len(data.table),
               peak_mb=peak_memory_mb(), rss_mb_after_rows=_rss_mb(), peak_worker_mb=round(kids, 1) or None,
               rows_per_s=round(len(rows.rows) / out["rows_s"], 1))
    return out


def run_step(items: str, inter: str, cache: str, steps: int = 6, batch: int = 8) -> dict:
    """Tokens/s of LoRA training steps of the real SmolLM2-135M (fp32, 1 thread) on rows read from ``cache``."""
    import numpy as np
    import torch

    from llmrec.hardware import peak_memory_mb
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.tasks.genrec_rows import build_rows
    from llmrec.training.collate import CausalCollator
    from llmrec.training.throughput import bare_loop_step_seconds

    _pin_threads()
    torch.set_num_threads(1)
    data, split, sids, maker, _ = _rows_inputs(items, inter)
    rows = build_rows(maker, split.train, cache_root=cache)
    cfg = PersonalLMConfig(base_model="smollm2-135m", dtype="fp32", sid_init="random",
                           max_history=ROW_SETTINGS["max_history"])
    plm = PersonalLM.create(sids, data.items, cfg, vocabulary=data.vocabulary)
    if plm.first_sid_id != maker.first_sid:
        raise RuntimeError("the model's SID token ids differ from the rows' tokenizer")
    collate = CausalCollator(plm.tokenizer.pad_token_id)
    pick = np.random.default_rng(0).choice(len(rows.rows), size=steps * batch, replace=False)
    batches = [collate([rows.rows[int(i)] for i in pick[s * batch:(s + 1) * batch]]) for s in range(steps)]
    times = bare_loop_step_seconds(plm.trainable_model, batches)
    real = [int(b["attention_mask"].sum()) for b in batches]
    padded = [int(b["input_ids"].numel()) for b in batches]
    keep = slice(1, None)  # the first step warms up
    med = float(np.median(times[keep]))
    return {"model": "SmolLM2-135M-Instruct + LoRA (adapters/lora.yaml) + SID rows, fp32", "threads": 1,
            "batch": batch, "steps_timed": steps - 1, "median_step_s": round(med, 3),
            "tokens_per_s": round(float(np.median(np.array(real[keep]) / np.array(times[keep]))), 1),
            "padded_tokens_per_s": round(float(np.median(np.array(padded[keep]) / np.array(times[keep]))), 1),
            "mean_tokens_per_row": round(rows.tokens / len(rows.rows), 1), "peak_mb": peak_memory_mb()}


def child(args: argparse.Namespace) -> None:
    if args.child == "rows":
        result = run_rows(args.items, args.inter, args.num_proc, args.cache)
    elif args.child == "step":
        result = run_step(args.items, args.inter, args.cache)
    elif args.child == "reference":
        result = run_reference(args.items, args.inter)
    else:
        result = run_llmrec(args.items, args.inter, args.python_views)
    print(json.dumps(result))


def measure(kind: str, items: Path, inter: Path, python_views: bool = False, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--items", str(items), "--inter", str(inter), *extra]
    if python_views:
        cmd.append("--python-views")
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    """The results table (README / results page)."""
    lines = [
        "| interactions | users | items | llmrec load+validate+histories+split | peak MB | pyarrow+numpy reference "
        "| peak MB | time ratio | memory ratio | histories() Python view |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        ours, ref = row["llmrec"], row["reference"]
        view = f"{ours['histories_dict_s']:.2f} s" if "histories_dict_s" in ours else "-"
        lines.append(
            f"| {row['interactions']:,} | {ours.get('users', '-'):,} | {ours.get('items', '-'):,} "
            f"| {ours['total_s']:.2f} s | {ours['peak_mb']:.0f} | {ref['total_s']:.2f} s | {ref['peak_mb']:.0f} "
            f"| {row.get('ratio_time', '-')} | {row.get('ratio_peak_mb', '-')} | {view} |")
    m = result["machine"]
    lines.append("")
    lines.append(f"`{result['command'].strip()}`; threads: {result['threads']}; {m['cpu_model']}, {m['cpu_cores']} cores "
                 "(shared with other jobs). Peak MB is each subprocess's maximum RSS, interpreter and imports "
                 "included.")
    rb = result.get("row_building")
    if rb:
        lines += ["", "Genrec row building (" + rb["setup"] + "):", "",
                  "| interactions | users | rows | tokens | 1 worker, cold | peak MB | 2 workers, cold | peak MB "
                  "(main + largest worker) | cached rerun | peak MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in rb["rows"]:
            one, two, warm = (row.get(k) or {} for k in ("cold_1", "cold_2", "cached_1"))

            def cell(r: dict, fmt: str) -> str:
                return fmt.format(**r) if "rows_s" in r else "not run"

            lines.append(
                f"| {row['interactions']:,} | {one.get('users', 0):,} | {one.get('rows', 0):,} "
                f"| {one.get('tokens', 0):,} | {cell(one, '{rows_s:.1f} s')} | {cell(one, '{peak_mb:.0f}')} "
                f"| {cell(two, '{rows_s:.1f} s')} | {cell({**two, 'w': two.get('peak_worker_mb') or 0}, '{peak_mb:.0f} + {w:.0f}')} "
                f"| {cell(warm, '{rows_s:.2f} s')} | {cell(warm, '{peak_mb:.0f}')} |")
        steps = rb.get("train_steps") or ([rb["train_step"]] if rb.get("train_step") else [])
        if steps:
            lines.append("")
        for step in steps:
            lines.append(f"Training step on the rows of {step['interactions']:,} interactions: {step['model']}, "
                         f"{step['threads']} thread, batch {step['batch']}: {step['tokens_per_s']:.0f} tokens/s "
                         f"(median of {step['steps_timed']} steps, {step['median_step_s']:.2f} s/step), "
                         f"peak {step['peak_mb']:.0f} MB.")
        lines.append(f"`{rb['command'].strip()}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--repeats", type=int, default=2, help="runs per size and method; the fastest is kept")
    parser.add_argument("--repeat-max", type=int, default=5_000_000, help="sizes above this run once")
    parser.add_argument("--out", default=str(ROOT / "eval" / "results" / "scale.json"))
    parser.add_argument("--python-views-max", type=int, default=1_000_000,
                        help="also time the lazy histories() dict of Python objects up to this size")
    parser.add_argument("--table", action="store_true", help="only write the markdown table from --out's JSON")
    parser.add_argument("--rows", type=int, nargs="+", metavar="N",
                        help="only benchmark genrec row building at these sizes (row_building section of --out)")
    parser.add_argument("--step-max", type=int, default=1_000_000,
                        help="time training steps on the rows of every --rows size up to this")
    parser.add_argument("--child", choices=["llmrec", "reference", "rows", "step"], help=argparse.SUPPRESS)
    parser.add_argument("--num-proc", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--items", help=argparse.SUPPRESS)
    parser.add_argument("--inter", help=argparse.SUPPRESS)
    parser.add_argument("--python-views", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from llmrec.io import write_text_atomic

    table_path = Path(args.out).with_suffix(".md")
    if args.table:
        write_text_atomic(table_path, markdown(json.loads(Path(args.out).read_text())))
        print(f"wrote {table_path}")
        return

    from llmrec.hardware import machine_facts
    from llmrec.io import write_json_atomic

    if args.rows:
        bench_rows(args, table_path)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmrec-scale-") as tmp:
        for n in args.sizes:
            t0 = time.perf_counter()
            items, inter = generate(Path(tmp) / str(n), n)
            gen_s = time.perf_counter() - t0
            runs = {"llmrec": [], "reference": []}
            for _ in range(args.repeats if n <= args.repeat_max else 1):
                for kind in ("reference", "llmrec"):
                    runs[kind].append(measure(kind, items, inter, python_views=(
                        kind == "llmrec" and n <= args.python_views_max)))
            best = {k: min((r for r in v if "error" not in r), key=lambda r: r["total_s"], default=v[0])
                    for k, v in runs.items()}
            row = {"interactions": n, "generate_s": round(gen_s, 2),
                   "file_mb": round(inter.stat().st_size / 2**20, 1), **best}
            if "error" not in best["llmrec"] and "error" not in best["reference"]:
                row["ratio_time"] = round(best["llmrec"]["total_s"] / best["reference"]["total_s"], 2)
                row["ratio_peak_mb"] = round(best["llmrec"]["peak_mb"] / best["reference"]["peak_mb"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
            for p in (items, inter):
                p.unlink()
    result = {
        "benchmark": "load + validate + histories (index) + leave-one-out split, synthetic Parquet",
        "command": ("OMP_NUM_THREADS=1 python scripts/bench_data_scale.py " + " ".join(sys.argv[1:])).strip(),
        "threads": "1 (OMP/MKL/OpenBLAS env, pyarrow cpu and io pools)",
        "repeats": f"{args.repeats} up to {args.repeat_max} interactions (fastest kept), 1 above",
        "targets": {"1M": {"total_s": 5.0, "peak_mb": 300}, "20M": {"total_s": 90.0, "peak_mb": 4096}},
        "rows": rows,
        "machine": machine_facts(),
        "notes": ("peak_mb is each subprocess's ru_maxrss (interpreter and imports included: ~80 MB for "
                  "llmrec.data + pyarrow); histories_dict_s is the lazy Python view (dict of UserHistory) the "
                  "library reads, built on first use and not part of load + split"),
    }
    write_json_atomic(args.out, result)
    write_text_atomic(table_path, markdown(result))
    print(f"wrote {args.out} and {table_path}")


def bench_rows(args: argparse.Namespace, table_path: Path) -> None:
    """``--rows``: the row_building section of ``--out`` (other sections kept), then the markdown table."""
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    rows, steps = [], []
    with tempfile.TemporaryDirectory(prefix="llmrec-rows-") as tmp:
        for n in args.rows:
            items, inter = generate(Path(tmp) / str(n), n)
            one, two = Path(tmp) / f"cache-{n}-1", Path(tmp) / f"cache-{n}-2"
            row = {"interactions": n}
            for name, workers, cache in (("cold_1", 1, one), ("cached_1", 1, one), ("cold_2", 2, two)):
                row[name] = measure("rows", items, inter, extra=("--num-proc", str(workers), "--cache", str(cache)))
                print(json.dumps({"interactions": n, name: row[name]}), flush=True)
            if "error" not in row["cold_1"] and "error" not in row["cold_2"]:
                row["ratio_2_workers"] = round(row["cold_2"]["rows_s"] / row["cold_1"]["rows_s"], 2)
                row["ratio_cached"] = round(row["cached_1"]["rows_s"] / row["cold_1"]["rows_s"], 3)
            rows.append(row)
            if n <= args.step_max:  # the step rate at every size (it should not depend on the data size)
                steps.append({"interactions": n, **measure("step", items, inter, extra=("--cache", str(one)))})
                print(json.dumps({"train_step": steps[-1]}), flush=True)
            shutil.rmtree(Path(tmp) / str(n), ignore_errors=True)
            shutil.rmtree(one, ignore_errors=True)
            shutil.rmtree(two, ignore_errors=True)
            _write_rows_section(args, out_path, table_path, result, rows, steps)  # after each size: a stopped run keeps them


def _write_rows_section(args: argparse.Namespace, out_path: Path, table_path: Path, result: dict, rows: list,
                        steps: list) -> None:
    from llmrec.hardware import machine_facts
    from llmrec.io import write_json_atomic, write_text_atomic

    settings = ", ".join(f"{k} {v}" for k, v in ROW_SETTINGS.items())
    result["row_building"] = {
        "benchmark": "genrec training rows (datasets.map into cached Arrow files), leave-one-out train histories",
        "setup": f"SmolLM2 tokenizer, synthetic SID table; {settings}",
        "command": ("OMP_NUM_THREADS=1 python scripts/bench_data_scale.py " + " ".join(sys.argv[1:])).strip(),
        "threads": "1 per process (OMP/MKL/OpenBLAS env, pyarrow pools, torch); 2 workers = 2 processes",
        "rows": rows, "train_steps": steps, "machine": machine_facts(),
        "notes": ("rows_s: building the rows (the cache key included: hashing the data read, tokenizer and SID "
                  "strings), not loading the data or the tokenizer; peak_mb: the measuring process's ru_maxrss "
                  "(data load, tokenizer and imports included), peak_worker_mb: the largest map worker's; "
                  "cached_1 reads the Arrow files of cold_1 (memory-mapped). The machine was shared with other "
                  "jobs: read times as ratios within a size."),
    }
    write_json_atomic(out_path, result)
    write_text_atomic(table_path, markdown(result))
    print(f"wrote {out_path} and {table_path}")


if __name__ == "__main__":
    main()
