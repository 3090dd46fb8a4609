"""Datasets as config: DatasetConfig files, timestamp parsing, every format reader on real-shaped files and
its bad input, column-mapping checks, reported filters, load_dataset specs, `llmrec data info --data`."""

from __future__ import annotations

import calendar
import datetime as dt
import gzip
import json
import logging
from pathlib import Path

import pytest
from format_files import (
    AMAZON_2014_META,
    AMAZON_2014_REVIEWS,
    AMAZON_2018_META,
    AMAZON_2018_REVIEWS,
    AMAZON_2023_META,
    AMAZON_2023_REVIEWS,
    BOOKS_INTER,
    BOOKS_ITEM,
    BOOKS_USER,
    ML1M_ATOMIC_INTER,
    ML1M_ATOMIC_ITEM,
    ML1M_RATINGS,
    ML_LATEST_RATINGS,
    write_atomic,
    write_json_lines,
    write_ml1m,
    write_ml_latest,
)
from helpers import write_lamp, write_records

from llmrec.cli import main
from llmrec.data import DatasetConfig, load_dataset, resolve_dataset_config
from llmrec.data.filters import apply_filters
from llmrec.data.schema import Interaction, InteractionData, Item
from llmrec.data.synthetic import make_bookshop, write_bookshop
from llmrec.data.timestamps import parse_timestamp
from llmrec.errors import ConfigError, DataError


def utc(*args: int) -> int:
    return calendar.timegm(dt.datetime(*args).timetuple())


def names(err: pytest.ExceptionInfo, path: Path | str, record: str | None = None, field: str | None = None) -> str:
    """The DataError names the file, and the record and field where given."""
    msg = str(err.value)
    assert err.value.path == str(path) and str(path) in msg, msg
    if record is not None:
        assert err.value.record == record and f"record {record}" in msg, msg
    if field is not None:
        assert err.value.field == field and f"field '{field}'" in msg, msg
    return msg


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize("value, fmt, expected", [
    (881250949, "seconds", 881250949),
    ("881250949", "seconds", 881250949),
    ("881250949.0", "seconds", 881250949),  # RecBole writes float timestamps
    (1588687728923, "milliseconds", 1588687728),
    ("1588687728923", "milliseconds", 1588687728),
    ("2023-04-05", "iso", utc(2023, 4, 5)),
    ("2023-04-05T10:11:12Z", "iso", utc(2023, 4, 5, 10, 11, 12)),
    ("2023-04-05T10:11:12+02:00", "iso", utc(2023, 4, 5, 8, 11, 12)),
    ("2023-04-05T10:11:12", "iso", utc(2023, 4, 5, 10, 11, 12)),  # naive = UTC
    ("2023-04-05 10:11:12.750", "iso", utc(2023, 4, 5, 10, 11, 12)),
    ("05/04/2023 10:11", "%d/%m/%Y %H:%M", utc(2023, 4, 5, 10, 11)),
    ("Apr 05 2023", "%b %d %Y", utc(2023, 4, 5)),
    (1588687728923, "auto", 1588687728),  # > 1e11: milliseconds
    (1588687728, "auto", 1588687728),
    ("1588687728", "auto", 1588687728),
    ("2023-04-05T10:11:12Z", "auto", utc(2023, 4, 5, 10, 11, 12)),
    ("2023-04-05", "auto", utc(2023, 4, 5)),
    (dt.datetime(2023, 4, 5, 10, tzinfo=dt.timezone.utc), "seconds", utc(2023, 4, 5, 10)),
    (dt.date(2023, 4, 5), "auto", utc(2023, 4, 5)),
])
def test_parse_timestamp(value, fmt, expected):
    assert parse_timestamp(value, fmt) == expected


@pytest.mark.parametrize("value, fmt, message", [
    ("yesterday", "auto", "not an ISO-8601"),
    ("2023-13-01", "iso", "not an ISO-8601"),
    (1588687728, "iso", "expected an ISO-8601"),
    ("soon", "seconds", "expected an epoch number"),
    ("inf", "milliseconds", "expected an epoch number"),
    ("2023-04-05", "%d/%m/%Y", "does not match the format"),
    (True, "auto", "got a boolean"),
    ("  ", "auto", "expected a timestamp"),
])
def test_parse_timestamp_rejects(value, fmt, message):
    with pytest.raises(ValueError, match=message):
        parse_timestamp(value, fmt)


def test_bad_timestamp_in_a_file_names_file_record_field(tmp_path):
    items = write_records(tmp_path / "books.jsonl", [{"isbn": "1", "title": "Dune"}])
    orders = tmp_path / "orders.csv"
    orders.write_text("customer_id,isbn,ts\nC1,1,2023-04-05\nC1,1,05/04/2023\n")
    cfg = DatasetConfig(items=str(items), interactions=str(orders), timestamp_format="iso",
                        columns={"user_id": "customer_id", "item_id": "isbn", "timestamp": "ts"})
    with pytest.raises(DataError, match="bad timestamp") as err:
        load_dataset(cfg)
    names(err, orders, "line 3", "ts")


