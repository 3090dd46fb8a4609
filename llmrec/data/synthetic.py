"""A generated bookshop in real-world shape, for tests, docs and the bring-your-own-data example.

``write_bookshop(folder)`` writes the same purchases twice:

- the shop's own export, read by ``bookshop.yaml`` (format ``generic``): ``orders.csv`` with
  ``customer_id,isbn,ts,stars`` where ``ts`` is ISO-8601 (``2023-04-05T10:11:12Z``, a few with a ``+02:00``
  offset, a few plain dates) and ``books.jsonl`` with ``isbn, title, category``;
- Amazon-2023-shaped files, read by ``bookshop-amazon2023.yaml``: ``reviews.jsonl`` (``user_id, parent_asin,
  rating, timestamp`` in ms) and ``meta.jsonl`` (``parent_asin, title, categories, main_category``).

Customers' taste drifts: each has two or three favourite categories in turn, so "which category next?"
questions have signal. A few customers bought only three books, so ``min_user_interactions: 5`` has an
effect to report.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from llmrec.io import write_text_atomic

CATEGORIES = ("Fantasy", "Crime", "Romance", "History", "Science", "Cookery", "Poetry", "Travel")
_WORDS = {
    "Fantasy": (("Dragon", "Silver", "Hollow", "Ember", "Shadow"), ("Crown", "Gate", "Oath", "Forest", "Throne")),
    "Crime": (("Silent", "Cold", "Last", "Broken", "Midnight"), ("Witness", "Alibi", "Verdict", "Harbour", "Ledger")),
    "Romance": (("Summer", "Secret", "Sweet", "Wild", "Distant"), ("Promise", "Letters", "Garden", "Heart", "Waltz")),
    "History": (("Iron", "Lost", "Golden", "Forgotten", "Northern"), ("Empire", "Century", "Kings", "Voyage", "Siege")),
    "Science": (("Hidden", "Quantum", "Living", "Deep", "Curious"), ("Universe", "Cells", "Code", "Ocean", "Mind")),
    "Cookery": (("Simple", "Rustic", "Spiced", "Everyday", "Coastal"), ("Kitchen", "Bakes", "Suppers", "Pantry", "Feasts")),
    "Poetry": (("Quiet", "Salt", "Paper", "Morning", "Small"), ("Hours", "Psalms", "Birds", "Rain", "Songs")),
    "Travel": (("Slow", "Far", "Open", "High", "Blue"), ("Roads", "Islands", "Trains", "Maps", "Valleys")),
}
_START = dt.datetime(2022, 1, 3, tzinfo=dt.timezone.utc)
_PLUS_TWO = dt.timezone(dt.timedelta(hours=2))

BOOKSHOP_YAML = """\
# A bookshop's export: orders as CSV with ISO dates, the catalogue as JSON lines.
# Paths are relative to this file. Check it with: llmrec data info --data bookshop.yaml
name: bookshop
format: generic
interactions: orders.csv
items: books.jsonl
columns: {user_id: customer_id, item_id: isbn, timestamp: ts, rating: stars}
timestamp_format: iso
rating_range: [1, 5]
category: category
item_text: "{{ title }} ({{ category }})"
vocabulary: {item: book, items: books, interacted: bought}
min_user_interactions: 5
"""

AMAZON_YAML = """\
# The same purchases as Amazon-2023-style review and metadata files.
name: bookshop
format: amazon2023
interactions: reviews.jsonl
items: meta.jsonl
item_text: "{{ title }} ({{ categories | join(', ') }})"
vocabulary: {item: book, items: books, interacted: bought}
min_user_interactions: 5
"""


def _isbn13(rng: np.random.Generator) -> str:
    digits = [9, 7, 8] + [int(d) for d in rng.integers(0, 10, size=9)]
    check = (10 - sum(d * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits)) % 10) % 10
    return "".join(map(str, digits + [check]))


def _iso(when: dt.datetime, style: float) -> str:
    if style < 0.15:
        return when.date().isoformat()  # midnight UTC: still in order, as every purchase is on its own day
    if style < 0.25:
        return when.astimezone(_PLUS_TWO).isoformat()
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_bookshop(
    n_users: int = 60, n_items: int = 120, seed: int = 0, mean_history: int = 26, n_short: int = 3
) -> tuple[list[dict], list[dict]]:
    """``(books, orders)``: catalogue rows ``isbn, title, category`` and order rows ``customer_id, isbn, when
    (UTC datetime), stars, ts (ISO text)``, sorted by time."""
    if n_items < len(CATEGORIES) or n_users < 1:
        raise ValueError(f"need at least {len(CATEGORIES)} items and one user")
    rng = np.random.default_rng(seed)
    titles = {c: [f"The {a} {n}" for a in words[0] for n in words[1]] for c, words in _WORDS.items()}
    books: list[dict] = []
    isbns: set[str] = set()
    for i in range(n_items):
        category = CATEGORIES[i % len(CATEGORIES)]
        pool = titles[category]
        title = pool.pop(int(rng.integers(len(pool)))) if pool else f"{category} Volume {i}"
        isbn = _isbn13(rng)
        while isbn in isbns:
            isbn = _isbn13(rng)
        isbns.add(isbn)
        books.append({"isbn": isbn, "title": title, "category": category})
    by_category = {c: [b["isbn"] for b in books if b["category"] == c] for c in CATEGORIES}

    orders: list[dict] = []
    for u in range(n_users):
        customer = f"C{19990 + u}"
        n = 3 if u >= n_users - n_short else int(np.clip(rng.poisson(mean_history), 8, min(60, n_items)))
        phases = [str(c) for c in rng.choice(CATEGORIES, size=int(rng.integers(2, 4)), replace=False)]
        when = _START + dt.timedelta(days=int(rng.integers(0, 200)))
        bought: set[str] = set()
        for k in range(n):
            favourite = phases[k * len(phases) // n]
            category = favourite if rng.random() < 0.75 else str(rng.choice(CATEGORIES))
            options = [b for b in by_category[category] if b not in bought] or [
                b["isbn"] for b in books if b["isbn"] not in bought]
            isbn = options[int(rng.integers(len(options)))]
            bought.add(isbn)
            stars = int(rng.choice([3, 4, 5, 5])) if category == favourite else int(rng.choice([1, 2, 3, 4]))
            when = (when + dt.timedelta(days=int(rng.integers(1, 7)))).replace(
                hour=int(rng.integers(8, 22)), minute=int(rng.integers(60)), second=int(rng.integers(60)))
            orders.append({"customer_id": customer, "isbn": isbn, "when": when, "stars": stars,
                           "ts": _iso(when, float(rng.random()))})
    orders.sort(key=lambda o: o["when"])
    return books, orders


def write_bookshop(folder: str | Path, n_users: int = 60, n_items: int = 120, seed: int = 0) -> Path:
    """Write the bookshop files and both configs into ``folder``; returns the path of ``bookshop.yaml``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    books, orders = make_bookshop(n_users, n_items, seed)
    write_text_atomic(folder / "books.jsonl", "".join(json.dumps(b) + "\n" for b in books))
    lines = ["customer_id,isbn,ts,stars"] + [f"{o['customer_id']},{o['isbn']},{o['ts']},{o['stars']}" for o in orders]
    write_text_atomic(folder / "orders.csv", "\n".join(lines) + "\n")
    write_text_atomic(folder / "meta.jsonl", "".join(
        json.dumps({"parent_asin": b["isbn"], "title": b["title"], "categories": ["Books", b["category"]],
                    "main_category": "Books"}) + "\n" for b in books))
    write_text_atomic(folder / "reviews.jsonl", "".join(
        json.dumps({"user_id": o["customer_id"], "parent_asin": o["isbn"], "rating": float(o["stars"]),
                    "timestamp": _millis(o["ts"])}) + "\n" for o in orders))
    write_text_atomic(folder / "bookshop-amazon2023.yaml", AMAZON_YAML)
    write_text_atomic(folder / "bookshop.yaml", BOOKSHOP_YAML)
    return folder / "bookshop.yaml"


def _millis(iso: str) -> int:
    """The instant the shop export's ``ts`` text stands for (plain dates: midnight UTC), in ms."""
    parsed = dt.datetime.fromisoformat(iso)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp()) * 1000
