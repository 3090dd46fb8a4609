"""UQA-style personalized questions on any interaction dataset, with answers computed from the interactions.

Three families (as in UQABench): sequence understanding (``nth_title``, ``nth_genre``, ``genre_count``),
action prediction (``next_title``, ``next_genre``) and interest perception (``longterm_genre``,
``recent_genre``, ``interest_shift``). Every example carries ``context``: exactly the history a model may see.
The ``*_genre`` / ``genre_count`` / ``interest_shift`` task ids are historical: they ask about the dataset's
category attribute (``InteractionData.category_fields``; MovieLens' genre lists) in the dataset's own nouns
(``InteractionData.vocabulary``). A dataset without categories gets the title questions only, and one log line
saying which were skipped.

Splits by user time, leak-free: ``test`` context = history[:-1] (next item = history[-1]); ``valid`` context =
history[:-2] (next = history[-2]); ``train`` = ``train_cuts_per_user`` seeded cuts c with context = history[:c]
and next = history[c], c <= len - 3, so train never touches either held-out item.

Category conventions: an item's "main" category is its first-listed one; the category order (options, ties) is
sorted by name (for MovieLens that is the GroupLens genre order); favourite categories count every category
tag of every item, ties broken by that order; a catch-all "unknown" category is never a question's answer or
option (questions that would need it are skipped).
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

import numpy as np

from llmrec.data.schema import InteractionData, Item, UserHistory, Vocabulary, item_categories
from llmrec.errors import ConfigError, DataError
from llmrec.nouns import PromptVocab, prompt_vocab

logger = logging.getLogger(__name__)

FAMILIES: dict[str, tuple[str, ...]] = {
    "sequence_understanding": ("nth_title", "nth_genre", "genre_count"),
    "action_prediction": ("next_title", "next_genre"),
    "interest_perception": ("longterm_genre", "recent_genre", "interest_shift"),
}
TASKS: tuple[str, ...] = tuple(t for ts in FAMILIES.values() for t in ts)
TASK_FAMILY: dict[str, str] = {t: f for f, ts in FAMILIES.items() for t in ts}
SPLITS = ("train", "valid", "test")
MIN_CONTEXT = 5  # nth questions ask about N in 1..5, so every context holds at least 5 items
MAX_NTH = 5
UNKNOWN_CATEGORY = "unknown"  # a catch-all tag (MovieLens' "unknown" genre), never an answer or an option
CATEGORY_TASKS = ("nth_genre", "genre_count", "next_genre", "longterm_genre", "recent_genre", "interest_shift")
YES_NO = ("yes", "no")
ANSWER_KIND = {  # fills "Answer with only the {kind}." in the prompts
    "nth_title": "title", "next_title": "title", "genre_count": "number", "interest_shift": "word yes or no",
}
STYLES = ("none", "text", "soft")
# Worked answers: the computed facts an answer follows from, then the answer ("Drama, Comedy: yes"). A small model
# that reads both favourites well still answers a bare yes/no with the training majority; writing the two
# categories first turns the comparison into copying. {example}: the catalogue's two commonest categories.
WORKED_KIND = {"interest_shift": "favourite {category} overall, then lately, then yes or no (e.g. {example})"}

_ORDINALS = {1: "most recent", 2: "2nd most recent", 3: "3rd most recent", 4: "4th most recent",
             5: "5th most recent"}


@dataclass(frozen=True)
class UqaExample:
    """One question about one user. ``context`` is everything the model may see; ``item_id`` is the item the
    answer is about (the next item for action prediction, the N-th most recent for nth_*), else None.
    ``kind`` / ``worked_kind``: what the prompt asks the answer to be (see :func:`answer_kind`), in the
    dataset's nouns; empty on examples made by hand (then the generic nouns are used)."""

    user_id: str
    family: str
    task: str
    question: str
    answer: str
    options: tuple[str, ...] | None
    context: UserHistory
    split: str
    item_id: str | None = None
    worked: str | None = None  # the answer with the facts it is computed from (tasks in WORKED_KIND), else None
    kind: str = ""
    worked_kind: str = ""

    def target(self, worked: bool = False) -> str:
        """The training target: the worked answer when asked for and the task has one, else the answer."""
        return self.worked if worked and self.worked else self.answer

    def kind_for(self, worked: bool = False) -> str:
        """"Answer with only the {kind}.": the worked form where asked for and this example has a worked answer."""
        if worked and self.worked is not None:
            return self.worked_kind or answer_kind(self.task, worked=True)
        return self.kind or answer_kind(self.task)

    @property
    def id(self) -> str:
        return f"{self.user_id}:{self.split}:{len(self.context)}:{self.task}"