# ---------------------------------------------------------------- the config file


def _shop(tmp_path: Path) -> tuple[Path, Path]:
    books = write_records(tmp_path / "data" / "books.jsonl", [
        {"isbn": "978-1", "title": "Dune", "category": "Science Fiction|Classics"},
        {"isbn": "978-2", "title": "Emma", "category": "Romance"},
        {"isbn": "978-3", "title": "Ulysses", "category": "Classics"},
    ])
    orders = tmp_path / "data" / "orders.csv"
    orders.write_text("customer_id,isbn,ts,stars\n"
                      "C19990,978-2,2023-04-06T09:00:00Z,4\n"
                      "C19990,978-1,2023-04-05,5\n"
                      "C20001,978-3,2023-04-05T10:11:12+02:00,2\n"
                      "C19990,978-3,2023-05-01T00:00:00Z,3\n")
    return books, orders


SHOP = {
    "format": "generic", "items": "data/books.jsonl", "interactions": "data/orders.csv",
    "columns": {"user_id": "customer_id", "item_id": "isbn", "timestamp": "ts", "rating": "stars"},
    "timestamp_format": "iso", "rating_range": [1, 5], "category": "category", "category_separator": "|",
    "vocabulary": {"item": "book", "items": "books", "interacted": "bought"},
}


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_config_file_relative_paths(tmp_path, monkeypatch, suffix):
    import yaml

    _shop(tmp_path)
    path = tmp_path / f"shop{suffix}"
    path.write_text(json.dumps(SHOP) if suffix == ".json" else yaml.safe_dump(SHOP))
    monkeypatch.chdir(tmp_path / "data")  # relative paths resolve against the config's folder, not the cwd
    data = load_dataset(str(path))
    cfg = data.config
    assert isinstance(cfg, DatasetConfig) and cfg.name == "shop"
    assert cfg.items == str(tmp_path / "data" / "books.jsonl") and Path(cfg.interactions).is_absolute()
    assert data.name == "shop" and len(data.items) == 3 and len(data.interactions) == 4
    h = data.histories()["C19990"]
    assert h.item_ids == ("978-1", "978-2", "978-3")  # ISO dates ordered: plain date first
    assert h.timestamps == (utc(2023, 4, 5), utc(2023, 4, 6, 9), utc(2023, 5, 1))
    assert data.histories()["C20001"].timestamps == (utc(2023, 4, 5, 8, 11, 12),)
    assert h.ratings == (5.0, 4.0, 3.0)
    assert data.category_fields == ("category",)
    assert data.item_categories("978-1") == ["Science Fiction", "Classics"]
    assert (data.vocabulary.item, data.vocabulary.interacted, data.vocabulary.category) == ("book", "bought",
                                                                                          "category")
    assert data.filter_report is None
    # The resolved config round-trips and loads the same data from anywhere.
    again = DatasetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and len(load_dataset(again).interactions) == 4
    cfg.save(tmp_path / "saved.yaml")
    assert DatasetConfig.from_file(tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize("change, message", [
    ({"colums": {}}, "unknown key(s) ['colums']"),
    ({"format": "movielenz"}, "format must be one of"),
    ({"timestamp_format": "unix"}, "timestamp_format must be one of"),
    ({"rating_range": [5, 1]}, "low must be below high"),
    ({"rating_range": [1]}, "expected [low, high]"),
    ({"category": 3}, "category: expected an attribute name"),
    ({"vocabulary": {"thing": "book"}}, "vocabulary: keys must be among"),
    ({"min_user_interactions": -1}, "min_user_interactions: expected a whole number"),
    ({"k_core": 2.5}, "k_core: expected int"),
    ({"columns": {"user_id": 3}}, "columns: expected a mapping"),
    ({"items": None}, "needs 'items'"),
    ({"format": "movielens"}, "format 'movielens' does not use 'items'"),
    ({"path": "somewhere"}, "format 'generic' does not use 'path'"),
])
def test_config_errors_name_the_file(tmp_path, change, message):
    path = tmp_path / "shop.json"
    path.write_text(json.dumps({**SHOP, **change}))
    with pytest.raises(ConfigError) as err:
        DatasetConfig.from_file(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_config_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="must be .yaml"):
        DatasetConfig.from_file(tmp_path / "shop.toml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        DatasetConfig.from_file(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        DatasetConfig.from_file(bad)
    with pytest.raises(DataError, match="dataset config file not found"):
        load_dataset(str(tmp_path / "missing.yaml"))


# ---------------------------------------------------------------- column mapping


def test_attribute_rename_is_applied_not_ignored(tmp_path):
    _shop(tmp_path)
    cfg = DatasetConfig(**{**SHOP, "columns": {**SHOP["columns"], "genres": "category"}, "category": "genres",
                           "rating_range": (1, 5)}).resolved(tmp_path)
    data = load_dataset(cfg)
    assert data.items["978-2"].attributes == {"genres": ["Romance"]}  # split by category_separator
    assert data.item_categories("978-1") == ["Science Fiction", "Classics"]


def test_mapped_column_missing_from_file(tmp_path):
    books, orders = _shop(tmp_path)
    base = {**SHOP, "rating_range": (1, 5)}
    # An attribute rename whose column the catalogue lacks (the silently ignored mapping).
    cfg = DatasetConfig(**{**base, "columns": {**SHOP["columns"], "genres": "genre"}}).resolved(tmp_path)
    with pytest.raises(DataError, match=r"column 'genre' \(columns.genres\) is not in this file") as err:
        load_dataset(cfg)
    names(err, books, field="genre")
    # A required interaction column.
    cfg = DatasetConfig(**{**base, "columns": {**SHOP["columns"], "user_id": "customer"}}).resolved(tmp_path)
    with pytest.raises(DataError, match=r"column 'customer' \(columns.user_id\) is not in this file") as err:
        load_dataset(cfg)
    assert "customer_id" in names(err, orders, field="customer")
    # An optional one, named explicitly.
    cfg = DatasetConfig(**{**base, "columns": {**SHOP["columns"], "text": "review"}}).resolved(tmp_path)
    with pytest.raises(DataError, match="'review'") as err:
        load_dataset(cfg)
    names(err, orders, field="review")
    # A category attribute no item has.
    cfg = DatasetConfig(**{**base, "category": ["category", "shelf"]}).resolved(tmp_path)
    with pytest.raises(DataError, match="category attribute 'shelf'") as err:
        load_dataset(cfg)
    names(err, books, field="shelf")


def test_generic_bad_records_name_the_column(tmp_path):
    books, orders = _shop(tmp_path)
    cfg = DatasetConfig(**{**SHOP, "rating_range": (1, 5)}).resolved(tmp_path)
    text = orders.read_text()
    orders.write_text(text.replace("C20001,978-3", "C20001,978-9"))
    with pytest.raises(DataError, match="unknown item '978-9'") as err:
        load_dataset(cfg)
    names(err, orders, "line 4", "isbn")
    orders.write_text(text.replace(",2\n", ",7\n"))
    with pytest.raises(DataError, match=r"rating 7 outside \[1, 5\]") as err:
        load_dataset(cfg)
    names(err, orders, "line 4", "stars")


def test_gzip_csv_parquet_and_saved_datasets_folder(tmp_path):
    import datasets

    books, orders = _shop(tmp_path)
    gz = tmp_path / "data" / "orders.csv.gz"
    gz.write_bytes(gzip.compress(orders.read_bytes()))
    rows = [json.loads(line) for line in books.read_text().splitlines()]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "data" / "books_hf"))
    write_records(tmp_path / "data" / "books.parquet", rows)
    for items in ("data/books_hf", "data/books.parquet"):
        data = load_dataset(DatasetConfig(**{**SHOP, "items": items, "interactions": "data/orders.csv.gz",
                                             "rating_range": (1, 5)}).resolved(tmp_path))
        assert len(data.interactions) == 4 and data.item_categories("978-1") == ["Science Fiction", "Classics"]
    bad = tmp_path / "data" / "broken.csv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip file") as err:
        load_dataset(DatasetConfig(**{**SHOP, "interactions": str(bad)}).resolved(tmp_path))
    names(err, bad)
    plain = tmp_path / "data" / "plain"
    plain.mkdir()
    with pytest.raises(DataError, match="save_to_disk") as err:
        load_dataset(DatasetConfig(**{**SHOP, "items": str(plain)}).resolved(tmp_path))
    names(err, plain)


