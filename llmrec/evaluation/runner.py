"""Run tasks against a model and baselines: retrieve, prompt, predict in batches (cached, resumable), score.

Each (task, variant) writes its finished predictions to ``OUT/cache/<task>/<variant>-<hash>.jsonl``, one
batch appended per write, so an interrupted run resumes where it stopped; the hash covers everything that
changes a prediction (model, prompt, retriever, k, budget, method), so a changed config never reuses stale
lines. Outputs: ``results.json`` (config, versions, per-task metrics with bootstrap CIs, timings),
LaMP-format predictions per variant, and (``report=True``) ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no lock, concurrent runs on one --out may repeat work
    fcntl = None  # type: ignore[assignment]

from llmrec.config import Config
from llmrec.distributed import broadcast, gather, is_main, shard, world_size
from llmrec.distributed import init as init_distributed
from llmrec.errors import ConfigError, DataError, LlmrecError
from llmrec.evaluation.builders import (
    BUILDER_ARGS,
    DATASET_FREE_BUILDERS,
    Example,
    build_pool,
    interaction_data,
    resolve_spec,
    select_examples,
)
from llmrec.evaluation.metrics import Scored, compute_metrics
from llmrec.evaluation.prompts import load_template, render
from llmrec.evaluation.tasks import TaskSpec, load_registry
from llmrec.io import atomic_dir, guard_output, write_json_atomic
from llmrec.progress import progress
from llmrec.retrieval import RETRIEVERS, get_retriever, select_profile

logger = logging.getLogger(__name__)


MAX_BOOT = 100_000  # bootstrap resamples: more adds nothing to a 95 % CI but time and memory
EVAL_MARKER = ".llmrec-eval"  # written into --out when a run starts: "this folder is an llmrec eval output"


def is_eval_output(path: Path) -> bool:
    """Whether ``path`` is a folder an ``llmrec eval run`` wrote (marker, results.json, or its cache)."""
    return path.is_dir() and any((path / n).exists() for n in (EVAL_MARKER, "results.json", "cache"))


@dataclass
class RunConfig(Config):
    tasks: tuple[str, ...]
    out: str
    data: str | None = None  # dataset name or config for every task that reads one (overrides the task's dataset)
    model: str | None = None  # None: baselines only
    models: tuple[str, ...] = ()  # more models side by side on the same examples (e.g. sasrec:DIR, a 2nd LLM)
    limit: int | None = None
    sample: int | None = None  # override each task's seeded subset size
    retrievers: tuple[str, ...] = ()  # override each task's retriever; "none" = no personalization
    ks: tuple[int, ...] = ()
    max_tokens: int | None = None
    method: str | None = None  # override generation.method
    baselines: tuple[str, ...] = ()
    batch_size: int | None = None
    scoring: str | None = None
    task_args: dict[str, Any] = field(default_factory=dict)
    include_paths: tuple[str, ...] = ()
    n_boot: int = 1000
    seed: int = 0
    dtype: str | None = None
    progress: bool = True
    report: bool = True
    overwrite: bool = False  # replace an existing file / foreign non-empty folder at ``out``
    calibrate: bool = True  # also report batch-calibrated score_options variants (no extra model pass)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("no tasks given")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError("limit must be positive")
        if self.sample is not None and self.sample <= 0:
            raise ConfigError("sample must be positive")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ConfigError("batch_size must be positive")
        if not 0 <= self.n_boot <= MAX_BOOT:
            raise ConfigError(f"n_boot must be within [0, {MAX_BOOT}], got {self.n_boot}")
        unknown = [r for r in self.retrievers if r not in RETRIEVERS]
        if unknown:
            raise ConfigError(f"unknown retriever(s) {unknown}; use {', '.join(RETRIEVERS)}")
        if any(k <= 0 for k in self.ks):
            raise ConfigError("ks must be positive (use retriever 'none' for no profile)")
        if self.model is None and not self.models and not self.baselines:
            raise ConfigError("give a model, baselines, or both")

    def model_specs(self) -> tuple[str, ...]:
        """Every model to evaluate, ``model`` first."""
        return ((self.model,) if self.model is not None else ()) + tuple(self.models)


@dataclass(frozen=True)
class Variant:
    name: str
    retriever: str
    k: int
    method: str  # generate | score_options | predict | recommend


def _variants(spec: TaskSpec, cfg: RunConfig, model: Any, prefix: str = "", baselines: bool = True) -> list[Variant]:
    """The variants ``model`` runs on ``spec`` (``prefix`` starts their names when several LLMs share a run),
    then the ``cfg.baselines`` (unless ``baselines=False``)."""
    out: list[Variant] = []
    if model is not None and hasattr(model, "predict"):  # --model baseline:KIND
        out.append(Variant(model.name, "none", 0, "predict"))
    elif model is not None and hasattr(model, "supports"):  # a recommender without prompts (sasrec:DIR)
        out.append(Variant(model.name, "none", 0, "recommend"))
    elif model is not None:
        method = cfg.method or spec.generation.method
        if spec.output.type == "rank_items":
            method = "recommend"
        elif method == "auto":
            score_ok = spec.output.type in ("classify", "regress") and hasattr(model, "score_options")
            method = "score_options" if score_ok else "generate"
        pairs: list[tuple[str, int]] = []
        for r in cfg.retrievers or (spec.retriever.name,):
            if r == "none":
                pairs.append(("none", 0))
            else:
                pairs.extend((r, k) for k in (cfg.ks or (spec.retriever.k,)))
        for r, k in pairs:
            label = "no-profile" if r == "none" or k == 0 else f"{r}@{k}"
            suffix = "" if method in ("recommend",) else f"/{'score' if method == 'score_options' else 'gen'}"
            out.append(Variant(prefix + label + suffix, r if k else "none", k, method))
    for b in cfg.baselines if baselines else ():
        out.append(Variant(f"baseline:{b}", "none", 0, "predict"))
    return out


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("llmrec", "torch", "transformers", "numpy", "faiss-cpu", "rouge-score", "jinja2"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class PredictionCache:
    """Append-only JSONL of ``{"id", "output"}`` records after one ``{"header"}`` line.

    Safe under concurrent runs on the same ``--out``: hold :meth:`locked` (an ``flock`` on ``<file>.lock``)
    around "re-read, compute what is still missing, append", so each batch is computed and written once. A line
    that cannot be read (a torn write from a crash, a bare number, a record without ``output``) is a miss: it is
    skipped with a warning naming the file and line, and that example is predicted again.
    ``write=False`` (every rank but the main one under a launcher): read it, keep additions in memory only.
    """

    def __init__(self, path: Path, header: dict[str, Any], write: bool = True) -> None:
        self.path = path
        self.write = write
        self.done: dict[str, Any] = {}
        self.logprobs: dict[str, list[float]] = {}
        self._offset = 0  # bytes of the file already read (whole lines only)
        self._lineno = 0
        self._held = 0
        if not write:  # a reader beside the main rank, which owns the file (and its lock)
            self.refresh()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.locked():
            if self._offset == 0 and (not path.exists() or path.stat().st_size == 0):
                self._append([{"header": header}])

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cache's lock (re-entrant within this object) and see every line written so far."""
        if self._held or not self.write:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._held = 1
            self.refresh()
            yield
        finally:
            self._held = 0
            os.close(fd)  # closing releases the flock

    def refresh(self) -> None:
        """Read the lines appended since the last read (call with the lock held)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            self._lineno += 1
            self._load_line(raw)
        self._offset += end
        if data[end:]:  # under the lock nobody is mid-write: a crash left this line torn
            self._lineno += 1
            logger.warning("%s: line %d: ignoring an incomplete line (interrupted write); its examples are "
                           "predicted again", self.path, self._lineno)
            self._append([], fix_torn_tail=True)

    def _load_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            rec = json.loads(raw)
        except (ValueError, RecursionError):
            rec = None
        if isinstance(rec, dict) and "header" in rec and len(rec) == 1:
            return
        ok = isinstance(rec, dict) and isinstance(rec.get("id"), str) and "output" in rec
        if not ok:
            logger.warning("%s: line %d: unreadable cache record (expected {\"id\", \"output\"}); its example "
                           "is predicted again", self.path, self._lineno)
            return
        self.done[rec["id"]] = rec["output"]
        lp = rec.get("logprobs")
        if isinstance(lp, list) and all(isinstance(x, (int, float)) for x in lp):
            self.logprobs[rec["id"]] = lp
        else:
            self.logprobs.pop(rec["id"], None)

    def _append(self, records: list[dict[str, Any]], fix_torn_tail: bool = False) -> None:
        if not self.write:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        if fix_torn_tail:
            data = b"\n" + data  # end the torn line: it stays an unreadable line, skipped on every load
        with self.locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)  # one write per batch: either the whole batch lands or a torn tail is skipped
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            self._lineno += data.count(b"\n") - (1 if fix_torn_tail else 0)
            self._offset = size  # we hold the lock: nobody else wrote in between

    def add(self, ids: list[str], outputs: list[Any], logprobs: np.ndarray | None = None) -> None:
        recs = [{"id": i, "output": o} for i, o in zip(ids, outputs, strict=True)]
        if logprobs is not None:  # kept so calibrated variants need no second model pass
            for rec, row in zip(recs, logprobs, strict=True):
                rec["logprobs"] = [round(float(x), 5) for x in row]
                self.logprobs[rec["id"]] = rec["logprobs"]
        self._append(recs)
        self.done.update(zip(ids, outputs, strict=True))


def build_prompts(spec: TaskSpec, examples: list[Example], retriever: str, k: int, max_tokens: int | None,
                  seed: int = 0) -> list[str]:
    spec = resolve_spec(spec)  # labels a task leaves to its dataset ("Options: ...") as build_examples sees them
    template = load_template(spec.prompt, spec.source)
    ret = get_retriever(retriever, seed=seed) if k > 0 else None
    if ret is not None and hasattr(ret, "prepare"):
        ret.prepare([t for ex in examples for t in [ex.query] + [d.text for d in ex.docs]])
    prompts = []
    for ex in examples:
        chosen = select_profile(ret, ex.query, ex.docs, k, max_tokens, key=ex.id) if ret is not None else []
        variables = {**ex.variables, "input": ex.input, "profile": [ex.profile[i] for i in chosen],
                     "labels": list(spec.output.labels), "k": k}
        prompts.append(render(template, variables, record=ex.id))
    return prompts


def _option_outputs(spec: TaskSpec, logp: np.ndarray, options: list[str]) -> list[str]:
    if spec.output.type == "classify":
        return [options[i] for i in logp.argmax(axis=1)]
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = p @ np.array([float(o) for o in options])
    return [f"{v:.4f}" for v in expected]


def _options(spec: TaskSpec) -> list[str]:
    if spec.output.type == "classify":
        return list(spec.output.labels)
    lo, hi = spec.output.range
    if not (float(lo).is_integer() and float(hi).is_integer()) or hi - lo > 20:
        raise ConfigError(f"{spec.task}: score_options needs a small integer range, got {spec.output.range}")
    return [str(v) for v in range(int(lo), int(hi) + 1)]


def run_variant(spec: TaskSpec, variant: Variant, model: Any, examples: list[Example], cfg: RunConfig,
                out: Path) -> tuple[list[Any], dict[str, float]]:
    """Outputs for every example (cached), and timings."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    max_tokens = cfg.max_tokens if cfg.max_tokens is not None else spec.retriever.max_tokens
    prompts = [""] * len(examples)
    if variant.method in ("generate", "score_options"):
        prompts = build_prompts(spec, examples, variant.retriever, variant.k, max_tokens, spec.retriever.seed)
    timings["prompts_s"] = time.perf_counter() - t0
    task_key = spec.to_dict()
    if task_key["generation"].get("chat_template") is True:
        del task_key["generation"]["chat_template"]  # the default: keeps caches from before the option valid
    if variant.method == "predict" and getattr(model, "fitted_on", None) is not None:
        task_key["fitted_on"] = model.fitted_on  # popularity over all examples (caches before: the evaluated)
    key = {"model": getattr(model, "name", "?"), "task": task_key, "variant": variant.__dict__,
           "max_tokens": max_tokens, "template": _template_hash(spec)}
    if getattr(model, "dtype", "bfloat16") != "bfloat16":  # bf16 runs keep the caches from before the key had it
        key["dtype"] = model.dtype
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    slug = re.sub(r"[^\w.+=-]", "_", variant.name.replace("/", "_").replace(":", "_").replace("@", "_"))
    cache = PredictionCache(out / "cache" / spec.task / f"{slug}-{digest}.jsonl", key, write=is_main())
    todo = broadcast([i for i, ex in enumerate(examples) if ex.id not in cache.done])  # the main rank's cache
    t1 = time.perf_counter()
    if hasattr(model, "set_chat"):
        model.set_chat(spec.generation.chat_template)
    predicted = 0
    if variant.method == "predict":  # baselines: instantaneous, all at once
        batches = [todo] if todo else []
    else:
        bs = cfg.batch_size or spec.generation.batch_size
        options = _options(spec) if variant.method == "score_options" else []
        if variant.method == "recommend" and not hasattr(model, "recommend"):
            raise ConfigError(f"{spec.task} ranks items: model {model.name} has no recommend(histories, k)")
        if world_size() > 1:
            predicted += _predict_sharded(cfg, spec, variant, model, examples, prompts, todo, bs, options, cache)
            batches = []
        else:
            batches = [todo[i : i + bs] for i in range(0, len(todo), bs)]
    for batch in progress(batches, desc=f"{spec.task} {variant.name}", unit="batch",
                          enable=cfg.progress and variant.method != "predict"):
        # Another run on the same --out may have done this batch meanwhile: re-read under the lock, compute
        # only what is still missing, append, release.
        with cache.locked():
            batch = [i for i in batch if examples[i].id not in cache.done]
            if not batch:
                continue
            ids = [examples[i].id for i in batch]
            predicted += len(batch)
            if variant.method == "predict":
                outputs = model.predict(spec, examples)
                cache.add(ids, [outputs[i] for i in batch])
            elif variant.method == "generate":
                cache.add(ids, list(model.generate([prompts[i] for i in batch], spec.generation.max_new_tokens)))
            elif variant.method == "score_options":
                logp = np.asarray(model.score_options([prompts[i] for i in batch], options), dtype=np.float64)
                cache.add(ids, _option_outputs(spec, logp, options), logp)
            else:
                recs = model.recommend([examples[i].history for i in batch], spec.output.k)
                cache.add(ids, [" ".join(r) for r in recs])
    timings["predict_s"] = time.perf_counter() - t1
    timings["predicted_now"] = predicted
    with cache.locked():  # pick up what concurrent runs added after our last batch
        pass
    logprobs = None
    if variant.method == "score_options" and all(ex.id in cache.logprobs for ex in examples):
        logprobs = np.array([cache.logprobs[ex.id] for ex in examples])
    return [cache.done[ex.id] for ex in examples], timings, logprobs


