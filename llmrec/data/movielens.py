"""MovieLens in every release layout:

- RecBole atomic files ``ml-*.{inter,item,user}`` (``ml-100k.*`` is the offline default);
- ml-100k as GroupLens ships it (``u.data``, ``u.item``, ``u.genre``, ``u.user``);
- ml-1m / ml-10m (``ratings.dat``, ``movies.dat``, ``users.dat``: ``::``-separated, latin-1 for ml-1m);
- ml-latest(-small) / ml-20m / ml-25m / ml-32m (``ratings.csv``, ``movies.csv``: genres ``A|B``, half-star
  ratings, the year inside the title).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from llmrec.data.builder import DatasetBuilder, field_float, field_int, field_str
from llmrec.data.readers import iter_delimited, read_text
from llmrec.data.schema import InteractionData, Vocabulary
from llmrec.errors import DataError

if TYPE_CHECKING:
    from llmrec.data.config import DatasetConfig

ML_RATING_RANGE = (1.0, 5.0)
# MovieLens' category attribute and nouns; other datasets set theirs in their DatasetConfig.
ML_CATEGORY_FIELDS = ("genres",)
ML_VOCABULARY = Vocabulary(item="movie", items="movies", interacted="watched", category="genre", categories="genres")
# GroupLens genre order (u.genre), used when u.genre is absent.
GROUPLENS_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
# ml-latest / ml-20m and later rate in half stars.
ML_HALF_STAR_RANGE = (0.5, 5.0)
_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")
_NO_GENRES = "(no genres listed)"


def read_movielens(cfg: DatasetConfig) -> InteractionData:
    """The ``movielens`` format: ``cfg.path`` (``None``: the cached ml-100k)."""
    return load_movielens(cfg.path)


def load_movielens(path: str | Path | None = None) -> InteractionData:
    """Load a MovieLens folder of any release layout; ``None`` means the cached offline ml-100k copy."""
    if path is None:
        from llmrec.resources import movielens_100k_dir

        path = movielens_100k_dir()
    path = Path(path)
    if not path.is_dir():
        raise DataError("expected a MovieLens folder (ml-*.inter, u.data, ratings.dat or ratings.csv)", path=path)
    atomic = sorted(path.glob("ml-*.inter")) or sorted(path.glob("ml-*.item"))
    if atomic:
        return _load_atomic(path, atomic[0].stem)
    for marker, loader in _LAYOUTS:
        if any((path / name).exists() for name in marker):
            return loader(path)
    raise DataError("no MovieLens files here: expected ml-*.inter/.item (RecBole), u.data/u.item (ml-100k), "
                    "ratings.dat/movies.dat (ml-1m, ml-10m) or ratings.csv/movies.csv (ml-latest, ml-20m+)",
                    path=path)


def _split_title(title: str) -> tuple[str, str | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", "1995")``."""
    title = title.strip()
    m = _YEAR_IN_TITLE.search(title)
    return (title[: m.start()].strip(), m.group(1)) if m else (title, None)


def _split_genres(value: str) -> list[str]:
    return [g for g in value.strip().split("|") if g and g != _NO_GENRES]


