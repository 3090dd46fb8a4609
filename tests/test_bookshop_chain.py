"""A non-MovieLens dataset through the whole chain, from the command line only, as a user with their own data:

    llmrec data make-bookshop --out DIR            (a shop's export: orders.csv with ISO dates, books.jsonl)
    llmrec data info --data DIR/bookshop.yaml
    llmrec items build --data DIR/bookshop.yaml --out DIR/sids
    llmrec train genrec --config tiny/genrec --data DIR/bookshop.yaml --sids DIR/sids ...
    llmrec recommend --model DIR/genrec --user C...        (no --data: the model remembers its dataset)
    llmrec train soft-prompt --config tiny/soft-prompt --data DIR/bookshop.yaml ...
    llmrec answer --model DIR/soft --user C... "..."
    llmrec train sasrec --config tiny/sasrec --data DIR/bookshop.yaml ...
    llmrec eval run --data DIR/bookshop.yaml --tasks personal --model DIR/genrec --model sasrec:DIR/sasrec
                    --model baseline:popularity ...        (-> results.json, report.html)

with the tiny random Llama (tests/conftest.py), a few steps each. Every text the LLM is given on the way is
recorded (at the tokenizer) and must speak of books and buying, never of movies and watching.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from pathlib import Path

import pytest

from llmrec.cli import main
from llmrec.errors import ConfigError, DataError

MOVIE_WORDS = re.compile(r"\b(movies?|films?|watch(ed|es|ing)?|genres?|cinema)\b", re.IGNORECASE)


@pytest.fixture
def llm_texts(monkeypatch) -> list[str]:
    """Every text any tokenizer is asked to encode (prompts, training rows, chat messages), in order."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    seen: list[str] = []

    def record(x) -> None:
        if isinstance(x, str):
            seen.append(x)
        elif isinstance(x, dict):
            record(x.get("content"))
        elif isinstance(x, (list, tuple)):
            for y in x:
                record(y)

    def spy(name):
        real = getattr(PreTrainedTokenizerBase, name)

        def wrapper(self, *args, **kwargs):
            record(args[0] if args else kwargs.get("text", kwargs.get("conversation")))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(PreTrainedTokenizerBase, name, wrapper)

    for name in ("__call__", "encode", "apply_chat_template"):
        spy(name)
    return seen


