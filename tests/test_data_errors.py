"""Every bad-input case: a DataError whose message names the file, and the record and field where one applies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import GENERIC_INTERACTIONS, GENERIC_ITEMS, LAMP_OUTPUTS, LAMP_QUESTIONS, write_records

from llmrec.data import load_generic, load_lamp_outputs, load_lamp_questions, load_movielens
from llmrec.errors import DataError

HTML = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>\n"


def assert_names(err: pytest.ExceptionInfo, path: Path, record: Any = None, field: str | None = None) -> str:
    """The one-line message names the file, the record and the field (and the attributes agree)."""
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and err.value.path == str(path)
    if record is not None:
        assert f"record {record}" in msg and err.value.record == record
    if field is not None:
        assert f"field '{field}'" in msg and err.value.field == field
    return msg


def _items(tmp_path: Path, records=GENERIC_ITEMS, suffix: str = "jsonl") -> Path:
    return write_records(tmp_path / f"items.{suffix}", records)


def _inter(tmp_path: Path, records=GENERIC_INTERACTIONS, suffix: str = "jsonl") -> Path:
    return write_records(tmp_path / f"interactions.{suffix}", records)


# ---------------------------------------------------------------- file-level problems


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "tsv"])
def test_html_page_instead_of_data(tmp_path, suffix):
    bad = tmp_path / f"items.{suffix}"
    bad.write_text(HTML)
    with pytest.raises(DataError, match="HTML page") as err:
        load_generic(bad, _inter(tmp_path))
    assert_names(err, bad)


def test_html_page_with_xml_prolog_and_for_lamp(tmp_path):
    bad = tmp_path / "questions.json"
    bad.write_text('<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body>404</body></html>')
    with pytest.raises(DataError, match="HTML page") as err:
        load_lamp_questions(bad)
    assert_names(err, bad)


def test_html_page_in_movielens_folder(ml_folder):
    folder = ml_folder("recbole")
    (folder / "ml-100k.inter").write_text(HTML)
    with pytest.raises(DataError, match="HTML page") as err:
        load_movielens(folder)
    assert_names(err, folder / "ml-100k.inter")


@pytest.mark.parametrize("content", [b"", b"  \n\n \t\n"])
@pytest.mark.parametrize("name", ["items.jsonl", "questions.json", "outputs.json"])
def test_empty_files(tmp_path, name, content):
    bad = tmp_path / name
    bad.write_bytes(content)
    load = {"items.jsonl": lambda p: load_generic(p, _inter(tmp_path)),
            "questions.json": load_lamp_questions, "outputs.json": load_lamp_outputs}[name]
    with pytest.raises(DataError, match="file is empty") as err:
        load(bad)
    assert_names(err, bad)


def test_empty_csv_and_u_data(tmp_path, ml_folder):
    csv_path = tmp_path / "items.csv"
    csv_path.write_text("")
    with pytest.raises(DataError, match="file is empty") as err:
        load_generic(csv_path, _inter(tmp_path))
    assert_names(err, csv_path)
    folder = ml_folder("grouplens")
    (folder / "u.data").write_bytes(b"")
    with pytest.raises(DataError, match="file is empty") as err:
        load_movielens(folder)
    assert_names(err, folder / "u.data")


def test_header_only_csv_has_no_records(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n")
    with pytest.raises(DataError, match="no records") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items)
    jsonl = tmp_path / "inter.jsonl"
    jsonl.write_text("\n\n\n")  # blank lines only
    with pytest.raises(DataError, match="file is empty"):
        load_generic(_items(tmp_path), jsonl)


def test_empty_json_list(tmp_path):
    items = tmp_path / "items.json"
    items.write_text("[]")
    with pytest.raises(DataError, match="no records") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items)
    q = tmp_path / "q.json"
    q.write_text("[]")
    with pytest.raises(DataError, match="no questions") as err:
        load_lamp_questions(q)
    assert_names(err, q)


def test_empty_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": pa.array([], pa.string()), "title": pa.array([], pa.string())}), items)
    with pytest.raises(DataError, match="file is empty") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items)


def test_corrupt_parquet(tmp_path):
    items = tmp_path / "items.parquet"
    items.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataError, match="not a readable Parquet file") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items)


def test_invalid_utf8(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"item_id": "a", "title": "Dune"}\n{"item_id": "b", "title": "Caf\xe9"}\n')
    with pytest.raises(DataError, match=r"not valid utf-8 at byte \d+ \(line 2\)") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items)
    csv_path = tmp_path / "inter.csv"
    csv_path.write_bytes(b"user_id,item_id,timestamp\nu\xff,a,1\n")
    with pytest.raises(DataError, match="not valid utf-8") as err:
        load_generic(_items(tmp_path), csv_path)
    assert_names(err, csv_path)
    q = tmp_path / "q.json"
    q.write_bytes(b'[{"id": "1", "input": "\xc3\x28", "profile": []}]')
    with pytest.raises(DataError, match="not valid utf-8") as err:
        load_lamp_questions(q)
    assert_names(err, q)


def test_invalid_utf8_in_recbole_files(ml_folder):
    folder = ml_folder("recbole")
    item = folder / "ml-100k.item"
    item.write_bytes(item.read_bytes().replace("Misérables".encode(), "Misérables".encode("latin-1")))
    with pytest.raises(DataError, match=r"not valid utf-8 .*line 4") as err:
        load_movielens(folder)
    assert_names(err, item)


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(DataError, match="file not found") as err:
        load_generic(tmp_path / "nope.jsonl", _inter(tmp_path))
    assert_names(err, tmp_path / "nope.jsonl")
    xls = tmp_path / "items.xlsx"
    xls.write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported file type") as err:
        load_generic(xls, _inter(tmp_path))
    assert_names(err, xls)


# ---------------------------------------------------------------- malformed records


@pytest.mark.parametrize("line, what", [("[1, 2]", "got list"), ('"just text"', "got str"), ("42", "got int"),
                                        ('{"item_id": "x", ', "invalid JSON")])
def test_jsonl_line_not_an_object(tmp_path, line, what):
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "a", "title": "Dune"}\n\n' + line + "\n")
    with pytest.raises(DataError, match=what) as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items, record="line 3")


def test_json_records_not_objects(tmp_path):
    items = tmp_path / "items.json"
    items.write_text('[{"item_id": "a", "title": "Dune"}, ["b", "Emma"]]')
    with pytest.raises(DataError, match="expected a JSON object, got list") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items, record=1)
    items.write_text('{\n  "item_id": "a",\n  "title": "Dune"\n}')  # one line would be JSON lines
    with pytest.raises(DataError, match="expected a JSON list of records, got dict") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items)
    items.write_text("{'item_id': 'a'}")
    with pytest.raises(DataError, match="invalid JSON at line 1") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items)


def test_csv_wrong_column_count_and_duplicate_header(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\na,Dune\nb,Emma,extra\n")
    with pytest.raises(DataError, match=r"expected 2 columns \(item_id, title\), found 3") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items, record="line 3")
    tsv = tmp_path / "inter.tsv"
    tsv.write_text("user_id\titem_id\ttimestamp\nu1\ta\n")
    with pytest.raises(DataError, match="found 2") as err:
        load_generic(_items(tmp_path), tsv)
    assert_names(err, tsv, record="line 2")
    items.write_text("item_id,title,title\na,Dune,Dune2\n")
    with pytest.raises(DataError, match="duplicate column") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items, record="header")


@pytest.mark.parametrize("record, field", [
    ({"title": "Dune"}, "item_id"),
    ({"item_id": "a"}, "title"),
    ({"item_id": "a", "title": "   "}, "title"),
    ({"item_id": "", "title": "Dune"}, "item_id"),
])
def test_item_missing_required_field(tmp_path, record, field):
    items = _items(tmp_path, [GENERIC_ITEMS[1], record])
    with pytest.raises(DataError, match="missing required field|has no title") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items, record="line 2", field=field)


@pytest.mark.parametrize("drop", ["user_id", "item_id", "timestamp"])
def test_interaction_missing_required_field(tmp_path, drop):
    rec = {k: v for k, v in GENERIC_INTERACTIONS[0].items() if k != drop}
    inter = _inter(tmp_path, [GENERIC_INTERACTIONS[1], rec], suffix="csv" if drop == "timestamp" else "jsonl")
    with pytest.raises(DataError, match="missing required field") as err:
        load_generic(_items(tmp_path), inter)
    assert_names(err, inter, record="line 3" if inter.suffix == ".csv" else "line 2", field=drop)


@pytest.mark.parametrize("change, field, message", [
    ({"timestamp": "yesterday"}, "timestamp", "'yesterday' is not an ISO-8601 date or datetime"),
    ({"timestamp": "12:30"}, "timestamp", "'12:30' is not an ISO-8601 date or datetime"),
    ({"timestamp": [12]}, "timestamp", "expected an ISO-8601 date or datetime, got "),
    ({"timestamp": True}, "timestamp", "got a boolean"),
    ({"rating": "five"}, "rating", "expected a number, got 'five'"),
    ({"rating": "nan"}, "rating", "finite number"),
    ({"rating": False}, "rating", "got a boolean"),
    ({"user_id": ["u1"]}, "user_id", "expected a string or integer id, got list"),
    ({"item_id": 1.5}, "item_id", "expected a string or integer id, got float"),
    ({"text": {"body": "hi"}}, "text", "expected text, got dict"),
])
def test_interaction_wrong_types(tmp_path, change, field, message):
    inter = _inter(tmp_path, [GENERIC_INTERACTIONS[0], GENERIC_INTERACTIONS[1] | change])
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_generic(_items(tmp_path), inter, rating_range=(1, 5))
    assert_names(err, inter, record="line 2", field=field)


def test_item_wrong_types(tmp_path):
    items = _items(tmp_path, [{"item_id": "a", "title": 1984}])
    with pytest.raises(DataError, match="expected text, got int") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items, record="line 1", field="title")
    items = _items(tmp_path, [{"item_id": {"id": 1}, "title": "x"}], suffix="json")
    with pytest.raises(DataError, match="got dict") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items, record="index 0", field="item_id")


def test_duplicate_item_id(tmp_path):
    items = _items(tmp_path, [*GENERIC_ITEMS, {"item_id": "b", "title": "Emma again"}], suffix="csv")
    with pytest.raises(DataError, match=r"duplicate item id 'b' \(first seen at line 3\)") as err:
        load_generic(items, _inter(tmp_path))
    assert_names(err, items, record="line 5", field="item_id")


def test_rating_out_of_range(tmp_path):
    inter = _inter(tmp_path, [GENERIC_INTERACTIONS[0] | {"rating": 7}], suffix="parquet")
    with pytest.raises(DataError, match=r"rating 7 outside \[1, 5\]") as err:
        load_generic(_items(tmp_path), inter, rating_range=(1, 5))
    assert_names(err, inter, record="row 0", field="rating")
    assert load_generic(_items(tmp_path), inter).interactions[0].rating == 7.0  # no range given: any number


def test_unknown_item(tmp_path):
    inter = _inter(tmp_path, [GENERIC_INTERACTIONS[0], GENERIC_INTERACTIONS[1] | {"item_id": "zzz"}], suffix="tsv")
    with pytest.raises(DataError, match="unknown item 'zzz'") as err:
        load_generic(_items(tmp_path), inter)
    assert_names(err, inter, record="line 3", field="item_id")


# ---------------------------------------------------------------- MovieLens-specific


def test_movielens_rating_out_of_range_and_unknown_item(ml_folder):
    folder = ml_folder("grouplens", ratings=[("1", "1", 3, 10), ("1", "2", 6, 11)])
    with pytest.raises(DataError, match=r"rating 6 outside \[1, 5\]") as err:
        load_movielens(folder)
    assert_names(err, folder / "u.data", record="line 2", field="rating")
    folder = ml_folder("recbole", ratings=[("1", "1", 3, 10), ("1", "99", 4, 11)])
    with pytest.raises(DataError, match="unknown item '99'") as err:
        load_movielens(folder)
    assert_names(err, folder / "ml-100k.inter", record="line 3", field="item_id")


def test_movielens_duplicate_ids(ml_folder):
    from helpers import ML_ITEMS, ML_USERS

    folder = ml_folder("grouplens", items=[*ML_ITEMS, ML_ITEMS[0]])
    with pytest.raises(DataError, match="duplicate item id '1'") as err:
        load_movielens(folder)
    assert_names(err, folder / "u.item", record="line 6", field="item_id")
    folder = ml_folder("recbole", users=[*ML_USERS, ML_USERS[1]])
    with pytest.raises(DataError, match="duplicate user id '20'") as err:
        load_movielens(folder)
    assert_names(err, folder / "ml-100k.user", record="line 5", field="user_id")


def test_grouplens_wrong_field_counts(ml_folder):
    folder = ml_folder("grouplens")
    item = folder / "u.item"
    lines = item.read_bytes().split(b"\n")
    lines[1] = lines[1].rsplit(b"|", 1)[0]  # drop a genre flag
    item.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match="expected 24 '|'-separated fields, found 23") as err:
        load_movielens(folder)
    assert_names(err, item, record="line 2")

    folder = ml_folder("grouplens")
    (folder / "u.data").write_text("1\t1\t3\t10\n1\t2\t4\n")
    with pytest.raises(DataError, match="expected 4 columns") as err:
        load_movielens(folder)
    assert_names(err, folder / "u.data", record="line 2")

    folder = ml_folder("grouplens")
    (folder / "u.user").write_text("10|24|M|technician\n")
    with pytest.raises(DataError, match="expected 5 '|'-separated fields, found 4") as err:
        load_movielens(folder)
    assert_names(err, folder / "u.user", record="line 1")


def test_grouplens_bad_genre_flags_and_genre_file(ml_folder):
    folder = ml_folder("grouplens")
    item = folder / "u.item"
    item.write_bytes(item.read_bytes().replace(b"|0|", b"|x|", 1))
    with pytest.raises(DataError, match="genre flags must be 0 or 1") as err:
        load_movielens(folder)
    assert_names(err, item, record="line 1", field="genres")
    folder = ml_folder("grouplens")
    (folder / "u.genre").write_text("unknown|0\nAction|one\n")
    with pytest.raises(DataError, match="expected 'name|index'") as err:
        load_movielens(folder)
    assert_names(err, folder / "u.genre", record="line 2")


def test_grouplens_bad_rating_and_timestamp(ml_folder):
    folder = ml_folder("grouplens")
    (folder / "u.data").write_text("10\t1\tgood\t10\n")
    with pytest.raises(DataError, match="expected a number, got 'good'") as err:
        load_movielens(folder)
    assert_names(err, folder / "u.data", record="line 1", field="rating")
    (folder / "u.data").write_text("10\t1\t4\t2020-01-01\n")
    with pytest.raises(DataError, match="expected an integer") as err:
        load_movielens(folder)
    assert_names(err, folder / "u.data", record="line 1", field="timestamp")


def test_recbole_missing_column(ml_folder):
    folder = ml_folder("recbole")
    inter = folder / "ml-100k.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\n10\t1\t3\n")
    with pytest.raises(DataError, match="missing required column") as err:
        load_movielens(folder)
    assert_names(err, inter, record="header", field="timestamp")
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    with pytest.raises(DataError, match="no records after the header") as err:
        load_movielens(folder)
    assert_names(err, inter)


# ---------------------------------------------------------------- LaMP


def _q(**change) -> list[dict]:
    return [LAMP_QUESTIONS[0], LAMP_QUESTIONS[1] | change]


@pytest.mark.parametrize("questions, record, field, message", [
    (_q(id="310"), 1, "id", "duplicate id '310' (first at record 0)"),
    ([LAMP_QUESTIONS[0], {"id": "9", "profile": []}], 1, "input", "missing required field"),
    ([LAMP_QUESTIONS[0], {"id": "9", "input": "x"}], 1, "profile", "missing required field"),
    ([{"input": "x", "profile": []}], 0, "id", "missing required field"),
    (_q(id=["311"]), 1, "id", "expected a string id, got list"),
    (_q(input=3), "311", "input", "expected text, got int"),
    (_q(profile={"id": "1"}), "311", "profile", "expected a list, got dict"),
    (_q(profile=["text"]), "311", "profile[0]", "expected an object, got str"),
    (_q(profile=[{"id": "1", "text": "t"}]), "311", "profile[0].score", "missing required field"),
    (_q(profile=[{"text": "t", "score": "1"}]), "311", "profile[0].id", "missing required field"),
    ([LAMP_QUESTIONS[0], "311"], 1, None, "expected an object, got str"),
])
def test_lamp_question_errors(lamp_files, questions, record, field, message):
    q_path, _ = lamp_files(questions=questions)
    with pytest.raises(DataError) as err:
        load_lamp_questions(q_path, task="LaMP_3")
    assert message in str(err.value)
    assert_names(err, q_path, record=record, field=field)


def test_lamp_questions_not_a_list(lamp_files):
    q_path, _ = lamp_files(questions={"id": "1"})
    with pytest.raises(DataError, match="expected a JSON list of questions, got dict") as err:
        load_lamp_questions(q_path)
    assert_names(err, q_path)


@pytest.mark.parametrize("outputs, record, field, message", [
    ({"golds": []}, "top level", "task", "missing required field"),
    ({"task": "LaMP_3"}, "top level", "golds", "missing required field"),
    ({"task": "LaMP_9", "golds": []}, "top level", "task", "unknown LaMP task 'LaMP_9'"),
    ({"task": "LaMP_3", "golds": {"310": "3"}}, "top level", "golds", "expected a list"),
    (LAMP_OUTPUTS | {"golds": [{"id": "1", "output": "3"}, {"id": "1", "output": "4"}]}, 1, "id", "duplicate id '1'"),
    (LAMP_OUTPUTS | {"golds": [{"id": "1"}]}, 0, "output", "missing required field"),
    (LAMP_OUTPUTS | {"golds": [{"output": "1"}]}, 0, "id", "missing required field"),
    (LAMP_OUTPUTS | {"golds": [{"id": None, "output": "1"}]}, 0, "id", "expected a string id, got NoneType"),
    (LAMP_OUTPUTS | {"golds": [{"id": "1", "output": ["3"]}]}, "1", "output", "expected text, got list"),
    (LAMP_OUTPUTS | {"golds": ["310"]}, 0, None, "expected an object, got str"),
])
def test_lamp_output_errors(lamp_files, outputs, record, field, message):
    _, o_path = lamp_files(outputs=outputs)
    with pytest.raises(DataError) as err:
        load_lamp_outputs(o_path)
    assert message in str(err.value)
    assert_names(err, o_path, record=record, field=field)


def test_lamp_outputs_task_mismatch_and_shape(lamp_files):
    _, o_path = lamp_files()
    with pytest.raises(DataError, match="file is for LaMP_3, expected LaMP_5") as err:
        load_lamp_outputs(o_path, task="LaMP_5")
    assert_names(err, o_path, field="task")
    _, o_path = lamp_files(outputs=[{"id": "1", "output": "x"}])
    with pytest.raises(DataError, match="expected an object with 'task' and 'golds', got list") as err:
        load_lamp_outputs(o_path)
    assert_names(err, o_path)
    o_path.write_text(json.dumps(LAMP_OUTPUTS)[:-5])
    with pytest.raises(DataError, match="invalid JSON at line 1") as err:
        load_lamp_outputs(o_path)
    assert_names(err, o_path)