def _load_dat(folder: Path) -> InteractionData:
    """ml-1m / ml-10m: ``ratings.dat`` ``UserID::MovieID::Rating::Timestamp``, ``movies.dat``
    ``MovieID::Title::Genres``, optional ``users.dat`` ``UserID::Gender::Age::Occupation::Zip-code``."""
    # ml-1m (which has users.dat) rates in whole stars, ml-10m (no users.dat) in half stars.
    scale = ML_RATING_RANGE if (folder / "users.dat").exists() else ML_HALF_STAR_RANGE
    b = DatasetBuilder(folder.name, scale, source=str(folder), category_fields=ML_CATEGORY_FIELDS,
                       vocabulary=ML_VOCABULARY)
    item_path = folder / "movies.dat"
    for rid, parts in _dat_rows(item_path, 3):
        title, year = _split_title(parts[1])
        b.add_item(parts[0].strip(), title, {"year": year, "genres": _split_genres(parts[2])},
                   path=item_path, record=rid)
    user_path = folder / "users.dat"
    if user_path.exists():
        for rid, parts in _dat_rows(user_path, 5):
            b.add_user(parts[0].strip(), dict(zip(["gender", "age", "occupation", "zip_code"], parts[1:], strict=True)),
                       path=user_path, record=rid)
    data_path = folder / "ratings.dat"
    for rid, parts in _dat_rows(data_path, 4):
        rec = dict(zip(["user_id", "item_id", "rating", "timestamp"], parts, strict=True))
        b.add_interaction(
            field_str(rec, "user_id", data_path, rid), field_str(rec, "item_id", data_path, rid),
            field_int(rec, "timestamp", data_path, rid), field_float(rec, "rating", data_path, rid, required=True),
            None, path=data_path, record=rid,
        )
    return b.build()