def _predict_sharded(cfg: RunConfig, spec: TaskSpec, variant: Variant, model: Any, examples: list[Example],
                     prompts: list[str], todo: list[int], bs: int, options: list[str], cache: PredictionCache) -> int:
    """Under a launcher: each rank predicts its block of ``todo``; every round gathers one batch per rank, in
    rank order, and the main rank appends it to the cache (so a killed run still resumes). Returns len(todo)."""
    mine = shard(todo)
    batches = [mine[i : i + bs] for i in range(0, len(mine), bs)]
    rounds = max(gather([len(batches)]))
    for step in progress(range(rounds), desc=f"{spec.task} {variant.name}", unit="batch",
                         enable=cfg.progress and is_main()):
        batch, logp = (batches[step] if step < len(batches) else []), None
        if not batch:
            outs: list[Any] = []
        elif variant.method == "generate":
            outs = list(model.generate([prompts[i] for i in batch], spec.generation.max_new_tokens))
        elif variant.method == "score_options":
            logp = np.asarray(model.score_options([prompts[i] for i in batch], options), dtype=np.float64)
            outs = _option_outputs(spec, logp, options)
        else:
            outs = [" ".join(r) for r in model.recommend([examples[i].history for i in batch], spec.output.k)]
        done = gather(list(zip([examples[i].id for i in batch], outs,
                               logp if logp is not None else [None] * len(batch), strict=True)))
        if done:
            ids, outputs, rows = zip(*done, strict=True)
            cache.add(list(ids), list(outputs), np.array(rows) if variant.method == "score_options" else None)
    return len(todo)


