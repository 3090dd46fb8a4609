"""MovieLens loaders: the real cached RecBole files and synthetic folders in both layouts."""

from __future__ import annotations

import pytest
from helpers import ML_ITEMS, ML_RATINGS

from llmrec.data import load_dataset, load_movielens
from llmrec.errors import DataError


def test_real_ml100k_counts(ml100k):
    assert len(ml100k.items) == 1682
    assert len(ml100k.interactions) == 100_000
    assert len(ml100k.histories()) == 943
    assert len(ml100k.users) == 943
    assert ml100k.rating_range == (1.0, 5.0)
    assert {x.rating for x in ml100k.interactions} == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_real_ml100k_items_and_users(ml100k):
    toy = ml100k.items["1"]
    assert toy.title == "Toy Story"
    assert toy.attributes == {"year": "1995", "genres": ["Animation", "Children's", "Comedy"]}
    assert list(ml100k.items)[:3] == ["1", "2", "3"]  # catalogue order
    assert ml100k.items["543"].title == "Misérables, Les"  # non-ASCII survives
    assert ml100k.items["267"].attributes["year"] is None  # RecBole's 'unkonwn' year is not a year
    assert ml100k.users["1"] == {"age": "24", "gender": "M", "occupation": "technician", "zip_code": "85711"}
    first = ml100k.interactions[0]
    assert (first.user_id, first.item_id, first.rating, first.timestamp) == ("196", "242", 3.0, 881250949)


def test_real_ml100k_histories_chronological_with_stable_ties(ml100k):
    hist = ml100k.histories()
    file_order: dict[str, list[tuple[int, int, str]]] = {}
    for pos, x in enumerate(ml100k.interactions):
        file_order.setdefault(x.user_id, []).append((x.timestamp, pos, x.item_id))
    ties = 0
    for user, h in hist.items():
        assert list(h.timestamps) == sorted(h.timestamps)
        expected = [item for _, _, item in sorted(file_order[user])]  # time, then file position
        assert list(h.item_ids) == expected
        ties += len(h.timestamps) - len(set(h.timestamps))
    assert ties > 1000  # ml-100k has many same-second ratings, so the tie rule matters
    assert sum(len(h) for h in hist.values()) == 100_000
    assert min(len(h) for h in hist.values()) == 20


def test_load_dataset_aliases_and_folder(ml100k, ml_folder):
    assert load_dataset("movielens-100k").interactions[:3] == ml100k.interactions[:3]
    small = load_dataset(ml_folder("recbole"))
    assert len(small.items) == len(ML_ITEMS)


@pytest.mark.parametrize("layout", ["grouplens", "recbole"])
def test_small_folder_both_layouts(ml_folder, layout):
    data = load_movielens(ml_folder(layout))
    assert list(data.items) == ["1", "2", "3", "4", "5"]
    assert len(data.interactions) == len(ML_RATINGS)
    mis = data.items["3"]
    assert mis.title == "Misérables, Les"
    assert mis.attributes == {"year": "1995", "genres": ["Drama", "Musical"]}
    assert data.items["5"].attributes == {"year": "1979", "genres": ["Horror", "Sci-Fi"]}
    assert data.users["20"]["occupation"] == "other"
    hist = data.histories()
    assert list(hist) == ["10", "20", "30"]  # order of first appearance in the ratings file
    # user 10: t=100 item 1, t=200 items 4 then 2 (file order breaks the tie), t=300 item 3
    assert hist["10"].item_ids == ("1", "4", "2", "3")
    assert hist["10"].timestamps == (100, 200, 200, 300)
    assert hist["10"].ratings == (3.0, 2.0, 5.0, 4.0)
    assert hist["20"].item_ids == ("1", "2", "5", "3")
    assert hist["30"].item_ids == ("1", "5")


def test_grouplens_reads_latin1_bytes_and_utf8_copies(ml_folder):
    latin = ml_folder("grouplens")
    assert "Misérables".encode("latin-1") in (latin / "u.item").read_bytes()
    utf8 = ml_folder("grouplens", encoding="utf-8")  # a re-saved copy must not turn into mojibake
    assert load_movielens(latin).items["3"].title == load_movielens(utf8).items["3"].title == "Misérables, Les"


def test_grouplens_without_optional_files(ml_folder):
    folder = ml_folder("grouplens", users=None, with_genre_file=False)
    data = load_movielens(folder)
    assert data.users == {}
    assert data.items["1"].attributes["genres"] == ["Animation", "Children's", "Comedy"]  # built-in genre order


def test_grouplens_title_without_year_uses_release_date(ml_folder):
    items = [("1", "Good Morning", "01-Jan-1971", ["Drama"]), ("2", "unknown", "", ["unknown"])]
    data = load_movielens(ml_folder("grouplens", items=items, ratings=[("1", "1", 3, 10), ("1", "2", 4, 20)]))
    assert data.items["1"].title == "Good Morning" and data.items["1"].attributes["year"] == "1971"
    assert data.items["2"].attributes["year"] is None


def test_not_a_movielens_folder(tmp_path):
    with pytest.raises(DataError, match="no MovieLens files here") as err:
        load_movielens(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="expected a MovieLens folder"):
        load_movielens(tmp_path / "missing")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset(tmp_path / "nope")
