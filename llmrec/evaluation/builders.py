"""Example builders: a task spec -> examples (question, gold, profile) the runner prompts a model with.

Built-in builders: ``ml100k_rating`` (LaMP-3 style), ``ml100k_next_genre``, ``ml100k_next_item`` on any
interaction dataset (leave-one-out: ``split: test`` = last item, ``valid`` = second-to-last; also registered as
``rating``, ``next_category``, ``next_item``), and ``lamp`` for the official LaMP questions/outputs files
(``dataset_args: {questions, outputs}``). The interaction builders read the category attribute named by
``dataset_args: {category: <attribute or list>}``, by default the dataset's (``InteractionData.category_fields``),
and give prompts the dataset's nouns as ``vocab`` (:func:`llmrec.nouns.prompt_vocab`).

A task may leave ``output.labels`` (``next_category``, the ``uqa_*`` category questions) or ``output.range``
(``rating``) empty: :func:`resolve_spec` fills them from the dataset (its categories, its rating scale), so one
task file serves every dataset
(``llmrec eval run --data shop.yaml`` sets ``dataset`` of every task whose builder reads one).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from llmrec.errors import ConfigError, DataError
from llmrec.evaluation.tasks import TaskSpec
from llmrec.retrieval.base import ProfileDoc

logger = logging.getLogger(__name__)


@dataclass
class Example:
    """One question. ``profile`` holds the user's items as dicts (template fields); ``docs`` is what retrieval
    sees of each; ``query`` is the retrieval query; ``variables`` go to the prompt beside ``input``/``profile``."""

    id: str
    user_id: str
    input: str
    gold: str | None
    profile: list[dict[str, Any]]
    docs: list[ProfileDoc]
    query: str
    variables: dict[str, Any] = field(default_factory=dict)
    history: tuple[str, ...] = ()  # rank_items: the user's item ids, oldest first


BUILDERS: dict[str, Callable[[TaskSpec], list[Example]]] = {}
# builder -> the dataset_args keys it reads (a task file's dataset_args and `--task-arg` are checked against it)
BUILDER_ARGS: dict[str, frozenset[str]] = {}
# builder -> fills what a task leaves to the dataset (empty output.labels / output.range); see resolve_spec
SPEC_RESOLVERS: dict[str, Callable[[TaskSpec], TaskSpec]] = {}
# Builders that read no interaction dataset (``spec.dataset`` means nothing to them): ``--data`` leaves them be.
DATASET_FREE_BUILDERS = frozenset({"lamp"})
INTERACTION_ARGS = ("category",)  # the attribute(s) playing "category"; default the dataset's
UQA_ARGS = ("task", "recent_window", "category")  # llmrec.tasks.uqa.HARNESS_ARGS (checked equal by a test)


def register_builder(name: str, args: tuple[str, ...] = ()):
    """Register ``fn`` as builder ``name``; ``args``: the ``dataset_args`` keys it reads (others are errors)."""
    def deco(fn: Callable[[TaskSpec], list[Example]]):
        BUILDERS[name] = fn
        BUILDER_ARGS[name] = frozenset(args)
        return fn

    return deco


def register_spec_resolver(*names: str):
    def deco(fn: Callable[[TaskSpec], TaskSpec]):
        for name in names:
            SPEC_RESOLVERS[name] = fn
        return fn

    return deco


def resolve_spec(spec: TaskSpec) -> TaskSpec:
    """``spec`` with the labels / rating range it leaves to the dataset filled in (a no-op when it names them)."""
    resolver = SPEC_RESOLVERS.get(spec.builder)
    if resolver is not None:
        spec = resolver(spec)
    out = spec.output
    if (out.type == "classify" and not out.labels) or (out.type == "regress" and not out.range):
        what = "labels" if out.type == "classify" else "range"
        raise ConfigError(f"{spec.source}: {spec.task}: output.{what} is empty and builder {spec.builder!r} cannot "
                          f"take it from a dataset; list it in the task file")
    return spec


def build_examples(spec: TaskSpec, limit: int | None = None) -> list[Example]:
    return select_examples(spec, build_pool(spec), limit)


def build_pool(spec: TaskSpec) -> list[Example]:
    """Every example of the task, before ``sample`` / ``limit``: what the popularity baseline counts (all users'
    histories, not the evaluated few)."""
    if spec.builder not in BUILDERS:
        raise ConfigError(f"{spec.source}: unknown builder {spec.builder!r}; known: {sorted(BUILDERS)}")
    unknown = sorted(set(spec.dataset_args) - BUILDER_ARGS[spec.builder])
    if unknown:  # a misspelt key would otherwise be ignored and the task silently built with defaults
        raise ConfigError(f"{spec.source}: {spec.task}: dataset_args {unknown} are not read by builder "
                          f"{spec.builder!r}; it takes {sorted(BUILDER_ARGS[spec.builder]) or 'none'}")
    return BUILDERS[spec.builder](resolve_spec(spec))


def select_examples(spec: TaskSpec, pool: list[Example], limit: int | None = None) -> list[Example]:
    """The evaluated examples: the task's seeded ``sample`` of ``pool``, then the first ``limit``."""
    examples = pool
    if spec.sample is not None and spec.sample < len(examples):
        rng = np.random.default_rng(spec.seed)
        keep = np.sort(rng.choice(len(examples), size=spec.sample, replace=False))
        examples = [examples[i] for i in keep]
    return examples[:limit] if limit is not None else examples


