"""Generic catalogues + interactions (JSONL / JSON / CSV / TSV / Parquet), LaMP files and the HF export."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from helpers import GENERIC_INTERACTIONS, LAMP_QUESTIONS, write_records

from llmrec.data import load_generic, load_lamp_outputs, load_lamp_questions
from llmrec.data.lamp import lamp_outputs_json, normalize_task
from llmrec.data.schema import Item


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_generic_formats_agree(generic_files, fmt):
    items_path, inter_path = generic_files(fmt)
    data = load_generic(items_path, inter_path, rating_range=(1, 5))
    assert data.name == "interactions"
    assert list(data.items) == ["a", "b", "c"]
    assert data.items["b"].title == "Emma"
    assert data.items["b"].attributes == {"author": "Austen"}
    assert len(data.interactions) == len(GENERIC_INTERACTIONS)
    h = data.histories()
    assert list(h) == ["u1", "u2"]
    assert h["u1"].item_ids == ("a", "b", "c")
    assert h["u1"].timestamps == (10, 20, 30)
    assert h["u1"].ratings == (3.0, 4.5, 5.0)
    texts = {x.item_id: x.text for x in data.interactions if x.user_id == "u1"}
    assert texts["b"] == "lovely"
    assert texts["a"] in ("", None)  # an empty cell in CSV, an empty string in JSON


def test_generic_column_mapping_and_optional_fields(tmp_path):
    items = write_records(tmp_path / "books.csv", [{"isbn": "1", "name": "Dune"}, {"isbn": "2", "name": "Emma"}])
    inter = write_records(tmp_path / "reads.jsonl", [
        {"reader": "r1", "isbn": "2", "when": 7},
        {"reader": "r1", "isbn": "1", "when": 3},
    ])
    data = load_generic(items, inter, name="books",
                        columns={"item_id": "isbn", "title": "name", "user_id": "reader", "timestamp": "when"})
    assert data.name == "books"
    assert data.items["1"] == Item("1", "Dune", {})
    assert data.histories()["r1"].item_ids == ("1", "2")
    assert data.histories()["r1"].ratings == (None, None)


def test_generic_parquet_timestamp_column(tmp_path):
    items = write_records(tmp_path / "items.parquet", [{"item_id": "a", "title": "Dune"}])
    when = dt.datetime(2024, 1, 2, 3, 4, 5)
    inter = write_records(tmp_path / "inter.parquet", [{"user_id": "u", "item_id": "a", "timestamp": when}])
    data = load_generic(items, inter)
    assert data.interactions[0].timestamp == int(when.replace(tzinfo=dt.timezone.utc).timestamp())


def test_generic_to_hf(generic_files):
    data = load_generic(*generic_files("jsonl"))
    inter = data.to_hf()
    assert inter.num_rows == 4
    assert inter.column_names == ["user_id", "item_id", "timestamp", "rating", "text"]
    assert inter[0] == {"user_id": "u1", "item_id": "b", "timestamp": 20, "rating": 4.5, "text": "lovely"}
    items = data.to_hf("items")
    assert items["item_id"] == ["a", "b", "c"]
    assert json.loads(items[0]["attributes"]) == {"author": "Herbert"}
    hist = data.to_hf("histories")
    assert hist[0] == {"user_id": "u1", "item_ids": ["a", "b", "c"], "timestamps": [10, 20, 30],
                       "ratings": [3.0, 4.5, 5.0]}
    with pytest.raises(ValueError, match="what must be"):
        data.to_hf("users")


def test_ml100k_to_hf(ml100k):
    ds = ml100k.to_hf("histories")
    assert ds.num_rows == 943
    assert sum(len(x) for x in ds["item_ids"]) == 100_000


def test_item_text():
    item = Item("1", "Heat", {"year": "1995", "genres": ["Action", "Crime"], "empty": []})
    assert item.text() == "Heat"
    assert item.text(("title", "year", "genres", "empty", "missing")) == "Heat | 1995 | Action, Crime"


def test_lamp_questions_and_outputs(lamp_files):
    q_path, o_path = lamp_files()
    questions = load_lamp_questions(q_path, task="LaMP_3")
    assert [q.id for q in questions] == ["310", "311", "312"]
    assert questions[0].input == LAMP_QUESTIONS[0]["input"]
    assert questions[0].profile[0] == {"id": "3100", "text": "Loved it", "score": "5", "date": "2015-01-01"}
    assert questions[2].profile == ()
    outs = load_lamp_outputs(o_path, task="lamp-3")
    assert outs.task == "LaMP_3"
    assert outs.golds == {"310": "3", "311": "1", "312": "5"}
    assert lamp_outputs_json("3", outs.golds) == json.loads(o_path.read_text())


def test_lamp_numeric_ids_and_outputs_become_strings(lamp_files):
    q_path, o_path = lamp_files(
        questions=[{"id": 7, "input": "x", "profile": [{"id": 1, "text": "t", "title": "h"}]}],
        outputs={"task": "LaMP_6", "golds": [{"id": 7, "output": 4}]},
    )
    assert load_lamp_questions(q_path, "LaMP_6")[0].id == "7"
    assert load_lamp_outputs(o_path).golds == {"7": "4"}


@pytest.mark.parametrize("raw, expected", [("LaMP_3", "LaMP_3"), ("lamp_7", "LaMP_7"), ("LaMP-1", "LaMP_1"),
                                           ("2", "LaMP_2"), (5, "LaMP_5")])
def test_normalize_task(raw, expected):
    assert normalize_task(raw) == expected
