"""Training throughput, in one process and on the same batches: the machine's measured matmul peak (fp32 and
bf16, GEMMs of the model's shapes), a bare Hugging Face forward+backward+AdamW loop, llmrec's genrec training
step (``train_genrec``: GenRecTrainer + collator, one row per variant) and the soft-prompt QA step
(``train_qa``), each as tokens/s, FLOPs per token, % of the peak and peak resident memory.

The genrec rows are built by :func:`llmrec.tasks.genrec.build_genrec_rows` inside ``train_genrec`` on ml-100k
with the ``llmrec train genrec`` defaults (SmolLM2-135M + LoRA, 20-item windows, 3 windows per user, batch 8);
the QA rows by :func:`llmrec.recipes.soft_prompt.soft_rows` with the ``llmrec train soft-prompt`` defaults. The
Trainer's batches are recorded (:class:`~llmrec.training.throughput.StepRecorder`) and replayed by the bare
loop, so both run the same tensors. Each row's peak RSS is the process's VmHWM reset at the row's start.
Genrec variants come from :data:`GENREC_VARIANTS`: a row runs only where ``GenRecTrainConfig`` has its fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from llmrec.config import Config
from llmrec.errors import ConfigError

logger = logging.getLogger(__name__)

# (row name, GenRecTrainConfig overrides, what it is). A row whose fields GenRecTrainConfig lacks is skipped
# with a note, so the SID-vocabulary loss and packing (issue 18 items 2-3) become rows once they are merged.
# ``attention`` is not a GenRecTrainConfig field: the row switches the model's attention kernel for its run.
GENREC_VARIANTS: list[tuple[str, dict[str, Any], str]] = [
    ("genrec_llmrec", {}, "llmrec genrec step: train_genrec (GenRecTrainer, CausalCollator, group_by_length)"),
    ("genrec_llmrec_sdpa", {"attention": "sdpa"}, "the same with transformers' default SDPA attention, torch's "
     "LoRA dropout, peft's fp32 LoRA products and trainable-tokens lookup, and logits at every position: the step "
     "before issue 18's speed work (full-vocabulary loss, no packing)"),
    ("genrec_llmrec_sid_loss", {"loss": "sid"}, "the same with the loss over the SID vocabulary"),
    ("genrec_llmrec_packed", {"packing": True}, "the same with several windows packed per row"),
    ("genrec_llmrec_sid_loss_packed", {"loss": "sid", "packing": True}, "SID-vocabulary loss + packing"),
    ("genrec_llmrec_compiled", {"compile": True}, "the llmrec step with each decoder layer compiled "
     "(torch.compile, llmrec.lm.compiled; compilation falls in the warm-up steps)"),
    ("genrec_llmrec_sid_loss_packed_compiled", {"loss": "sid", "packing": True, "compile": True},
     "SID-vocabulary loss + packing + compiled decoder layers"),
]
NO_COMPILER = "skipped: no C++ compiler here for torch.compile (llmrec.lm.compiled)"
MEMORY_LIMIT_MB = 3072  # issue 18 item 6: genrec training of the default model within 3 GB


@dataclasses.dataclass
class ThroughputConfig(Config):
    data: str = "ml-100k"
    users: int = 0  # first N users only (0 = all): quick runs
    base_model: str = "smollm2-135m"
    dtypes: tuple[str, ...] = ("auto",)  # auto = bf16 where the CPU runs it natively, else fp32
    threads: int = 1
    steps: int = 8  # timed optimizer steps per row
    warmup: int = 2  # untimed steps first
    batch_size: int = 8
    max_history: int = 20  # llmrec train genrec defaults
    max_windows: int = 3
    qa_per_task: int = 300  # llmrec train soft-prompt default: training questions per task
    gemm_seconds: float = 0.2  # each GEMM timing runs at least this long
    gemm_repeats: int = 3
    repeat: bool = True  # run the llmrec genrec step again at the end: the run's own noise, side by side
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup < 0 or self.batch_size < 1 or self.threads < 0:
            raise ConfigError("steps and batch_size must be >= 1, warmup and threads >= 0")
        if not self.dtypes:
            raise ConfigError("dtypes must name at least one dtype")


def genrec_variants() -> list[tuple[str, dict[str, Any], str, str | None]]:
    """:data:`GENREC_VARIANTS` with, for each, why it is skipped (None = it runs here)."""
    from llmrec.lm.compiled import compiler_available
    from llmrec.training.genrec import GenRecTrainConfig

    fields = GenRecTrainConfig.__dataclass_fields__
    out = []
    for name, overrides, what in GENREC_VARIANTS:
        missing = [k for k in overrides if k not in fields and k != "attention"]
        why = (f"skipped: GenRecTrainConfig has no field {', '.join(missing)} (issue 18 items 2-3, not merged "
               "into this checkout)") if missing else None
        if overrides.get("compile") and not compiler_available():
            why = NO_COMPILER
        out.append((name, overrides, what, why))
    return out


@dataclasses.dataclass
class _Raw:
    """One row as measured, before it is summarised against the peak."""

    what: str
    dtype: str
    step_seconds: list[float]
    batches: list[dict[str, Any]]
    flops: list[float]
    flop_parts: dict[str, float]
    rss_start_mb: float | None
    peak_rss_mb: float
    rss_scope: str
    wall_seconds: float
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _shared(config: ThroughputConfig):
    """Data, leave-one-out split, item text vectors and semantic IDs (the genrec recipe's text IDs)."""
    from llmrec.data import leave_one_out, load_dataset
    from llmrec.items import SemanticIdConfig, build_semantic_ids
    from llmrec.items.encoders import encode_items
    from llmrec.recipes.common import subset_users

    data = subset_users(load_dataset(config.data), config.users)
    split = leave_one_out(data.histories())
    vectors = encode_items(data, show_progress=False)
    sids, _ = build_semantic_ids(data, SemanticIdConfig(), vectors=vectors, show_progress=False)
    return data, split, vectors, sids


def _flops_of(shapes, batches, head: str, sid_rows: int = 0) -> tuple[list[float], list[float], dict[str, float]]:
    """Per-batch FLOPs (computed; and the real-token share, pro rata), and the parts summed over all batches."""
    from llmrec.training.flops import step_flops
    from llmrec.training.throughput import batch_tokens

    flops, real, parts = [], [], {}
    for b in batches:
        t = batch_tokens(b)
        # "sid": logits over the SID rows at the targets; "targets": full-vocabulary logits at the targets (loss
        # full via full_vocab_loss); both form weight gradients for the trainable SID rows only. "full": everywhere.
        kw = ({"head_positions": t["targets"], "head_rows": sid_rows if head == "sid" else None,
               "head_weight_rows": sid_rows} if head in ("sid", "targets") else {})
        p = step_flops(shapes, rows=t["rows"], width=t["width"], **kw)
        flops.append(p["total"])
        real.append(p["total"] * t["real"] / t["computed"])
        for k, v in p.items():
            parts[k] = parts.get(k, 0.0) + v
    return flops, real, parts


def _measure(what: str, dtype: str, run, shapes_of, head: str = "full", sid_rows: int = 0) -> _Raw:
    """Run ``run() -> (step_seconds, batches, extra)`` with its own peak-RSS window; count FLOPs per batch."""
    from llmrec.training.throughput import PeakRss

    rss = PeakRss().start()
    t0 = time.perf_counter()
    seconds, batches, extra = run()
    wall = time.perf_counter() - t0
    peak = rss.peak_mb()
    flops, real, parts = _flops_of(shapes_of(), batches, head, sid_rows)
    extra = dict(extra, real_flops=real)
    return _Raw(what, dtype, seconds, batches, flops, parts, rss.start_mb, peak, rss.scope, wall, extra)


def _head(overrides: dict[str, Any]) -> str:
    """Where a genrec row's step builds logits (see :func:`_flops_of`): the pre-speed-work row at every position."""
    if overrides.get("loss") == "sid":
        return "sid"
    return "full" if overrides.get("attention") == "sdpa" else "targets"


def _genrec_rows(config: ThroughputConfig, data, split, vectors, sids, dtype: str, tmp: Path) -> dict[str, Any]:
    import torch

    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.training.flops import LmShapes
    from llmrec.training.genrec import GenRecTrainConfig, train_genrec
    from llmrec.training.throughput import StepRecorder, bare_loop_step_seconds

    torch.manual_seed(config.seed)
    plm = PersonalLM.create(sids, data.items, PersonalLMConfig(base_model=config.base_model, dtype=dtype,
                                                               max_history=config.max_history, seed=config.seed),
                            item_vectors=vectors, vocabulary=data.vocabulary)
    shapes = LmShapes.from_model(plm.model)
    rows: dict[str, Any] = {}

    def trainer_run(name: str, overrides: dict[str, Any]):
        def run():
            rec = StepRecorder()
            train_overrides = {k: v for k, v in overrides.items() if k != "attention"}
            cfg = GenRecTrainConfig(output_dir=str(tmp / f"{name}-{dtype}"), max_steps=config.warmup + config.steps,
                                    batch_size=config.batch_size, max_windows=config.max_windows or None,
                                    eval_users=1, logging_steps=10**6, save_total_limit=1, seed=config.seed,
                                    **train_overrides)
            with attention_kernel(plm.model, overrides.get("attention")) as kernel:
                train_genrec(plm, split.train, split.valid[:1], cfg, callbacks=[rec])
            return rec.step_seconds(), rec.batches[: len(rec.ends)], {"attention": kernel}
        return run

    variants = genrec_variants()
    first_name, first_overrides, first_what, _ = variants[0]
    n_sid = len(plm.sid_token_ids)
    rows[first_name] = _measure(first_what, dtype, trainer_run(first_name, first_overrides), lambda: shapes,
                                head=_head(first_overrides), sid_rows=n_sid)
    same = rows[first_name].batches

    def bare():
        with attention_kernel(plm.model, "sdpa") as kernel:  # what a user would run: transformers' default
            return bare_loop_step_seconds(plm.model, same, lr=2e-3), same, {"attention": kernel}

    rows["bare_hf_loop"] = _measure("bare HF loop: model(**batch).loss (full vocabulary), backward, AdamW step, on "
                                    "the genrec_llmrec batches, transformers' default SDPA attention", dtype, bare,
                                    lambda: shapes)
    for name, overrides, what, why in variants[1:]:
        if why:
            rows[name] = why
            continue
        rows[name] = _measure(what, dtype, trainer_run(name, overrides), lambda: LmShapes.from_model(plm.model),
                              head=_head(overrides), sid_rows=n_sid)
    if config.repeat:
        rows[f"{first_name}_repeat"] = _measure(first_what + ", run again after the others (noise)", dtype,
                                                trainer_run(first_name + "_repeat", first_overrides), lambda: shapes,
                                                head=_head(first_overrides), sid_rows=n_sid)
    rows["_shapes"] = shapes
    return rows


def _qa_rows(config: ThroughputConfig, data, split, vectors, dtype: str, tmp: Path) -> dict[str, Any]:
    import torch

    from llmrec.lm.compiled import compiler_available
    from llmrec.lm.soft_prompt import build_soft_prompt_lm
    from llmrec.recipes.soft_prompt import (
        SoftEncoderConfig,
        SoftPromptSection,
        SoftTrainConfig,
        anchor_texts,
        sample_per_task,
        soft_rows,
    )
    from llmrec.tasks.uqa import build_uqa
    from llmrec.training.flops import LmShapes
    from llmrec.training.qa import QATrainConfig, train_qa
    from llmrec.training.throughput import StepRecorder, bare_loop_step_seconds
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    torch.manual_seed(config.seed)
    e, soft = SoftEncoderConfig(), SoftPromptSection()  # the recipe's defaults
    enc = SequenceEncoder(SequenceEncoderConfig(
        n_items=len(data.items), d_model=e.d_model, n_layers=e.layers, n_heads=e.heads, max_len=soft.max_items,
        dropout=e.dropout, pooling=e.pooling, item_vector_dim=int(vectors.shape[1])), data.item_ids)
    enc.set_item_vectors(torch.from_numpy(vectors))
    model, tok, _ = build_soft_prompt_lm(enc, soft.k, base_model=config.base_model, adapter="lora",
                                         max_items=soft.max_items, projector=soft.projector,
                                         anchor_texts=anchor_texts(data, soft.anchor_text), dtype=dtype)
    model.freeze_user_modules()  # the recipe's default (user_lr 0): LoRA trains on frozen, aligned soft tokens
    questions = sample_per_task(build_uqa(data, split="train", seed=config.seed), config.qa_per_task, config.seed)
    qa = soft_rows(questions, tok, enc, soft.k, soft.max_items, True, data)
    shapes = LmShapes.from_model(model)
    rows: dict[str, Any] = {}

    def trainer(name: str, attention: str | None, compile: bool = False):
        def run():
            rec = StepRecorder()
            cfg = QATrainConfig(output_dir=str(tmp / f"{name}-{dtype}"), max_steps=config.warmup + config.steps,
                                learning_rate=SoftTrainConfig().lr, batch_size=config.batch_size,
                                logging_steps=10**6, seed=config.seed, compile=compile)
            with attention_kernel(model, attention) as kernel:
                train_qa(model, qa, tok.pad_token_id, cfg, callbacks=[rec])
            return rec.step_seconds(), rec.batches[: len(rec.ends)], {
                "questions": len(questions), "soft_tokens": soft.k, "attention": kernel}
        return run

    what = (f"llmrec soft-prompt QA step: train_qa (TrainableOnlyTrainer, QACollator), k = {soft.k} soft tokens, "
            "LoRA, user encoder frozen (untrained weights: speed only)")
    rows["qa_llmrec"] = _measure(what, dtype, trainer("qa", None), lambda: shapes, head="targets")
    same = rows["qa_llmrec"].batches

    def bare():
        with attention_kernel(model, "sdpa") as kernel:
            return bare_loop_step_seconds(model, same, lr=SoftTrainConfig().lr), same, {"attention": kernel}

    rows["qa_bare_loop"] = _measure("bare loop on the qa_llmrec batches: model(**batch).loss, backward, AdamW step, "
                                    "transformers' default SDPA attention", dtype, bare, lambda: shapes)
    rows["qa_llmrec_sdpa"] = _measure(what + ", with SDPA attention (before issue 18's speed work)", dtype,
                                      trainer("qa_sdpa", "sdpa"), lambda: shapes)
    rows["qa_llmrec_compiled"] = _measure(what + ", each decoder layer compiled (llmrec.lm.compiled; compilation "
                                          "falls in the warm-up steps)", dtype, trainer("qa_compiled", None, True),
                                          lambda: shapes, head="targets") if compiler_available() else NO_COMPILER
    rows["_shapes"] = shapes
    return rows


@contextlib.contextmanager
def _model_loss(active: bool):
    """Within the block (when ``active``), the genrec Trainer and the soft-prompt model take the loss from the LLM's
    forward (logits at every position), as before issue 18, instead of building logits at the targets only
    (:mod:`llmrec.lm.target_loss`)."""
    from llmrec.lm.soft_prompt import SoftPromptModel
    from llmrec.training.genrec import GenRecTrainer

    previous = [(cls, cls.logits_at_targets_only) for cls in (GenRecTrainer, SoftPromptModel)]
    for cls, value in previous:
        cls.logits_at_targets_only = value and not active
    try:
        yield
    finally:
        for cls, value in previous:
            cls.logits_at_targets_only = value


@contextlib.contextmanager
def attention_kernel(model, implementation: str | None):
    """Run a block with ``model`` on another attention kernel (None: the one it has); yields the kernel used.
    ``"sdpa"`` times the step as it was before issue 18: SDPA, torch's LoRA dropout, peft's fp32 LoRA products,
    peft's whole-matrix trainable-tokens lookup and the loss from the LLM's forward (:func:`_model_loss`)."""
    from llmrec.lm.attention import current_attention, set_attention
    from llmrec.lm.lora_compute import use_compute_dtype_lora
    from llmrec.lm.trainable_rows import use_row_lookup_embeddings
    from llmrec.users.fast_dropout import use_bit_dropout

    if implementation is None:
        yield current_attention(model)
        return
    previous = set_attention(model, implementation)
    before = implementation == "sdpa"
    swapped = use_bit_dropout(model, undo=True) if before else 0
    recast = use_compute_dtype_lora(model, undo=True) if before else 0
    looked_up = use_row_lookup_embeddings(model, undo=True) if before else 0
    try:
        with _model_loss(before):
            yield implementation
    finally:
        set_attention(model, previous)
        if swapped:
            use_bit_dropout(model)
        if recast:
            use_compute_dtype_lora(model)
        if looked_up:
            use_row_lookup_embeddings(model)


def _summary(raw: _Raw, peaks: dict[str, dict[str, Any]], warmup: int) -> dict[str, Any]:
    from llmrec.training.throughput import summarize_steps

    peak = peaks[raw.dtype]
    out = {"what": raw.what, "dtype": raw.dtype}
    out.update(summarize_steps(raw.step_seconds, raw.batches, raw.flops, warmup=warmup,
                               peak_gflops=peak["peak_gflops"], mix_gflops=peak["mix_gflops"],
                               real_flops=raw.extra["real_flops"]))
    out["flops_by_part_gflop_per_computed_token"] = {
        k: v / max(1, sum(b["input_ids"].numel() for b in raw.batches)) / 1e9 for k, v in raw.flop_parts.items()}
    out.update(rss_start_mb=raw.rss_start_mb, peak_rss_mb=raw.peak_rss_mb, rss_scope=raw.rss_scope,
               wall_seconds_incl_setup=round(raw.wall_seconds, 1))
    out.update({k: v for k, v in raw.extra.items() if k != "real_flops"})
    return out


def run_throughput(config: ThroughputConfig) -> dict[str, Any]:
    """Measure every row (see the module docstring) and return the results record (rows, peaks, ratios)."""
    import torch

    from llmrec.hardware import cpu_bf16_native, resolve_dtype, set_threads
    from llmrec.training.flops import FORMULA, matmul_peak
    from llmrec.training.throughput import batch_tokens

    threads = set_threads(config.threads)
    data, split, vectors, sids = _shared(config)
    dtypes = list(dict.fromkeys(resolve_dtype(d) for d in config.dtypes))
    peaks: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="llmrec-throughput-") as tmp:
        for dtype in dtypes:
            rows = _genrec_rows(config, data, split, vectors, sids, dtype, Path(tmp))
            if not peaks:  # GEMMs at the genrec batches' median size, measured once for both dtypes
                tokens = int(statistics.median(batch_tokens(b)["computed"] for b in rows["genrec_llmrec"].batches))
                for name, tdt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                    logger.info("matmul peak, %s, %d tokens", name, tokens)
                    peaks[name] = matmul_peak(rows["_shapes"], tokens, tdt, min_seconds=config.gemm_seconds,
                                              repeats=config.gemm_repeats)
                genrec_shapes = rows["_shapes"].describe()
            rows.pop("_shapes")
            qa = _qa_rows(config, data, split, vectors, dtype, Path(tmp))
            qa_shapes = qa.pop("_shapes").describe()
            raw[dtype] = {**rows, **qa}
    results: dict[str, Any] = {}
    for dtype, rows in raw.items():
        results[dtype] = {name: r if isinstance(r, str) else _summary(r, peaks, config.warmup)
                          for name, r in rows.items()}
    table, ratios = {}, {}
    for dtype, rows in results.items():
        for name, r in rows.items():
            if isinstance(r, str):
                continue
            table[f"{name} ({dtype})"] = {k: r[k] for k in (
                "real_tokens_per_second", "computed_tokens_per_second", "padding_fraction", "gflop_per_computed_token",
                "achieved_gflops", "pct_of_peak", "pct_of_mix_ceiling", "median_step_seconds", "peak_rss_mb")}
        tps = {n: r["real_tokens_per_second"] for n, r in rows.items() if not isinstance(r, str)}
        ratios[dtype] = {f"{n}_over_bare_hf_loop": tps[n] / tps["bare_hf_loop"] for n in tps if n.startswith("genrec")}
        ratios[dtype]["qa_llmrec_over_qa_bare_loop"] = tps["qa_llmrec"] / tps["qa_bare_loop"]
        # issue 18's targets compare with the step as it was: full loss, no packing, SDPA, same batches
        ratios[dtype].update({f"{n}_over_genrec_llmrec_sdpa": tps[n] / tps["genrec_llmrec_sdpa"]
                              for n in tps if n.startswith("genrec") and "genrec_llmrec_sdpa" in tps})
        ratios[dtype].update({f"{n}_over_qa_llmrec_sdpa": tps[n] / tps["qa_llmrec_sdpa"]
                              for n in ("qa_llmrec", "qa_llmrec_compiled") if n in tps})
    genrec_peak = max(r["peak_rss_mb"] for rows in results.values() for n, r in rows.items()
                      if n.startswith("genrec") and not isinstance(r, str))
    for p in peaks.values():
        p["gemms"] = {f"{g['gemm']} {g['form']} ({g['m']}x{g['k']} @ {g['k']}x{g['n']})": round(g["gflops"], 2)
                      for g in p["gemms"]}
    return {
        "summary": table,
        "ratios": ratios,
        "memory": {"genrec_peak_rss_mb": genrec_peak, "limit_mb": MEMORY_LIMIT_MB,
                   "within_limit": genrec_peak <= MEMORY_LIMIT_MB},
        "matmul_peak": {"threads": threads, "bf16_native": cpu_bf16_native(), **peaks},
        "rows": results,
        "flops_formula": FORMULA,
        "model_shapes": {"genrec": genrec_shapes, "qa": qa_shapes},
        "dtypes": dtypes,
        "threads": threads,
    }