# ---- interaction datasets (MovieLens and any other) --------------------------------------------------------


@lru_cache(maxsize=4)
def interaction_data(dataset: str):
    """The dataset a task names (a built-in name, a dataset config or a folder), loaded once per process."""
    from llmrec.data import load_dataset

    return load_dataset(dataset)


@lru_cache(maxsize=4)
def _interactions(dataset: str, split: str):
    from llmrec.data import leave_one_out

    data = interaction_data(dataset)
    s = leave_one_out(data.histories())
    if split not in ("test", "valid"):
        raise ConfigError(f"interaction-data tasks support split 'test' or 'valid', got {split!r}")
    return data, (s.test if split == "test" else s.valid)


def _category_fields(spec: TaskSpec, data) -> tuple[str, ...]:
    """``dataset_args.category`` (an attribute name, a comma-separated string of them or a list), else the
    dataset's category attribute."""
    from llmrec.tasks.uqa import resolve_category_fields

    try:
        return resolve_category_fields(data, spec.dataset_args.get("category"))
    except ConfigError as exc:
        raise ConfigError(f"{spec.source}: dataset_args.{exc}") from None


def _title(item) -> str:
    year = item.attributes.get("year")
    return f"{item.title} ({year})" if year else item.title


def _categories(item, fields: tuple[str, ...]) -> list[str]:
    from llmrec.data.schema import item_categories

    return item_categories(item, fields) or ["unknown"]


def _fmt_rating(r: float | None) -> str:
    if r is None:
        return "?"
    return str(int(r)) if float(r).is_integer() else f"{r:g}"


@register_spec_resolver("ml100k_rating", "rating")
def _rating_scale(spec: TaskSpec) -> TaskSpec:
    """An empty ``output.range``: the dataset's rating scale, else the lowest and highest rating it holds."""
    if spec.output.range:
        return spec
    data, _ = _interactions(spec.dataset, spec.split)
    scale = data.rating_range
    if scale is None:
        ratings = [x.rating for x in data.interactions if x.rating is not None]
        if not ratings:
            raise ConfigError(f"{spec.source}: {spec.task} predicts ratings, but dataset {spec.dataset!r} has none")
        scale = (float(min(ratings)), float(max(ratings)))
    return spec.with_overrides(output=dataclasses.replace(spec.output, range=tuple(scale)))


@register_spec_resolver("ml100k_next_genre", "next_category")
def _category_labels(spec: TaskSpec) -> TaskSpec:
    """Empty ``output.labels``: every category of the catalogue (sorted), plus "unknown" when an item has none."""
    if spec.output.labels:
        return spec
    data, _ = _interactions(spec.dataset, spec.split)
    fields = _category_fields(spec, data)
    labels = sorted({c for item in data.items.values() for c in _categories(item, fields)} if fields else ())
    if len(labels) < 2:
        raise ConfigError(f"{spec.source}: {spec.task} asks for the next item's category, but dataset "
                          f"{spec.dataset!r} has {'no category attribute' if not fields else 'one category'}; "
                          "set dataset_args.category (or the dataset config's category)")
    return spec.with_overrides(output=dataclasses.replace(spec.output, labels=tuple(labels)))


def _ml_profile(data, ex, fields: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[ProfileDoc]]:
    h = ex.history
    profile, docs = [], []
    for item_id, ts, rating in zip(h.item_ids, h.timestamps, h.ratings, strict=True):
        item = data.items[item_id]
        p = {"id": item_id, "title": _title(item), "categories": ", ".join(_categories(item, fields)),
             "rating": _fmt_rating(rating), "date": ts}
        profile.append(p)
        docs.append(ProfileDoc(f"{p['title']} {p['categories']}", ts))
    return profile, docs


@register_builder("ml100k_rating", INTERACTION_ARGS)
@register_builder("rating", INTERACTION_ARGS)
def _ml_rating(spec: TaskSpec) -> list[Example]:
    from llmrec.nouns import prompt_vocab

    data, held_out = _interactions(spec.dataset, spec.split)
    fields = _category_fields(spec, data)
    vocab = prompt_vocab(data.vocabulary)
    all_ratings = [r for x in data.interactions if (r := x.rating) is not None]
    global_mean = float(np.mean(all_ratings)) if all_ratings else 3.0
    low, high = (_fmt_rating(x) for x in spec.output.range)  # the scale the prompt names
    out = []
    for ex in held_out:
        if ex.target_rating is None:
            continue
        item = data.items[ex.target]
        profile, docs = _ml_profile(data, ex, fields)
        title, cats = _title(item), ", ".join(_categories(item, fields))
        out.append(Example(
            id=f"{ex.user_id}:{ex.target}", user_id=ex.user_id, input=f"{title} ({cats})",
            gold=_fmt_rating(ex.target_rating), profile=profile, docs=docs, query=f"{title} {cats}",
            variables={"title": title, "categories": cats, "global_mean": global_mean, "vocab": vocab,
                       "low": low, "high": high},
        ))
    return out


