"""The LaMP-style evaluation harness: task schema, metric registry, runner, baselines, report.

Imported lazily: ``from llmrec.evaluation import run, RunConfig, score_files, compute_metrics, Scored``.
"""

from __future__ import annotations

from llmrec.lazy import lazy_exports

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


__getattr__ = lazy_exports("llmrec.evaluation", _LAZY, globals())
