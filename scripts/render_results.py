"""Render ``eval/RESULTS.md`` and the README's "results at a glance" table from ``eval/results/*.json``.

No figure is typed by hand: every number in both comes from a JSON file. ``--check`` exits 1 when the committed
files differ from a fresh rendering (tests/test_results_docs.py runs it, so CI fails on drift).

    python scripts/render_results.py            # rewrite eval/RESULTS.md and the README block
    python scripts/render_results.py --check    # compare only
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "eval" / "results"
RESULTS_MD = REPO / "eval" / "RESULTS.md"
README = REPO / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
NOT_RECORDED = "not recorded"

# RESULTS.md sections: topic -> result files, in reading order. Files not listed land under "Other results".
TOPICS: list[tuple[str, list[str]]] = [
    ("Semantic IDs", ["semantic_ids"]),
    ("Recommendation baselines", ["baselines_ml100k", "sasrec_tuning_ml100k", "sasrec_speed_ml100k"]),
    ("Generative recommendation", [
        "genrec_llm_cf_ml100k", "genrec_llm_cf_beams_ml100k", "genrec_llm_cf_avg_ml100k", "genrec_llm_cf_3ep_ml100k",
        "genrec_llm_w50_ml100k", "genrec_sasrec_overlap_ml100k", "genrec_hybrid_ml100k",
        "genrec_fusion_paired_ml100k", "genrec_fusion_paired_avg_ml100k", "genrec_fusion_ensemble_ml100k",
        "genrec_fusion_retuned_sasrec_ml100k",
        "genrec_llm_ml100k", "genrec_ml100k",
        "genrec_sidloss_ml100k", "genrec_sidfast_ml100k", "genrec_repro_amd_ml100k", "genrec_pref_ml100k",
        "genrec_grpo_ml100k",
    ]),
    ("Evaluation harness", ["harness_ml100k", "harness_timings"]),
    ("Soft prompts and personalized QA", [
        "uqa_ml100k", "uqa_probe_ml100k", "uqa_text_align_ml100k", "uqa_genre_anchors_ml100k", "uqa_profile_ml100k",
        "uqa_worked_ml100k", "soft_prompt_repro_ml100k",
    ]),
    ("Profiles", ["profiles_ml100k", "profiles_reader_ml100k", "profiles_dpo_ml100k"]),
    ("Verification", ["verify"]),
    ("Training throughput", ["throughput"]),
]
# Top-level keys shown first, as provenance, rather than in the body.
PROVENANCE = ("benchmark", "recipe_config", "command", "commands", "command_as_run", "command_note", "protocol")
SPECIAL = (*PROVENANCE, "machine", "versions", "notes", "readme_commands")


@dataclass(frozen=True)
class Headline:
    """One row of the README table: a figure template whose fields are JSON paths ("file:key/key/...")."""

    capability: str
    figure: str
    values: dict[str, str]
    source: str  # the file whose config, machine and command the row names
    config_path: str = ""  # a JSON path to the recipe_config or command line, when not the file's top level
    machine_path: str = ""  # a JSON path to the machine facts, when not the file's top level


HEADLINES: list[Headline] = [
    Headline("semantic IDs (rkmeans)", "{u:.0%} unique of {n} items, genre coherence x{g:.2f}, quantized in {s:.1f} s",
             {"u": "semantic_ids:ml-100k/rkmeans/unique_fraction", "n": "semantic_ids:ml-100k/rkmeans/items",
              "g": "semantic_ids:ml-100k/rkmeans/genre_coherence", "s": "semantic_ids:ml-100k/rkmeans/quantize_seconds"},
             "semantic_ids"),
    Headline("popularity", "test NDCG@10 {n:.4f}, Recall@10 {r:.4f}",
             {"n": "baselines_ml100k:popularity/test/rated_removed/ndcg@10",
              "r": "baselines_ml100k:popularity/test/rated_removed/recall@10"}, "baselines_ml100k",
             config_path="command"),
    Headline("SASRec", "test NDCG@10 {n:.4f}, Recall@10 {r:.4f} (seed 0; 3-seed mean {m:.4f}); the earlier "
             "40-epoch / patience-8 budget stopped early: {o:.4f}",
             {"n": "sasrec_tuning_ml100k:recipe_runs/seed0/test/ndcg@10",
              "r": "sasrec_tuning_ml100k:recipe_runs/seed0/test/recall@10",
              "m": "sasrec_tuning_ml100k:selected/test_ndcg@10_mean",
              "o": "baselines_ml100k:sasrec/test/rated_removed/ndcg@10"}, "sasrec_tuning_ml100k",
             config_path="recipe_config"),
    Headline("SASRec training, one thread", "best validation after {s:.0f} CPU-s (fast path, median of 3 seeds); "
             "`sasrec/ml-100k-fast` (30-epoch cosine, dropout 0.3): {c:.0f} s, test NDCG@10 {ct:.4f} (3-seed "
             "median / mean); fast and reference paths trace the same curve (mean test gap {g:.4f}), {x:.2f}x less "
             "CPU an epoch",
             {"s": "sasrec_tuning_ml100k:selected/to_best_cpu_s_median",
              "c": "sasrec_tuning_ml100k:fast_recipe_runs/to_best_cpu_s_median",
              "ct": "sasrec_tuning_ml100k:fast_recipe_runs/test_ndcg@10_mean",
              "g": "sasrec_speed_ml100k:curves/mean_abs_gap_fast_vs_reference/test_ndcg@10",
              "x": "sasrec_speed_ml100k:epoch_cost/speedup_cpu"}, "sasrec_tuning_ml100k",
             config_path="command"),
    Headline("genrec LLM alone (collaborative SIDs)",
             "test NDCG@10 {n:.4f}, Recall@10 {r:.4f}, invalid {i:.0%} (the shipped config, centred SID rows; the "
             "committed model with projected rows: {p:.4f}); 300 steps, 3 paired seeds: valid NDCG@10 {c:.3f} "
             "centred vs {q:.3f} projected",
             {"n": "genrec_centred_ml100k:reproduced/ndcg@10", "r": "genrec_centred_ml100k:reproduced/recall@10",
              "i": "genrec_centred_ml100k:reproduced/invalid_rate", "p": "genrec_llm_cf_ml100k:test/ndcg@10",
              "c": "genrec_sid_init_ml100k:summary/inits/centred/mean_valid_ndcg@10/300",
              "q": "genrec_sid_init_ml100k:summary/inits/projection/mean_valid_ndcg@10/300"}, "genrec_centred_ml100k",
             config_path="command", machine_path="run/machine"),
    Headline("genrec + SASRec, shallow fusion",
             "against the re-tuned SASRec ({s:.4f}): LLM alone {l:.4f}, fused {f:.4f}, paired difference {d:+.4f} "
             "[{lo:+.4f}, {hi:+.4f}]: no gain (the earlier 0.1151 beat the 40-epoch SASRec, 0.1018)",
             {"s": "genrec_fusion_retuned_sasrec_ml100k:test/ndcg@10/sasrec",
              "l": "genrec_fusion_retuned_sasrec_ml100k:test/ndcg@10/llm",
              "f": "genrec_fusion_retuned_sasrec_ml100k:test/ndcg@10/fusion",
              "d": "genrec_fusion_retuned_sasrec_ml100k:test/ndcg@10_minus_sasrec/fusion/mean",
              "lo": "genrec_fusion_retuned_sasrec_ml100k:test/ndcg@10_minus_sasrec/fusion/ci95/0",
              "hi": "genrec_fusion_retuned_sasrec_ml100k:test/ndcg@10_minus_sasrec/fusion/ci95/1"},
             "genrec_fusion_retuned_sasrec_ml100k"),
    Headline("rating prediction (harness)", "MAE {m:.3f} with 3 retrieved ratings vs {z:.3f} without",
             {"m": "harness_ml100k:summary/best_personalized/mae",
              "z": "harness_ml100k:summary/best_personalized/no_profile_mae"}, "harness_ml100k"),
    Headline("personalized QA, soft prompt k=8", "macro accuracy {s:.3f} vs text history {t:.3f} vs none {z:.3f}",
             {"s": "uqa_worked_ml100k:runs/2/variants/soft_k8/accuracy/macro",
              "t": "uqa_worked_ml100k:runs/1/variants/text/accuracy/macro",
              "z": "uqa_worked_ml100k:runs/0/variants/none/accuracy/macro"},
             "uqa_worked_ml100k", config_path="runs/2/recipe_config"),
    Headline("shipped configs re-run", "SASRec test NDCG@10 {s:.4f} (committed {sc:.4f}); genrec {g:.4f} ({gc:.4f}); "
             "soft-prompt QA macro {q:.3f} ({qc:.3f})",
             {"s": "sasrec_tuning_ml100k:recipe_runs/seed0/test/ndcg@10",
              "sc": "sasrec_tuning_ml100k:runs/long_constant/0/test_ndcg@10",
              "q": "soft_prompt_repro_ml100k:reproduced/macro",
              "qc": "soft_prompt_repro_ml100k:committed/figures/macro",
              "g": "genrec_config_repro_ml100k:reproduced/ndcg@10",
              "gc": "genrec_config_repro_ml100k:committed/figures/ndcg@10"}, "soft_prompt_repro_ml100k",
             config_path="command", machine_path="run/machine"),
    Headline("profiles, fine-tuned reader", "next-genre accuracy {t:.3f} with template profiles vs {z:.3f} without",
             {"t": "profiles_reader_ml100k:kinds/template/next_genre/accuracy",
              "z": "profiles_reader_ml100k:kinds/none/next_genre/accuracy"}, "profiles_reader_ml100k"),
    Headline("data and semantic IDs at scale (1 thread)",
             "load + validate + split: 1M interactions {a:.1f} s / {am:.0f} MB, 20M {b:.0f} s / {bm:.0f} MB; "
             "semantic IDs for 1M items {s:.0f} s (rkmeans), {r:.0f} s (RQ-VAE)",
             {"a": "scale:rows/1/llmrec/total_s", "am": "scale:rows/1/llmrec/peak_mb",
              "b": "scale:rows/3/llmrec/total_s", "bm": "scale:rows/3/llmrec/peak_mb",
              "s": "scale:sid_building/rows/0/total_s", "r": "scale:sid_building/rows/1/total_s"}, "scale"),
    Headline("training throughput, genrec step (bf16, 1 thread)",
             "{g:.0f} tokens/s with SID loss + packing = {y:.2f}x the step before the speed work (SDPA, full loss) "
             "on the same batches, {p:.1f}% of the measured bf16 matmul peak ({pc:.1f}% with opt-in compiled layers); "
             "default step {x:.2f}x; compiled layers {cx:.2f}x; QA step {qd:.2f}x (compiled {qx:.2f}x); peak RSS {m:.0f} MB",
             {"g": "throughput:rows/bf16/genrec_llmrec_sid_loss_packed/real_tokens_per_second",
              "pc": "throughput:rows/bf16/genrec_llmrec_sid_loss_packed_compiled/pct_of_peak",
              "x": "throughput:ratios/bf16/genrec_llmrec_over_genrec_llmrec_sdpa",
              "p": "throughput:rows/bf16/genrec_llmrec_sid_loss_packed/pct_of_peak",
              "y": "throughput:ratios/bf16/genrec_llmrec_sid_loss_packed_over_genrec_llmrec_sdpa",
              "cx": "throughput:ratios/bf16/genrec_llmrec_compiled_over_genrec_llmrec_sdpa",
              "qd": "throughput:ratios/bf16/qa_llmrec_over_qa_llmrec_sdpa",
              "qx": "throughput:ratios/bf16/qa_llmrec_compiled_over_qa_llmrec_sdpa",
              "m": "throughput:rows/bf16/genrec_llmrec_sid_loss_packed/peak_rss_mb"}, "throughput"),
]


RANKING = ["recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr", "invalid_rate"]
UQA_TASKS = ["nth_title", "nth_genre", "genre_count", "next_title", "next_genre", "longterm_genre", "recent_genre",
             "interest_shift"]
# Summary tables at the top of RESULTS.md: (title, columns, rows of (label, "file:path" of a dict holding the
# columns)). The per-file sections below hold everything else.
SUMMARIES: list[tuple[str, list[str], list[tuple[str, str]]]] = [
    ("Recommendation, ml-100k test (leave-one-out, all 1,682 items ranked, rated items removed, 943 users)",
     RANKING, [
         ("popularity (exact counts)", "baselines_ml100k:popularity/test/rated_removed"),
         ("SASRec, tuned on validation (`sasrec/ml-100k`: 200 epochs / patience 30, seed 0)",
          "sasrec_tuning_ml100k:recipe_runs/seed0/test"),
         ("SASRec, the same with the earlier 40-epoch / patience-8 budget", "baselines_ml100k:sasrec/test/rated_removed"),
         ("SASRec + frozen MiniLM item vectors", "baselines_ml100k:sasrec_text/test/rated_removed"),
         ("cornac SASRec (reference, same protocol)", "baselines_ml100k:reference"),
         ("genrec + 2-seed SASRec ensemble, shallow fusion, w = 2, 20 beams",
          "genrec_hybrid_ml100k:fusion_with_sasrec_ensemble/test_full_metrics"),
         ("genrec (checkpoint average) + SASRec, shallow fusion, w = 1, 20 beams",
          "genrec_hybrid_ml100k:shallow_fusion_more_valid/test_avg20_b20_w1"),
         ("genrec (50-item windows) + SASRec, shallow fusion, w = 1, 10 beams", "genrec_hybrid_ml100k:shallow_fusion/test"),
         ("genrec, collaborative IDs (`smollm2-135m/genrec`), 10 beams", "genrec_llm_cf_ml100k:test"),
         ("the same, 20 beams", "genrec_llm_cf_beams_ml100k:test/20"),
         ("checkpoint average (steps 1,326 / 1,400 / 1,989), 20 beams", "genrec_llm_cf_avg_ml100k:test_selected/beams_20"),
         ("50-item windows, 10 context items, 10 beams", "genrec_llm_w50_ml100k:test"),
         ("50-item windows + SASRec user-state tokens, 10 beams", "genrec_hybrid_ml100k:user_state_tokens/test"),
         ("continued to 3 epochs (validation-selected step 1,400)", "genrec_llm_cf_3ep_ml100k:test"),
         ("genrec, text-only IDs, last 2 windows per user", "genrec_llm_ml100k:test"),
         ("cornac TIGER (external reference, same protocol)", "genrec_llm_ml100k:external_references/cornac_tiger"),
         ("OpenP5, integer IDs (published; recall@10 = HR@10)",
          "genrec_llm_ml100k:external_references/openp5_integer_ids"),
     ]),
    ("Personalized QA with worked answers, ml-100k (800 test questions, accuracy per task)", [*UQA_TASKS, "macro"], [
        (f"{{uqa_worked_ml100k:runs/{i}/setting}}", f"uqa_worked_ml100k:runs/{i}/variants/{v}/accuracy")
        for i, v in ((0, "none"), (1, "text"), (2, "soft_k8"))
    ]),
]


# ---- loading and paths --------------------------------------------------------------------------------------

def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    """Every ``*.json`` in ``results_dir``, by file stem, in name order."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(results_dir.glob("*.json"))}


