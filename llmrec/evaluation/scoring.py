"""Score existing prediction files against golds, no model: ``llmrec eval score``.

Both files use LaMP's shape ``{"task": ..., "golds": [{"id", "output"}]}``. ``--task`` is a LaMP name
(``LaMP_3``, ``lamp_3``, ``3``) or any registered task (``ml100k_rating``); the files must be for that task.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from llmrec.data.readers import read_json
from llmrec.errors import ConfigError, DataError
from llmrec.evaluation.metrics import compute_metrics
from llmrec.evaluation.runner import MAX_BOOT, check_gold_ratings, check_ids, score_outputs
from llmrec.evaluation.tasks import TaskSpec, load_registry


def find_task(task: str, include_paths: list[str] | None = None) -> tuple[TaskSpec, str]:
    """The task spec and the name its files carry (``LaMP_k`` for LaMP tasks)."""
    from llmrec.data.lamp import normalize_task

    reg = load_registry(include_paths)
    if task in reg.tasks:
        spec = reg.tasks[task]
    else:
        try:
            lamp = normalize_task(task)
        except DataError:
            raise ConfigError(f"unknown task {task!r}; known: LaMP_1..LaMP_7, {', '.join(sorted(reg.tasks))}") from None
        spec = reg.tasks.get(lamp.lower())
        if spec is None:
            raise ConfigError(f"no task file defines {lamp} (expected eval/tasks/{lamp.lower()}.yaml)")
    file_task = spec.dataset_args.get("task", spec.task) if spec.builder == "lamp" else spec.task
    return spec, file_task


def _read_outputs(path: str | Path, expected_task: str, lamp: bool) -> dict[str, Any]:
    if lamp:
        from llmrec.data.lamp import load_lamp_outputs

        return load_lamp_outputs(path, expected_task).golds
    data = read_json(path)  # rejects HTML pages, empty files and invalid JSON with the file named
    if not isinstance(data, dict) or "task" not in data or "golds" not in data:
        raise DataError("expected an object with 'task' and 'golds'", path=path, record="top level")
    if data["task"] != expected_task:
        raise DataError(f"file is for {data['task']!r}, expected {expected_task!r}", path=path, field="task")
    if not isinstance(data["golds"], list):
        raise DataError("expected a list", path=path, record="top level", field="golds")
    out: dict[str, Any] = {}
    for i, rec in enumerate(data["golds"]):
        if not isinstance(rec, dict) or "id" not in rec or "output" not in rec:
            raise DataError("expected an object with 'id' and 'output'", path=path, record=i)
        qid = str(rec["id"])
        if qid in out:
            raise DataError(f"duplicate id {qid!r}", path=path, record=i, field="id")
        out[qid] = rec["output"]
    return out


def score_files(
    task: str,
    golds_path: str | Path,
    predictions_path: str | Path,
    mode: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    include_paths: list[str] | None = None,
    data: str | None = None,
) -> dict[str, Any]:
    """One JSON-able dict: task, n, mode, metrics (value + CI), seconds. ``data``: the dataset of a task that
    takes its labels / rating scale from its dataset (``next_category``, ``rating``; default the task's)."""
    from llmrec.evaluation.builders import DATASET_FREE_BUILDERS, resolve_spec

    if not 0 <= n_boot <= MAX_BOOT:
        raise ConfigError(f"n_boot must be within [0, {MAX_BOOT}], got {n_boot}")
    t0 = time.perf_counter()
    spec, file_task = find_task(task, include_paths)
    if data and spec.builder not in DATASET_FREE_BUILDERS:
        spec = spec.with_overrides(dataset=data)
    spec = resolve_spec(spec)
    lamp = spec.builder == "lamp"
    golds = _read_outputs(golds_path, file_task, lamp)
    check_gold_ratings(spec, golds, golds_path)  # NaN, inf, 7 on a 1-5 task: refused, not averaged
    preds = _read_outputs(predictions_path, file_task, lamp)
    check_ids(golds, preds, str(golds_path), str(predictions_path))
    ids = list(golds)
    scored = score_outputs(spec, [golds[i] for i in ids], [preds[i] for i in ids], mode=mode)
    metrics = compute_metrics(scored, spec.metrics, n_boot=n_boot, seed=seed)
    return {"task": file_task, "n": len(ids), "mode": scored.mode, "metrics": metrics,
            "seconds": round(time.perf_counter() - t0, 4)}