def _cli(capsys, *argv: str) -> str:
    """Run `llmrec ARGV` in-process; its stdout (it must exit 0)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, f"llmrec {' '.join(map(str, argv))} exited {code}:\n{err[-3000:]}"
    return out


def _orders(folder: Path) -> dict[str, list[str]]:
    """The shop's own export, read without llmrec: customer -> ISBNs bought, oldest first."""
    rows: dict[str, list[tuple[dt.datetime, str]]] = {}
    with open(folder / "orders.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            when = dt.datetime.fromisoformat(row["ts"])  # ISO dates and datetimes, "Z" or an offset
            when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
            rows.setdefault(row["customer_id"], []).append((when, row["isbn"]))
    return {user: [isbn for _, isbn in sorted(bought)] for user, bought in rows.items()}


def _finite_metrics(variant: dict) -> dict[str, float]:
    values = {name: m["value"] for name, m in variant["metrics"].items()}
    assert values and all(math.isfinite(v) for v in values.values()), values
    return values


def test_bookshop_through_the_whole_chain(tmp_path, tiny_llama_dir, capsys, llm_texts):
    shop = tmp_path / "shop"
    cfg = shop / "bookshop.yaml"

    # ---- config -> statistics
    assert Path(_cli(capsys, "data", "make-bookshop", "--out", shop).strip()) == cfg
    books = {json.loads(line)["isbn"]: json.loads(line) for line in (shop / "books.jsonl").read_text().splitlines()}
    orders = _orders(shop)
    info = json.loads(_cli(capsys, "data", "info", "--data", cfg, "--json"))
    kept = {u: isbns for u, isbns in orders.items() if len(isbns) >= 5}  # the config's min_user_interactions: 5
    assert (info["name"], info["users"], info["items"]) == ("bookshop", len(kept), len(books))
    assert info["interactions"] == sum(map(len, kept.values())) and info["categories"] == 8
    assert "min_user_interactions=5" in _cli(capsys, "data", "info", "--data", cfg)  # the filter's effect, reported

    # ---- semantic IDs (small codebooks)
    built = json.loads(_cli(capsys, "items", "build", "--data", cfg, "--out", tmp_path / "sids", "--levels", "2",
                            "--codebook-size", "8", "--json"))
    assert built["items"] == len(books) and built["unique_fraction"] == 1.0

    # ---- genrec: a few steps on the built table, then recommend with nothing but --model and --user
    _cli(capsys, "train", "genrec", "--config", "tiny/genrec", "--data", cfg, "--sids", tmp_path / "sids",
         "--model.base_model", tiny_llama_dir, "--out", tmp_path / "genrec", "--train.max_steps", "2")
    run = json.loads((tmp_path / "genrec" / "run.json").read_text())
    assert run["config"]["data"] == str(cfg) and run["config"]["sids"] == str(tmp_path / "sids")
    assert run["config"]["train"]["max_steps"] == 2 and run["config"]["model"]["base_model"] == str(tiny_llama_dir)
    results = json.loads((tmp_path / "genrec" / "results.json").read_text())
    assert results["train"]["steps"] == 2 and results["semantic_ids"]["table"] == str(tmp_path / "sids")

    user = next(u for u in kept if u not in list(kept)[:30])  # a customer the tiny config did not train on
    recs = json.loads(_cli(capsys, "recommend", "--model", tmp_path / "genrec", "--user", user, "-k", "5",
                           "--json"))["recommendations"]
    assert len(recs) == 5 and len({r["item_id"] for r in recs}) == 5
    for r in recs:
        assert r["item_id"] in books and r["item_id"] not in orders[user]  # real, unbought ISBNs
        assert r["title"] == books[r["item_id"]]["title"] and math.isfinite(r["score"])
    text = _cli(capsys, "recommend", "--model", tmp_path / "genrec", "--user", user, "-k", "3")
    assert f"user {user}: last bought" in text and books[orders[user][-1]]["title"] in text

    # ---- soft-prompt QA: a few steps, then answer with nothing but --model and --user
    _cli(capsys, "train", "soft-prompt", "--config", "tiny/soft-prompt", "--data", cfg,
         "--model.base_model", tiny_llama_dir, "--out", tmp_path / "soft")
    run = json.loads((tmp_path / "soft" / "run.json").read_text())
    assert run["config"]["data"] == str(cfg) and run["recipe"] == "soft-prompt"
    soft = json.loads((tmp_path / "soft" / "results.json").read_text())
    assert soft["train"]["steps"] == 2 and soft["test_questions"] > 0
    question = "Which category has this user bought most over their whole history?"
    answer = _cli(capsys, "answer", "--model", tmp_path / "soft", "--user", user, question, "--answer-kind",
                  "category")
    assert isinstance(answer, str) and answer.endswith("\n")  # the random tiny model says anything, even nothing
    n_before = len(llm_texts)
    _cli(capsys, "answer", "--model", tmp_path / "genrec", "--user", user, question)  # from the history as text
    asked = "\n".join(llm_texts[n_before:])
    assert question in asked and books[orders[user][-1]]["title"] in asked and "bought" in asked
    _cli(capsys, "profile", "--model", tmp_path / "genrec", "--user", user)
    assert "book" in "\n".join(llm_texts[n_before:])

    # ---- eval run: the trained LLM, SASRec and popularity side by side on the same bookshop customers
    _cli(capsys, "train", "sasrec", "--config", "tiny/sasrec", "--data", cfg, "--out", tmp_path / "sasrec")
    out = tmp_path / "eval"
    models = [str(tmp_path / "genrec"), f"sasrec:{tmp_path / 'sasrec'}", "baseline:popularity"]
    summary = json.loads(_cli(capsys, "eval", "run", "--data", cfg, "--tasks", "personal",
                              *[a for m in models for a in ("--model", m)], "--baselines", "user-mean,majority",
                              "--limit", "6", "--n-boot", "20", "--dtype", "fp32", "--no-progress", "--out", out))
    assert set(summary["results"]) == {"rating", "next_category", "next_item"}
    res = json.loads((out / "results.json").read_text())
    assert res["models"] == models and res["config"]["data"] == str(cfg)
    for task in res["tasks"].values():
        assert task["n"] == 6 and task["spec"]["dataset"] == str(cfg)
        assert task["dataset"] == {"spec": str(cfg), "name": "bookshop", "users": len(kept), "items": len(books),
                                   "interactions": info["interactions"], "item_noun": "book", "items_noun": "books",
                                   "interacted": "bought", "category_fields": ["category"]}
    item = res["tasks"]["next_item"]["variants"]
    assert set(item) == {"no-profile", *models[1:]}
    for variant in item.values():
        assert set(_finite_metrics(variant)) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr",
                                                 "invalid_output_rate"}
    golds = json.loads((out / "next_item" / "golds.json").read_text())["golds"]
    for name in ("no-profile", "baseline:popularity"):
        preds = json.loads((out / "next_item" / f"{name}.predictions.json").read_text())["golds"]
        for p, g in zip(preds, golds, strict=True):
            ranked = p["output"].split()
            assert len(ranked) == 10 and set(ranked) <= set(books)
            assert not set(ranked) & (set(orders[p["id"].split(":")[0]]) - {g["output"]})  # earlier books excluded
    category = res["tasks"]["next_category"]
    assert category["spec"]["output"]["labels"] == sorted({b["category"] for b in books.values()})  # from the data
    assert {"recency@10/score", "baseline:majority"} <= set(category["variants"])
    assert all(0 <= _finite_metrics(v)["accuracy"] <= 1 for v in category["variants"].values())
    rating = res["tasks"]["rating"]
    assert rating["spec"]["output"]["range"] == [1.0, 5.0]  # the dataset's rating scale
    assert "baseline:user-mean" in rating["variants"]
    assert all(_finite_metrics(v)["mae"] <= 4 for v in rating["variants"].values())

    rescored = json.loads(_cli(capsys, "eval", "score", "--task", "next_category", "--data", cfg, "--n-boot", "0",
                               "--golds", out / "next_category" / "golds.json",
                               "--predictions", out / "next_category" / "baseline:majority.predictions.json"))
    assert rescored["metrics"]["macro_f1"]["value"] == pytest.approx(
        category["variants"]["baseline:majority"]["metrics"]["macro_f1"]["value"])  # the same 8 labels

    # ---- the HTML report (written by eval run; `llmrec eval report` rewrites it)
    html = (out / "report.html").read_text()
    assert Path(_cli(capsys, "eval", "report", out / "results.json", "--out", tmp_path / "r.html").strip()) == (
        tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text() == html
    assert "Dataset <b>bookshop</b>" in html and f"{len(books)} books" in html and "books bought" in html
    for name in [*models, "baseline:user-mean", "next_category", "recall@10", "mae"]:
        assert name in html, name

    # ---- without --data the tasks run on the dataset the model was trained on
    _cli(capsys, "eval", "run", "--tasks", "next_item", "--model", tmp_path / "genrec", "--limit", "2", "--n-boot",
         "0", "--dtype", "fp32", "--no-progress", "--no-report", "--out", tmp_path / "eval2")
    res2 = json.loads((tmp_path / "eval2" / "results.json").read_text())
    assert res2["data"] == str(tmp_path / "genrec" / "data_config.json")
    assert res2["tasks"]["next_item"]["dataset"]["name"] == "bookshop"

    # ---- every text the LLM was given speaks the bookshop's nouns
    llm = [t for t in llm_texts if "<|user|>" in t or "this user" in t.lower() or "A user" in t]
    assert llm, "no prompt reached the LLM's tokenizer"
    assert any("books" in t for t in llm) and any("bought" in t or "buy" in t for t in llm)
    leaks = [t for t in llm_texts if MOVIE_WORDS.search(t)]
    assert not leaks, f"MovieLens wording reached the model: {leaks[0]!r}"


# ---- `llmrec eval run --data`: tasks whose labels / scale come from the dataset --------------------------------


def test_interaction_tasks_take_labels_and_scale_from_the_dataset(tmp_path):
    from llmrec.data.synthetic import write_bookshop
    from llmrec.evaluation.builders import build_examples, resolve_spec
    from llmrec.evaluation.tasks import load_registry

    cfg = str(write_bookshop(tmp_path, n_users=20, n_items=40, seed=1))
    reg = load_registry()
    assert [t.task for t in reg.expand("personal")] == ["rating", "next_category", "next_item"]
    cat = resolve_spec(reg.tasks["next_category"].with_overrides(dataset=cfg))
    assert cat.output.labels == tuple(sorted({json.loads(x)["category"] for x in
                                              (tmp_path / "books.jsonl").read_text().splitlines()}))
    examples = build_examples(cat)
    assert examples and all(ex.gold in cat.output.labels for ex in examples)
    assert "Which category is the next book this user will buy?" in _prompt(cat, examples[0])
    rating = resolve_spec(reg.tasks["rating"].with_overrides(dataset=cfg))
    assert rating.output.range == (1.0, 5.0)
    assert "on a scale from 1 to 5" in _prompt(rating, build_examples(rating, 1)[0])
    # a task written for MovieLens names its labels: on the bookshop it says why they do not fit
    with pytest.raises(DataError, match="next_category takes its labels from the dataset"):
        build_examples(reg.tasks["ml100k_next_genre"].with_overrides(dataset=cfg))
    # the ml-100k defaults are unchanged: the generic tasks on ml-100k give the ml100k_* tasks' examples
    ml = resolve_spec(reg.tasks["next_category"])
    assert set(ml.output.labels) == set(reg.tasks["ml100k_next_genre"].output.labels)
    assert resolve_spec(reg.tasks["rating"]).output.range == reg.tasks["ml100k_rating"].output.range


def test_uqa_category_tasks_take_their_labels_from_the_dataset(tmp_path, capsys):
    from llmrec.evaluation.builders import build_examples, resolve_spec
    from llmrec.evaluation.tasks import load_registry

    cfg = str(write_bookshop_cli(tmp_path, capsys))
    cats = tuple(sorted({json.loads(x)["category"] for x in (tmp_path / "books.jsonl").read_text().splitlines()}))
    reg = load_registry()
    for name in ("uqa_nth_genre", "uqa_next_genre", "uqa_longterm_genre", "uqa_recent_genre"):
        spec = resolve_spec(reg.tasks[name].with_overrides(dataset=cfg))
        assert spec.output.labels == cats, name
        examples = build_examples(spec)
        assert examples and all(ex.gold in cats for ex in examples), name
        text = _prompt(spec, examples[0])
        assert f"Options: {', '.join(cats)}." in text and "Answer with only the category." in text
        assert not MOVIE_WORDS.search(text), text
    # the tasks with fixed options keep them
    assert resolve_spec(reg.tasks["uqa_interest_shift"].with_overrides(dataset=cfg)).output.labels == ("yes", "no")
    # from the command line, as the user runs it
    _cli(capsys, "eval", "run", "--data", cfg, "--tasks", "uqa", "--model", "baseline:majority", "--limit", "5",
         "--n-boot", "0", "--no-progress", "--no-report", "--out", tmp_path / "eval")
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert len(res["tasks"]) == 6 and res["tasks"]["uqa_longterm_genre"]["dataset"]["name"] == "bookshop"
    # on ml-100k the labels are the GroupLens genres in the GroupLens order, as the task files listed them
    assert resolve_spec(reg.tasks["uqa_next_genre"]).output.labels == (
        "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
        "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def write_bookshop_cli(folder: Path, capsys) -> Path:
    """``llmrec data make-bookshop --out FOLDER`` (small): the config path."""
    _cli(capsys, "data", "make-bookshop", "--out", folder, "--users", "20", "--items", "40")
    return folder / "bookshop.yaml"


def test_uqa_category_tasks_on_a_dataset_without_categories(tmp_path):
    from llmrec.evaluation.builders import resolve_spec
    from llmrec.evaluation.tasks import load_registry

    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"item": f"i{i}", "title": f"Item {i}"}) + "\n"
                                                  for i in range(6)))
    rows = [{"user": f"u{u}", "item": f"i{(u + t) % 6}", "ts": 100 * t} for u in range(3) for t in range(6)]
    (tmp_path / "ratings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.yaml").write_text("name: bare\ninteractions: ratings.jsonl\nitems: items.jsonl\n"
                                     "columns: {user_id: user, item_id: item, timestamp: ts}\ncategory: []\n")
    spec = load_registry().tasks["uqa_longterm_genre"].with_overrides(dataset=str(tmp_path / "d.yaml"))
    with pytest.raises(ConfigError, match="uqa_longterm_genre asks about item categories, but dataset .* has no "
                                          "category attribute"):
        resolve_spec(spec)