def lookup(results: dict[str, Any], ref: str) -> Any:
    """``"file:a/b/0/c"`` -> the value; a KeyError names the reference."""
    stem, _, path = ref.partition(":")
    node: Any = results[stem]
    for part in path.split("/") if path else []:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise KeyError(f"{ref}: no {part!r}") from exc
    return node


# ---- formatting -----------------------------------------------------------------------------------------------

def fmt(value: Any) -> str:
    """One table cell: floats to 6 significant digits (the JSON keeps the rest), pipes escaped."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = format(value, ".6g")
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _series(v: Any) -> bool:
    """A list of scalars or of short scalar tuples (curves such as [[step, loss], ...])."""
    return isinstance(v, list) and all(_scalar(x) or (isinstance(x, list) and all(map(_scalar, x))) for x in v)


def _flat(v: Any) -> bool:
    """Fits one cell: a scalar or a short series."""
    return _scalar(v) or (_series(v) and len(json.dumps(v)) <= 160)


def _series_text(v: list[Any]) -> str:
    return ", ".join("(" + ", ".join(fmt(y) for y in x) + ")" if isinstance(x, list) else fmt(x) for x in v)


def _flat_dict(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(_flat(x) for x in v.values())


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(fmt(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns


def _uniform(rows: list[dict[str, Any]]) -> bool:
    """Rows that share most of their keys read well as one table."""
    return len(_columns(rows)) <= 1.5 * max(len(r) for r in rows)


def _matrix(rows: dict[str, dict[str, Any]], first: str) -> list[str]:
    columns = _columns(list(rows.values()))
    return table([first, *columns], [[name, *(row.get(c, "") for c in columns)] for name, row in rows.items()])


def _heading(level: int, text: str) -> str:
    return f"{'#' * level} {text}" if level <= 6 else f"**{text}**"


def render_node(name: str, value: Any, level: int) -> list[str]:
    """Any JSON value as markdown: scalars as key/value tables, uniform rows as tables, the rest nested."""
    out = [_heading(level, name), ""]
    if _series(value) and not _flat(value):
        return out + [_series_text(value), ""]
    if _flat(value):
        if isinstance(value, str) and len(value) > 100:
            return out + [value, ""]
        return out + [fmt(value), ""]
    if isinstance(value, list):
        if all(_flat_dict(x) for x in value) and _uniform(value):
            return out + _matrix({str(i): x for i, x in enumerate(value)}, "#")
        for i, item in enumerate(value):
            out += render_node(f"{name}[{i}]", item, level + 1)
        return out
    scalars = {k: v for k, v in value.items() if _flat(v) and not (isinstance(v, str) and len(v) > 100)}
    long_text = {k: v for k, v in value.items() if isinstance(v, str) and len(v) > 100}
    nested = {k: v for k, v in value.items() if k not in scalars and k not in long_text}
    if scalars:
        out += table(["key", "value"], [[k, v] for k, v in scalars.items()])
    for k, v in long_text.items():
        out += [f"*{k}*: {v}", ""]
    if nested and all(_flat_dict(v) for v in nested.values()) and _uniform(list(nested.values())):
        return out + _matrix(nested, name)
    for k, v in nested.items():
        out += render_node(k, v, level + 1)
    return out


def hardware(data: dict[str, Any]) -> str:
    """A short line from a results file's machine facts, or "not recorded"."""
    m = data.get("machine")
    if isinstance(m, str):
        return m
    if not isinstance(m, dict):
        return NOT_RECORDED
    cores = m.get("cpu_cores", m.get("cpus"))
    threads = m.get("torch_threads", m.get("torch_threads_train", m.get("torch_threads_default")))
    parts = [str(m["cpu_model"])] if m.get("cpu_model") else []
    if cores is not None:
        parts.append(f"{cores} CPU cores" if isinstance(cores, int) else str(cores))
    if threads is not None:
        parts.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
    for gpu in m.get("gpus") or []:
        parts.append(f"GPU {gpu.get('name')}")
    dtype = m.get("dtype") or re.search(r"\b(bf16|fp16|fp32)\b", str(data.get("model", "")))
    if dtype:
        parts.append(dtype if isinstance(dtype, str) else dtype.group(1))
    return ", ".join(parts) if parts else NOT_RECORDED


