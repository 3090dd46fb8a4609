"""Made-up examples per builder, so ``llmrec eval validate`` can render every prompt once without data.

A render catches what compiling cannot: sandbox violations (``{{ ''.__class__ }}``), variables the builder
never provides (StrictUndefined), filters applied to the wrong type. Each builder's sample carries exactly
the variables that builder gives its examples (see :mod:`llmrec.evaluation.builders`); a builder without a
sample here is only compiled.
"""

from __future__ import annotations

from typing import Any

from llmrec.evaluation.tasks import TaskSpec


def _vocab() -> Any:
    from llmrec.nouns import prompt_vocab

    return prompt_vocab()


def _interaction_profile() -> list[dict[str, Any]]:
    return [{"id": str(i), "title": f"Sample item {i} (1999)", "categories": "Drama, Comedy", "rating": "4",
             "date": 880000000 + i} for i in (1, 2)]


def _rating(spec: TaskSpec) -> dict[str, Any]:
    # the rating builder names the task's scale (output.range, filled from the dataset when left empty)
    return {"input": "Sample item 3 (1999) (Drama)", "title": "Sample item 3 (1999)", "categories": "Drama",
            "global_mean": 3.5, "low": "1", "high": "5", "vocab": _vocab(), "profile": _interaction_profile()}


def _next_category(spec: TaskSpec) -> dict[str, Any]:
    return {"input": "the next item this user watches", "vocab": _vocab(), "profile": _interaction_profile()}


def _next_item(spec: TaskSpec) -> dict[str, Any]:
    return {"input": "", "vocab": _vocab(), "profile": _interaction_profile()}


def _lamp(spec: TaskSpec) -> dict[str, Any]:
    from llmrec.data.lamp import LAMP_PROFILE_FIELDS, normalize_task

    task = normalize_task(spec.dataset_args.get("task", spec.task))
    profile = [{"id": f"p{i}", "date": "2020-01-0" + str(i), **{f: f"sample {f} {i}" for f in LAMP_PROFILE_FIELDS[task]}}
               for i in (1, 2)]
    if task == "LaMP_3":
        for p in profile:
            p["score"] = "4"
    return {"input": "Sample question", "task": task, "profile": profile}


def _uqa(spec: TaskSpec) -> dict[str, Any]:
    profile = [{**p, "pos": i} for i, p in enumerate(_interaction_profile())]
    return {"input": "Sample question?", "answer_kind": "genre", "vocab": _vocab(), "profile": profile}


SAMPLES = {"ml100k_rating": _rating, "rating": _rating, "ml100k_next_genre": _next_category,
           "next_category": _next_category, "ml100k_next_item": _next_item, "next_item": _next_item,
           "lamp": _lamp, "uqa": _uqa}


def sample_variables(spec: TaskSpec) -> list[dict[str, Any]]:
    """Prompt variables for a sample example of ``spec``, with a retrieved profile and without one (the
    no-profile variant); [] when the builder has no sample."""
    make = SAMPLES.get(spec.builder)
    if make is None:
        return []
    base = make(spec)
    labels = list(spec.output.labels)
    k = spec.retriever.k or 2
    return [{**base, "labels": labels, "k": k},
            {**base, "profile": [], "labels": labels, "k": 0}]
