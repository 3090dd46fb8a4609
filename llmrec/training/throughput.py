"""Measuring training throughput: a bare forward+backward+step loop (the yardstick for pipeline overhead), a
Trainer callback that times each optimizer step and records the batches it ran on, per-batch token counts, and
the process's peak resident memory over one stretch of work."""

from __future__ import annotations

import hashlib
import resource
import statistics
import sys
import time
from typing import Any

import torch
from transformers import TrainerCallback

from llmrec.errors import LlmrecError


def bare_loop_tokens_per_second(model, batches, *, steps: int, lr: float = 1e-4, warmup: int = 1) -> dict[str, float]:
    """Tokens (non-pad) per second of a plain AdamW loop over ready-made ``batches`` (e.g. the Trainer's own
    dataloader, so both see the same data); the first ``warmup`` steps are untimed."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    tokens = 0
    elapsed = 0.0
    done = 0
    for i, batch in enumerate(batches):
        if done >= steps + warmup:
            break
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            elapsed += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
        done += 1
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_second": tokens / max(elapsed, 1e-9),
            "steps": max(0, done - warmup)}


def bare_loop_step_seconds(model, batches: list[dict[str, torch.Tensor]], *, lr: float = 1e-4) -> list[float]:
    """Seconds of each step of what a user would write: ``model(**batch).loss`` (the model's own loss, over the
    full vocabulary for a causal LM), ``backward``, ``AdamW.step``, ``zero_grad``; one entry per batch."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def batch_tokens(batch: dict[str, Any]) -> dict[str, int]:
    """``rows``, ``width``, ``computed`` (rows x width), ``real`` (non-padding: a 2-D attention mask's sum; every
    computed token when the batch has no such mask, e.g. packed rows) and ``targets`` (labels != -100)."""
    ids = batch.get("input_ids")
    if ids is None or ids.dim() != 2:
        raise LlmrecError(f"a training batch needs 2-D input_ids, got keys {sorted(batch)}")
    rows, width = ids.shape
    mask = batch.get("attention_mask")
    real = int(mask.sum()) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else rows * width
    labels = batch.get("labels")
    targets = int((labels != -100).sum()) if isinstance(labels, torch.Tensor) else 0
    return {"rows": int(rows), "width": int(width), "computed": int(rows * width), "real": real, "targets": targets}


def batches_digest(batches: list[dict[str, Any]]) -> str:
    """A short hash of the batches' input ids (equal digests = the same batches, in the same order)."""
    h = hashlib.sha256()
    for b in batches:
        h.update(b["input_ids"].numpy().tobytes())
    return h.hexdigest()[:16]


class StepRecorder(TrainerCallback):
    """Times every optimizer step of a ``Trainer`` and keeps the batches its collator produced.

    Step ``i``'s time runs from the end of step ``i - 1`` (so it includes fetching and collating the batch, the
    optimizer, scheduler and callbacks: the whole cycle a long run repeats) to the end of step ``i``; the first
    step runs from its own start. Batches are caught by wrapping the prepared train dataloader's ``collate_fn``
    at ``on_train_begin`` (before the epoch's iterator exists), so any collator, padded or packed, is seen."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.begins: list[float] = []
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if train_dataloader is None:
            raise LlmrecError("StepRecorder needs the Trainer to pass train_dataloader to on_train_begin")
        # accelerate's DataLoaderShard iterates the plain DataLoader it wraps (one batch ahead: the extra one is
        # dropped by the caller, which keeps as many batches as steps ended)
        loader = getattr(train_dataloader, "base_dataloader", train_dataloader)
        collate = loader.collate_fn

        def recording(rows):
            batch = collate(rows)
            self.batches.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
            return batch

        loader.collate_fn = recording

    def on_step_begin(self, args, state, control, **kwargs):
        self.begins.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        if not self.ends:
            return []
        return [self.ends[0] - self.begins[0]] + [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]


class PeakRss:
    """Peak resident memory (MB) of this process over a stretch of work: Linux's VmHWM, reset at ``start`` via
    ``/proc/self/clear_refs`` (so several stretches in one process each get their own peak); where that is not
    possible, the process's peak so far (``scope`` says which)."""

    def __init__(self) -> None:
        self.scope = "process so far"
        self.start_mb = current_rss_mb()

    def start(self) -> PeakRss:
        self.start_mb = current_rss_mb()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")  # 5 = reset the peak RSS to the current RSS (Linux >= 4.0)
            self.scope = "this stretch (VmHWM reset at its start)"
        except OSError:
            self.scope = "process so far"
        return self

    def peak_mb(self) -> float:
        hwm = _proc_status_mb("VmHWM")
        if hwm is not None:
            return hwm
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_mb() -> float | None:
    """Resident memory of this process now (None where /proc is missing)."""
    return _proc_status_mb("VmRSS")


def summarize_steps(step_seconds: list[float], batches: list[dict[str, Any]], flops: list[float], *,
                    warmup: int, peak_gflops: float, mix_gflops: float, real_flops: list[float] | None = None
                    ) -> dict[str, Any]:
    """Medians over the steps after ``warmup`` of tokens/s (real and computed), achieved GFLOP/s and its share of
    the measured matmul ``peak_gflops`` (and of the model-shape ``mix_gflops``). ``flops[i]``: FLOPs step ``i``
    computed; ``real_flops[i]``: the share of them spent on real (non-padding) tokens."""
    if len(step_seconds) != len(batches) or len(flops) != len(batches):
        raise LlmrecError(f"{len(step_seconds)} step times for {len(batches)} batches and {len(flops)} FLOP counts")
    if len(batches) <= warmup:
        raise LlmrecError(f"{len(batches)} steps recorded, none left after {warmup} warm-up steps")
    tok = [batch_tokens(b) for b in batches][warmup:]
    secs, fl = step_seconds[warmup:], flops[warmup:]
    real_fl = (real_flops or flops)[warmup:]
    med = statistics.median
    gflops = med([f / s / 1e9 for f, s in zip(fl, secs, strict=True)])
    real_gflops = med([f / s / 1e9 for f, s in zip(real_fl, secs, strict=True)])
    computed, real = sum(t["computed"] for t in tok), sum(t["real"] for t in tok)
    return {
        "timed_steps": len(secs),
        "warmup_steps": warmup,
        "median_step_seconds": med(secs),
        "real_tokens_per_second": med([t["real"] / s for t, s in zip(tok, secs, strict=True)]),
        "computed_tokens_per_second": med([t["computed"] / s for t, s in zip(tok, secs, strict=True)]),
        "mean_rows": sum(t["rows"] for t in tok) / len(tok),
        "mean_width": sum(t["width"] for t in tok) / len(tok),
        "real_tokens": real,
        "computed_tokens": computed,
        "target_tokens": sum(t["targets"] for t in tok),
        "padding_fraction": 1 - real / computed,
        "gflop_per_computed_token": sum(fl) / computed / 1e9,
        "achieved_gflops": gflops,
        "pct_of_peak": 100 * gflops / peak_gflops,
        "pct_of_mix_ceiling": 100 * gflops / mix_gflops,
        "pct_of_peak_real_tokens": 100 * real_gflops / peak_gflops,
        "step_seconds": [round(s, 4) for s in secs],
        "batches_digest": batches_digest(batches[warmup:]),
    }
