"""The vectorised fast path for interaction files: CSV/TSV/JSON lines (optionally ``.gz``) and Parquet read
by pyarrow, every check done on whole columns.

It gives exactly what the record-by-record path gives, or hands over to it:

- a file pyarrow cannot read as a clean table (HTML, bad encoding, ragged rows, mixed JSON types, an
  unusual header) is left to the row path, which reports its precise error;
- when a column check flags a record, the first flagged record (in file order) is run through the row
  path's own per-record function with its row-path label (``line N`` / ``row N``), so the message, record
  and field are the ones the row path reports.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llmrec.data.readers import HUB_PREFIX, inner_suffix, iter_delimited, read_text
from llmrec.data.timestamps import _MS_THRESHOLD, parse_timestamp

logger = logging.getLogger(__name__)
_HTML = ("<!doctype html", "<html", "<head", "<body", "<")


@dataclass(frozen=True)
class Source:
    """An interaction file and how its records are numbered by the row path."""

    path: str
    kind: str  # parquet | csv | tsv | jsonl
    header: tuple[str, ...] | None = None  # column names of a headerless delimited file
    encoding: str = "utf-8"
    rename: Callable[[str], str] | None = None  # header cell -> column name (RecBole 'name:type')

    def label(self, i: int) -> str:
        """The row path's label of the ``i``-th record (computed only for an error)."""
        if self.kind == "parquet":
            return f"row {i}"
        if self.kind == "jsonl":
            k = -1
            for lineno, line in enumerate(read_text(self.path).splitlines(), start=1):
                if line.strip():
                    k += 1
                    if k == i:
                        return f"line {lineno}"
            raise IndexError(i)
        delimiter = "\t" if self.kind == "tsv" else ","
        rows = iter_delimited(self.path, delimiter=delimiter, encoding=self.encoding,
                              header=list(self.header) if self.header else None, rename=self.rename)
        for k, (lineno, _) in enumerate(rows):
            if k == i:
                return f"line {lineno}"
        raise IndexError(i)


def source_kind(path: str | Path) -> str | None:
    """``parquet``/``csv``/``tsv``/``jsonl`` for a local file the fast path reads, else ``None``."""
    text = str(path)
    if text.startswith(HUB_PREFIX):
        return None
    p = Path(text)
    if not p.is_file():
        return None
    suffix = inner_suffix(p)
    if suffix == ".parquet" and p.suffix.lower() == ".parquet":
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return None


def _head(path: str, n: int = 4096) -> bytes:
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError):
        return b""


def _looks_clean(path: str) -> bool:
    """Not empty and not an HTML page (the row path words those errors)."""
    head = _head(path)
    if not head.strip():
        return False
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff").lstrip().lower()
    return not text.startswith(_HTML)


def read_table(src: Source, columns: list[str], id_columns: tuple[str, ...] = ()) -> pa.Table | None:
    """The file's ``columns`` (those present) as an Arrow table; ``None`` when the row path must read it."""
    try:
        if src.kind == "parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(src.path).names
            if len(set(names)) != len(names):
                return None
            schema = pq.read_schema(src.path)
            # Id columns come dictionary-encoded (as Parquet stores them): codes, not a string per row.
            as_dict = [c for c in id_columns if c in names and _is_string(schema.field(c).type)]
            table = pq.read_table(src.path, columns=[c for c in columns if c in names], read_dictionary=as_dict)
            return table if table.num_rows else None
        if not _looks_clean(src.path):
            return None
        if src.kind == "jsonl":
            return _read_jsonl(src, columns)
        return _read_delimited(src, columns)
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        logger.debug("%s: fast path not taken (%s); reading record by record", src.path, exc)
        return None


