"""UQA-style questions: every answer hand-checked on a small made-up catalogue; leakage and determinism on the
real ml-100k; prompt rendering; lenient title matching and per-task / per-family accuracy."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from llmrec.data.movielens import GROUPLENS_GENRES, ML_VOCABULARY
from llmrec.data.schema import Interaction, InteractionData, Item
from llmrec.errors import ConfigError, DataError
from llmrec.nouns import prompt_vocab
from llmrec.prompting import render
from llmrec.tasks.uqa import (
    FAMILIES,
    TASKS,
    UqaExample,
    answer_correct,
    build_uqa,
    category_line,
    category_order,
    title_matches,
    uqa_accuracy,
    uqa_prompt,
)

ITEMS = {
    "1": ("Toy Story", "1995", ["Animation", "Children's", "Comedy"]),
    "2": ("Heat", "1995", ["Action", "Crime", "Thriller"]),
    "3": ("Usual Suspects, The", "1995", ["Crime", "Thriller"]),
    "4": ("Casablanca", "1942", ["Drama", "Romance", "War"]),
    "5": ("Alien", "1979", ["Action", "Horror", "Sci-Fi", "Thriller"]),
    "6": ("Clueless", "1995", ["Comedy", "Romance"]),
    "7": ("Babe", "1995", ["Children's", "Comedy", "Drama"]),
    "8": ("Mystery Item", None, ["unknown"]),
    "9": ("Fargo", "1996", ["Crime", "Drama", "Thriller"]),
    "10": ("Airplane!", "1980", ["Comedy"]),
    "12": ("Aliens", "1986", ["Action", "Sci-Fi", "Thriller", "War"]),
}
HISTORIES = {  # user -> (item ids oldest first, ratings)
    "u1": (["4", "6", "7", "1", "10", "2", "5", "12", "3", "9"], [5, 4, 3, 4, 2, 4, 5, 4, 5, 3]),
    "u2": (["1", "6", "10", "7", "4", "8"], [3, 3, 4, 4, 5, 1]),
    "u3": (["1", "2", "3", "4"], [1, 2, 3, 4]),  # too short: 3 context items < 5
}
ORDINAL = {"the most recent": 1, "the 2nd most recent": 2, "the 3rd most recent": 3, "the 4th most recent": 4,
           "the 5th most recent": 5}


def hand_data() -> InteractionData:
    items = {i: Item(i, t, {"year": y, "genres": g}) for i, (t, y, g) in ITEMS.items()}
    inter = [Interaction(u, i, 100 * k, float(r)) for u, (ids, rs) in HISTORIES.items()
             for k, (i, r) in enumerate(zip(ids, rs, strict=True))]
    return InteractionData("hand", items, inter, rating_range=(1.0, 5.0), category_fields=("genres",),
                           vocabulary=ML_VOCABULARY)


def by_task(examples: list[UqaExample], user: str) -> dict[str, UqaExample]:
    return {ex.task: ex for ex in examples if ex.user_id == user}


def nth_of(question: str) -> int:
    return next(n for phrase, n in ORDINAL.items() if f"of {phrase} movie" in question)


# u1's test context, most recent first: Usual Suspects, Aliens, Alien, Heat, Airplane!, Toy Story, ...
NTH_TITLE = {1: "Usual Suspects, The (1995)", 2: "Aliens (1986)", 3: "Alien (1979)", 4: "Heat (1995)",
             5: "Airplane! (1980)"}
NTH_GENRE = {1: "Crime", 2: "Action", 3: "Action", 4: "Action", 5: "Comedy"}
# Genre tags over u1's last 4 context movies (Heat, Alien, Aliens, Usual Suspects).
RECENT4_COUNTS = {"Thriller": 4, "Action": 3, "Crime": 2, "Sci-Fi": 2, "Horror": 1, "War": 1}


def test_category_order_excludes_unknown():
    genres = category_order(hand_data())
    assert "unknown" not in genres
    assert genres[:3] == ("Action", "Animation", "Children's") and genres[-1] == "War"  # GroupLens order


def test_category_order_is_the_grouplens_order_on_ml100k(ml100k):
    # sorted by name == GroupLens order: the options and tie-breaks measured before categories were generic
    assert category_order(ml100k) == tuple(g for g in GROUPLENS_GENRES if g != "unknown")


def test_answers_test_split_by_hand():
    data = hand_data()
    ex = build_uqa(data, split="test", recent_window=4)
    assert {e.user_id for e in ex} == {"u1", "u2"}  # u3 is too short
    u1 = by_task(ex, "u1")
    assert set(u1) == set(TASKS)
    assert all(e.context.item_ids == tuple(HISTORIES["u1"][0][:-1]) for e in u1.values())
    assert all(e.family in FAMILIES and e.task in FAMILIES[e.family] for e in ex)
    # action prediction: the held-out Fargo
    assert (u1["next_title"].answer, u1["next_title"].item_id) == ("Fargo (1996)", "9")
    assert u1["next_genre"].answer == "Crime"
    # interest perception: Comedy and Thriller both tag 4 of 9 movies -> Comedy wins the tie by genre order;
    # the last 4 are all Thriller -> the interest shifted
    assert u1["longterm_genre"].answer == "Comedy"
    assert u1["recent_genre"].answer == "Thriller"
    assert u1["interest_shift"].answer == "yes" and u1["interest_shift"].options == ("yes", "no")
    for task in ("nth_genre", "next_genre", "longterm_genre", "recent_genre"):
        assert u1[task].options == category_order(data) and len(u1[task].options) == 11
    assert u1["nth_title"].options is None and u1["next_title"].options is None

    u2 = by_task(ex, "u2")
    assert "next_genre" not in u2  # the held-out movie has only the "unknown" genre: not asked
    assert u2["next_title"].answer == "Mystery Item"
    assert u2["longterm_genre"].answer == "Comedy"  # Comedy 4 of 5
    assert u2["recent_genre"].answer == "Comedy"  # last 4: Comedy 3, Drama 2, Romance 2
    assert u2["interest_shift"].answer == "no"
    # worked answers: the two favourites, then the answer; only interest_shift has one
    assert u1["interest_shift"].worked == "Comedy, Thriller: yes" and u2["interest_shift"].worked == "Comedy, Comedy: no"
    assert u1["interest_shift"].target(worked=True) == "Comedy, Thriller: yes"
    assert u1["interest_shift"].target() == "yes"
    assert all(e.worked is None and e.target(worked=True) == e.answer for e in ex if e.task != "interest_shift")


def test_sequence_questions_by_hand_over_seeds():
    data = hand_data()
    seen_n: set[int] = set()
    for seed in range(25):
        u1 = by_task(build_uqa(data, split="test", seed=seed, recent_window=4), "u1")
        n = nth_of(u1["nth_title"].question)
        seen_n.add(n)
        assert u1["nth_title"].answer == NTH_TITLE[n]
        assert u1["nth_title"].item_id == HISTORIES["u1"][0][-1 - n]
        assert u1["nth_genre"].answer == NTH_GENRE[nth_of(u1["nth_genre"].question)]
        count = u1["genre_count"]
        genre = re.search(r"last 4 movies this user watched are (.+) movies\?", count.question).group(1)
        assert genre in {"Action", "Animation", "Children's", "Comedy", "Crime", "Drama", "Horror", "Romance",
                         "Sci-Fi", "Thriller", "War"}  # asked only about genres the user has watched
        assert count.answer == str(RECENT4_COUNTS.get(genre, 0))
        assert count.options == ("0", "1", "2", "3", "4")
    assert seen_n == {1, 2, 3, 4, 5}


def test_answers_valid_and_train_by_hand():
    data = hand_data()
    u1 = by_task(build_uqa(data, split="valid", recent_window=4), "u1")
    assert u1["next_title"].context.item_ids == ("4", "6", "7", "1", "10", "2", "5", "12")
    assert u1["next_title"].answer == "Usual Suspects, The (1995)" and u1["next_genre"].answer == "Crime"
    assert u1["longterm_genre"].answer == "Comedy"  # Comedy 4, Thriller 3
    assert u1["recent_genre"].answer == "Action"  # last 4: Action 3 ties Thriller 3 -> Action comes first
    assert u1["interest_shift"].answer == "yes"

    train = [e for e in build_uqa(data, split="train", recent_window=4, train_cuts_per_user=3) if e.user_id == "u1"]
    # u1 has 10 items: cuts may be 5, 6, 7 (the next item is never one of the last two); 3 cuts take all
    nxt = {len(e.context): e for e in train if e.task == "next_genre"}
    assert sorted(nxt) == [5, 6, 7]
    assert [nxt[c].item_id for c in (5, 6, 7)] == ["2", "5", "12"]
    assert [nxt[c].answer for c in (5, 6, 7)] == ["Action", "Action", "Action"]
    # u2 (6 items) has no cut c with 5 <= c <= 3: no train examples
    assert {e.user_id for e in build_uqa(data, split="train")} == {"u1"}


def test_bad_arguments():
    data = hand_data()
    with pytest.raises(ConfigError, match="split"):
        build_uqa(data, split="dev")
    with pytest.raises(ConfigError, match="unknown UQA task"):
        build_uqa(data, tasks=["next_title", "favourite_actor"])
    bad = InteractionData("bad", dict(data.items), [Interaction("u9", i, k) for k, i in enumerate("1234567")])
    del bad.items["7"]
    with pytest.raises(DataError, match="item_id 7"):
        build_uqa(bad)


# ---- real ml-100k -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml_test(ml100k) -> list[UqaExample]:
    return build_uqa(ml100k, split="test")


def test_ml100k_test_split_no_leakage(ml100k, ml_test):
    hist = ml100k.histories()
    assert {e.task for e in ml_test} == set(TASKS)
    assert sum(e.task == "next_title" for e in ml_test) == 943
    for e in ml_test:
        h = hist[e.user_id]
        assert e.split == "test" and e.context == h.prefix(len(h) - 1)
        if e.family == "action_prediction":
            assert e.item_id == h.item_ids[-1] and e.item_id not in e.context.item_ids
        if e.task in ("nth_title", "nth_genre"):
            assert e.item_id in e.context.item_ids[-5:]
        if e.options is not None:
            assert e.answer in e.options
        if e.options is not None and e.task not in ("genre_count", "interest_shift"):
            assert len(e.options) == 18 and "unknown" not in e.options


def test_ml100k_valid_and_train_no_leakage(ml100k):
    hist = ml100k.histories()
    for e in build_uqa(ml100k, split="valid", tasks=["next_title"]):
        h = hist[e.user_id]
        assert e.context == h.prefix(len(h) - 2) and e.item_id == h.item_ids[-2]
    train = build_uqa(ml100k, split="train", tasks=["next_title", "longterm_genre"], train_cuts_per_user=3)
    cuts: dict[str, set[int]] = {}
    for e in train:
        h = hist[e.user_id]
        n = len(e.context)
        assert 5 <= n <= len(h) - 3 and e.context == h.prefix(n)
        held_out = set(h.item_ids[-2:])  # the valid and test targets
        assert not held_out & set(e.context.item_ids)
        if e.task == "next_title":
            assert e.item_id == h.item_ids[n] and e.item_id not in held_out
        cuts.setdefault(e.user_id, set()).add(n)
    assert len(cuts) == 943 and all(len(c) == 3 for c in cuts.values())


def test_ml100k_deterministic_and_subset_stable(ml100k, ml_test):
    again = build_uqa(ml100k, split="test", tasks=["nth_title", "genre_count"])
    assert again == [e for e in ml_test if e.task in ("nth_title", "genre_count")]
    other = build_uqa(ml100k, split="test", tasks=["nth_title"], seed=1)
    assert [e.question for e in other] != [e.question for e in ml_test if e.task == "nth_title"]


# ---- prompts ----------------------------------------------------------------------------------------------


def test_prompts_render():
    data = hand_data()
    u1 = by_task(build_uqa(data, split="test", recent_window=4), "u1")
    ex = u1["recent_genre"]
    none = uqa_prompt(ex, "none")
    assert none.startswith(ex.question) and none.endswith("Answer with only the genre.")
    assert "Options: Action, Animation" in none and "Fargo" not in none and "Heat" not in none
    text = uqa_prompt(ex, "text", data=data, max_items=3)
    lines = text.splitlines()
    assert lines[1:4] == ["Alien (1979) — Action, Horror, Sci-Fi, Thriller",
                          "Aliens (1986) — Action, Sci-Fi, Thriller, War",
                          "Usual Suspects, The (1995) — Crime, Thriller"]
    assert "Heat" not in text and lines[4] == ex.question
    soft = uqa_prompt(ex, "soft", user="<|user|><|user|>")
    assert "<|user|><|user|>" in soft and soft.index("<|user|>") < soft.index(ex.question)
    assert uqa_prompt(u1["nth_title"], "none").endswith("Answer with only the title.")
    assert "Options" not in uqa_prompt(u1["nth_title"], "none")
    assert uqa_prompt(u1["genre_count"], "none").endswith("Options: 0, 1, 2, 3, 4.\nAnswer with only the number.")
    assert "Options" not in uqa_prompt(ex, "none", show_options=False)


def test_prompt_errors():
    data = hand_data()
    ex = build_uqa(data, split="test", tasks=["next_genre"])[0]
    with pytest.raises(ConfigError, match="user"):
        uqa_prompt(ex, "soft")  # the placeholder variable is required
    with pytest.raises(ConfigError, match="data="):
        uqa_prompt(ex, "text")
    with pytest.raises(ConfigError, match="style"):
        uqa_prompt(ex, "chat")
    with pytest.raises(ConfigError, match="history"):
        render("uqa_text", question="q", options=[], answer_kind="genre", vocab=prompt_vocab(ML_VOCABULARY))
    with pytest.raises(ConfigError, match="vocab"):  # the nouns are required too
        render("uqa_text", question="q", options=[], answer_kind="genre", history=[])


# ---- scoring ----------------------------------------------------------------------------------------------


def test_title_matches():
    gold = "Usual Suspects, The (1995)"
    for pred in ("Usual Suspects, The (1995)", "The Usual Suspects", "usual suspects, the", " The Usual Suspects.\n",
                 '"The Usual Suspects (1995)"'):
        assert title_matches(pred, gold), pred
    for pred in ("Usual Suspects 2", "Suspects", "", "Heat (1995)"):
        assert not title_matches(pred, gold), pred
    assert title_matches("Airplane", "Airplane! (1980)")
    assert title_matches("Seven", "Seven (Se7en) (1995)") and title_matches("seven (se7en)", "Seven (Se7en) (1995)")
    assert title_matches("Blechtrommel", "Blechtrommel, Die (1979)")


def test_uqa_accuracy_by_hand():
    data = hand_data()
    u1 = by_task(build_uqa(data, split="test", recent_window=4), "u1")
    examples = [u1["nth_title"], u1["next_title"], u1["next_genre"], u1["interest_shift"], u1["genre_count"]]
    n = nth_of(u1["nth_title"].question)
    bare_title = NTH_TITLE[n].split(" (")[0]  # without the year
    predictions = [bare_title, "Fargo 2", " crime.\n", "No", u1["genre_count"].answer + " movies"]
    got = uqa_accuracy(predictions, examples)
    # hits: nth_title yes (lenient), next_title no, next_genre yes, interest_shift no, genre_count no (exact)
    assert got["overall"] == {"accuracy": 2 / 5, "n": 5}
    assert got["task"] == {"nth_title": {"accuracy": 1.0, "n": 1}, "genre_count": {"accuracy": 0.0, "n": 1},
                           "next_title": {"accuracy": 0.0, "n": 1}, "next_genre": {"accuracy": 1.0, "n": 1},
                           "interest_shift": {"accuracy": 0.0, "n": 1}}
    assert got["family"] == {"sequence_understanding": {"accuracy": 0.5, "n": 2},
                             "action_prediction": {"accuracy": 0.5, "n": 2},
                             "interest_perception": {"accuracy": 0.0, "n": 1}}
    assert got["macro"] == pytest.approx(2 / 5)
    with pytest.raises(DataError, match="predictions"):
        uqa_accuracy(predictions[:2], examples)


def test_worked_answers_prompt_and_scoring():
    data = hand_data()
    u1 = by_task(build_uqa(data, split="test", recent_window=4), "u1")
    shift = u1["interest_shift"]
    plain, worked = uqa_prompt(shift, "none"), uqa_prompt(shift, "none", worked=True)
    assert plain.endswith("Answer with only the word yes or no.")
    assert worked.splitlines()[:-1] == plain.splitlines()[:-1] and "genre overall, then lately" in worked
    assert uqa_prompt(u1["recent_genre"], "none", worked=True) == uqa_prompt(u1["recent_genre"], "none")
    # scored on the final answer, whatever the worked part says; a bare answer still scores
    for pred, hit in (("Comedy, Thriller: yes", True), ("Drama, Drama: yes", True), ("Comedy, Comedy: no", False),
                      ("yes", True), ("no", False), (" Comedy, Thriller: Yes.\nmore", True)):
        assert answer_correct(pred, shift) is hit, pred
    # a title with a colon is matched whole (no worked form for titles)
    title = replace(u1["nth_title"], answer="Star Wars: Episode IV (1977)")
    assert answer_correct("Star Wars: Episode IV", title) and not answer_correct("Episode IV", title)


# ---- evaluation harness -----------------------------------------------------------------------------------


def test_harness_tasks_load_and_build(ml100k, ml_test):
    from llmrec.evaluation.builders import build_examples
    from llmrec.evaluation.runner import build_prompts
    from llmrec.evaluation.tasks import load_registry

    reg = load_registry()
    specs = reg.expand("uqa")
    assert len(specs) == 6 and all(s.output.type == "classify" for s in specs)
    spec = reg.tasks["uqa_recent_genre"]
    rows = build_examples(spec)
    mine = [e for e in ml_test if e.task == "recent_genre"]
    assert [(r.id, r.gold, r.input) for r in rows] == [(e.id, e.answer, e.question) for e in mine]
    text = build_prompts(spec, rows[:1], "recency", 3, None)[0].splitlines()
    assert text[1:4] == uqa_prompt(mine[0], "text", data=ml100k, max_items=3).splitlines()[1:4]
    bare = build_prompts(spec, rows[:1], "none", 0, None)[0]
    assert bare == uqa_prompt(mine[0], "none")
    with pytest.raises(ConfigError, match="dataset_args"):
        build_examples(spec.with_overrides(dataset_args={"task": "recent_genre", "window": 3}))


def test_category_line_lists_real_categories_only():
    fields = ("genres",)
    assert category_line(Item("1", "Toy Story", {"genres": ["Animation", "Children's", "Comedy"]}), fields) == \
        "Animation Children's Comedy"
    assert category_line(Item("9", "Lost film", {"genres": ["unknown"]}), fields) == "unknown"
    assert category_line(Item("10", "No genres", {}), fields) == "unknown"
    assert category_line(Item("1", "Toy Story", {"genres": ["Animation"]}), ()) == "unknown"  # no category field