def batch_calibrated(spec: TaskSpec, logprobs: np.ndarray) -> list[str]:
    """Batch calibration (Zhou et al. 2023): remove the model's prior over the options, estimated as the mean
    option log-probability over the evaluated prompts (label-free), before taking argmax / expectation."""
    logp = logprobs - np.logaddexp.reduce(logprobs, axis=1, keepdims=True)
    return _option_outputs(spec, logp - logp.mean(axis=0, keepdims=True), _options(spec))


def _template_hash(spec: TaskSpec) -> str:
    from llmrec.evaluation.prompts import resolve_template_path

    return hashlib.sha256(resolve_template_path(spec.prompt, spec.source).read_bytes()).hexdigest()[:12]


def score_outputs(spec: TaskSpec, golds: list[str], outputs: list[Any], mode: str | None = None,
                  n_boot: int = 1000, seed: int = 0, catalogue: frozenset[str] | None = None) -> Scored:
    return Scored(spec.output.type, golds, outputs, labels=spec.output.labels,
                  value_range=tuple(spec.output.range) or (1.0, 5.0), mode=mode or spec.scoring,
                  catalogue=catalogue)


def _prediction_file(spec: TaskSpec, examples: list[Example], outputs: list[Any]) -> dict[str, Any]:
    """The LaMP file shape (``{"task", "golds": [{"id", "output"}]}``); the task name is LaMP_k for LaMP."""
    task = spec.dataset_args.get("task", spec.task) if spec.builder == "lamp" else spec.task
    if spec.builder == "lamp":
        from llmrec.data.lamp import normalize_task

        task = normalize_task(task)
    return {"task": task, "golds": [{"id": ex.id, "output": o} for ex, o in zip(examples, outputs, strict=True)]}