def _prompt(spec, example) -> str:
    from llmrec.evaluation.runner import build_prompts

    return build_prompts(spec, [example], "none", 0, None)[0]


def test_a_rating_scale_other_than_one_to_five_reaches_the_prompt(tmp_path):
    from llmrec.evaluation.builders import build_examples, resolve_spec
    from llmrec.evaluation.tasks import load_registry

    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"item": f"i{i}", "title": f"Item {i}"}) + "\n"
                                                  for i in range(4)))
    rows = [{"user": f"u{u}", "item": f"i{(u + t) % 4}", "ts": 100 * t, "stars": [0.5, 5.0, 2.5, 4.0][(u + t) % 4]}
            for u in range(3) for t in range(4)]
    (tmp_path / "ratings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.yaml").write_text("name: tenpoint\ninteractions: ratings.jsonl\nitems: items.jsonl\n"
                                     "columns: {user_id: user, item_id: item, timestamp: ts, rating: stars}\n"
                                     "category: []\n")
    spec = resolve_spec(load_registry().tasks["rating"].with_overrides(dataset=str(tmp_path / "d.yaml")))
    assert spec.output.range == (0.5, 5.0)  # no rating_range in the config: the lowest and highest rating held
    assert "on a scale from 0.5 to 5?" in _prompt(spec, build_examples(spec, 1)[0])
    # no categories: next_category says so instead of inventing labels
    with pytest.raises(ConfigError, match="no category attribute"):
        resolve_spec(load_registry().tasks["next_category"].with_overrides(dataset=str(tmp_path / "d.yaml")))


