"""Small hand-made files in the real formats of the public dataset downloads (MovieLens 1M / latest, RecBole
atomic files, Amazon reviews 2014 / 2018 / 2023), for the format-reader tests. Each writer returns the folder
(or the files) and takes overrides so a test can break one record."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- MovieLens 1M (.dat, '::', latin-1)

ML1M_MOVIES = ["1::Toy Story (1995)::Animation|Children's|Comedy", "2::Jumanji (1995)::Adventure|Children's|Fantasy",
               "3::Misérables, Les (1995)::Drama|Musical"]
ML1M_RATINGS = ["1::1::5::978300760", "1::3::3::978302109", "2::2::4::978299000", "2::1::2::978298000"]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072"]


def write_ml1m(folder: str | Path, movies: Sequence[str] = ML1M_MOVIES, ratings: Sequence[str] = ML1M_RATINGS,
               users: Sequence[str] | None = ML1M_USERS) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (folder / "ratings.dat").write_bytes(("\n".join(ratings) + "\n").encode("latin-1"))
    if users is not None:
        (folder / "users.dat").write_bytes(("\n".join(users) + "\n").encode("latin-1"))
    return folder


# ---------------------------------------------------------------- MovieLens latest / 20m / 25m (.csv)

ML_LATEST_MOVIES = ['movieId,title,genres', '1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy',
                    '11,"American President, The (1995)",Comedy|Drama|Romance',
                    '193609,Andrew Dice Clay: Dice Rules (1991),Comedy', '176601,Black Mirror,(no genres listed)']
ML_LATEST_RATINGS = ["userId,movieId,rating,timestamp", "1,1,4.0,964982703", "1,11,0.5,964981247",
                     "2,193609,3.5,1537109082", "2,176601,5.0,1537109000", "2,1,2.5,1537100000"]


def write_ml_latest(folder: str | Path, movies: Sequence[str] = ML_LATEST_MOVIES,
                    ratings: Sequence[str] = ML_LATEST_RATINGS) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.csv").write_text("\n".join(movies) + "\n", encoding="utf-8")
    (folder / "ratings.csv").write_text("\n".join(ratings) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------- RecBole atomic files

ML1M_ATOMIC_ITEM = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq",
                    "1\tToy Story\t1995\tAnimation Children's Comedy", "2\tJumanji\t1995\tAdventure Fantasy"]
ML1M_ATOMIC_INTER = ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
                     "1\t1\t5\t978300760", "1\t2\t3\t978302109", "2\t2\t4\t978299000"]

BOOKS_ITEM = ["item_id:token\ttitle:token_seq\tprice:float\tcategories:token_seq\tbrand:token",
              "0001\tThe Silver Crown\t9.99\tFantasy Epic\tOrbit", "0002\tCold Ledger\t\tCrime\tPenguin",
              "0003\tSummer Letters\t5.5\tRomance\tMills"]
BOOKS_INTER = ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
               "A1\t0001\t5.0\t1400000000", "A1\t0002\t4.0\t1400000100", "A2\t0003\t2.0\t1400000050",
               "A2\t0001\t3.0\t1400000200"]
BOOKS_USER = ["user_id:token\tage:float", "A1\t31", "A2\t45"]


def write_atomic(folder: str | Path, name: str, inter: Sequence[str], item: Sequence[str] | None,
                 user: Sequence[str] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for ext, lines in (("inter", inter), ("item", item), ("user", user)):
        if lines is not None:
            (folder / f"{name}.{ext}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------- Amazon reviews

AMAZON_2014_REVIEWS = [
    {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "reviewerName": "J. McDonald", "helpful": [2, 3],
     "reviewText": "I bought this for my husband.", "overall": 5.0, "summary": "Heavenly Highway Hymns",
     "unixReviewTime": 1252800000, "reviewTime": "09 13, 2009"},
    {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000031852", "reviewerName": "J. McDonald", "helpful": [0, 0],
     "reviewText": "Cute.", "overall": 4.0, "summary": "Tutu", "unixReviewTime": 1252900000,
     "reviewTime": "09 14, 2009"},
    {"reviewerID": "AZ0IOBU20TBOP", "asin": "0000013714", "reviewerName": "Rick", "helpful": [0, 0],
     "reviewText": "Good hymns.", "overall": 2.0, "summary": "ok", "unixReviewTime": 1252700000,
     "reviewTime": "09 12, 2009"},
]
# 2014 metadata lines are Python literals (single quotes), not JSON.
AMAZON_2014_META = [
    "{'asin': '0000013714', 'title': 'Heavenly Highway Hymns', 'price': 12.0, "
    "'imUrl': 'http://ecx.images-amazon.com/images/I/51.jpg', 'related': {'also_bought': ['B00JHONN1S']}, "
    "'salesRank': {'Books': 2170}, 'categories': [['Books', 'Christian Books & Bibles', 'Hymns'], ['Books']]}",
    "{'asin': '0000031852', 'title': \"Girls' Ballet Tutu Zebra\", 'price': 3.17, 'brand': 'Coxlures', "
    "'categories': [['Sports & Outdoors', 'Other Sports', 'Dance'], ['Clothing', 'Girls', 'Dance']]}",
]

AMAZON_2018_REVIEWS = [
    {"overall": 5.0, "verified": True, "reviewTime": "08 12, 2005", "reviewerID": "A1C6M8LCIX4M6M",
     "asin": "0001713353", "style": {"Format:": " Paperback"}, "reviewerName": "June Bug",
     "reviewText": "A favourite.", "summary": "Great", "unixReviewTime": 1123804800},
    {"overall": 3.0, "verified": False, "reviewTime": "03 30, 2005", "reviewerID": "A1C6M8LCIX4M6M",
     "asin": "0001061240", "reviewerName": "June Bug", "reviewText": "Fine.", "summary": "ok",
     "unixReviewTime": 1112140800},
]
_META_2018_A = {"category": ["Books", "Children's Books", "Animals"], "tech1": "", "description": ["A king."],
                "fit": "", "title": "The King, the Mice and the Cheese", "also_buy": ["0394800018"], "tech2": "",
                "brand": "Nancy Gurney", "feature": [], "rank": "1,039,505 in Books (", "also_view": [],
                "main_cat": "Books", "similar_item": "", "date": "", "price": "$4.99", "asin": "0001713353",
                "imageURL": [], "imageURLHighRes": []}
_META_2018_B = {"category": ["Books", "Literature & Fiction"], "description": [], "title": "Gods and Kings",
                "brand": "Lynn Austin", "main_cat": "Books", "asin": "0001061240", "imageURL": []}
AMAZON_2018_META = [_META_2018_A, _META_2018_B, _META_2018_A]  # the 2018 dumps repeat records

AMAZON_2023_REVIEWS = [
    {"rating": 5.0, "title": "Such a lovely read", "text": "Loved it.", "images": [], "asin": "B00YQ6X8EO",
     "parent_asin": "0593235657", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588687728923,
     "helpful_vote": 0, "verified_purchase": True},
    {"rating": 1.0, "title": "No", "text": "Not for me.", "images": [], "asin": "B081TJ8YS3",
     "parent_asin": "B081TJ8YS3", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588615855070,
     "helpful_vote": 1, "verified_purchase": True},
    {"rating": 4.0, "title": "Good", "text": "Good.", "images": [], "asin": "0593235657",
     "parent_asin": "0593235657", "user_id": "AFQLNQNQYFWQZPJQZS6V3NZU4QBQ", "timestamp": 1577836800000,
     "helpful_vote": 0, "verified_purchase": False},
]
AMAZON_2023_META = [
    {"main_category": "Books", "title": "The Midnight Library", "average_rating": 4.5, "rating_number": 29,
     "features": [], "description": [], "price": 8.99, "images": [{"large": "https://m.media-amazon.com/1.jpg"}],
     "videos": [], "store": "Matt Haig (Author)", "categories": ["Books", "Literature & Fiction", "Genre Fiction"],
     "details": {"Publisher": "Viking"}, "parent_asin": "0593235657", "bought_together": None},
    {"main_category": "All Beauty", "title": "Lavender Soap", "average_rating": 3.0, "rating_number": 2,
     "features": [], "description": [], "price": None, "images": [], "videos": [], "store": "Soapy",
     "categories": [], "details": {}, "parent_asin": "B081TJ8YS3", "bought_together": None},
]


def write_json_lines(path: str | Path, records: Sequence[Any], gz: bool | None = None) -> Path:
    """One record per line: dicts as JSON, strings as given (Python-literal lines); ``.gz`` compresses."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz if gz is not None else path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path
