"""Profile evaluation, data side: a deterministic template profile, the downstream tasks a profile TEXT is
judged by (next-category classification and LaMP-3-style rating of the held-out item), their prompts and
scores. Categories are the dataset's category attribute (``InteractionData.category_fields``) and the text uses
its nouns (``InteractionData.vocabulary``); the task id ``next_genre`` is historical.

A profile (template, LLM-written, or none) is rendered into ``prompts/profile_downstream_{task}.jinja``; its
value is the downstream gain over no profile. Contexts and held-out items follow :mod:`llmrec.tasks.uqa`
(test: history[:-1] -> history[-1]; valid: history[:-2] -> history[-2]; train: seeded earlier cuts).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmrec.data.schema import InteractionData, UserHistory
from llmrec.errors import ConfigError, DataError
from llmrec.nouns import PromptVocab, prompt_vocab
from llmrec.tasks.uqa import (
    SPLITS,
    category_order,
    context_cuts,
    favourite_category,
    item_line,
    item_title,
    lookup_items,
    normalize_answer,
    primary_category,
    real_categories,
)

logger = logging.getLogger(__name__)

PROFILE_TASKS = ("next_genre", "rating")
RATING_RANGE = (1.0, 5.0)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class ProfileExample:
    """A downstream question about the held-out ``item_id`` for a user whose ``context`` a profile summarises.
    ``item_title``/``item_categories`` are the held-out item as the rating prompt shows it (next_genre hides it);
    ``vocab``: the dataset's nouns for the prompt (:func:`llmrec.nouns.prompt_vocab`)."""

    user_id: str
    task: str
    context: UserHistory
    item_id: str
    item_title: str
    item_categories: tuple[str, ...]
    answer: str
    options: tuple[str, ...] | None
    split: str
    vocab: PromptVocab = field(default_factory=prompt_vocab, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.user_id}:{self.split}:{len(self.context)}:{self.task}"


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def template_profile(context: UserHistory, data: InteractionData, top: int = 3) -> str:
    """A deterministic, non-LLM profile in the dataset's nouns: top categories with the share of items tagged
    with each (ties by category order), the average rating, and the favourite release decade when items carry a
    ``year`` (the commonest one; ties: the later)."""
    if len(context) == 0:
        raise DataError("cannot write a profile from an empty history", record=f"user {context.user_id}")
    v = prompt_vocab(data.vocabulary)
    items = lookup_items(data, context)
    fields = data.category_fields
    order = {g: i for i, g in enumerate(category_order(data))}
    counts = Counter(g for it in items for g in set(real_categories(it, fields)))
    ranked = sorted(counts, key=lambda g: (-counts[g], order.get(g, len(order)), g))[:top]
    parts = []
    if ranked:
        shares = ", ".join(f"{g} ({100 * counts[g] / len(items):.0f}%)" for g in ranked)
        parts.append(f"Top {v['categories']}: {shares}.")
    ratings = [float(r) for r in context.ratings if r is not None]
    if ratings:
        parts.append(f"Average rating: {np.mean(ratings):.1f} / 5 over {len(ratings)} {v['items']}.")
    decades = Counter(int(y) // 10 * 10 for it in items if str(y := it.attributes.get("year") or "").isdigit())
    if decades:
        decade = max(decades, key=lambda d: (decades[d], d))
        parts.append(f"Favourite decade: {decade}s.")
    return " ".join(parts) if parts else f"{v['Interacted']} {len(items)} {v['items']}."


def build_profile_tasks(
    data: InteractionData,
    *,
    split: str = "test",
    tasks: Iterable[str] | None = None,
    seed: int = 0,
    train_cuts_per_user: int = 3,
) -> list[ProfileExample]:
    """Downstream rows per user context: ``next_genre`` (first-listed category of the held-out item, one of the
    real categories; skipped when the item has none, so a dataset without categories gets none of these) and
    ``rating`` (its 1-5 rating; skipped when unrated)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    tasks = PROFILE_TASKS if tasks is None else tuple([tasks] if isinstance(tasks, str) else tasks)
    unknown = [t for t in tasks if t not in PROFILE_TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown profile task(s) {unknown or '(none given)'}; known: {', '.join(PROFILE_TASKS)}")
    fields = data.category_fields
    options = category_order(data)
    vocab = prompt_vocab(data.vocabulary)
    if "next_genre" in tasks and not options:
        logger.warning("profile tasks on %s: no item categories (category attribute(s): %s), so no next_genre "
                       "rows", data.name or data.source, ", ".join(fields) or "none configured")
    out: list[ProfileExample] = []
    for history in data.histories().values():
        for cut in context_cuts(history, split, seed=seed, train_cuts_per_user=train_cuts_per_user):
            out += examples_at(data, history, cut, cut, split=split, tasks=tasks, options=options, vocab=vocab)
    return out


def examples_at(data: InteractionData, history: UserHistory, cut: int, position: int, *, split: str,
                tasks: Sequence[str] = PROFILE_TASKS, options: Sequence[str] | None = None,
                vocab: PromptVocab | None = None) -> list[ProfileExample]:
    """The downstream rows about ``history[position]`` for the context ``history[:cut]`` (``position >= cut``:
    a profile of that context is also judged on items further ahead, e.g. several held-out items per user)."""
    if not 0 < cut <= position < len(history):
        raise DataError(f"context length {cut} and held-out position {position} do not fit a history of "
                        f"{len(history)} items", record=f"user {history.user_id}")
    fields = data.category_fields
    options = tuple(category_order(data) if options is None else options)
    vocab = prompt_vocab(data.vocabulary) if vocab is None else vocab
    item_id = history.item_ids[position]
    if item_id not in data.items:
        raise DataError("held-out item missing from the catalogue", record=f"user {history.user_id}",
                        field=f"item_id {item_id}")
    item = data.items[item_id]
    shown = tuple(real_categories(item, fields))
    base = dict(user_id=history.user_id, context=history.prefix(cut), item_id=item_id, item_title=item_title(item),
                item_categories=shown, split=split, vocab=vocab)
    out: list[ProfileExample] = []
    for task in tasks:
        if task == "next_genre" and (g := primary_category(item, fields)) is not None:
            out.append(ProfileExample(task=task, answer=g, options=options, **base))
        elif task == "rating" and (r := history.ratings[position]) is not None:
            out.append(ProfileExample(task=task, answer=_fmt_number(float(r)),
                                      options=("1", "2", "3", "4", "5"), **base))
    return out


def profile_downstream_prompt(profile_text: str | None, example: ProfileExample, *,
                              show_options: bool = True) -> str:
    """Render ``prompts/profile_downstream_{task}.jinja``; ``None`` (or blank) = the no-profile baseline."""
    from llmrec.prompting import render

    profile = (profile_text or "").strip()
    variables: dict[str, Any] = {"profile": profile, "vocab": example.vocab}
    if example.task == "next_genre":
        variables["options"] = list(example.options or ()) if show_options else []
    elif example.task == "rating":
        variables.update(title=example.item_title, categories=", ".join(example.item_categories))
    else:
        raise ConfigError(f"unknown profile task {example.task!r}; known: {', '.join(PROFILE_TASKS)}")
    return render(f"profile_downstream_{example.task}", **variables)


def profile_write_prompt(context: UserHistory, data: InteractionData, *, max_items: int = 20,
                         grounded: bool = False) -> str:
    """Render ``prompts/profile_write.jinja``: the last ``max_items`` items with ratings, then the instruction;
    ``grounded`` adds the facts of :func:`template_profile` (computed over the whole context) for the writer."""
    from llmrec.prompting import render

    facts = template_profile(context, data) if grounded else ""
    return render("profile_write", history=history_lines(context, data, max_items=max_items), facts=facts,
                  vocab=prompt_vocab(data.vocabulary))


def history_lines(context: UserHistory, data: InteractionData, *, max_items: int = 20) -> list[str]:
    """The last ``max_items`` items as ``Title (year) — categories: r/5`` lines, oldest first."""
    if len(context) == 0:
        raise DataError("empty history: nothing to describe the user with", record=f"user {context.user_id}")
    if max_items < 1:
        raise ConfigError("max_items must be >= 1")
    shown = UserHistory(context.user_id, context.item_ids[-max_items:], context.timestamps[-max_items:],
                        context.ratings[-max_items:])
    fields = data.category_fields
    return [f"{item_line(it, fields)}: {_fmt_number(float(r))}/5" if r is not None else item_line(it, fields)
            for it, r in zip(lookup_items(data, shown), shown.ratings, strict=True)]


def parse_rating(text: str, low: float = RATING_RANGE[0], high: float = RATING_RANGE[1]) -> float | None:
    """The first number in ``text`` if it lies in [low, high], else None."""
    m = _NUMBER.search(str(text))
    if m is None:
        return None
    value = float(m.group())
    return value if low <= value <= high else None


def score_downstream(predictions: Sequence[str], examples: Sequence[ProfileExample]) -> dict[str, Any]:
    """``{"next_genre": {accuracy, n}, "rating": {mae, n, parse_failure_rate}}`` (tasks present only).

    Category: exact match after :func:`normalize_answer`. Rating: the first number in range; an unparsable
    prediction counts as the worst case (whichever of 1 or 5 is farther from the gold, as LaMP-3 scores it).
    """
    if len(predictions) != len(examples):
        raise DataError(f"{len(predictions)} predictions for {len(examples)} examples", field="predictions")
    out: dict[str, Any] = {}
    genre = [(p, ex) for p, ex in zip(predictions, examples, strict=True) if ex.task == "next_genre"]
    if genre:
        hits = [normalize_answer(p) == normalize_answer(ex.answer) for p, ex in genre]
        out["next_genre"] = {"accuracy": float(np.mean(hits)), "n": len(hits)}
    rating = [(p, ex) for p, ex in zip(predictions, examples, strict=True) if ex.task == "rating"]
    if rating:
        errors, failures = [], 0
        for p, ex in rating:
            gold = float(ex.answer)
            value = parse_rating(p)
            if value is None:
                failures += 1
                low, high = RATING_RANGE
                value = low if abs(gold - low) > abs(gold - high) else high
            errors.append(abs(value - gold))
        out["rating"] = {"mae": float(np.mean(errors)), "n": len(errors), "parse_failure_rate": failures / len(errors)}
    return out


# ---- read-outs of option log-probs and non-LLM references (used by scripts/bench_profiles.py) ---------------


def expected_rating(option_logprobs: Sequence[float], options: Sequence[str]) -> float:
    """The mean of the numeric ``options`` (e.g. ``"1".."5"``) under the softmax of their log-probs: unlike
    the argmax it can fall between grades, which is what an MAE rewards."""
    if len(option_logprobs) != len(options) or not options:
        raise DataError(f"{len(option_logprobs)} log-probs for {len(options)} options", field="option_logprobs")
    try:
        values = np.array([float(o) for o in options])
    except ValueError:
        raise DataError(f"rating options must be numbers, got {list(options)}", field="options") from None
    logp = np.asarray(option_logprobs, dtype=np.float64)
    weights = np.exp(logp - logp.max())
    return float(values @ weights / weights.sum())


def majority_context_category(context: UserHistory, data: InteractionData) -> str | None:
    """The most frequent main category among the context's items (ties: category order); None if none has one."""
    fields = data.category_fields
    primaries = [[g] for it in lookup_items(data, context) if (g := primary_category(it, fields)) is not None]
    return favourite_category(primaries, category_order(data))


majority_context_genre = majority_context_category  # the old name


def mean_context_rating(context: UserHistory) -> float | None:
    """The user's mean rating over the context; None when it holds no rating."""
    ratings = [float(r) for r in context.ratings if r is not None]
    return float(np.mean(ratings)) if ratings else None
