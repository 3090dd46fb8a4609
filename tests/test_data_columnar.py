"""The columnar data layer: the vectorised readers agree with the record-by-record path (data and errors:
same message, file, record, field), ties keep file order, splits as index arrays equal the Python-object
splits, and ml-100k histories and leave-one-out are the same as a reference implementation kept here."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import GENERIC_INTERACTIONS, GENERIC_ITEMS, write_records

import llmrec.data.generic as generic
import llmrec.data.movielens as movielens
from llmrec.data import DatasetConfig, Interaction, InteractionData, Item, load_dataset, load_generic
from llmrec.data.columnar import InteractionTable
from llmrec.data.splits import by_time, leave_one_out
from llmrec.errors import DataError

SUFFIXES = ["jsonl", "csv", "tsv", "parquet"]
BASE = [dict(r) for r in GENERIC_INTERACTIONS]


def _outcome(load) -> tuple:
    try:
        data = load()
    except DataError as exc:
        return ("error", str(exc), exc.path, exc.record, exc.field)
    return ("ok", data.histories(), list(data.interactions), data.filter_report, data.user_ids)


def _both(monkeypatch, load) -> tuple[tuple, list[bool]]:
    """(outcome, fast path results) after checking the fast and the row path give the same outcome."""
    taken: list[bool] = []
    fast = generic._fast_interactions

    def spy(*args):
        try:
            out = fast(*args)
        except DataError:
            taken.append(True)  # raised by the fast path's own check of the flagged record
            raise
        taken.append(out)
        return out

    with monkeypatch.context() as m:
        m.setattr(generic, "_fast_interactions", spy)
        got = _outcome(load)
    with monkeypatch.context() as m:
        m.setattr(generic, "_fast_interactions", lambda *a: False)
        want = _outcome(load)
    assert got == want
    return got, taken


def _write(tmp_path: Path, suffix: str, records: list[dict[str, Any]]) -> Path:
    if suffix in ("csv", "tsv"):  # every value is text in a delimited file; None -> empty cell
        records = [{k: "" if v is None else v for k, v in r.items()} for r in records]
    try:
        return write_records(tmp_path / f"interactions.{suffix}", records)
    except (pa.ArrowException, TypeError):
        pytest.skip(f"pyarrow cannot write these values to {suffix}")


CASES = [
    ({}, None),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": "2023-04-05T08:11:12+02:00"}, None),
    ({"timestamp": "2023-04-05"}, None),
    ({"timestamp": 1_700_000_000_123}, None),  # milliseconds
    ({"timestamp": 17.9}, None),
    ({"timestamp": True}, "timestamp"),
    ({"timestamp": None}, "timestamp"),
    ({"rating": "five"}, "rating"),
    ({"rating": "nan"}, "rating"),
    ({"rating": 7}, "rating"),
    ({"rating": None}, None),
    ({"rating": False}, "rating"),
    ({"user_id": None}, "user_id"),
    ({"user_id": "  "}, "user_id"),
    ({"user_id": 42}, None),
    ({"item_id": "zzz"}, "item_id"),
    ({"item_id": 1.5}, "item_id"),
    ({"item_id": None}, "item_id"),
    ({"text": {"body": "hi"}}, "text"),
    ({"item_id": "zzz", "timestamp": "yesterday"}, "timestamp"),  # the row path's order within a record
]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("change, field", CASES)
def test_fast_path_matches_row_path(tmp_path, monkeypatch, suffix, change, field):
    items = write_records(tmp_path / "items.jsonl", GENERIC_ITEMS)
    records = [BASE[0], BASE[1], BASE[2] | change, BASE[3] | {"timestamp": "bad"}]  # a later error too
    if field is None:
        records[3] = BASE[3]
    inter = _write(tmp_path, suffix, records)
    out, taken = _both(monkeypatch, lambda: load_generic(items, inter, rating_range=(1, 5)))
    labels = {"parquet": ("row 2", "row 3"), "jsonl": ("line 3", "line 4")}.get(suffix, ("line 4", "line 5"))
    if field is None:
        assert out[0] == "ok", out
    elif suffix in ("csv", "tsv") and out[3] == labels[1]:  # the bad value was only bad as a JSON type
        assert out[4] == "timestamp" and not isinstance(next(iter(change.values())), str)
    else:
        assert out[0] == "error" and out[2] == str(inter) and out[4] == field and out[3] == labels[0], out
    if suffix in ("csv", "tsv") or (suffix == "parquet" and change == {}):
        assert taken == [True]  # text columns never need the row path


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_fast_path_blank_lines_drop_incomplete_and_missing_columns(tmp_path, monkeypatch, suffix):
    items = write_records(tmp_path / "items.jsonl", GENERIC_ITEMS)
    inter = _write(tmp_path, suffix, [BASE[0], BASE[1] | {"item_id": "zzz", "timestamp": "bad"}, BASE[2], BASE[3]])
    cfg = DatasetConfig(items=str(items), interactions=str(inter), drop_incomplete=True)
    out, taken = _both(monkeypatch, lambda: load_dataset(cfg))
    assert out[0] == "ok" and out[3]["drop_incomplete"] == {"untitled_items": 0, "unknown_item_interactions": 1}
    assert taken == [suffix != "jsonl"]  # JSON with numbers and text in one column: pyarrow hands it back
    if suffix != "parquet":  # blank lines count in the row path's line numbers
        text = inter.read_text().splitlines()
        inter.write_text("\n".join(text[:1] + [""] + text[1:]) + "\n")
        bad = DatasetConfig(items=str(items), interactions=str(inter))
        out, _ = _both(monkeypatch, lambda: load_dataset(bad))
        assert out[0] == "error" and out[3] == ("line 3" if suffix == "jsonl" else "line 4")
    inter = _write(tmp_path, suffix, BASE)
    renamed = DatasetConfig(items=str(items), interactions=str(inter), columns={"rating": "stars"})
    out, _ = _both(monkeypatch, lambda: load_dataset(renamed))
    assert out[0] == "error" and out[4] == "stars"


def test_ties_keep_file_order_and_users_first_appearance(tmp_path, monkeypatch):
    items = write_records(tmp_path / "items.jsonl", GENERIC_ITEMS)
    rows = [{"user_id": "u2", "item_id": "c", "timestamp": 5}, {"user_id": "u1", "item_id": "b", "timestamp": 7},
            {"user_id": "u1", "item_id": "a", "timestamp": 7}, {"user_id": "u1", "item_id": "c", "timestamp": 3},
            {"user_id": "u1", "item_id": "b", "timestamp": 7}]
    for suffix in SUFFIXES:
        inter = _write(tmp_path, suffix, rows)
        out, taken = _both(monkeypatch, lambda inter=inter: load_generic(items, inter))
        assert taken == [True]
        histories = out[1]
        assert list(histories) == ["u2", "u1"]
        assert histories["u1"].item_ids == ("c", "b", "a", "b") and histories["u1"].timestamps == (3, 7, 7, 7)
        assert [x.item_id for x in out[2]] == ["c", "b", "a", "c", "b"]  # data.interactions: file order
    table = load_generic(items, inter).table
    assert table.offsets.tolist() == [0, 1, 5] and table.row.tolist() == [0, 3, 1, 2, 4]
    assert table.user.dtype == np.int32 and table.item.dtype == np.int32 and table.timestamp.dtype == np.int64


def test_to_hf_columns(tmp_path):
    items = write_records(tmp_path / "items.jsonl", GENERIC_ITEMS)
    data = load_generic(items, write_records(tmp_path / "i.parquet", BASE[:3] + [BASE[3] | {"rating": None}]))
    inter = data.to_hf()
    assert inter.column_names == ["user_id", "item_id", "timestamp", "rating", "text"]
    assert inter["item_id"] == ["b", "a", "c", "c"] and inter["rating"] == [4.5, 3.0, 1.0, None]
    assert inter["text"] == ["lovely", "", "long", "great"]
    hist = data.to_hf("histories")
    assert hist["user_id"] == ["u1", "u2"] and hist[0]["item_ids"] == ["a", "b", "c"]
    assert hist[0]["ratings"] == [3.0, 4.5, None] and hist[1]["timestamps"] == [5]
    assert hist.features["timestamps"].feature.dtype == "int64"


def test_hand_built_lists_and_filters_use_the_same_columns():
    items = {i: Item(i, i.upper()) for i in "abc"}
    inter = [Interaction("u1", "b", 2, 4.0), Interaction("u2", "a", 1), Interaction("u1", "a", 1, 3.5),
             Interaction("u3", "zz", 0)]
    data = InteractionData("hand", items, inter)
    assert data.user_ids == ["u1", "u2", "u3"] and data.histories()["u1"].item_ids == ("a", "b")
    assert data.histories()["u1"].ratings == (3.5, 4.0) and data.histories()["u2"].ratings == (None,)
    assert data.table.rating.dtype == np.float32  # exact in float32; 0.1 would keep float64
    assert InteractionData("x", items, [Interaction("u", "a", 0, 0.1)]).table.rating.dtype == np.float64
    table = InteractionTable.from_interactions(inter, list(items))
    assert [table[k] for k in range(4)] == inter and list(table) == inter and table[1:3] == inter[1:3]


# ---------------------------------------------------------------- ml-100k: the old implementation, kept here


def _reference_interactions(folder: Path) -> list[tuple[str, str, int, float]]:
    with open(folder / "ml-100k.inter", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    header = [h.split(":")[0] for h in rows[0]]
    out = []
    for row in rows[1:]:
        rec = dict(zip(header, row, strict=True))
        out.append((rec["user_id"].strip(), rec["item_id"].strip(), int(float(rec["timestamp"])), float(rec["rating"])))
    return out


def _reference_histories(rows) -> dict[str, tuple[tuple, tuple, tuple]]:
    """Per user (first appearance order): sort by (timestamp, file order), as the object layer did."""
    per_user: dict[str, list] = {}
    for order, (u, i, t, r) in enumerate(rows):
        per_user.setdefault(u, []).append((t, order, i, r))
    out = {}
    for u, xs in per_user.items():
        xs.sort(key=lambda x: (x[0], x[1]))
        out[u] = (tuple(x[2] for x in xs), tuple(x[0] for x in xs), tuple(x[3] for x in xs))
    return out


def test_ml100k_histories_and_splits_match_the_reference(ml100k):
    from llmrec.resources import movielens_100k_dir

    ref = _reference_histories(_reference_interactions(Path(movielens_100k_dir())))
    hist = ml100k.histories()
    assert list(hist) == list(ref)
    for u, (items, stamps, ratings) in ref.items():
        assert (hist[u].item_ids, hist[u].timestamps, hist[u].ratings) == (items, stamps, ratings)
    # Leave-one-out: last item test, second-to-last validation, for every user (all have >= 20 ratings).
    index = ml100k.split_index("leave_one_out")
    table = ml100k.table
    users = table.user_id_list()
    items = table.item_id_list()
    assert len(index.test) == len(ref) == 943 and not len(index.too_short)
    for k, (u, (ref_items, _, _)) in enumerate(ref.items()):
        assert users[table.user[index.test[k]]] == u and items[table.item[index.test[k]]] == ref_items[-1]
        assert items[table.item[index.valid[k]]] == ref_items[-2]
        assert index.train_end[k] - table.offsets[k] == len(ref_items) - 2
    split = index.to_split(table, hist)
    old = leave_one_out(hist)
    assert split == old
    assert ml100k.split_index("by_time").to_split(table, hist) == by_time(hist)
    assert ml100k.split_index("by_time", valid_fraction=0.0, test_fraction=0.3).to_split(table) == by_time(
        hist, valid_fraction=0.0, test_fraction=0.3)


def _ml_both(monkeypatch, folder: Path) -> tuple[tuple, list[bool]]:
    taken: list[bool] = []
    fast = movielens._fast_ml_interactions

    def spy(*args, **kw):
        try:
            out = fast(*args, **kw)
        except DataError:
            taken.append(True)
            raise
        taken.append(out)
        return out

    with monkeypatch.context() as m:
        m.setattr(movielens, "_fast_ml_interactions", spy)
        got = _outcome(lambda: load_dataset(str(folder)))
    with monkeypatch.context() as m:
        m.setattr(movielens, "_fast_ml_interactions", lambda *a, **k: False)
        want = _outcome(lambda: load_dataset(str(folder)))
    assert got == want
    return got, taken


@pytest.mark.parametrize("bad", [None, "1\t999\t3\t5", "1\t1\t9\t5", "1\t1\t3\t5.5", "1\t1\t\t5", " \t1\t3\t5"])
def test_movielens_fast_path_matches_row_path(ml_folder, tmp_path, monkeypatch, bad):
    from format_files import ML_LATEST_RATINGS, write_ml_latest

    folders = [ml_folder("grouplens"), ml_folder("recbole"), write_ml_latest(tmp_path / "ml-latest-small")]
    if bad is not None:  # a bad record third from the end, a good one after it
        for folder, name, sep in ((folders[0], "u.data", "\t"), (folders[1], "ml-recbole.inter", "\t"),
                                  (folders[2], "ratings.csv", ",")):
            path = next(folder.glob("*.inter")) if name.endswith(".inter") else folder / name
            lines = path.read_text().splitlines()
            path.write_text("\n".join(lines[:-1] + [bad.replace("\t", sep), lines[-1]]) + "\n")
    for folder in folders:
        out, taken = _ml_both(monkeypatch, folder)
        assert taken == [True] and out[0] == ("ok" if bad is None else "error"), out
    assert len(ML_LATEST_RATINGS) > 2


def test_ml100k_loads_through_the_fast_path(monkeypatch):
    calls: list[bool] = []
    fast = movielens._fast_ml_interactions
    monkeypatch.setattr(movielens, "_fast_ml_interactions", lambda *a, **k: calls.append(fast(*a, **k)) or calls[-1])
    assert len(load_dataset("ml-100k").interactions) == 100_000 and calls == [True]


def test_dataset_info_from_columns_matches_objects(ml100k):
    from llmrec.data.stats import dataset_info

    info = dataset_info(ml100k)
    xs = list(ml100k.interactions)
    ratings = [x.rating for x in xs if x.rating is not None]
    assert info["interactions"] == len(xs) == 100_000 and info["users"] == 943
    assert info["items_without_interactions"] == len(ml100k.items) - len({x.item_id for x in xs})
    assert info["repeat_interactions"] == len(xs) - len({(x.user_id, x.item_id) for x in xs})
    assert info["time_span"] == [min(x.timestamp for x in xs), max(x.timestamp for x in xs)]
    assert info["ratings"]["mean"] == float(np.mean(ratings)) and info["ratings"]["count"] == len(ratings)
    lengths = [len(h) for h in ml100k.histories().values()]
    assert info["history_length"]["p50"] == float(np.percentile(lengths, 50))


@pytest.mark.parametrize("name", ["reviews.jsonl", "reviews.jsonl.gz"])
def test_amazon2023_reviews_take_the_fast_path(tmp_path, monkeypatch, name):
    from format_files import AMAZON_2023_META, AMAZON_2023_REVIEWS, write_json_lines

    reviews = write_json_lines(tmp_path / name, AMAZON_2023_REVIEWS)
    meta = write_json_lines(tmp_path / "meta.jsonl", AMAZON_2023_META)
    cfg = DatasetConfig(format="amazon2023", interactions=str(reviews), items=str(meta))
    out, taken = _both(monkeypatch, lambda: load_dataset(cfg))
    assert out[0] == "ok" and taken == [True]
    assert out[1]["AGKHLEW2SOWHNMFQIJGBECAF7INQ"].timestamps == (1588615855, 1588687728)  # milliseconds


def test_recipe_user_subset_is_the_first_users(ml100k):
    from llmrec.recipes.common import subset_users

    sub = subset_users(ml100k, 5)
    full = ml100k.histories()
    assert sub.histories() == {u: full[u] for u in list(full)[:5]}
    assert list(sub.interactions) == [x for x in ml100k.interactions if x.user_id in sub.histories()]