def test_hub_dataset_ids_go_through_datasets(tmp_path, monkeypatch):
    import datasets

    _shop(tmp_path)
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "offline/books":
            raise ConnectionError("Couldn't reach 'offline/books' on the Hub (LocalEntryNotFoundError)")
        return datasets.Dataset.from_list([{"isbn": "978-1", "title": "Dune", "category": "SF"},
                                           {"isbn": "978-2", "title": "Emma", "category": "Romance"},
                                           {"isbn": "978-3", "title": "Ulysses", "category": "Classics"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_dataset(DatasetConfig(**{**SHOP, "items": "hf:shop/books:catalogue@train"}).resolved(tmp_path))
    assert calls == [("shop/books", "catalogue", "train")] and data.items["978-1"].title == "Dune"
    assert data.config.items == "hf:shop/books:catalogue@train"  # not taken for a relative path
    with pytest.raises(DataError, match="cannot load Hub dataset 'offline/books': ConnectionError") as err:
        load_dataset(DatasetConfig(**{**SHOP, "items": "hf:offline/books"}).resolved(tmp_path))
    names(err, "hf:offline/books")


# ---------------------------------------------------------------- MovieLens releases


def test_movielens_1m_dat_latin1(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    data = load_dataset(folder)
    assert data.config.format == "movielens" and data.config.path == str(folder.resolve())
    assert data.name == "ml-1m" and data.rating_range == (1.0, 5.0)
    assert data.items["3"].title == "Misérables, Les" and data.items["3"].attributes["year"] == "1995"
    assert data.items["1"].attributes["genres"] == ["Animation", "Children's", "Comedy"]
    assert data.histories()["2"].item_ids == ("1", "2") and data.users["1"]["zip_code"] == "48067"
    assert data.category_fields == ("genres",) and data.vocabulary.item == "movie"


@pytest.mark.parametrize("line, record, field, message", [
    ("1::9::5::978300760", "line 1", "item_id", "unknown item '9'"),
    ("1::1::6::978300760", "line 1", "rating", "outside [1, 5]"),
    ("1::1::5::soon", "line 1", "timestamp", "expected an integer"),
    ("1::1::5", "line 1", None, "expected 4 '::'-separated fields"),
])
def test_movielens_1m_bad_input(tmp_path, line, record, field, message):
    folder = write_ml1m(tmp_path / "ml-1m", ratings=[line] + ML1M_RATINGS)
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert message in names(err, folder / "ratings.dat", record, field)


def test_movielens_latest_csv(tmp_path):
    folder = write_ml_latest(tmp_path / "ml-latest-small")
    data = load_dataset(folder)
    assert data.name == "ml-latest-small" and data.rating_range == (0.5, 5.0)
    assert data.items["11"].title == "American President, The"
    assert data.items["176601"].attributes == {"year": None, "genres": []}  # "(no genres listed)"
    assert data.items["1"].attributes["genres"][:2] == ["Adventure", "Animation"]
    assert data.histories()["2"].ratings == (2.5, 5.0, 3.5)


@pytest.mark.parametrize("line, record, field, message", [
    ("3,1,4.0,964982703", "line 7", None, None),
    ("1,999,4.0,964982703", "line 7", "movieId", "unknown item '999'"),
    ("1,1,0.0,964982703", "line 7", "rating", "outside [0.5, 5]"),
    ("1,1,4.0", "line 7", None, "expected 4 columns"),
])
def test_movielens_latest_bad_input(tmp_path, line, record, field, message):
    folder = write_ml_latest(tmp_path / "ml-25m", ratings=ML_LATEST_RATINGS + [line])
    if message is None:
        assert len(load_dataset(folder).interactions) == 6
        return
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert message in names(err, folder / "ratings.csv", record, field)
    (folder / "ratings.csv").write_text("user,movie,rating,timestamp\n1,1,4.0,1\n")
    with pytest.raises(DataError, match="missing required column") as err:
        load_dataset(folder)
    names(err, folder / "ratings.csv", "header", "userId")


def test_movielens_1m_recbole_atomic(tmp_path):
    folder = write_atomic(tmp_path / "ml-1m-atomic", "ml-1m", ML1M_ATOMIC_INTER, ML1M_ATOMIC_ITEM)
    data = load_dataset(folder)
    assert data.name == "ml-1m" and data.config.format == "movielens"
    assert data.items["1"].attributes["genres"] == ["Animation", "Children's", "Comedy"]
    assert data.histories()["1"].item_ids == ("1", "2")


# ---------------------------------------------------------------- RecBole atomic files


def test_recbole_generic_typed_columns(tmp_path):
    folder = write_atomic(tmp_path / "books", "Amazon_Books", BOOKS_INTER, BOOKS_ITEM, BOOKS_USER)
    data = load_dataset(folder)  # a folder of *.inter that is not MovieLens: recbole
    assert data.config.format == "recbole" and data.name == "Amazon_Books" == data.config.name
    item = data.items["0001"]
    assert item.title == "The Silver Crown"  # the title column stays text
    assert item.attributes == {"price": 9.99, "categories": ["Fantasy", "Epic"], "brand": "Orbit"}
    assert data.items["0002"].attributes["price"] is None
    assert data.histories()["A2"].item_ids == ("0003", "0001")
    assert data.users["A1"] == {"age": 31.0}
    cfg = DatasetConfig(format="recbole", path=str(folder), category="categories", rating_range=(1, 5))
    data = load_dataset(cfg)
    assert data.item_categories("0001") == ["Fantasy", "Epic"] and data.rating_range == (1.0, 5.0)


@pytest.mark.parametrize("edit, file, record, field, message", [
    (("A1\t0001\t5.0", "A1\t0009\t5.0"), "inter", "line 2", "item_id", "unknown item '0009'"),
    (("A1\t0001\t5.0", "A1\t0001\tfive"), "inter", "line 2", "rating", "expected float"),
    (("1400000000", "yesterday"), "inter", "line 2", "timestamp", "expected float"),
    (("A1\t0001\t5.0", "A1\t0001\t9.0"), "inter", "line 2", "rating", "outside [1, 5]"),
    (("price:float", "price:money"), "item", "header", "price", "type one of"),
])
def test_recbole_bad_input(tmp_path, edit, file, record, field, message):
    folder = write_atomic(tmp_path / "books", "Amazon_Books", BOOKS_INTER, BOOKS_ITEM)
    path = folder / f"Amazon_Books.{file}"
    path.write_text(path.read_text().replace(*edit))
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(format="recbole", path=str(folder), rating_range=(1, 5)))
    assert message in names(err, path, record, field)


def test_recbole_missing_files_and_mapped_columns(tmp_path):
    folder = write_atomic(tmp_path / "books", "Amazon_Books", BOOKS_INTER, BOOKS_ITEM)
    inter = folder / "Amazon_Books.inter"
    inter.write_text(inter.read_text().replace("user_id:token", "uid:token"))
    with pytest.raises(DataError, match=r"column 'user_id' is not in this file") as err:
        load_dataset(DatasetConfig(format="recbole", path=str(folder)))
    names(err, inter, field="user_id")
    data = load_dataset(DatasetConfig(format="recbole", path=str(folder), columns={"user_id": "uid"}))
    assert data.user_ids == ["A1", "A2"]
    (folder / "Amazon_Books.item").unlink()
    with pytest.raises(DataError, match="no Amazon_Books.item"):
        load_dataset(DatasetConfig(format="recbole", path=str(folder)))


# ---------------------------------------------------------------- Amazon reviews


def _amazon(tmp_path, year: int, reviews=None, meta=None, gz: bool = True) -> DatasetConfig:
    default = {2014: (AMAZON_2014_REVIEWS, AMAZON_2014_META), 2018: (AMAZON_2018_REVIEWS, AMAZON_2018_META),
               2023: (AMAZON_2023_REVIEWS, AMAZON_2023_META)}[year]
    ext = ".json.gz" if gz else ".jsonl"
    r = write_json_lines(tmp_path / f"reviews_Books{ext}", default[0] if reviews is None else reviews)
    m = write_json_lines(tmp_path / f"meta_Books{ext}", default[1] if meta is None else meta)
    return DatasetConfig(name=f"amazon{year}", format=f"amazon{year}", interactions=str(r), items=str(m))


def test_amazon2014_gz_python_literal_metadata(tmp_path):
    data = load_dataset(_amazon(tmp_path, 2014))
    item = data.items["0000013714"]
    assert item.title == "Heavenly Highway Hymns"
    # Category paths without the store department; a one-level path is kept; image/related lists dropped.
    assert item.attributes["categories"] == ["Christian Books & Bibles", "Hymns", "Books"]
    assert "related" not in item.attributes and "imUrl" not in item.attributes
    assert item.attributes["salesRank"] == {"Books": 2170}
    assert data.items["0000031852"].title == "Girls' Ballet Tutu Zebra"
    assert data.item_categories("0000031852") == ["Other Sports", "Dance", "Girls"]
    assert data.histories()["A2SUAM1J3GNN3B"].timestamps == (1252800000, 1252900000)
    assert data.histories()["A2SUAM1J3GNN3B"].ratings == (5.0, 4.0)
    assert data.interactions[0].text is None and data.vocabulary.items == "products"
    with_text = load_dataset(DatasetConfig(**{**_amazon(tmp_path, 2014).to_dict(), "columns": {"text": "reviewText"}}))
    assert with_text.interactions[0].text == "I bought this for my husband."


def test_amazon2014_bad_input(tmp_path):
    meta = [AMAZON_2014_META[0], "{'asin': '0000031852', 'title': __import__('os').getcwd()}"]
    cfg = _amazon(tmp_path, 2014, meta=meta)
    with pytest.raises(DataError, match="neither JSON nor a Python literal") as err:
        load_dataset(cfg)  # never eval'd
    names(err, cfg.items, "line 2")
    review = {**AMAZON_2014_REVIEWS[0], "overall": 6.0}
    cfg = _amazon(tmp_path, 2014, reviews=[AMAZON_2014_REVIEWS[1], review])
    with pytest.raises(DataError, match="outside") as err:
        load_dataset(cfg)
    names(err, cfg.interactions, "line 2", "overall")
    cfg = _amazon(tmp_path, 2014, reviews=[{**AMAZON_2014_REVIEWS[0], "asin": "B000NOPE"}])
    with pytest.raises(DataError, match="unknown item 'B000NOPE'") as err:
        load_dataset(cfg)
    names(err, cfg.interactions, "line 1", "asin")
    cfg = _amazon(tmp_path, 2014, reviews=[{k: v for k, v in AMAZON_2014_REVIEWS[0].items() if k != "unixReviewTime"}])
    with pytest.raises(DataError, match="column 'unixReviewTime'") as err:
        load_dataset(cfg)
    names(err, cfg.interactions, field="unixReviewTime")
    cfg = _amazon(tmp_path, 2014, reviews=[AMAZON_2014_REVIEWS[0], {**AMAZON_2014_REVIEWS[1], "unixReviewTime": "x"}])
    with pytest.raises(DataError, match="bad timestamp") as err:
        load_dataset(cfg)
    names(err, cfg.interactions, "line 2", "unixReviewTime")


def test_amazon2018_repeated_metadata_and_category_path(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="llmrec.data.generic"):
        data = load_dataset(_amazon(tmp_path, 2018))
    assert "skipped 1 repeated identical catalogue records" in caplog.text
    assert len(data.items) == 2 and data.category_fields == ("category",)
    assert data.item_categories("0001713353") == ["Children's Books", "Animals"]
    assert "also_buy" not in data.items["0001713353"].attributes
    assert data.histories()["A1C6M8LCIX4M6M"].item_ids == ("0001061240", "0001713353")
    changed = [AMAZON_2018_META[0], AMAZON_2018_META[1], {**AMAZON_2018_META[0], "title": "Other"}]
    cfg = _amazon(tmp_path, 2018, meta=changed)
    with pytest.raises(DataError, match="duplicate item id '0001713353'") as err:
        load_dataset(cfg)
    names(err, cfg.items, "line 3", "asin")


def test_amazon2023_jsonl_milliseconds(tmp_path):
    data = load_dataset(_amazon(tmp_path, 2023, gz=False))
    h = data.histories()["AGKHLEW2SOWHNMFQIJGBECAF7INQ"]
    assert h.item_ids == ("B081TJ8YS3", "0593235657") and h.timestamps == (1588615855, 1588687728)
    assert data.item_categories("0593235657") == ["Literature & Fiction", "Genre Fiction"]
    assert data.item_categories("B081TJ8YS3") == []
    assert data.items["0593235657"].attributes["main_category"] == "Books"
    assert "images" not in data.items["0593235657"].attributes
    data = load_dataset(DatasetConfig(**{**_amazon(tmp_path, 2023).to_dict(), "category": "main_category"}))
    assert data.item_categories("B081TJ8YS3") == ["All Beauty"]
    cfg = _amazon(tmp_path, 2023, reviews=[{**AMAZON_2023_REVIEWS[0], "timestamp": "later"}])
    with pytest.raises(DataError, match="bad timestamp") as err:
        load_dataset(cfg)
    names(err, cfg.interactions, "line 1", "timestamp")
    cfg = _amazon(tmp_path, 2023, meta=[{k: v for k, v in AMAZON_2023_META[0].items() if k != "parent_asin"}])
    with pytest.raises(DataError, match="column 'parent_asin'") as err:
        load_dataset(cfg)
    names(err, cfg.items, field="parent_asin")


# ---------------------------------------------------------------- LaMP


def test_lamp_profiles_as_interactions(tmp_path):
    q, o = write_lamp(tmp_path / "lamp")
    data = load_dataset(DatasetConfig(format="lamp", interactions=str(q), outputs=str(o)))
    assert data.name == "LaMP_3" and data.rating_range == (1.0, 5.0)
    assert sorted(data.users) == ["310", "311", "312"]
    assert data.users["310"] == {"input": "What is the score of this review? Great plot, weak ending.", "output": "3"}
    # 310's profile: one entry has no date, so the profile position is the clock.
    assert data.histories()["310"].item_ids == ("3100", "3101") and data.histories()["310"].timestamps == (0, 1)
    assert data.histories()["310"].ratings == (5.0, 2.0)
    assert data.items["3100"].title == "Loved it" and "312" not in data.histories()
    assert data.vocabulary.items == "documents" and not data.has_categories
    tagged = [{"id": "20", "input": "Which tag?", "profile": [
        {"id": "200", "description": "A heist film", "tag": "crime", "date": "2019-05-01"},
        {"id": "201", "description": "A space opera", "tag": "sci-fi", "date": "2018-01-01"}]}]
    q2, _ = write_lamp(tmp_path / "lamp2", questions=tagged)
    data = load_dataset(DatasetConfig(format="lamp", interactions=str(q2)))
    assert data.category_fields == ("tag",) and data.item_categories("200") == ["crime"]
    assert data.histories()["20"].item_ids == ("201", "200")  # dated: by date
    bad = [{"id": "21", "input": "?", "profile": [{"id": "210", "description": "x", "date": "someday"},
                                                  {"id": "211", "description": "y", "date": "2019-01-01"}]}]
    q3, _ = write_lamp(tmp_path / "lamp3", questions=bad)
    with pytest.raises(DataError, match="bad timestamp") as err:
        load_dataset(DatasetConfig(format="lamp", interactions=str(q3)))
    names(err, q3, "21 profile[0]", "date")
    _, o4 = write_lamp(tmp_path / "lamp4", outputs={"task": "LaMP_3", "golds": [{"id": "310", "output": "3"}]})
    with pytest.raises(DataError, match="have no gold output") as err:
        load_dataset(DatasetConfig(format="lamp", interactions=str(q), outputs=str(o4)))
    names(err, o4)


# ---------------------------------------------------------------- filters


def _toy(pairs: list[tuple[str, str]]) -> InteractionData:
    items = {i: Item(i, f"title {i}") for i in sorted({i for _, i in pairs} | {"unused"})}
    return InteractionData("toy", items, [Interaction(u, i, t) for t, (u, i) in enumerate(pairs)])


def test_k_core_iterates_until_stable(caplog):
    # u3 has 1 interaction -> removed; then item c has 1 -> removed; then u2 has 1 -> removed; then b has 1.
    pairs = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c"), ("u3", "c"), ("u4", "a"), ("u4", "b"),
             ("u5", "a"), ("u5", "b")]
    with caplog.at_level(logging.INFO, logger="llmrec.data.filters"):
        data, report = apply_filters(_toy(pairs), k_core=2)
    assert report["before"] == {"users": 5, "items": 4, "interactions": 9}
    assert report["after"] == {"users": 3, "items": 2, "interactions": 6}
    assert report["k_core_rounds"] == 3 and set(data.items) == {"a", "b"}
    assert sorted(data.histories()) == ["u1", "u4", "u5"]
    assert "toy: filters k_core=2: users 5 -> 3, items 4 -> 2, interactions 9 -> 6 (3 k-core rounds)" in caplog.text


def test_min_history_filters_one_pass_and_nothing_left():
    pairs = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c"), ("u3", "c")]
    data, report = apply_filters(_toy(pairs), min_user_interactions=2)
    assert report["after"] == {"users": 2, "items": 4, "interactions": 4}  # catalogue kept: no item filter
    data, report = apply_filters(_toy(pairs), min_item_interactions=2)
    assert set(data.items) == {"a", "c"} and report["after"]["interactions"] == 4
    assert apply_filters(_toy(pairs)) == (_toy(pairs), None) or apply_filters(_toy(pairs))[1] is None
    with pytest.raises(DataError, match="removed every interaction"):
        apply_filters(_toy(pairs), k_core=3)


# ---------------------------------------------------------------- load_dataset specs and the bookshop


def test_load_dataset_specs(ml100k, tmp_path):
    cfg = ml100k.config
    assert (cfg.name, cfg.format, cfg.path, cfg.category) == ("ml-100k", "movielens", None, ["genres"])
    assert cfg.vocabulary["item"] == "movie" and ml100k.vocabulary.interacted == "watched"
    assert resolve_dataset_config("movielens-100k") == cfg
    assert resolve_dataset_config(cfg) is cfg
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset(str(tmp_path / "nothing"))


def test_bookshop_configs_agree_and_drift(tmp_path):
    config = write_bookshop(tmp_path / "shop")
    shop = load_dataset(config)
    amazon = load_dataset(tmp_path / "shop" / "bookshop-amazon2023.yaml")
    assert shop.histories() == amazon.histories()
    assert shop.filter_report == amazon.filter_report
    assert shop.filter_report["before"]["users"] == 60 and shop.filter_report["after"]["users"] == 57
    assert len(shop.items) == 120 and 1300 < len(shop.interactions) < 1700
    assert {shop.item_categories(i)[0] for i in shop.items} == {c for i in amazon.items
                                                                for c in amazon.item_categories(i)}
    assert shop.vocabulary.items == "books" and shop.config.item_text == "{{ title }} ({{ category }})"
    ts = (tmp_path / "shop" / "orders.csv").read_text()
    assert "Z," in ts and "+02:00," in ts and any(len(line.split(",")[2]) == 10 for line in ts.splitlines()[1:])
    # Taste drift: a customer's most bought category in the first third differs from the last third for most.
    shifted = 0
    for h in shop.histories().values():
        cats = [shop.item_categories(i)[0] for i in h.item_ids]
        third = len(cats) // 3
        first, last = cats[:third], cats[-third:]
        shifted += max(set(first), key=first.count) != max(set(last), key=last.count)
    assert shifted > 0.6 * len(shop.histories())
    assert make_bookshop(seed=1)[1] != make_bookshop(seed=0)[1]


# ---------------------------------------------------------------- the CLI


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_make_bookshop_and_data_info(tmp_path, capsys):
    rc, out, _ = run_cli(capsys, "data", "make-bookshop", "--out", str(tmp_path / "shop"))
    config = tmp_path / "shop" / "bookshop.yaml"
    assert rc == 0 and out.strip() == str(config)
    assert "name: bookshop" in config.read_text() and "timestamp_format: iso" in config.read_text()
    rc, out, _ = run_cli(capsys, "data", "info", "--data", str(config))
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert rc == 0 and lines["name"] == "bookshop" and lines["users"] == "57" and lines["items"] == "120"
    assert lines["category_fields"] == "category" and lines["categories"] == "8"
    assert lines["filters"].startswith("min_user_interactions=5: users 60 -> 57, items 120 -> 120, interactions ")
    assert lines["ratings"].startswith("count=") and "p50=" in lines["history_length"]
    rc, out, _ = run_cli(capsys, "data", "info", "--dataset", str(config), "--json")  # the hidden alias
    info = json.loads(out)
    assert info["filters"]["after"]["users"] == 57 and info["category_fields"] == ["category"]
    assert set(info) >= {"users", "items", "interactions", "density", "history_length", "time_span", "ratings"}
    json_config = tmp_path / "shop" / "shop.json"
    json_config.write_text(json.dumps(DatasetConfig.from_file(config).to_dict()))
    rc, out, _ = run_cli(capsys, "data", "info", "--data", str(json_config), "--json")  # .json: a config, not LaMP
    assert rc == 0 and json.loads(out)["users"] == 57
    rc, out, err = run_cli(capsys, "data", "info")
    assert rc == 2 and "--data" in err


def test_items_build_uses_the_dataset_item_text(tmp_path, tiny_llama_dir, capsys):
    config = write_bookshop(tmp_path / "shop", n_users=12, n_items=24)
    rc, out, _ = run_cli(capsys, "items", "build", "--data", str(config), "--encoder", str(tiny_llama_dir),
                         "--encoder-kind", "causal", "--levels", "2", "--codebook-size", "4", "--out",
                         str(tmp_path / "sids"), "--cache", str(tmp_path / "cache"), "--json")
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["items"] == 24
    saved = json.loads((tmp_path / "sids" / "config.json").read_text())
    assert saved["template"] == "{{ title }} ({{ category }})"


def test_drop_incomplete_is_counted_and_reported(tmp_path, capsys, caplog):
    untitled = "{'asin': 'B0UNTITLED', 'categories': [['Books']]}"
    reviews = AMAZON_2014_REVIEWS + [{**AMAZON_2014_REVIEWS[0], "asin": "B0UNTITLED"},
                                     {**AMAZON_2014_REVIEWS[0], "asin": "B0NOMETA"}]
    cfg = _amazon(tmp_path, 2014, reviews=reviews, meta=AMAZON_2014_META + [untitled])
    with pytest.raises(DataError, match="has no title") as err:
        load_dataset(cfg)  # the default: fail, naming the record
    names(err, cfg.items, "line 3", "title")
    cfg = DatasetConfig(**{**cfg.to_dict(), "drop_incomplete": True, "min_user_interactions": 2})
    with caplog.at_level(logging.INFO, logger="llmrec.data"):
        data = load_dataset(cfg)
    assert "drop_incomplete: 1 untitled item(s), 2 interaction(s)" in caplog.text
    assert data.filter_report["drop_incomplete"] == {"untitled_items": 1, "unknown_item_interactions": 2}
    assert data.filter_report["after"] == {"users": 1, "items": 2, "interactions": 2}
    config = tmp_path / "amazon.json"
    config.write_text(json.dumps(cfg.to_dict()))
    rc, out, _ = run_cli(capsys, "data", "info", "--data", str(config))
    line = next(x for x in out.splitlines() if x.startswith("filters"))
    assert line.endswith("; dropped 1 untitled item(s) and 2 interaction(s) with unknown items")
    with pytest.raises(ConfigError, match="does not use 'drop_incomplete'"):
        DatasetConfig(format="lamp", interactions="q.json", drop_incomplete=True)


def test_generic_users_file(tmp_path):
    _shop(tmp_path)
    write_records(tmp_path / "data" / "customers.csv", [{"customer_id": "C19990", "city": "Leeds"},
                                                        {"customer_id": "C20001", "city": "Cork"}])
    data = load_dataset(DatasetConfig(**{**SHOP, "users": "data/customers.csv"}).resolved(tmp_path))
    assert data.users == {"C19990": {"city": "Leeds"}, "C20001": {"city": "Cork"}}


def test_item_text_inline_name_or_file(tmp_path):
    from llmrec.prompting import load_template_source

    assert DatasetConfig(item_text="{{ title }} by {{ author }}").item_text_template() == "{{ title }} by {{ author }}"
    assert DatasetConfig().item_text_template() is None
    assert DatasetConfig(item_text="item_text").item_text_template() == load_template_source("item_text")[1]
    (tmp_path / "book_text.jinja").write_text("{{ title }}")
    config = tmp_path / "shop.yaml"
    config.write_text("items: b.jsonl\ninteractions: o.csv\nitem_text: book_text.jinja\n")
    cfg = DatasetConfig.from_file(config)
    assert cfg.item_text == str(tmp_path / "book_text.jinja") == cfg.item_text_template()


def test_bare_config_is_valid_until_loaded():
    cfg = DatasetConfig()
    assert cfg.format == "generic" and cfg.to_dict()["items"] is None
    with pytest.raises(ConfigError, match="needs 'items'"):
        load_dataset(cfg)


def test_catalogue_errors_name_the_mapped_column(tmp_path):
    books, _ = _shop(tmp_path)
    rows = [{"isbn": r["isbn"], "name": r["title"]} for r in map(json.loads, books.read_text().splitlines())]
    cfg = DatasetConfig(**{**SHOP, "columns": {**SHOP["columns"], "title": "name"}, "category": []}).resolved(tmp_path)
    write_records(books, rows[:2] + [{"isbn": "978-3", "name": " "}])
    with pytest.raises(DataError, match="has no title text") as err:
        load_dataset(cfg)
    names(err, books, "line 3", "name")
    write_records(books, rows + [{"isbn": "978-1", "name": "Again"}])
    with pytest.raises(DataError, match="duplicate item id '978-1'") as err:
        load_dataset(cfg)
    names(err, books, "line 4", "isbn")
