"""Profile evaluation, data side: a deterministic template profile, the downstream tasks a profile TEXT is
judged by (next-genre classification and LaMP-3-style rating of the held-out movie), their prompts and scores.

A profile (template, LLM-written, or none) is rendered into ``prompts/profile_downstream_{task}.jinja``; its
value is the downstream gain over no profile. Contexts and held-out items follow :mod:`llmrec.tasks.uqa`
(test: history[:-1] -> history[-1]; valid: history[:-2] -> history[-2]; train: seeded earlier cuts).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmrec.data.schema import InteractionData, UserHistory
from llmrec.errors import ConfigError, DataError
from llmrec.tasks.uqa import (
    SPLITS,
    UNKNOWN_GENRE,
    context_cuts,
    favourite_genre,
    genre_vocabulary,
    item_genres,
    item_line,
    item_title,
    lookup_items,
    normalize_answer,
    primary_genre,
)

logger = logging.getLogger(__name__)

PROFILE_TASKS = ("next_genre", "rating")
RATING_RANGE = (1.0, 5.0)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class ProfileExample:
    """A downstream question about the held-out ``item_id`` for a user whose ``context`` a profile summarises.
    ``item_title``/``item_genres`` are the held-out movie as the rating prompt shows it (next_genre hides it)."""

    user_id: str
    task: str
    context: UserHistory
    item_id: str
    item_title: str
    item_genres: tuple[str, ...]
    answer: str
    options: tuple[str, ...] | None
    split: str

    @property
    def id(self) -> str:
        return f"{self.user_id}:{self.split}:{len(self.context)}:{self.task}"


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def template_profile(context: UserHistory, data: InteractionData, top: int = 3) -> str:
    """A deterministic, non-LLM profile: top genres with the share of movies tagged with each (ties by genre
    order), the average rating, and the favourite release decade (the most-watched one; ties: the later)."""
    if len(context) == 0:
        raise DataError("cannot write a profile from an empty history", record=f"user {context.user_id}")
    items = lookup_items(data, context)
    order = {g: i for i, g in enumerate(genre_vocabulary(data))}
    counts = Counter(g for it in items for g in set(item_genres(it)) if g != UNKNOWN_GENRE)
    ranked = sorted(counts, key=lambda g: (-counts[g], order.get(g, len(order)), g))[:top]
    parts = []
    if ranked:
        shares = ", ".join(f"{g} ({100 * counts[g] / len(items):.0f}%)" for g in ranked)
        parts.append(f"Top genres: {shares}.")
    ratings = [float(r) for r in context.ratings if r is not None]
    if ratings:
        parts.append(f"Average rating: {np.mean(ratings):.1f} / 5 over {len(ratings)} movies.")
    decades = Counter(int(y) // 10 * 10 for it in items if str(y := it.attributes.get("year") or "").isdigit())
    if decades:
        decade = max(decades, key=lambda d: (decades[d], d))
        parts.append(f"Favourite decade: {decade}s.")
    return " ".join(parts) if parts else f"Watched {len(items)} movies."


def build_profile_tasks(
    data: InteractionData,
    *,
    split: str = "test",
    tasks: Iterable[str] | None = None,
    seed: int = 0,
    train_cuts_per_user: int = 3,
) -> list[ProfileExample]:
    """Downstream rows per user context: ``next_genre`` (first-listed genre of the held-out movie, one of the
    real genres; skipped when the movie has none) and ``rating`` (its 1-5 rating; skipped when unrated)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    tasks = PROFILE_TASKS if tasks is None else tuple([tasks] if isinstance(tasks, str) else tasks)
    unknown = [t for t in tasks if t not in PROFILE_TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown profile task(s) {unknown or '(none given)'}; known: {', '.join(PROFILE_TASKS)}")
    genres = genre_vocabulary(data)
    out: list[ProfileExample] = []
    for user, history in data.histories().items():
        for cut in context_cuts(history, split, seed=seed, train_cuts_per_user=train_cuts_per_user):
            item_id = history.item_ids[cut]
            if item_id not in data.items:
                raise DataError("held-out item missing from the catalogue", record=f"user {user}",
                                field=f"item_id {item_id}")
            item = data.items[item_id]
            shown = tuple(g for g in item_genres(item) if g != UNKNOWN_GENRE)
            base = dict(user_id=user, context=history.prefix(cut), item_id=item_id, item_title=item_title(item),
                        item_genres=shown, split=split)
            for task in tasks:
                if task == "next_genre" and (g := primary_genre(item)) is not None:
                    out.append(ProfileExample(task=task, answer=g, options=genres, **base))
                elif task == "rating" and (r := history.ratings[cut]) is not None:
                    out.append(ProfileExample(task=task, answer=_fmt_number(float(r)),
                                              options=("1", "2", "3", "4", "5"), **base))
    return out


def profile_downstream_prompt(profile_text: str | None, example: ProfileExample, *,
                              show_options: bool = True) -> str:
    """Render ``prompts/profile_downstream_{task}.jinja``; ``None`` (or blank) = the no-profile baseline."""
    from llmrec.prompting import render

    profile = (profile_text or "").strip()
    variables: dict[str, Any] = {"profile": profile}
    if example.task == "next_genre":
        variables["options"] = list(example.options or ()) if show_options else []
    elif example.task == "rating":
        variables.update(title=example.item_title, genres=", ".join(example.item_genres))
    else:
        raise ConfigError(f"unknown profile task {example.task!r}; known: {', '.join(PROFILE_TASKS)}")
    return render(f"profile_downstream_{example.task}", **variables)


def profile_write_prompt(context: UserHistory, data: InteractionData, *, max_items: int = 20,
                         grounded: bool = False) -> str:
    """Render ``prompts/profile_write.jinja``: the last ``max_items`` movies with ratings, then the instruction;
    ``grounded`` adds the facts of :func:`template_profile` (computed over the whole context) for the writer."""
    from llmrec.prompting import render

    facts = template_profile(context, data) if grounded else ""
    return render("profile_write", history=history_lines(context, data, max_items=max_items), facts=facts)


def history_lines(context: UserHistory, data: InteractionData, *, max_items: int = 20) -> list[str]:
    """The last ``max_items`` movies as ``Title (year) — genres: r/5`` lines, oldest first."""
    if len(context) == 0:
        raise DataError("empty history: nothing to describe the user with", record=f"user {context.user_id}")
    if max_items < 1:
        raise ConfigError("max_items must be >= 1")
    shown = UserHistory(context.user_id, context.item_ids[-max_items:], context.timestamps[-max_items:],
                        context.ratings[-max_items:])
    return [f"{item_line(it)}: {_fmt_number(float(r))}/5" if r is not None else item_line(it)
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

    Genre: exact match after :func:`normalize_answer`. Rating: the first number in range; an unparsable
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


def majority_context_genre(context: UserHistory, data: InteractionData) -> str | None:
    """The most frequent primary genre among the context's movies (ties: genre order); None if none has one."""
    primaries = [[g] for it in lookup_items(data, context) if (g := primary_genre(it)) is not None]
    return favourite_genre(primaries, genre_vocabulary(data))


def mean_context_rating(context: UserHistory) -> float | None:
    """The user's mean rating over the context; None when it holds no rating."""
    ratings = [float(r) for r in context.ratings if r is not None]
    return float(np.mean(ratings)) if ratings else None
