"""No MovieLens assumption: a small bookshop (category attribute ``category``, nouns book/bought) through UQA
questions, profiles, alignment anchors, semantic-ID diagnostics, the harness builders and the genrec prompt;
a dataset without categories gets the title questions only and one log line."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

from llmrec.data.builder import DatasetBuilder
from llmrec.data.movielens import ML_VOCABULARY
from llmrec.data.schema import Vocabulary
from llmrec.errors import ConfigError, DataError
from llmrec.nouns import base_verb, prompt_vocab, third_person
from llmrec.prompting import render
from llmrec.tasks import uqa
from llmrec.tasks.profile import (
    build_profile_tasks,
    majority_context_category,
    profile_downstream_prompt,
    profile_write_prompt,
    template_profile,
)
from llmrec.tasks.uqa import CATEGORY_TASKS, TASKS, anchor_texts, build_uqa, category_order, uqa_prompt

SHOP_NOUNS = Vocabulary(item="book", items="books", interacted="bought", category="category",
                        categories="categories")
BOOKS = {  # id -> (title, category (a string or a list), format)
    "b1": ("Dune", "Science Fiction", "paperback"),
    "b2": ("Emma", ["Romance", "Classics"], "hardcover"),
    "b3": ("Neuromancer", "Science Fiction", "paperback"),
    "b4": ("Persuasion", ["Romance", "Classics"], "ebook"),
    "b5": ("Gone Girl", "Thriller", "paperback"),
    "b6": ("Foundation", ["Science Fiction", "Classics"], "hardcover"),
    "b7": ("Rebecca", ["Thriller", "Classics"], "paperback"),
    "b8": ("Cookbook", "", "spiral"),  # no category
    "b9": ("Hyperion", "Science Fiction", "ebook"),
}
BASKETS = {  # customer -> books oldest first (stars)
    "C1": (["b2", "b4", "b7", "b1", "b3", "b6", "b9", "b5"], [5, 4, 3, 5, 4, 5, 4, 2]),
    "C2": (["b5", "b7", "b1", "b2", "b8", "b4", "b3"], [3, 4, 2, 5, 3, 4, 1]),
}


def bookshop(category_fields: tuple[str, ...] = ("category",), name: str = "bookshop", drop_category: bool = False):
    b = DatasetBuilder(name, (1.0, 5.0), source=f"{name}.yaml", category_fields=category_fields,
                       vocabulary=SHOP_NOUNS)
    for i, (title, cat, fmt) in BOOKS.items():
        attrs = {"format": fmt} if drop_category else {"category": cat, "format": fmt}
        b.add_item(i, title, attrs, path="books.jsonl", record=i)
    for c, (ids, stars) in BASKETS.items():
        for k, (i, s) in enumerate(zip(ids, stars, strict=True)):
            b.add_interaction(c, i, 1_600_000_000 + 86400 * k, float(s), None, path="orders.csv", record=k)
    return b.build()


def test_nouns():
    ml = prompt_vocab(ML_VOCABULARY)
    assert (ml.items, ml.interacted, ml.interact, ml.interacts, ml.Items, ml["category"]) == \
        ("movies", "watched", "watch", "watches", "Movies", "genre")
    shop = prompt_vocab(SHOP_NOUNS)
    assert (shop.interact, shop.interacts, shop.Items, shop.categories) == ("buy", "buys", "Books", "categories")
    generic = prompt_vocab()
    assert (generic.items, generic.interact, generic.interacts) == ("items", "interact with", "interacts with")
    assert base_verb(Vocabulary(interacted="listened to")) == "listen to"
    assert base_verb(Vocabulary(interacted="yeeted")) == "interact with"  # unknown verb: generic, still grammatical
    assert [third_person(v) for v in ("try", "play", "fix", "read")] == ["tries", "plays", "fixes", "reads"]
    # a dict would not do: Jinja's vocab.items finds dict.items
    assert render("{{ vocab.Items }} this user {{ vocab.interacted }}; {{ vocab.items }}", vocab=shop) == \
        "Books this user bought; books"


def test_uqa_questions_use_the_category_attribute_and_the_nouns():
    data = bookshop()
    assert category_order(data) == ("Classics", "Romance", "Science Fiction", "Thriller")
    ex = build_uqa(data, split="test", recent_window=4)
    c1 = {e.task: e for e in ex if e.user_id == "C1"}
    assert set(c1) == set(TASKS)
    for e in ex:
        assert "movie" not in e.question and "watch" not in e.question and "genre" not in e.question
        assert "book" in e.question or e.task == "longterm_genre"
    assert c1["next_title"].question == "What is the title of the next book this user will buy?"
    assert c1["next_title"].answer == "Gone Girl"
    assert c1["next_genre"].question == "What is the main category of the next book this user will buy?"
    assert c1["next_genre"].answer == "Thriller" and c1["next_genre"].options == category_order(data)
    # context (7 books): Classics 4 (Emma, Persuasion, Rebecca, Foundation), Science Fiction 4 -> tie by order
    assert c1["longterm_genre"].answer == "Classics"
    assert c1["longterm_genre"].question == "Which category has this user bought most over their whole history?"
    # last 4: Dune, Neuromancer, Foundation, Hyperion -> Science Fiction
    assert c1["recent_genre"].answer == "Science Fiction"
    assert c1["interest_shift"].worked == "Classics, Science Fiction: yes"
    count = c1["genre_count"]
    cat = re.fullmatch(r"How many of the last 4 books this user bought are (.+) books\?", count.question).group(1)
    recent = [uqa.item_categories(data.items[i], ("category",)) for i in BASKETS["C1"][0][3:7]]
    assert count.answer == str(sum(cat in cs for cs in recent))
    nth = c1["nth_genre"]
    assert re.fullmatch(r"What is the main category of the .+ book this user bought\?", nth.question)
    assert nth.answer == uqa.item_categories(data.items[nth.item_id], ("category",))[0]
    # C2's context holds the uncategorised cookbook (b8); its test target is Neuromancer (b3)
    c2 = {e.task: e for e in ex if e.user_id == "C2"}
    assert c2["next_genre"].answer == "Science Fiction"

    # prompts speak books; the answer kinds use the category noun; the worked example is the catalogue's two
    # commonest categories (Classics 4 books, Science Fiction 4)
    text = uqa_prompt(c1["recent_genre"], "text", data=data, max_items=2)
    assert text.splitlines()[:3] == ["Books this user bought, oldest first (the last line is the most recent):",
                                     "Foundation — Science Fiction, Classics", "Hyperion — Science Fiction"]
    assert text.endswith("Answer with only the category.")
    worked = uqa_prompt(c1["interest_shift"], "soft", user="<u>", worked=True)
    assert worked.endswith("Answer with only the favourite category overall, then lately, then yes or no "
                           "(e.g. Classics, Science Fiction: yes).")
    assert c1["interest_shift"].kind_for(True) == uqa.answer_kind("interest_shift", True, data)


def test_category_override_reads_another_attribute():
    data = bookshop()
    ex = build_uqa(data, split="test", tasks=["next_genre"], category_fields="format")
    assert {e.user_id: e.answer for e in ex} == {"C1": "paperback", "C2": "paperback"}
    assert ex[0].options == ("ebook", "hardcover", "paperback", "spiral")
    assert uqa.resolve_category_fields(data, "category, format") == ("category", "format")  # --task-arg form
    assert uqa.resolve_category_fields(data, None) == ("category",)
    with pytest.raises(ConfigError, match="attribute name"):
        uqa.resolve_category_fields(data, 3)


def test_no_categories_gives_title_questions_and_one_log_line(caplog):
    data = bookshop(category_fields=(), name="shop-no-cats")
    with caplog.at_level(logging.INFO, logger="llmrec.tasks.uqa"):
        test = build_uqa(data, split="test")
        valid = build_uqa(data, split="valid")
    assert {e.task for e in test} == {e.task for e in valid} == {"nth_title", "next_title"}
    assert all("book" in e.question for e in test)
    lines = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING  # once per dataset, not per split
    msg = lines[0].getMessage()
    assert "shop-no-cats" in msg and "no category attribute" in msg and "interest_perception" in msg
    assert all(t in msg for t in CATEGORY_TASKS) and msg.endswith("asking nth_title, next_title")
    with pytest.raises(DataError, match="ask about item categories") as err:
        build_uqa(data, tasks=["next_genre", "longterm_genre"])
    assert err.value.field == "category_fields"


def test_configured_but_empty_category_attribute_says_so(caplog):
    data = bookshop(name="shop-empty-cats", drop_category=True)
    with caplog.at_level(logging.WARNING, logger="llmrec.tasks.uqa"):
        assert {e.task for e in build_uqa(data)} == {"nth_title", "next_title"}
    assert "no item has a value in the category attribute(s) category" in caplog.text


def test_profiles_speak_the_nouns():
    data = bookshop()
    ctx = data.histories()["C1"].prefix(7)
    # 7 books: Classics 4 (57%), Science Fiction 4 (57%), Romance 2 (29%); stars 5+4+3+5+4+5+4 = 30 -> 4.3
    assert template_profile(ctx, data) == ("Top categories: Classics (57%), Science Fiction (57%), Romance (29%). "
                                           "Average rating: 4.3 / 5 over 7 books.")
    text = profile_write_prompt(ctx, data, max_items=2, grounded=True)
    assert text.splitlines()[:3] == ["Books this user bought, oldest first, with their ratings:",
                                     "Foundation — Science Fiction, Classics: 5/5", "Hyperion — Science Fiction: 4/5"]
    assert "this user's book taste: the categories they like, the kind of books they rate" in text
    assert "movie" not in text and "genre" not in text
    rows = {(r.user_id, r.task): r for r in build_profile_tasks(data)}
    nxt = rows[("C1", "next_genre")]
    assert nxt.answer == "Thriller" and nxt.options == category_order(data)
    prompt = profile_downstream_prompt("Likes classics.", nxt)
    assert "What is the main category of the next book this user will buy?" in prompt
    assert prompt.endswith("Answer with only the category.") and "Gone Girl" not in prompt
    rating = profile_downstream_prompt(None, rows[("C1", "rating")])
    assert rating.startswith('How would this user rate the book "Gone Girl" [Thriller] on a scale from 1 to 5?')
    # main (first-listed) categories of the 7: Romance, Romance, Thriller, then Science Fiction 4 times
    assert majority_context_category(ctx, data) == "Science Fiction"


def test_profiles_without_categories():
    data = bookshop(category_fields=(), name="shop-no-cats-profile")
    ctx = data.histories()["C2"].prefix(3)
    assert template_profile(ctx, data) == "Average rating: 3.0 / 5 over 3 books."
    unrated = ctx.__class__(ctx.user_id, ctx.item_ids, ctx.timestamps, (None, None, None))
    assert template_profile(unrated, data) == "Bought 3 books."
    assert {r.task for r in build_profile_tasks(data)} == {"rating"}


def test_alignment_anchors_come_from_the_category_attribute(caplog):
    data = bookshop()
    texts = anchor_texts(data)
    assert len(texts) == len(data.item_ids)
    assert dict(zip(data.item_ids, texts, strict=True))["b2"] == "Romance Classics"
    assert dict(zip(data.item_ids, texts, strict=True))["b8"] == "unknown"
    assert anchor_texts(data, "categories", category_fields="format")[0] == "paperback"
    assert anchor_texts(data, "items")[1] == "Emma — Romance, Classics"
    none = bookshop(category_fields=(), name="shop-no-cats-anchors")
    with caplog.at_level(logging.WARNING, logger="llmrec.tasks.uqa"):
        assert anchor_texts(none) == [t for t, _, _ in BOOKS.values()]
    assert "anchors are the item texts" in caplog.text
    with pytest.raises(ConfigError, match="anchor kind"):
        anchor_texts(data, "genres")


def test_semantic_id_diagnostics_and_item_text_use_the_category_attribute():
    from llmrec.items.build import SemanticIdConfig, build_semantic_ids
    from llmrec.items.encoders import item_texts

    data = bookshop()
    assert item_texts(data)[:2] == ["Dune Science Fiction", "Emma Romance, Classics"]
    assert item_texts(bookshop(category_fields=()))[0] == "Dune"
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(data.items), 8)).astype(np.float32)
    cfg = SemanticIdConfig.from_dict({"quantizer": {"kind": "rkmeans", "levels": 1, "codebook_size": 2,
                                                    "min_points_per_code": 1}})
    _, report = build_semantic_ids(data, cfg, vectors=vectors)
    assert "category_coherence" in report
    _, bare = build_semantic_ids(bookshop(category_fields=()), cfg, vectors=vectors)
    assert "category_coherence" not in bare


def _spec(name: str, dataset: str, **changes):
    from llmrec.evaluation.tasks import load_registry

    return load_registry().tasks[name].with_overrides(dataset=dataset, **changes)


def test_harness_builders_on_the_bookshop(monkeypatch):
    import llmrec.data
    from llmrec.evaluation.builders import build_examples
    from llmrec.evaluation.runner import build_prompts
    from llmrec.evaluation.tasks import OutputSpec

    shop = bookshop(name="shop-harness")
    monkeypatch.setattr(llmrec.data, "load_dataset", lambda spec: shop if spec == "shop-harness" else None)
    labels = OutputSpec(type="classify", labels=category_order(shop))
    spec = _spec("ml100k_next_genre", "shop-harness", output=labels)
    rows = build_examples(spec)
    assert {r.user_id: r.gold for r in rows} == {"C1": "Thriller", "C2": "Science Fiction"}
    prompt = build_prompts(spec, rows[:1], "recency", 2, None)[0]
    assert prompt.startswith("Books this user bought recently:\n- ")
    assert "Which category is the next book this user will buy? Choose one of: Classics, Romance" in prompt
    assert prompt.endswith("Answer with the category only.")
    fmt = build_examples(spec.with_overrides(dataset_args={"category": "format"},
                                             output=OutputSpec(type="classify", labels=("paperback", "ebook"))))
    assert {r.gold for r in fmt} == {"paperback"}
    with pytest.raises(ConfigError, match="dataset_args.category"):
        build_examples(spec.with_overrides(dataset_args={"category": 3}))
    rating = _spec("ml100k_rating", "shop-harness")
    text = build_prompts(rating, build_examples(rating)[:1], "bm25", 2, None)[0]
    assert text.startswith("Books this user rated before") and 'rate the book "Gone Girl" [Thriller]' in text

    uqa._dataset.cache_clear()  # the harness caches datasets by name
    q = _spec("uqa_longterm_genre", "shop-harness", output=labels)
    got = build_examples(q)
    assert {r.user_id: r.gold for r in got} == {"C1": "Classics", "C2": "Classics"}
    assert got[0].input == "Which category has this user bought most over their whole history?"
    text = build_prompts(q, got[:1], "recency", 2, None)[0]
    assert text.startswith("Books this user bought, oldest first") and text.endswith("Answer with only the category.")


def test_no_categories_next_category_task_is_refused(monkeypatch):
    import llmrec.data
    from llmrec.evaluation.builders import build_examples
    from llmrec.evaluation.tasks import OutputSpec

    shop = bookshop(category_fields=(), name="shop-harness-bare")
    monkeypatch.setattr(llmrec.data, "load_dataset", lambda spec: shop)
    spec = _spec("ml100k_next_genre", "shop-harness-bare", output=OutputSpec(type="classify", labels=("a", "b")))
    with pytest.raises(ConfigError, match="no category attribute"):
        build_examples(spec)
    assert len(build_examples(_spec("ml100k_next_item", "shop-harness-bare"))) == 2


def test_genrec_prompt_nouns_and_legacy_models(tiny_llama_dir, tmp_path):
    from llmrec.items.semantic_ids import SemanticIds
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig

    history = [{"sid": "<a_1><b_2>", "title": "Heat"}]
    assert render("genrec", history=history, vocab=prompt_vocab(ML_VOCABULARY)) == \
        "A user watched these movies, oldest first:<a_1><b_2>"  # the measured ml-100k prompt, unchanged
    data = bookshop()
    codes = np.array([[i % 3, i // 3] for i in range(len(data.items))])
    sids = SemanticIds.from_quantized(list(data.items), codes, (3, 3))
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", sid_init="random")
    plm = PersonalLM.create(sids, data.items, cfg, vocabulary=SHOP_NOUNS)
    assert plm.history_prompt(["b1"]).startswith("A user bought these books, oldest first:")
    plm.save(tmp_path / "m")
    again = PersonalLM.load(tmp_path / "m")
    assert again.vocabulary == SHOP_NOUNS and again.history_prompt(["b1"]) == plm.history_prompt(["b1"])
    # a model saved before models recorded their nouns was trained on the MovieLens prompt: keep it
    cfg_path = tmp_path / "m" / "llmrec_config.json"
    saved = json.loads(cfg_path.read_text())
    del saved["vocabulary"]
    cfg_path.write_text(json.dumps(saved))
    assert PersonalLM.load(tmp_path / "m").history_prompt(["b1"]).startswith("A user watched these movies")


def test_command_help_speaks_no_movielens_words():
    """Help texts are read before any dataset is chosen: they speak of items and categories (`answer --answer-kind`
    said 'genre')."""
    import argparse

    from llmrec.cli import build_parser

    words = re.compile(r"\b(movies?|films?|watch(ed|es|ing)?|genres?)\b", re.IGNORECASE)
    found, todo, seen = [], [("llmrec", build_parser())], 0
    while todo:
        path, parser = todo.pop()
        seen += 1
        found += [f"{path}: {line.strip()}" for line in parser.format_help().splitlines() if words.search(line)]
        todo += [(f"{path} {name}", sub) for action in parser._actions
                 if isinstance(action, argparse._SubParsersAction) for name, sub in action.choices.items()]
    assert seen >= 10 and not found, found  # llmrec, every group and every command
    answer = build_parser().parse_args(["answer", "--user", "1", "q", "--answer-kind", "category"])
    assert answer.answer_kind == "category"