@register_builder("ml100k_next_genre", INTERACTION_ARGS)
@register_builder("next_category", INTERACTION_ARGS)
def _ml_next_genre(spec: TaskSpec) -> list[Example]:
    from llmrec.nouns import prompt_vocab

    data, held_out = _interactions(spec.dataset, spec.split)
    fields = _category_fields(spec, data)
    if not fields:
        raise ConfigError(f"{spec.source}: {spec.task} asks for the next item's category, but dataset "
                          f"{spec.dataset!r} has no category attribute; set dataset_args.category")
    vocab = prompt_vocab(data.vocabulary)
    labels = set(spec.output.labels)
    out = []
    for ex in held_out:
        gold = _categories(data.items[ex.target], fields)[0]  # the primary (first-listed) category
        if labels and gold not in labels:
            raise DataError(f"{vocab['category']} {gold!r} of item {ex.target} is not in the task's labels (a task "
                            "for another dataset? next_category takes its labels from the dataset)",
                            path=spec.source, record=ex.user_id, field="output.labels")
        profile, docs = _ml_profile(data, ex, fields)
        out.append(Example(
            id=f"{ex.user_id}:{ex.target}", user_id=ex.user_id,
            input=f"the next {vocab['item']} this user {vocab['interacts']}",
            gold=gold, profile=profile, docs=docs, query="", variables={"vocab": vocab},
        ))
    return out


@register_builder("ml100k_next_item", INTERACTION_ARGS)
@register_builder("next_item", INTERACTION_ARGS)
def _ml_next_item(spec: TaskSpec) -> list[Example]:
    from llmrec.nouns import prompt_vocab

    data, held_out = _interactions(spec.dataset, spec.split)
    fields = _category_fields(spec, data)
    vocab = prompt_vocab(data.vocabulary)
    out = []
    for ex in held_out:
        profile, docs = _ml_profile(data, ex, fields)
        out.append(Example(
            id=f"{ex.user_id}:{ex.target}", user_id=ex.user_id, input="", gold=ex.target, profile=profile,
            docs=docs, query="", variables={"vocab": vocab}, history=tuple(ex.history.item_ids),
        ))
    return out


# ---- LaMP ---------------------------------------------------------------------------------------------------


def lamp_doc_text(task: str, item: dict[str, Any]) -> str:
    from llmrec.data.lamp import LAMP_PROFILE_FIELDS

    return " ".join(str(item.get(f, "")) for f in LAMP_PROFILE_FIELDS[task]).strip()


@register_builder("lamp", ("task", "questions", "outputs"))
def _lamp(spec: TaskSpec) -> list[Example]:
    from llmrec.data.lamp import load_lamp_outputs, load_lamp_questions, normalize_task

    task = normalize_task(spec.dataset_args.get("task", spec.task))
    questions_path = spec.dataset_args.get("questions")
    if not questions_path:
        raise ConfigError(
            f"{spec.task}: point it at your LaMP files: --task-arg questions=PATH [--task-arg outputs=PATH] "
            f"(the official {spec.split}_questions.json / {spec.split}_outputs.json)"
        )
    questions = load_lamp_questions(questions_path, task)
    golds: dict[str, str] = {}
    if spec.dataset_args.get("outputs"):
        outs = load_lamp_outputs(spec.dataset_args["outputs"], task)
        golds = outs.golds
        missing = [q.id for q in questions if q.id not in golds]
        if missing:
            raise DataError(f"{len(missing)} question(s) have no gold output, e.g. id {missing[0]!r}",
                            path=spec.dataset_args["outputs"])
    out = []
    for q in questions:
        profile = [dict(p) for p in q.profile]
        docs = [ProfileDoc(lamp_doc_text(task, p), p.get("date")) for p in profile]
        out.append(Example(id=q.id, user_id=q.id, input=q.input, gold=golds.get(q.id), profile=profile,
                           docs=docs, query=q.input, variables={"task": task}))
    return out


# ---- UQA-style questions (llmrec.tasks.uqa) ----------------------------------------------------------------


@register_spec_resolver("uqa")
def _uqa_labels(spec: TaskSpec) -> TaskSpec:
    """Empty ``output.labels``: the options :func:`llmrec.tasks.uqa.harness_labels` gives (the dataset's
    categories for the category questions)."""
    from llmrec.tasks.uqa import harness_labels

    if spec.output.labels:
        return spec
    return spec.with_overrides(output=dataclasses.replace(spec.output, labels=harness_labels(spec)))


@register_builder("uqa", UQA_ARGS)
def _uqa(spec: TaskSpec) -> list[Example]:
    from llmrec.tasks.uqa import harness_examples

    return harness_examples(spec)