def run(cfg: RunConfig, model: Any | None = None) -> dict[str, Any]:
    """Evaluate; returns the results dict also written to ``cfg.out/results.json``.

    ``cfg.out`` may be missing, an empty folder or an earlier eval output (its cache is reused: resume). An
    existing file or a non-empty foreign folder is refused unless ``cfg.overwrite``; then the new output is
    built beside it and swapped in only when complete, so the old data survives a failed or killed run.
    """
    from llmrec.evaluation.models import load_model

    out = Path(cfg.out)
    init_distributed()  # under a launcher: join the process group (one device per process) before loading models
    guard_output(out, overwrite=cfg.overwrite, ours=is_eval_output)
    # Decided now, from what the user pointed at: concurrent runs on the same new --out must all write in place.
    replace = cfg.overwrite and out.exists() and not is_eval_output(out) and not (
        out.is_dir() and next(out.iterdir(), None) is None)
    # Everything that can fail on bad tasks or models fails before --out is touched.
    registry = load_registry(list(cfg.include_paths))
    specs = registry.expand(list(cfg.tasks))
    t_load = time.perf_counter()
    models = [model] if model is not None else []
    models += [load_model(m, dtype=cfg.dtype) for m in cfg.model_specs()[len(models):]]
    load_s = time.perf_counter() - t_load
    if replace:  # --overwrite of foreign data: built beside it, swapped in when complete
        with atomic_dir(out) as tmp:
            return _run(cfg, registry, specs, models, load_s, tmp)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(cfg, registry, specs, models, load_s, out)
    except BaseException:
        if created and {p.name for p in out.iterdir()} <= {EVAL_MARKER}:
            shutil.rmtree(out, ignore_errors=True)  # failed before writing anything: leave no empty output
        raise


