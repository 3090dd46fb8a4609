"""The LaMP-style evaluation harness: task schema, metric registry, runner, baselines, report.

Imported lazily: ``from llmrec.evaluation import run, RunConfig, score_files, compute_metrics, Scored``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Scored": "llmrec.evaluation.metrics",
    "compute_metrics": "llmrec.evaluation.metrics",
    "register_metric": "llmrec.evaluation.metrics",
    "RunConfig": "llmrec.evaluation.runner",
    "run": "llmrec.evaluation.runner",
    "score_files": "llmrec.evaluation.scoring",
    "load_registry": "llmrec.evaluation.tasks",
    "HFModel": "llmrec.evaluation.models",
    "Baseline": "llmrec.evaluation.models",
    "write_report": "llmrec.evaluation.report",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'llmrec.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