def _dat_rows(path: Path, n_fields: int):
    for lineno, line in enumerate(_grouplens_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != n_fields:
            raise DataError(f"expected {n_fields} '::'-separated fields, found {len(parts)}", path=path,
                            record=f"line {lineno}")
        yield f"line {lineno}", parts


def _load_csv(folder: Path) -> InteractionData:
    """ml-latest(-small) / ml-20m / ml-25m / ml-32m: ``movies.csv`` ``movieId,title,genres`` and
    ``ratings.csv`` ``userId,movieId,rating,timestamp`` (half stars)."""
    b = DatasetBuilder(folder.name, ML_HALF_STAR_RANGE, source=str(folder), category_fields=ML_CATEGORY_FIELDS,
                       vocabulary=ML_VOCABULARY)
    item_path = folder / "movies.csv"
    for lineno, rec in _csv_rows(item_path, ("movieId", "title", "genres")):
        rid = f"line {lineno}"
        title, year = _split_title(rec["title"])
        b.add_item(field_str(rec, "movieId", item_path, rid), title,
                   {"year": year, "genres": _split_genres(rec["genres"])}, path=item_path, record=rid)
    data_path = folder / "ratings.csv"
    cols = ("userId", "movieId", "rating", "timestamp")
    if not _fast_ml_interactions(b, data_path, "csv", cols=cols, item_field="movieId"):
        for lineno, rec in _csv_rows(data_path, cols):
            _ml_interaction(b, rec, f"line {lineno}", data_path, cols, item_field="movieId")
    return b.build()


_ML_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def _ml_interaction(b: DatasetBuilder, rec: dict, rid: str, path: Path, cols: tuple[str, ...] = _ML_COLUMNS,
                    item_field: str = "item_id") -> None:
    """Check and add one rating record (the fast path runs this on the record its column checks flag)."""
    user, item, rating, ts = cols
    b.add_interaction(
        field_str(rec, user, path, rid), field_str(rec, item, path, rid), field_int(rec, ts, path, rid),
        field_float(rec, rating, path, rid, required=True), None, path=path, record=rid, item_field=item_field,
    )


def _fast_ml_interactions(
    b: DatasetBuilder, path: Path, kind: str, *, cols: tuple[str, ...] = _ML_COLUMNS,
    header: tuple[str, ...] | None = None, encoding: str = "utf-8", rename=None, item_field: str = "item_id",
) -> bool:
    """A ratings file read and checked column by column (``llmrec.data.fastread``); ``False``: the row path
    must read it (and word its problem)."""
    import pyarrow as pa

    from llmrec.data import fastread as fr
    from llmrec.data.columnar import InteractionTable

    if not path.is_file():
        return False
    src = fr.Source(str(path), kind, header=header, encoding=encoding, rename=rename)
    table = fr.read_table(src, list(cols), id_columns=cols[:2])
    if table is None or any(c not in table.column_names for c in cols):
        return False
    user_col, item_col, rating_col, ts_col = cols
    users, items = fr.id_column(table[user_col]), fr.id_column(table[item_col])
    stamps, bad_ts = fr.integer_column(table[ts_col])
    ratings, bad_rating = fr.rating_column(table[rating_col], required=True)
    codes, unknown = fr.item_codes(items, pa.array(list(b.items), type=pa.string()))
    bad = (users.bad_rows() | items.bad_rows() | bad_ts | bad_rating | unknown
           | fr.out_of_range(ratings, b.rating_range))
    if bad.any():
        fr.first_bad(table, bad, src, lambda rec, rid: _ml_interaction(b, rec, rid, path, cols, item_field))
        b.reset_interactions()
        return False
    del table, bad
    pa.default_memory_pool().release_unused()  # hand the read buffers back before sorting (peak memory)
    user_codes, user_ids = fr.encode_first_appearance(users)
    b.set_table(InteractionTable.from_codes(user_codes, user_ids, codes, list(b.items), stamps, ratings))
    return True


def _checked_rows(rows, path: Path, required: tuple[str, ...]):
    """``rows`` (an iter_delimited generator) after checking that the header has every ``required`` column."""
    first = next(rows, None)
    if first is None:
        raise DataError("no records after the header", path=path)
    for col in required:
        if col not in first[1]:
            raise DataError("missing required column", path=path, record="header", field=col)
    yield first
    yield from rows


def _csv_rows(path: Path, required: tuple[str, ...]):
    return _checked_rows(iter_delimited(path, delimiter=","), path, required)


def _atomic_rows(path: Path, required: tuple[str, ...]):
    """Rows of a RecBole atomic file; its headers look like ``item_id:token`` (names kept, types dropped)."""
    return _checked_rows(iter_delimited(path, delimiter="\t", rename=_atomic_name), path, required)


def _atomic_name(header_cell: str) -> str:
    return header_cell.split(":")[0].strip()


def _load_atomic(folder: Path, name: str = "ml-100k") -> InteractionData:
    b = DatasetBuilder(
        name, ML_RATING_RANGE, source=str(folder), category_fields=ML_CATEGORY_FIELDS, vocabulary=ML_VOCABULARY
    )
    item_path = folder / f"{name}.item"
    for lineno, rec in _atomic_rows(item_path, ("item_id", "movie_title")):
        rid = f"line {lineno}"
        item_id = field_str(rec, "item_id", item_path, rid)
        year = (rec.get("release_year") or "").strip()
        year = year if year.isdigit() else None  # RecBole writes 'unkonwn' for item 267
        # ml-100k's atomic item file calls the genres 'class', ml-1m's and later 'genre'.
        genres = (rec.get("class") or rec.get("genre") or "").split()
        b.add_item(item_id, rec.get("movie_title"), {"year": year, "genres": genres}, path=item_path, record=rid)

    user_path = folder / f"{name}.user"
    if user_path.exists():
        for lineno, rec in _atomic_rows(user_path, ("user_id",)):
            rid = f"line {lineno}"
            uid = field_str(rec, "user_id", user_path, rid)
            b.add_user(uid, {k: v for k, v in rec.items() if k != "user_id"}, path=user_path, record=rid)

    inter_path = folder / f"{name}.inter"
    if not _fast_ml_interactions(b, inter_path, "tsv", rename=_atomic_name):
        for lineno, rec in _atomic_rows(inter_path, _ML_COLUMNS):
            _ml_interaction(b, rec, f"line {lineno}", inter_path)
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
    cols = list(_ML_COLUMNS)
    if not _fast_ml_interactions(b, data_path, "tsv", header=_ML_COLUMNS, encoding=enc):
        for lineno, rec in iter_delimited(data_path, delimiter="\t", encoding=enc, header=cols):
            _ml_interaction(b, rec, f"line {lineno}", data_path)
    return b.build()


# Release layouts after the RecBole files: marker files -> loader.
_LAYOUTS = (
    (("u.data", "u.item"), _load_grouplens),
    (("ratings.dat", "movies.dat"), _load_dat),
    (("ratings.csv", "movies.csv"), _load_csv),
)
