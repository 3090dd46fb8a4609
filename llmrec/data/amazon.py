"""Amazon review datasets as downloaded (McAuley lab): reviews + product metadata, JSON lines, ``.gz`` ok.

- 2014 (``reviews_<Cat>.json.gz``, ``meta_<Cat>.json.gz``): reviews ``reviewerID, asin, overall,
  unixReviewTime``; metadata ``asin, title, categories`` (a list of category paths), written as Python
  literals (single quotes): read with ``ast.literal_eval``, never ``eval``.
- 2018 (``<Cat>.json.gz``, ``meta_<Cat>.json.gz``): the same review fields; metadata ``asin, title,
  category`` (one path); repeated identical metadata records (the 2018 dumps have them) are skipped and counted.
- 2023 (``<Cat>.jsonl``, ``meta_<Cat>.jsonl``): reviews ``user_id, parent_asin, rating, timestamp`` (ms);
  metadata ``parent_asin, title, categories, main_category``.

Category paths start with the store department (``Books``), the same for every item of a per-department
file, so it is dropped when the path goes deeper. Image URLs, video lists and related-product lists are not
kept. Review text is not loaded unless ``columns: {text: reviewText}`` (2014/2018) or ``{text: text}`` asks.
"""

from __future__ import annotations

import ast
import json
from typing import TYPE_CHECKING, Any

from llmrec.data.generic import Layout, load_records
from llmrec.data.schema import Vocabulary

if TYPE_CHECKING:
    from llmrec.data.config import DatasetConfig
    from llmrec.data.schema import InteractionData

AMAZON_RATING_RANGE = (1.0, 5.0)
AMAZON_VOCABULARY = Vocabulary(item="product", items="products", interacted="reviewed", category="category",
                               categories="categories")
_DROP = frozenset({"related", "imUrl", "imageURL", "imageURLHighRes", "images", "videos", "also_buy", "also_view",
                   "bought_together", "similar_item"})


def parse_json_or_literal(line: str) -> Any:
    """A JSON line, or a Python-literal line (Amazon 2014 metadata); a ``ValueError`` says why neither."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ValueError(f"neither JSON nor a Python literal: {type(exc).__name__}: {exc}") from None


def category_path(path: Any) -> Any:
    """A category path without its leading store department (kept when it is the only level)."""
    if isinstance(path, list) and len(path) > 1 and all(isinstance(c, str) for c in path):
        return path[1:]
    return path


def _flatten_2014(rec: dict[str, Any]) -> dict[str, Any]:
    """``categories: [["Books", "Mystery"], ["Books", "Crime"]]`` -> ``["Mystery", "Crime"]``."""
    value = rec.get("categories")
    if isinstance(value, list) and all(isinstance(p, list) for p in value):
        flat: list[str] = []
        for p in value:
            for c in category_path(p):
                if isinstance(c, str) and c not in flat:
                    flat.append(c)
        rec = {**rec, "categories": flat}
    return rec


def _path_field(name: str):
    def tidy(rec: dict[str, Any]) -> dict[str, Any]:
        return {**rec, name: category_path(rec[name])} if name in rec else rec

    return tidy


_REVIEWS_2014 = {"user_id": "reviewerID", "item_id": "asin", "rating": "overall", "timestamp": "unixReviewTime",
                 "title": "title", "text": None}

LAYOUTS: dict[str, Layout] = {
    "amazon2014": Layout(columns=_REVIEWS_2014, rating_range=AMAZON_RATING_RANGE, category=("categories",),
                         vocabulary=AMAZON_VOCABULARY, parse_item_line=parse_json_or_literal,
                         item_transform=_flatten_2014, drop_item_columns=_DROP),
    "amazon2018": Layout(columns=_REVIEWS_2014, rating_range=AMAZON_RATING_RANGE, category=("category",),
                         vocabulary=AMAZON_VOCABULARY, parse_item_line=parse_json_or_literal,
                         item_transform=_path_field("category"), drop_item_columns=_DROP,
                         skip_identical_items=True),
    "amazon2023": Layout(columns={"user_id": "user_id", "item_id": "parent_asin", "rating": "rating",
                                  "timestamp": "timestamp", "title": "title", "text": None},
                         rating_range=AMAZON_RATING_RANGE, category=("categories",), vocabulary=AMAZON_VOCABULARY,
                         item_transform=_path_field("categories"), drop_item_columns=_DROP),
}


def read_amazon2014(cfg: DatasetConfig) -> InteractionData:
    return load_records(cfg, LAYOUTS["amazon2014"])


def read_amazon2018(cfg: DatasetConfig) -> InteractionData:
    return load_records(cfg, LAYOUTS["amazon2018"])


def read_amazon2023(cfg: DatasetConfig) -> InteractionData:
    return load_records(cfg, LAYOUTS["amazon2023"])