def config_of(data: dict[str, Any], path: str = "") -> str:
    """The shipped recipe config a file names (``--config X``), else its command's script, else not recorded."""
    lines = [lookup({"f": data}, f"f:{path}")] if path else [data.get(k) for k in ("recipe_config", "command", "commands")]
    for line in lines:
        line = line[0] if isinstance(line, list) and line else line
        if not isinstance(line, str):
            continue
        m = re.search(r"--config ([\w./-]+)", line)
        if m:
            return f"`{m.group(1)}`"
        m = re.search(r"scripts/[\w.]+\.py|llmrec \w+(?: [a-z-]+)?", line)
        if m:
            return f"`{m.group(0)}`"
    return NOT_RECORDED


# ---- the two outputs ------------------------------------------------------------------------------------------

def _summary_row(results: dict[str, Any], ref: str, columns: list[str]) -> list[Any]:
    node = lookup(results, ref)
    tasks = node.get("task", {}) if isinstance(node, dict) else {}
    cells = []
    for c in columns:
        value = node.get(c, tasks.get(c, {}).get("accuracy") if isinstance(tasks.get(c), dict) else None)
        cells.append("-" if value is None else round(value, 4) if isinstance(value, float) else value)
    return cells


def render_summaries(results: dict[str, Any]) -> list[str]:
    out = ["## Summary tables", "", "Rows picked from the files below (4 decimals); each row names its source.", ""]
    for title, columns, rows in SUMMARIES:
        body = []
        for label, ref in rows:
            label = re.sub(r"\{([^}]+)\}", lambda m: str(lookup(results, m.group(1))), label)
            body.append([label, *_summary_row(results, ref, columns), f"`{ref.split(':')[0]}`"])
        out += [f"**{title}**", ""] + table(["model", *columns, "source"], body)
    return out