# ---- catalogue helpers (shared with llmrec.tasks.profile) ---------------------------------------------------


def resolve_category_fields(data: InteractionData, category_fields: Sequence[str] | str | None) -> tuple[str, ...]:
    """``category_fields`` as a tuple (a string may list several, comma-separated, as ``--task-arg`` gives
    them); None = the dataset's."""
    if category_fields is None:
        return tuple(data.category_fields)
    if isinstance(category_fields, str):
        return tuple(f.strip() for f in category_fields.split(",") if f.strip())
    if isinstance(category_fields, (list, tuple)) and all(isinstance(f, str) for f in category_fields):
        return tuple(category_fields)
    raise ConfigError(f"category must be an item attribute name or a list of them, got {category_fields!r}")


def is_unknown(category: str) -> bool:
    return category.strip().lower() == UNKNOWN_CATEGORY


def category_order(data: InteractionData, category_fields: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """The real categories (never the catch-all "unknown") sorted by name: the options of the category
    questions and their tie order (for MovieLens this is the GroupLens genre order). ``category_fields``
    defaults to the dataset's."""
    fields = resolve_category_fields(data, category_fields)
    seen = {c for it in data.items.values() for c in item_categories(it, fields)}
    return tuple(sorted(c for c in seen if not is_unknown(c)))


def real_categories(item: Item, fields: Sequence[str]) -> list[str]:
    """The item's categories (from the attributes ``fields``) without the catch-all "unknown"."""
    return [c for c in item_categories(item, fields) if not is_unknown(c)]


def item_title(item: Item) -> str:
    """``Title (year)``, the form titles take in prompts and answers."""
    year = item.attributes.get("year")
    return f"{item.title} ({year})" if year else item.title


def item_line(item: Item, fields: Sequence[str]) -> str:
    """``Title (year) — Category, Category``: one context item as a prompt line (``fields``: the category
    attributes, e.g. ``data.category_fields``; none = the title alone)."""
    cats = real_categories(item, fields)
    return f"{item_title(item)} — {', '.join(cats)}" if cats else item_title(item)


def category_line(item: Item, fields: Sequence[str]) -> str:
    """The item's category words, space-separated (``unknown`` when it has none): the text a category-anchored
    soft prompt is aligned to (sharper token mixtures than the whole :func:`item_line` for category questions)."""
    return " ".join(real_categories(item, fields)) or UNKNOWN_CATEGORY


ANCHOR_KINDS = ("categories", "items")


def anchor_texts(data: InteractionData, kind: str = "categories",
                 category_fields: Sequence[str] | str | None = None) -> list[str]:
    """One text per item (catalogue order, ``data.item_ids``) for text alignment of a soft-prompt user model
    (:mod:`llmrec.training.text_align`): ``categories`` = :func:`category_line` over the category attribute
    (default the dataset's), ``items`` = :func:`item_line`. A dataset without categories gets the item lines
    for ``categories`` (said in a log line): every category line would read "unknown"."""
    if kind not in ANCHOR_KINDS:
        raise ConfigError(f"anchor kind must be one of {ANCHOR_KINDS}, got {kind!r}")
    fields = resolve_category_fields(data, category_fields)
    if kind == "categories" and not category_order(data, fields):
        logger.warning("text alignment on %s: no item categories (category attribute(s): %s), so the anchors are "
                       "the item texts (title, year) instead", data.name or data.source,
                       ", ".join(fields) or "none configured")
        kind = "items"
    line = category_line if kind == "categories" else item_line
    return [line(item, fields) for item in data.items.values()]


def primary_category(item: Item, fields: Sequence[str]) -> str | None:
    """The first-listed real category, or None when the item has only "unknown" (or none)."""
    cats = item_categories(item, fields)
    return cats[0] if cats and not is_unknown(cats[0]) else None


def favourite_category(category_lists: Iterable[Sequence[str]], order: Sequence[str]) -> str | None:
    """Most frequent category tag over the items' category lists; ties go to the one earlier in ``order``."""
    return _favourite(Counter(c for cs in category_lists for c in cs), order)


def _favourite(counts: Counter, order: Sequence[str]) -> str | None:
    counts = Counter({g: c for g, c in counts.items() if not is_unknown(g) and c > 0})
    if not counts:
        return None
    rank = {g: i for i, g in enumerate(order)}
    return min(counts, key=lambda g: (-counts[g], rank.get(g, len(rank)), g))


def worked_example(data: InteractionData, category_fields: Sequence[str] | str | None = None) -> str:
    """The example in the worked-answer instruction: the catalogue's two commonest categories (by items
    carrying them; ties by :func:`category_order`) as a shifted answer, e.g. "Drama, Comedy: yes"."""
    fields = resolve_category_fields(data, category_fields)
    counts = Counter(c for it in data.items.values() for c in set(real_categories(it, fields)))
    rank = {c: i for i, c in enumerate(category_order(data, fields))}
    top = sorted(counts, key=lambda c: (-counts[c], rank.get(c, len(rank)), c))[:2]
    if len(top) < 2:
        return f"{top[0]}, {top[0]}: no" if top else "A, B: yes"
    return f"{top[0]}, {top[1]}: yes"


def lookup_items(data: InteractionData, history: UserHistory) -> list[Item]:
    return _items(data, history.item_ids, history.user_id)


def _items(data: InteractionData, item_ids: Sequence[str], user_id: str) -> list[Item]:
    try:
        return [data.items[i] for i in item_ids]
    except KeyError as exc:
        raise DataError("history names an item missing from the catalogue", record=f"user {user_id}",
                        field=f"item_id {exc.args[0]}") from None


def _rng(seed: int, *parts: Any) -> random.Random:
    """Independent stream per (seed, user, split, cut, task): choosing a task subset changes no question.
    A string seed is hashed with SHA-512 by ``random`` (stable across runs, unlike ``hash()``)."""
    return random.Random("|".join(map(str, (seed, *parts))))


def context_cuts(history: UserHistory, split: str, *, seed: int = 0, train_cuts_per_user: int = 3,
                 min_context: int = MIN_CONTEXT) -> list[int]:
    """Context lengths c (context = history[:c], next item = history[c]) for ``split``; [] if too short."""
    n = len(history)
    if split == "test":
        cuts = [n - 1]
    elif split == "valid":
        cuts = [n - 2]
    elif split == "train":
        candidates = range(min_context, n - 2)  # c <= n - 3: history[c] is never one of the last two
        take = min(train_cuts_per_user, len(candidates))
        cuts = sorted(_rng(seed, history.user_id, "train-cuts").sample(candidates, take))
    else:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    return [c for c in cuts if c >= min_context]


# ---- the builder --------------------------------------------------------------------------------------------


def _check_tasks(tasks: Iterable[str] | None) -> tuple[str, ...]:
    if tasks is None:
        return TASKS
    tasks = tuple([tasks] if isinstance(tasks, str) else tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown UQA task(s) {unknown or '(none given)'}; known: {', '.join(TASKS)}")
    return tasks


def build_uqa(
    data: InteractionData,
    *,
    split: str = "test",
    tasks: Iterable[str] | None = None,
    seed: int = 0,
    recent_window: int = 10,
    train_cuts_per_user: int = 3,
    category_fields: Sequence[str] | str | None = None,
) -> list[UqaExample]:
    """Questions for every user with a long enough history (users, then cuts, then tasks in ``TASKS`` order).

    The category questions read ``category_fields`` (default: the dataset's) and speak the dataset's nouns. A
    dataset without categories gets only the title questions (one log line says which were skipped); asking
    for category questions alone on it is a DataError."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if recent_window < 1 or train_cuts_per_user < 1:
        raise ConfigError("recent_window and train_cuts_per_user must be >= 1")
    tasks = _check_tasks(tasks)
    fields = resolve_category_fields(data, category_fields)
    order = category_order(data, fields)
    if not order:
        tasks = _without_categories(data, tasks, fields)
    vocab = prompt_vocab(data.vocabulary)
    kinds = {t: answer_kind(t, vocabulary=data.vocabulary) for t in tasks}
    worked_kinds = {t: WORKED_KIND[t].format(category=data.vocabulary.category, example=worked_example(data, fields))
                    for t in tasks if t in WORKED_KIND}
    cats_of = {item_id: tuple(item_categories(it, fields)) for item_id, it in data.items.items()}
    out: list[UqaExample] = []
    skipped_users = 0
    for user, history in data.histories().items():
        cuts = context_cuts(history, split, seed=seed, train_cuts_per_user=train_cuts_per_user)
        if not cuts:
            skipped_users += 1
            continue
        items = lookup_items(data, history)
        for cut in cuts:
            ctx = _Context(history.prefix(cut), items[:cut], [cats_of[i] for i in history.item_ids[:cut]],
                           history.item_ids[cut], cats_of[history.item_ids[cut]], items[cut], order,
                           recent_window, vocab)
            for task in tasks:
                made = _MAKERS[task](ctx, _rng(seed, user, split, cut, task))
                if made is None:
                    continue
                out.append(UqaExample(user, TASK_FAMILY[task], task, made.question, made.answer, made.options,
                                      ctx.history, split, made.item_id, made.worked, kinds[task],
                                      worked_kinds.get(task, "")))
    if skipped_users:
        logger.info("build_uqa(%s): %d users have too short a history (< %d context items)", split,
                    skipped_users, MIN_CONTEXT)
    return out


_SKIP_LOGGED: set[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = set()


def _without_categories(data: InteractionData, tasks: tuple[str, ...], fields: tuple[str, ...]) -> tuple[str, ...]:
    """``tasks`` minus the category questions, for a dataset without categories; logged once per dataset."""
    skipped = tuple(t for t in tasks if t in CATEGORY_TASKS)
    if not skipped:
        return tasks
    why = ("the dataset names no category attribute (its config sets no category field)" if not fields else
           f"no item has a value in the category attribute(s) {', '.join(fields)}")
    kept = tuple(t for t in tasks if t not in CATEGORY_TASKS)
    if not kept:
        raise DataError(f"UQA task(s) {', '.join(skipped)} ask about item categories, but {why}; only "
                        "nth_title and next_title can be asked", path=data.source or None,
                        field="category_fields")
    key = (data.name, data.source, fields, skipped)
    if key not in _SKIP_LOGGED:  # one line per dataset, not one per split
        _SKIP_LOGGED.add(key)
        by_family = "; ".join(f"{f}: {', '.join(t for t in ts if t in skipped)}" for f, ts in FAMILIES.items()
                              if any(t in skipped for t in ts))
        logger.warning("UQA questions on %s: skipped the category questions (%s) because %s; asking %s",
                       data.name or data.source or "this dataset", by_family, why, ", ".join(kept))
    return kept


@dataclass
class _Context:
    history: UserHistory
    items: list[Item]
    cats: list[tuple[str, ...]]  # categories per context item, so counts do not re-read item attributes
    next_id: str
    next_cats: tuple[str, ...]
    next_item: Item
    order: tuple[str, ...]
    recent_window: int
    v: PromptVocab  # the dataset's nouns (llmrec.nouns.prompt_vocab)

    @property
    def recent(self) -> list[tuple[str, ...]]:
        return self.cats[-self.recent_window:]

    @cached_property
    def counts(self) -> Counter:
        return Counter(g for gs in self.cats for g in gs)

    @cached_property
    def longterm(self) -> str | None:
        return _favourite(self.counts, self.order)

    @cached_property
    def recent_favourite(self) -> str | None:
        return favourite_category(self.recent, self.order)


class _Question(NamedTuple):
    question: str
    answer: str
    options: tuple[str, ...] | None
    item_id: str | None
    worked: str | None = None


_Made = _Question | None


def _main(cats: Sequence[str]) -> str | None:
    return cats[0] if cats and not is_unknown(cats[0]) else None


def _nth(ctx: _Context, rng: random.Random) -> int:
    return rng.randint(1, min(MAX_NTH, len(ctx.items)))


def _nth_title(ctx: _Context, rng: random.Random) -> _Made:
    n = _nth(ctx, rng)
    item, v = ctx.items[-n], ctx.v
    return _Question(f"What is the title of the {_ORDINALS[n]} {v['item']} this user {v['interacted']}?",
                     item_title(item), None, ctx.history.item_ids[-n])


def _nth_genre(ctx: _Context, rng: random.Random) -> _Made:
    n = _nth(ctx, rng)
    cat, v = _main(ctx.cats[-n]), ctx.v
    if cat is None:
        return None
    return _Question(f"What is the main {v['category']} of the {_ORDINALS[n]} {v['item']} this user "
                     f"{v['interacted']}?", cat, ctx.order, ctx.history.item_ids[-n])


def _genre_count(ctx: _Context, rng: random.Random) -> _Made:
    # Ask about a category the user has seen at all, so answers spread over 0..window rather than mostly 0.
    seen = [g for g in ctx.order if ctx.counts[g] > 0]
    if not seen:
        return None
    cat, v = seen[rng.randrange(len(seen))], ctx.v
    recent = ctx.recent
    count = sum(1 for gs in recent if cat in gs)
    options = tuple(str(i) for i in range(len(recent) + 1))
    return _Question(f"How many of the last {len(recent)} {v['items']} this user {v['interacted']} are {cat} "
                     f"{v['items']}?", str(count), options, None)


def _next_title(ctx: _Context, rng: random.Random) -> _Made:
    if ctx.next_id in ctx.history.item_ids:  # a repeat would put the answer in the context: never ask it
        return None
    v = ctx.v
    return _Question(f"What is the title of the next {v['item']} this user will {v['interact']}?",
                     item_title(ctx.next_item), None, ctx.next_id)


def _next_genre(ctx: _Context, rng: random.Random) -> _Made:
    cat, v = _main(ctx.next_cats), ctx.v
    if cat is None:
        return None
    return _Question(f"What is the main {v['category']} of the next {v['item']} this user will {v['interact']}?",
                     cat, ctx.order, ctx.next_id)


def _longterm_genre(ctx: _Context, rng: random.Random) -> _Made:
    cat, v = ctx.longterm, ctx.v
    if cat is None:
        return None
    return _Question(f"Which {v['category']} has this user {v['interacted']} most over their whole history?", cat,
                     ctx.order, None)


def _recent_genre(ctx: _Context, rng: random.Random) -> _Made:
    cat, v = ctx.recent_favourite, ctx.v
    if cat is None:
        return None
    return _Question(f"Which {v['category']} has this user {v['interacted']} most in their last {len(ctx.recent)} "
                     f"{v['items']}?", cat, ctx.order, None)


def _interest_shift(ctx: _Context, rng: random.Random) -> _Made:
    longterm, recent, v = ctx.longterm, ctx.recent_favourite, ctx.v
    if longterm is None or recent is None:
        return None
    answer = "yes" if recent != longterm else "no"
    return _Question(f"Is this user's favourite {v['category']} in their last {len(ctx.recent)} {v['items']} "
                     f"different from their favourite {v['category']} overall?", answer, YES_NO, None,
                     f"{longterm}, {recent}: {answer}")


_MAKERS = {
    "nth_title": _nth_title, "nth_genre": _nth_genre, "genre_count": _genre_count, "next_title": _next_title,
    "next_genre": _next_genre, "longterm_genre": _longterm_genre, "recent_genre": _recent_genre,
    "interest_shift": _interest_shift,
}


# ---- prompts ------------------------------------------------------------------------------------------------


def answer_kind(task: str, worked: bool = False, data: InteractionData | None = None, *,
                vocabulary: Vocabulary | None = None) -> str:
    """What a prompt asks the answer to be ("Answer with only the {kind}."): the worked form where asked for and
    the task has one, else the task's kind (the dataset's category noun for the category questions). The nouns
    and the worked example come from ``data`` (or ``vocabulary``); without either, generic ones.
    :meth:`UqaExample.kind_for` gives the same for an example built from the data."""
    vocab = data.vocabulary if data is not None else (vocabulary or Vocabulary())
    if worked and task in WORKED_KIND:
        example = worked_example(data) if data is not None else "A, B: yes"
        return WORKED_KIND[task].format(category=vocab.category, example=example)
    return ANSWER_KIND.get(task, vocab.category)


def uqa_prompt(
    example: UqaExample,
    style: str = "none",
    *,
    data: InteractionData | None = None,
    max_items: int = 20,
    user: str | None = None,
    show_options: bool = True,
    worked: bool = False,
) -> str:
    """Render ``prompts/uqa_{style}.jinja``.

    ``none``: the question only (non-personalized baseline). ``text``: the last ``max_items`` context items as
    "title (year) — categories" lines (needs ``data`` for the catalogue and its nouns), then the question.
    ``soft``: the ``user`` placeholder string (e.g. ``"<|user|>" * k``, which the soft-prompt splice replaces)
    before the question; leaving ``user`` out is a ConfigError from the template. ``worked``: ask for the worked
    answer (:attr:`UqaExample.worked`) where the task has one.
    """
    from llmrec.prompting import render

    if style not in STYLES:
        raise ConfigError(f"style must be one of {STYLES}, got {style!r}")
    variables: dict[str, Any] = {
        "question": example.question,
        "options": list(example.options) if (show_options and example.options) else [],
        "answer_kind": example.kind_for(worked),
    }
    if style == "text":
        if data is None:
            raise ConfigError("uqa_prompt(style='text') needs data= (the catalogue) to write the history")
        if max_items < 1:
            raise ConfigError("max_items must be >= 1")
        shown = _items(data, example.context.item_ids[-max_items:], example.user_id)
        variables["history"] = [item_line(it, data.category_fields) for it in shown]
        variables["vocab"] = prompt_vocab(data.vocabulary)
    if user is not None:
        variables["user"] = user
    return render(f"uqa_{style}", **variables)


# ---- scoring ------------------------------------------------------------------------------------------------

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_TRAILING_PAREN = re.compile(r"\s*\([^()]*\)\s*$")
_ARTICLES = ("the", "a", "an", "les", "la", "le", "l'", "il", "el", "das", "der", "die")
_LEADING_ARTICLE = re.compile(r"^(the|a|an)\s+")
_TRAILING_ARTICLE = re.compile(r",\s*(" + "|".join(re.escape(a) for a in _ARTICLES) + r")$")
_NON_WORD = re.compile(r"[^\w]+")


def normalize_answer(text: str) -> str:
    """First non-empty line, stripped, lower-cased, without surrounding quotes or a final period."""
    line = next((ln for ln in str(text).splitlines() if ln.strip()), "")
    return line.strip().lower().strip("\"'`*").rstrip(".!").strip()


def _title_key(text: str) -> str:
    t = _YEAR.sub("", text)
    t = _TRAILING_ARTICLE.sub("", t.strip())  # "Usual Suspects, The" -> "usual suspects"
    t = _LEADING_ARTICLE.sub("", t)  # "The Usual Suspects" -> "usual suspects"
    return " ".join(_NON_WORD.sub(" ", t).split())


def title_matches(prediction: str, gold: str) -> bool:
    """Lenient title match: case-insensitive, ignoring a trailing "(year)", a leading English article or a
    trailing ", The"-style article, and punctuation; a gold alternate title in parentheses may be omitted."""
    pred = _title_key(_YEAR.sub("", normalize_answer(prediction)))
    gold_norm = _YEAR.sub("", normalize_answer(gold))
    keys = {_title_key(gold_norm), _title_key(_TRAILING_PAREN.sub("", gold_norm))}
    return bool(pred) and pred in keys


def final_answer(prediction: str, task: str) -> str:
    """The answer part of a prediction: for tasks with worked answers, the text after the last ":" of its
    normalised first line ("Drama, Comedy: Yes." -> " yes"); otherwise the prediction as it is."""
    return normalize_answer(prediction).rsplit(":", 1)[-1] if task in WORKED_KIND else prediction


def answer_correct(prediction: str, example: UqaExample) -> bool:
    if example.task in ("nth_title", "next_title"):
        return title_matches(prediction, example.answer)
    return normalize_answer(final_answer(prediction, example.task)) == normalize_answer(example.answer)


def uqa_accuracy(predictions: Sequence[str], examples: Sequence[UqaExample]) -> dict[str, Any]:
    """Exact-match accuracy (titles leniently, see :func:`title_matches`; other answers after
    :func:`normalize_answer`). Returns ``{"overall": {accuracy, n}, "macro": mean of task accuracies,
    "family": {name: {accuracy, n}}, "task": {name: {accuracy, n}}}``; overall and family are micro averages."""
    if len(predictions) != len(examples):
        raise DataError(f"{len(predictions)} predictions for {len(examples)} examples", field="predictions")
    if not examples:
        raise DataError("no examples to score", field="examples")
    hits = [answer_correct(p, ex) for p, ex in zip(predictions, examples, strict=True)]

    def summary(mask: list[bool]) -> dict[str, float | int]:
        sel = [h for h, m in zip(hits, mask, strict=True) if m]
        return {"accuracy": float(np.mean(sel)), "n": len(sel)}

    tasks = [t for t in TASKS if any(ex.task == t for ex in examples)]
    families = [f for f in FAMILIES if any(ex.family == f for ex in examples)]
    per_task = {t: summary([ex.task == t for ex in examples]) for t in tasks}
    return {
        "overall": summary([True] * len(examples)),
        "macro": float(np.mean([v["accuracy"] for v in per_task.values()])),
        "family": {f: summary([ex.family == f for ex in examples]) for f in families},
        "task": per_task,
    }


def majority_baseline(train: Sequence[UqaExample], test: Sequence[UqaExample]) -> dict[str, float]:
    """Accuracy on ``test`` of always answering each task's most frequent ``train`` answer (ties: smallest)."""
    out: dict[str, float] = {}
    for task in TASKS:
        gold = [ex.answer for ex in test if ex.task == task]
        ref = Counter(ex.answer for ex in train if ex.task == task)
        if not gold or not ref:
            continue
        guess = min(ref, key=lambda a: (-ref[a], a))
        out[task] = float(np.mean([g == guess for g in gold]))
    return out


# ---- evaluation-harness adapter (builder "uqa" in llmrec.evaluation.builders) -------------------------------

HARNESS_ARGS = ("task", "recent_window", "category")


@lru_cache(maxsize=2)
def _dataset(name: str) -> InteractionData:
    from llmrec.data import load_dataset

    return load_dataset(name)


def harness_labels(spec: Any) -> tuple[str, ...]:
    """The answer options of a harness task that leaves ``output.labels`` empty: the category questions get the
    dataset's real categories in :func:`category_order` (on ml-100k the GroupLens genre order),
    ``genre_count`` 0..recent_window, ``interest_shift`` yes/no; the title questions have no closed set (())."""
    args = _harness_args(spec)
    task = args["task"]
    if task == "genre_count":
        return tuple(str(n) for n in range(int(args.get("recent_window", 10)) + 1))
    if task == "interest_shift":
        return YES_NO
    if task not in CATEGORY_TASKS:
        return ()
    data = _dataset(spec.dataset)
    fields = resolve_category_fields(data, args.get("category"))
    order = category_order(data, fields)
    if len(order) < 2:
        raise ConfigError(f"{spec.source}: {spec.task} asks about item categories, but dataset {spec.dataset!r} has "
                          f"{'no category attribute' if not fields else 'fewer than two categories'}; set "
                          "dataset_args.category (or the dataset config's category)")
    return order


def _harness_args(spec: Any) -> dict[str, Any]:
    args = dict(spec.dataset_args)
    unknown = sorted(set(args) - set(HARNESS_ARGS))
    if unknown or "task" not in args:
        raise ConfigError(f"{spec.source}: dataset_args takes {HARNESS_ARGS} ('task' required), got {sorted(args)}")
    return args


def harness_examples(spec: Any) -> list[Any]:
    """A task spec (``dataset_args: {task: <uqa task>, recent_window: 10, category: <attribute(s)>}``) -> harness
    ``Example`` rows: the question as ``input``, the computed answer as ``gold``, the context items (oldest
    first, dated; ``categories`` from ``category``, default the dataset's category attribute) as the profile the
    retriever picks from (``recency`` = the last k items, like the ``text`` style). Prompts also get ``vocab``
    (the dataset's nouns, :func:`llmrec.nouns.prompt_vocab`)."""
    from llmrec.evaluation.builders import Example
    from llmrec.retrieval.base import ProfileDoc

    args = _harness_args(spec)
    data = _dataset(spec.dataset)
    fields = resolve_category_fields(data, args.get("category"))
    examples = build_uqa(data, split=spec.split, tasks=[args["task"]], seed=spec.seed,
                         recent_window=int(args.get("recent_window", 10)), category_fields=fields)
    vocab = prompt_vocab(data.vocabulary)
    labels = set(spec.output.labels)
    out = []
    for ex in examples:
        if labels and ex.answer not in labels:
            raise DataError(f"answer {ex.answer!r} is not one of the task's labels", path=spec.source,
                            record=ex.id, field="output.labels")
        items = _items(data, ex.context.item_ids, ex.user_id)
        profile = [{"id": i, "title": item_title(it), "categories": ", ".join(real_categories(it, fields)),
                    "rating": r, "date": ts, "pos": pos}
                   for pos, (i, it, r, ts) in enumerate(zip(ex.context.item_ids, items, ex.context.ratings,
                                                            ex.context.timestamps, strict=True))]
        docs = [ProfileDoc(f"{p['title']} {p['categories']}", p["date"]) for p in profile]
        out.append(Example(id=ex.id, user_id=ex.user_id, input=ex.question, gold=ex.answer, profile=profile,
                           docs=docs, query=ex.question,
                           variables={"answer_kind": ex.kind_for(), "vocab": vocab}))
    return out