def _run(cfg: RunConfig, registry: Any, specs: list[TaskSpec], models: list[Any], load_s: float,
         out: Path) -> dict[str, Any]:
    from llmrec.evaluation.models import Baseline

    # Not via a temp file: a concurrent run must never see this folder non-empty without the marker.
    with (out / EVAL_MARKER).open("a", encoding="utf-8"):
        pass
    # Several LLMs in one run: their prompt variants ("no-profile", "bm25@3/gen") are told apart by the model.
    llms = [m for m in models if not hasattr(m, "predict") and not hasattr(m, "supports")]
    prefixes = {id(m): (f"{m.name}|" if len(llms) > 1 else "") for m in models}
    results: dict[str, Any] = {
        "config": cfg.to_dict(), "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "model": getattr(models[0], "name", None) if models else None,
        "models": [getattr(m, "name", None) for m in models], "model_load_s": round(load_s, 3), "tasks": {},
        "groups": {},
    }
    try:
        import torch

        results["machine"]["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    baselines = {b: Baseline(b) for b in cfg.baselines}
    data = cfg.data or _models_dataset(models)
    results["data"] = data
    if cfg.data and all(s.builder in DATASET_FREE_BUILDERS for s in specs):
        logger.warning("--data %s: none of the tasks reads an interaction dataset (LaMP tasks take --task-arg "
                       "questions=... outputs=...)", cfg.data)
    read = set().union(*(BUILDER_ARGS.get(s.builder, ()) for s in specs))
    if set(cfg.task_args) - read:
        raise ConfigError(f"--task-arg {sorted(set(cfg.task_args) - read)}: no selected task reads it; they read "
                          f"{sorted(read) or 'none'}")
    for spec in specs:
        overrides: dict[str, Any] = {}
        if data and spec.builder not in DATASET_FREE_BUILDERS:
            overrides["dataset"] = data
        own = {k: v for k, v in cfg.task_args.items() if k in BUILDER_ARGS.get(spec.builder, ())}
        if own:  # each task takes the --task-arg keys its builder reads (questions= means nothing to uqa)
            overrides["dataset_args"] = {**spec.dataset_args, **own}
        if cfg.scoring:
            overrides["scoring"] = cfg.scoring
        if cfg.sample:
            overrides["sample"] = cfg.sample
        spec = spec.with_overrides(**overrides) if overrides else spec
        t0 = time.perf_counter()
        spec = resolve_spec(spec)  # labels / rating scale the task leaves to its dataset
        pool = build_pool(spec)
        examples = select_examples(spec, pool, cfg.limit)
        task_res: dict[str, Any] = {"spec": spec.to_dict(), "n": len(examples),
                                    "build_s": round(time.perf_counter() - t0, 3), "variants": {}}
        if spec.builder not in DATASET_FREE_BUILDERS:
            task_res["dataset"] = _dataset_summary(spec)
        golds = [ex.gold for ex in examples]
        has_golds = all(g is not None for g in golds)
        if has_golds:
            check_gold_ratings(spec, {ex.id: ex.gold for ex in examples},
                               spec.dataset_args.get("outputs") or spec.dataset or spec.source)
        pairs = [(v, m) for m in models for v in _variants(spec, cfg, m, prefixes[id(m)], baselines=False)]
        pairs += [(v, baselines[v.name.split(":", 1)[1]]) for v in _variants(spec, cfg, None)]
        for variant, m in pairs:
            if hasattr(m, "supports") and not m.supports(spec.output.type):
                continue  # e.g. SASRec on a rating task, a rating baseline on next-item
            if hasattr(m, "fit"):  # popularity: counted over every example, not just the evaluated ones
                m.fit(spec, pool)
            outputs, timings, logprobs = run_variant(spec, variant, m, examples, cfg, out)
            todo = [(variant.name, variant.method, outputs, timings)]
            if logprobs is not None and cfg.calibrate:
                todo.append((variant.name + "+calib", "score_options+batch_calibration",
                             batch_calibrated(spec, logprobs), {}))
            for name, method, outputs, timings in todo:
                task_res["variants"][name] = _score_variant(spec, examples, golds, name, method, variant,
                                                            outputs, timings, cfg, out)
        if has_golds and is_main():
            write_json_atomic(out / spec.task / "golds.json", _prediction_file(spec, examples, golds))
        results["tasks"][spec.task] = task_res
    results["groups"] = _group_results(registry, cfg.tasks, results["tasks"])
    if not is_main():  # under a launcher every rank has the same results; one writes them
        return results
    write_json_atomic(out / "results.json", results)
    if cfg.report:
        from llmrec.evaluation.report import write_report

        write_report(results, out / "report.html")
    return results


def _models_dataset(models: list[Any]) -> str | None:
    """Without ``--data``: the dataset the trained PersonalLM models of the run record (when they agree), so a
    model trained on your data is evaluated on it, as ``llmrec recommend --model DIR`` finds its users."""
    from llmrec.evaluation.models import PersonalLMModel
    from llmrec.lm.model_dir import recorded_dataset_spec

    found = {m.name: spec for m in models if isinstance(m, PersonalLMModel)
             and (spec := recorded_dataset_spec(m.name)) is not None}
    specs = set(found.values())
    if len(specs) > 1:
        logger.warning("the models were trained on different datasets (%s): each task runs on the dataset its file "
                       "names; pass --data to choose one", ", ".join(f"{m}: {s}" for m, s in found.items()))
    if len(specs) != 1:
        return None
    spec = specs.pop()
    logger.info("tasks run on %s, the dataset %s was trained on (--data chooses another)", spec, ", ".join(found))
    return spec


def _dataset_summary(spec: TaskSpec) -> dict[str, Any] | None:
    """Name, size and nouns of the interaction dataset a task ran on (for results.json and the report)."""
    try:
        data = interaction_data(spec.dataset)
    except LlmrecError:  # a custom builder whose `dataset` is not an interaction dataset
        return None
    vocab = data.vocabulary
    return {"spec": spec.dataset, "name": data.name, "users": len(data.histories()), "items": len(data.items),
            "interactions": len(data.interactions), "item_noun": vocab.item, "items_noun": vocab.items,
            "interacted": vocab.interacted, "category_fields": list(data.category_fields)}


def _score_variant(spec: TaskSpec, examples: list[Example], golds: list[Any], name: str, method: str,
                   variant: Variant, outputs: list[Any], timings: dict[str, float], cfg: RunConfig,
                   out: Path) -> dict[str, Any]:
    safe = re.sub(r"[^\w.:@+=-]", "_", name.replace("/", "_"))  # model paths in names stay one file name
    if is_main():
        write_json_atomic(out / spec.task / f"{safe}.predictions.json", _prediction_file(spec, examples, outputs))
    row: dict[str, Any] = {"retriever": variant.retriever, "k": variant.k, "method": method,
                           "timings": {k: round(v, 3) for k, v in timings.items()}}
    if all(g is not None for g in golds):
        t2 = time.perf_counter()
        scored = score_outputs(spec, golds, outputs)
        row["metrics"] = compute_metrics(scored, spec.metrics, n_boot=cfg.n_boot, seed=cfg.seed)
        if spec.output.type == "regress":
            row["error_histogram"] = _histogram(scored.numbers.value - scored.gold_value)
        row["timings"]["score_s"] = round(time.perf_counter() - t2, 3)
        logger.info("%s %s: %s", spec.task, name, {k: round(v["value"], 4) for k, v in row["metrics"].items()})
    return row


def _histogram(signed_errors: np.ndarray) -> dict[str, list[float]]:
    edges = np.arange(-4.5, 5.0, 0.5)
    counts, _ = np.histogram(np.clip(signed_errors, -4.25, 4.25), bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _group_results(registry, names: tuple[str, ...], tasks: dict[str, Any]) -> dict[str, Any]:
    """Macro average of each metric over a group's tasks, per variant present in all of them."""
    out: dict[str, Any] = {}
    for name in names:
        if name not in registry.groups:
            continue
        members = [t.task for t in registry.expand([name]) if t.task in tasks]
        variants = set.intersection(*(set(tasks[t]["variants"]) for t in members)) if members else set()
        agg: dict[str, dict[str, float]] = {}
        for v in sorted(variants):
            sums: dict[str, list[float]] = {}
            for t in members:
                for metric, val in tasks[t]["variants"][v].get("metrics", {}).items():
                    sums.setdefault(metric, []).append(val["value"])
            agg[v] = {m: float(np.mean(vals)) for m, vals in sums.items() if len(vals) == len(members)}
        out[name] = {"tasks": members, "variants": agg}
    return out


def check_gold_ratings(spec: TaskSpec, golds: dict[str, Any], path: str | Path) -> None:
    """A regress task's golds must be finite numbers inside its declared ``output.range``; else a DataError
    naming the file, the record (its id) and the field."""
    if spec.output.type != "regress":
        return
    lo, hi = spec.output.range
    for qid, gold in golds.items():
        try:
            value = float(str(gold).strip())
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not lo <= value <= hi:
            raise DataError(f"gold rating {gold!r} is not a number within [{lo:g}, {hi:g}] (output.range of "
                            f"task {spec.task})", path=path, record=f"id {qid!r}", field="output")


def check_ids(golds: dict[str, str], preds: dict[str, str], gold_path: str, pred_path: str) -> None:
    """LaMP's rule: prediction ids must equal gold ids. Names the first offending id either way."""
    missing = [i for i in golds if i not in preds]
    extra = [i for i in preds if i not in golds]
    if missing:
        raise DataError(f"{len(missing)} gold id(s) have no prediction, e.g. {missing[0]!r}", path=pred_path,
                        field="golds[].id")
    if extra:
        raise DataError(f"{len(extra)} prediction id(s) are not in the golds file {gold_path}, e.g. {extra[0]!r}",
                        path=pred_path, field="golds[].id")