def render_headlines(results: dict[str, Any]) -> str:
    rows = []
    for h in HEADLINES:
        values = {k: lookup(results, ref) for k, ref in h.values.items()}
        data = results[h.source]
        machine = {"machine": lookup(results, f"{h.source}:{h.machine_path}")} if h.machine_path else data
        rows.append([h.capability, h.figure.format(**values), config_of(data, h.config_path), hardware(machine),
                     f"[{h.source}.json](eval/results/{h.source}.json)"])
    lines = ["All on MovieLens-100k (the offline default). Generated by `scripts/render_results.py` from",
             "`eval/results/*.json`; protocols, budgets, caveats and every other figure: [eval/RESULTS.md](eval/RESULTS.md).",
             ""]
    return "\n".join(lines + table(["capability", "headline figure", "config", "hardware", "source"], rows)).rstrip()


def render_file(stem: str, data: Any) -> list[str]:
    out = [f"### {stem}", "", f"File: [`eval/results/{stem}.json`](results/{stem}.json)", ""]
    if not isinstance(data, dict):
        return out + render_node("value", data, 4)
    prov = [[k, data[k]] for k in PROVENANCE if k in data]
    versions = data.get("versions")
    if not isinstance(versions, dict):  # older files kept versions inside "machine"
        m = data.get("machine") if isinstance(data.get("machine"), dict) else {}
        versions = {k: m[k] for k in ("python", "torch", "transformers", "numpy", "faiss") if k in m} or None
    prov += [["hardware", hardware(data)], ["versions", versions if versions else NOT_RECORDED]]
    out += table(["provenance", ""], prov)
    for note in data.get("notes") or []:
        out += [note, ""]
    if data.get("readme_commands"):
        out += ["```bash", *data["readme_commands"], "```", ""]
    if isinstance(data.get("machine"), dict):
        out += render_node("machine", data["machine"], 4)
    for key, value in data.items():
        if key not in SPECIAL:
            out += render_node(key, value, 4)
    return out