def _read_jsonl(src: Source, columns: list[str]) -> pa.Table | None:
    import pyarrow.json as pj

    table = pj.read_json(src.path)
    retype = {c: pa.string() for c in columns if c in table.column_names
              and (pa.types.is_timestamp(table[c].type) or pa.types.is_date(table[c].type)
                   or pa.types.is_time(table[c].type))}
    if retype:  # pyarrow infers timestamps from ISO-looking strings; the row path parses the text
        schema = pa.schema(list(retype.items()))
        table = pj.read_json(src.path, parse_options=pj.ParseOptions(explicit_schema=schema,
                                                                     unexpected_field_behavior="infer"))
    if not table.num_rows:
        return None
    return table.select([c for c in columns if c in table.column_names])


def _read_delimited(src: Source, columns: list[str]) -> pa.Table | None:
    import pyarrow.csv as pcsv

    delimiter = "\t" if src.kind == "tsv" else ","
    if src.header is None:
        head = _head(src.path, 1 << 16).decode(src.encoding, errors="replace").lstrip("\ufeff")
        first = next((row for row in csv.reader(io.StringIO(head), delimiter=delimiter) if row), None)
        if not first or "\n" not in head:
            return None
        names = [(src.rename or str.strip)(h.strip()) for h in first]
        if len(set(names)) != len(names) or any(not n for n in names):
            return None
        read = pcsv.ReadOptions(column_names=names, skip_rows=1, encoding=src.encoding)
        if first != [h for h in head.splitlines()[0].split(delimiter)]:
            return None  # quoted or multi-line header: let the row path read it
    else:
        names = list(src.header)
        read = pcsv.ReadOptions(column_names=names, encoding=src.encoding)
    wanted = [c for c in columns if c in names]
    table = pcsv.read_csv(
        src.path, read_options=read,
        parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, include_columns=wanted,
                                            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    if not table.num_rows:
        return None
    return table.rename_columns(wanted) if table.column_names != wanted else table


# ---------------------------------------------------------------- column checks: (values, bad-row mask)


def _plain(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def _mask(arr: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null -> False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


@dataclass
class Ids:
    """An id column as codes into its distinct values (``field_str`` applied to each distinct value once).

    ``raw``: per row, the index of its value in ``values`` (the file's distinct values, stripped);
    ``bad``: per distinct value, missing / blank / not a string or integer.
    """

    raw: np.ndarray
    values: pa.Array
    bad: np.ndarray

    def bad_rows(self) -> np.ndarray:
        return self.bad[self.raw]


def id_column(col: Any) -> Ids:
    """``field_str`` on a whole column: text (stripped) or integer ids; missing, blank or other types are bad."""
    if isinstance(col, pa.ChunkedArray):
        col = col.unify_dictionaries() if pa.types.is_dictionary(col.type) else col
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col, null_encoding="encode")
    raw = np.asarray(pc.fill_null(col.indices, 0).to_numpy(zero_copy_only=False), dtype=np.int32)
    values = col.dictionary
    if col.indices.null_count:  # a null index: give it its own (missing) distinct value
        raw = np.where(_mask(pc.is_null(col.indices)), len(values), raw).astype(np.int32)
        values = pa.concat_arrays([values, pa.nulls(1, values.type)])
    if _is_string(values.type):
        values = pc.utf8_trim_whitespace(values)
        bad = _mask(pc.or_kleene(pc.is_null(values), pc.equal(values, "")))
    elif pa.types.is_integer(values.type):
        values, bad = values.cast(pa.string()), _mask(pc.is_null(values))
    else:
        values, bad = pa.nulls(len(values), pa.string()), np.ones(len(values), dtype=bool)
    return Ids(raw, values.cast(pa.string()), bad)


def encode_first_appearance(ids: Ids, keep: np.ndarray | None = None) -> tuple[np.ndarray, pa.Array]:
    """Codes numbering the (stripped) ids by first appearance among the kept rows, and the id table."""
    distinct = pc.unique(ids.values)  # stripped values may merge; pc.unique keeps first-appearance order
    of_value = np.asarray(pc.index_in(ids.values, value_set=distinct).to_numpy(zero_copy_only=False))
    rows = of_value.astype(np.int32)[ids.raw] if keep is None else of_value.astype(np.int32)[ids.raw[keep]]
    seen = np.asarray(pc.unique(pa.array(rows)).to_numpy(zero_copy_only=False))  # first-appearance order
    if len(seen) == len(distinct) and (seen == np.arange(len(seen))).all():
        return rows, distinct
    new = np.full(len(distinct), -1, dtype=np.int32)
    new[seen] = np.arange(len(seen), dtype=np.int32)
    return new[rows], distinct.take(pa.array(seen, type=pa.int64()))


def text_column(col: Any) -> tuple[pa.Array | None, np.ndarray]:
    """Optional text: a string or missing; any other type is bad where present."""
    col = _plain(col)
    if _is_string(col.type) or pa.types.is_null(col.type):
        return col.cast(pa.large_string()), np.zeros(len(col), dtype=bool)
    return None, _mask(pc.is_valid(col))


def _unique_map(col: pa.Array, parse: Callable[[Any], float]) -> tuple[np.ndarray, np.ndarray]:
    """Parse each distinct value once with the row path's own parser (exact by construction)."""
    uniq = pc.unique(col)
    values = np.zeros(len(uniq), dtype=np.float64)
    bad = np.zeros(len(uniq), dtype=bool)
    for k, v in enumerate(uniq.to_pylist()):
        try:
            values[k] = parse(v)
        except (ValueError, TypeError, OverflowError):
            bad[k] = True
    idx = pc.index_in(col, value_set=uniq).to_numpy(zero_copy_only=False)
    return values[idx], bad[idx]


def _numbers(col: pa.Array) -> np.ndarray | None:
    """Strings as float64 if every one parses as a plain number (int64 first: exact), else ``None``."""
    for target in (pa.int64(), pa.float64()):
        try:
            return np.asarray(col.cast(target).to_numpy(zero_copy_only=False), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def timestamp_column(col: Any, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """``field_timestamp`` under ``fmt``: integer epoch seconds, and the bad rows."""
    col = _plain(col)
    n = len(col)
    missing = _mask(pc.is_null(col))
    epoch = fmt in ("auto", "seconds", "milliseconds")
    if epoch and pa.types.is_integer(col.type):
        raw = np.asarray((pc.fill_null(col, 0) if col.null_count else col).to_numpy(zero_copy_only=False),
                         dtype=np.int64)
        if fmt == "seconds":
            return raw, missing
        if fmt == "auto":  # whole seconds unless the value is past the milliseconds threshold
            ms = np.flatnonzero((raw > _MS_THRESHOLD) | (raw < -_MS_THRESHOLD))
            if not len(ms):
                return raw, missing
            raw = raw.copy()
            raw[ms] = _floor(raw[ms].astype(np.float64) / 1000.0)
            return raw, missing
        return _floor(raw.astype(np.float64) / 1000.0), missing
    if epoch and pa.types.is_floating(col.type):
        number = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.float64)
        finite = np.isfinite(number)
        return _epoch_seconds(number, number, fmt, False), missing | ~finite
    if epoch and _is_string(col.type):
        empty = _mask(pc.equal(col, "")) | missing
        number = _numbers(pc.if_else(pc.equal(col, ""), pa.scalar("0", col.type), col)) if not missing.any() else None
        if number is not None:
            finite = np.isfinite(number)
            return _epoch_seconds(number, number, fmt, False), empty | ~finite
    if pa.types.is_timestamp(col.type) and col.type.unit in ("s", "ms", "us"):
        per = {"s": 1, "ms": 1000, "us": 1_000_000}[col.type.unit]
        raw = np.asarray(pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
        return np.floor_divide(raw, per), missing
    if pa.types.is_date32(col.type):
        days = np.asarray(pc.fill_null(col.cast(pa.int32()), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        return days * 86400, missing

    def parse(v: Any) -> float:
        if v is None or v == "":
            raise ValueError("missing")
        return parse_timestamp(v, fmt)

    if not (_is_string(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    values, bad = _unique_map(col, parse)
    return values.astype(np.int64), bad


def _epoch_seconds(raw: np.ndarray, number: np.ndarray, fmt: str, integer: bool) -> np.ndarray:
    """``timestamps._epoch`` on whole columns (the same float operations, so the same integers)."""
    with np.errstate(invalid="ignore"):
        if fmt == "milliseconds":
            return _floor(number / 1000.0)
        if fmt == "seconds":
            return raw.astype(np.int64) if integer else _floor(number)
        ms = np.abs(number) > _MS_THRESHOLD
        secs = raw.astype(np.int64) if integer else _floor(number)
        return np.where(ms, _floor(number / 1000.0), secs)


def _floor(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.floor(x), nan=0.0, posinf=0.0, neginf=0.0).astype(np.int64)


def integer_column(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """``field_int`` (MovieLens timestamps): integers, or numbers with no fraction."""
    col = _plain(col)
    n = len(col)
    missing = _mask(pc.is_null(col))
    if pa.types.is_integer(col.type):
        return np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.int64), missing
    if _is_string(col.type) and not missing.any():
        empty = _mask(pc.equal(col, ""))
        number = _numbers(pc.if_else(pc.equal(col, ""), pa.scalar("0", col.type), col))
        if number is not None:
            ok = np.isfinite(number)
            whole = ok & (np.floor(np.where(ok, number, 0.0)) == np.where(ok, number, 0.0))
            return _floor(np.where(whole, number, 0.0)), empty | ~whole

        def parse(v: Any) -> float:
            as_float = float(v)
            if v == "" or not math.isfinite(as_float) or as_float != int(as_float):
                raise ValueError(v)
            return as_float

        values, bad = _unique_map(col, parse)
        return values.astype(np.int64), bad
    return np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)


def rating_column(col: Any, required: bool) -> tuple[np.ndarray, np.ndarray]:
    """``field_float``: finite numbers, NaN where missing (bad when ``required``)."""
    col = _plain(col)
    n = len(col)
    if pa.types.is_null(col.type):
        return np.full(n, np.nan), np.full(n, required)
    missing = _mask(pc.is_null(col))
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        if not col.null_count:
            values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
            return values, ~np.isfinite(values)
        values = np.array(pc.fill_null(col.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False))  # writable
        bad = ~np.isfinite(values) & ~missing
        values[missing] = np.nan
        return values, bad | (missing & required)
    if _is_string(col.type):
        empty = _mask(pc.equal(col, "")) | missing
        number = _numbers(pc.if_else(pc.equal(col, ""), pa.scalar("0", col.type), col)) if not missing.any() else None
        if number is None:
            def parse(v: Any) -> float:
                if v is None or v == "":
                    return math.nan
                out = float(v)
                if not math.isfinite(out):
                    raise ValueError(v)
                return out

            number, bad = _unique_map(col, parse)
        else:
            bad = ~np.isfinite(number) & ~empty
        number = np.where(empty, np.nan, number)
        return number, bad | (empty & required)
    return np.full(n, np.nan), (~missing) | (missing & required)


def out_of_range(ratings: np.ndarray, rating_range: tuple[float, float] | None) -> np.ndarray:
    if rating_range is None:
        return np.zeros(len(ratings), dtype=bool)
    lo, hi = rating_range
    with np.errstate(invalid="ignore"):
        return ~np.isnan(ratings) & ~((ratings >= lo) & (ratings <= hi))


def item_codes(ids: Ids, catalogue: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Codes into ``catalogue`` (a dictionary lookup per distinct value), and the rows whose item it lacks."""
    codes = pc.index_in(ids.values, value_set=catalogue)
    unknown = _mask(pc.is_null(codes))
    codes = np.asarray(pc.fill_null(codes, 0).to_numpy(zero_copy_only=False), dtype=np.int32)
    return codes[ids.raw], unknown[ids.raw]


def first_bad(table: pa.Table, bad: np.ndarray, src: Source, check: Callable[[dict[str, Any], str], Any]) -> None:
    """Run the row path's per-record ``check`` on the first flagged record; it raises the row path's error."""
    i = int(np.argmax(bad))
    rec = table.slice(i, 1).to_pylist()[0]
    check(rec, src.label(i))