def test_empty_labels_are_an_error_where_no_dataset_can_fill_them(tmp_path):
    from llmrec.evaluation.builders import resolve_spec
    from llmrec.evaluation.tasks import load_registry

    (tmp_path / "t.yaml").write_text("task: mine\ndataset: none\nbuilder: lamp\nprompt: prompts/lamp_2.jinja\n"
                                     "output: {type: classify}\nmetrics: [accuracy]\n")
    spec = load_registry([tmp_path]).tasks["mine"]
    with pytest.raises(ConfigError, match="output.labels is empty and builder 'lamp' cannot"):
        resolve_spec(spec)


def test_a_model_directory_names_the_dataset_to_evaluate_on(tmp_path, ml100k):
    from llmrec.data import load_dataset
    from llmrec.data.synthetic import write_bookshop
    from llmrec.lm.model_dir import dataset_record, recorded_dataset_spec, write_model_manifest

    write_model_manifest(tmp_path / "ml", dtype="fp32", parts=[], dataset=dataset_record(ml100k))
    assert recorded_dataset_spec(tmp_path / "ml") == "ml-100k"  # the built-in by name, portable
    shop = load_dataset(write_bookshop(tmp_path / "shop", n_users=10, n_items=20))
    write_model_manifest(tmp_path / "shop-model", dtype="fp32", parts=[], dataset=dataset_record(shop))
    spec = recorded_dataset_spec(tmp_path / "shop-model")
    assert spec == str(tmp_path / "shop-model" / "data_config.json") and load_dataset(spec).name == "bookshop"
    write_model_manifest(tmp_path / "none", dtype="fp32", parts=[], dataset=None)
    assert recorded_dataset_spec(tmp_path / "none") is None and recorded_dataset_spec(tmp_path) is None


def test_popularity_counts_every_example_not_only_the_evaluated(tmp_path):
    from llmrec.evaluation.builders import Example
    from llmrec.evaluation.models import Baseline
    from llmrec.evaluation.tasks import load_registry

    spec = load_registry().tasks["next_item"]
    pool = [Example(id=f"u{n}", user_id=f"u{n}", input="", gold="z", profile=[], docs=[], query="", history=h)
            for n, h in enumerate([("a", "b"), ("b", "c"), ("b", "c", "d"), ("c", "e")])]
    pop = Baseline("popularity")
    assert pop.predict(spec, pool[:1]) == [""]  # alone, the evaluated user's own books are all there is
    pop.fit(spec, pool)
    assert pop.fitted_on == 4 and pop.predict(spec, pool[:1]) == ["c d e"]  # c: 3 customers, then d, e
    assert pop.predict(load_registry().tasks["ml100k_next_item"], pool[:1]) == [""]  # fitted for another task
    mean = Baseline("global-mean")  # the means keep the evaluated profiles (the committed harness figures)
    mean.fit(spec, pool)
    assert mean.fitted_on is None