def render_results(results: dict[str, Any]) -> str:
    out = ["# Results", "",
           "<!-- Generated by scripts/render_results.py from eval/results/*.json: edit the JSON, then re-run. -->", "",
           "Every figure below is read from a file in `eval/results/`; floats are shown to 6 significant digits (the",
           "JSON holds the rest). Each section starts with the file's provenance: the command or shipped recipe",
           "config, the machine and the package versions as recorded (\"not recorded\" where an older file lacks",
           "them), then the notes (protocol, caveats) and the data. `scripts/verify_results.py` re-runs a declared",
           "subset and compares it with these figures ([verify.json](results/verify.json)).", ""]
    placed: list[str] = []
    sections = [(t, [s for s in stems if s in results]) for t, stems in TOPICS]
    rest = [s for s in results if not any(s in stems for _, stems in TOPICS)]
    sections.append(("Other results", rest))
    out += ["## Contents", "", "- [Summary tables](#summary-tables)"]
    for topic, stems in sections:
        if stems:
            anchor = re.sub(r"[^a-z0-9 -]", "", topic.lower()).replace(" ", "-")
            out.append(f"- [{topic}](#{anchor}): " + ", ".join(f"`{s}`" for s in stems))
    out.append("")
    out += render_summaries(results)
    for topic, stems in sections:
        if not stems:
            continue
        out += [f"## {topic}", ""]
        for stem in stems:
            out += render_file(stem, results[stem])
            placed.append(stem)
    return "\n".join(out).rstrip() + "\n"


def replace_block(text: str, block: str) -> str:
    """The README with the text between the results markers replaced."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README lacks the {BEGIN} ... {END} markers")
    return text[: start + len(BEGIN)] + "\n" + block + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    results = load_results(args.results)
    wanted = {args.results_md: render_results(results),
              args.readme: replace_block(args.readme.read_text(encoding="utf-8"), render_headlines(results))}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for p in stale:
            print(f"{p}: out of date; run python scripts/render_results.py", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(wanted[p], encoding="utf-8")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
