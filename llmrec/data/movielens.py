"""MovieLens-100k in both layouts: RecBole atomic files (``ml-100k.{inter,item,user}``, the offline default)
and the original GroupLens folder (``u.data``, ``u.item``, ``u.genre``, ``u.user``)."""

from __future__ import annotations

import re
from pathlib import Path

from llmrec.data.builder import DatasetBuilder, field_float, field_int, field_str
from llmrec.data.readers import iter_delimited, read_text
from llmrec.data.schema import InteractionData, Vocabulary
from llmrec.errors import DataError

ML_RATING_RANGE = (1.0, 5.0)
# MovieLens' category attribute and nouns; other datasets set theirs in their DatasetConfig.
ML_CATEGORY_FIELDS = ("genres",)
ML_VOCABULARY = Vocabulary(item="movie", items="movies", interacted="watched", category="genre", categories="genres")
# GroupLens genre order (u.genre), used when u.genre is absent.
GROUPLENS_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")


def load_movielens(path: str | Path | None = None) -> InteractionData:
    """Load MovieLens-100k from ``path`` (either layout); ``None`` means the cached offline copy."""
    if path is None:
        from llmrec.resources import movielens_100k_dir

        path = movielens_100k_dir()
    path = Path(path)
    if not path.is_dir():
        raise DataError("expected a MovieLens folder (ml-100k.inter/.item or u.data/u.item)", path=path)
    if (path / "ml-100k.inter").exists() or (path / "ml-100k.item").exists():
        return _load_atomic(path)
    if (path / "u.data").exists() or (path / "u.item").exists():
        return _load_grouplens(path)
    raise DataError("no ml-100k.inter/ml-100k.item (RecBole) or u.data/u.item (GroupLens) files here", path=path)


def _atomic_rows(path: Path, required: tuple[str, ...]):
    """Rows of a RecBole atomic file; its headers look like ``item_id:token`` (names kept, types dropped)."""
    rows = iter_delimited(path, delimiter="\t", rename=lambda h: h.split(":")[0].strip())
    first = next(rows, None)
    if first is None:
        raise DataError("no records after the header", path=path)
    for col in required:
        if col not in first[1]:
            raise DataError("missing required column", path=path, record="header", field=col)
    yield first
    yield from rows


def _load_atomic(folder: Path) -> InteractionData:
    b = DatasetBuilder(
        "ml-100k", ML_RATING_RANGE, source=str(folder), category_fields=ML_CATEGORY_FIELDS, vocabulary=ML_VOCABULARY
    )
    item_path = folder / "ml-100k.item"
    for lineno, rec in _atomic_rows(item_path, ("item_id", "movie_title")):
        rid = f"line {lineno}"
        item_id = field_str(rec, "item_id", item_path, rid)
        year = (rec.get("release_year") or "").strip()
        year = year if year.isdigit() else None  # RecBole writes 'unkonwn' for item 267
        genres = (rec.get("class") or "").split()
        b.add_item(item_id, rec.get("movie_title"), {"year": year, "genres": genres}, path=item_path, record=rid)

    user_path = folder / "ml-100k.user"
    if user_path.exists():
        for lineno, rec in _atomic_rows(user_path, ("user_id",)):
            rid = f"line {lineno}"
            uid = field_str(rec, "user_id", user_path, rid)
            b.add_user(uid, {k: v for k, v in rec.items() if k != "user_id"}, path=user_path, record=rid)

    inter_path = folder / "ml-100k.inter"
    for lineno, rec in _atomic_rows(inter_path, ("user_id", "item_id", "rating", "timestamp")):
        rid = f"line {lineno}"
        b.add_interaction(
            field_str(rec, "user_id", inter_path, rid),
            field_str(rec, "item_id", inter_path, rid),
            field_int(rec, "timestamp", inter_path, rid),
            field_float(rec, "rating", inter_path, rid, required=True),
            None,
            path=inter_path,
            record=rid,
        )
    return b.build()


def _grouplens_text(path: Path) -> str:
    """GroupLens ships latin-1 text (accented titles); a copy re-saved as UTF-8 is read as UTF-8, not mangled."""
    try:
        return read_text(path, "utf-8")
    except DataError as exc:
        if "not valid utf-8" not in exc.message:
            raise
        return read_text(path, "latin-1")


def _read_genres(path: Path) -> list[str]:
    """``u.genre``: ``name|index`` lines, returned in index order."""
    pairs: list[tuple[int, str]] = []
    for lineno, line in enumerate(_grouplens_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            raise DataError(f"expected 'name|index', found {line!r}", path=path, record=f"line {lineno}")
        pairs.append((int(parts[1]), parts[0]))
    return [name for _, name in sorted(pairs)]


def _load_grouplens(folder: Path) -> InteractionData:
    enc = "latin-1"  # u.data is numeric; any byte decodes
    genres = list(GROUPLENS_GENRES)
    genre_path = folder / "u.genre"
    if genre_path.exists():
        genres = _read_genres(genre_path)

    b = DatasetBuilder(
        "ml-100k", ML_RATING_RANGE, source=str(folder), category_fields=ML_CATEGORY_FIELDS, vocabulary=ML_VOCABULARY
    )
    item_path = folder / "u.item"
    for lineno, line in enumerate(_grouplens_text(item_path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        rid = f"line {lineno}"
        if len(parts) != 5 + len(genres):
            raise DataError(f"expected {5 + len(genres)} '|'-separated fields, found {len(parts)}", path=item_path, record=rid)
        flags = parts[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataError("genre flags must be 0 or 1", path=item_path, record=rid, field="genres")
        title = parts[1].strip()
        m = _YEAR_IN_TITLE.search(title)
        year = m.group(1) if m else (parts[2][-4:] if parts[2] else None)
        if m:
            title = title[: m.start()].strip()
        item_genres = [g for g, f in zip(genres, flags, strict=True) if f == "1"]
        b.add_item(parts[0].strip(), title, {"year": year, "genres": item_genres}, path=item_path, record=rid)

    user_path = folder / "u.user"
    if user_path.exists():
        for lineno, line in enumerate(_grouplens_text(user_path).splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("|")
            rid = f"line {lineno}"
            if len(parts) != 5:
                raise DataError(f"expected 5 '|'-separated fields, found {len(parts)}", path=user_path, record=rid)
            b.add_user(parts[0], dict(zip(["age", "gender", "occupation", "zip_code"], parts[1:], strict=True)),
                       path=user_path, record=rid)

    data_path = folder / "u.data"
    cols = ["user_id", "item_id", "rating", "timestamp"]
    for lineno, rec in iter_delimited(data_path, delimiter="\t", encoding=enc, header=cols):
        rid = f"line {lineno}"
        b.add_interaction(
            field_str(rec, "user_id", data_path, rid),
            field_str(rec, "item_id", data_path, rid),
            field_int(rec, "timestamp", data_path, rid),
            field_float(rec, "rating", data_path, rid, required=True),
            None,
            path=data_path,
            record=rid,
        )
    return b.build()
