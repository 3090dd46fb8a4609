"""Low-level file readers that fail loudly: empty files, HTML pages, bad encodings, malformed records."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmrec.errors import DataError

_HTML_MARKERS = ("<!doctype html", "<html", "<head", "<body")


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Read a whole text file; reject missing, empty, undecodable and HTML content with a precise error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror}", path=path) from None
    if path.suffix.lower() == ".gz" and raw:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"not a readable gzip file: {exc}", path=path) from None
    if not raw.strip():
        raise DataError("file is empty", path=path)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"not valid {encoding} at byte {exc.start} (line {line}); re-save the file as {encoding}",
            path=path,
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    head = text.lstrip()[:1024].lower()
    # Also catch pages that open with an XML declaration or a comment before <html>.
    if any(head.startswith(m) for m in _HTML_MARKERS) or (head.startswith("<") and "<html" in head):
        raise DataError(
            "looks like an HTML page, not data (a download link that returned a web page?)", path=path
        )
    return text


# csv's default field limit (128 KiB) is too small for long reviews or item descriptions; fields longer than
# this are refused with the line named (a sign of a missing closing quote or a wrong delimiter).
CSV_FIELD_LIMIT = 16 * 1024 * 1024


def read_json(path: str | Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path=path) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's conversion limit)
        raise DataError(f"unreadable JSON: {exc}", path=path) from None
    except RecursionError:
        raise DataError("JSON nested too deeply to read", path=path) from None


def parse_json_line(line: str) -> Any:
    """One JSON value; a ``ValueError`` says why not."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg}") from None
    except ValueError as exc:  # an integer beyond Python's digit limit
        raise ValueError(f"unreadable JSON: {exc}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def iter_jsonl(
    path: str | Path, parse_line: Callable[[str], Any] = parse_json_line, text: str | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)``; blank lines are allowed, anything else must be a JSON object.

    ``parse_line`` turns one line into a value (e.g. a Python-literal parser for Amazon 2014 metadata).
    """
    if text is None:
        text = read_text(path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = parse_line(line)
        except ValueError as exc:
            raise DataError(str(exc), path=path, record=f"line {lineno}") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"expected a JSON object, got {type(obj).__name__}", path=path, record=f"line {lineno}"
            )
        yield lineno, obj


def iter_delimited(
    path: str | Path,
    delimiter: str = ",",
    encoding: str = "utf-8",
    header: list[str] | None = None,
    rename: Callable[[str], str] | None = None,
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` from CSV/TSV; every row must have exactly the header's columns.

    ``header=None`` reads the header from the first row (``rename`` maps each column name);
    a given ``header`` means the file has none.
    """
    text = read_text(path, encoding=encoding)
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    rows = _csv_rows(csv.reader(io.StringIO(text), delimiter=delimiter), path)
    if header is None:
        for _start, row in rows:
            if row:
                header = [(rename or str.strip)(h.strip()) for h in row]
                break
        if not header:
            raise DataError("no header row", path=path)
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"duplicate column name(s) {dupes}", path=path, record="header")
    for lineno, row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataError(
                f"expected {len(header)} columns ({', '.join(header)}), found {len(row)}",
                path=path,
                record=f"line {lineno}",
            )
        yield lineno, dict(zip(header, row, strict=True))


def _csv_rows(reader: Any, path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """``(line_number, row)`` (the line a row starts on); csv's errors become a DataError naming the line."""
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise DataError(f"a field is longer than {CSV_FIELD_LIMIT:,} characters (llmrec's limit; an "
                                "unclosed quote or a wrong delimiter?)", path=path, record=f"line {start}") from None
            raise DataError(f"unreadable CSV: {exc}", path=path, record=f"line {start}") from None
        yield start, row


def iter_parquet(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"not a readable Parquet file: {exc}", path=path) from None
    if table.num_rows == 0:
        raise DataError("file is empty", path=path)
    i = 0
    for batch in table.to_batches(max_chunksize=8192):  # Python dicts a batch at a time, not the whole file
        for row in batch.to_pylist():
            yield i, row
            i += 1


HUB_PREFIX = "hf:"


def inner_suffix(path: str | Path) -> str:
    """The data suffix of ``path``, looking through ``.gz`` (``reviews.jsonl.gz`` -> ``.jsonl``)."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        path = path.with_suffix("")
    return path.suffix.lower()


def iter_records(
    path: str | Path, parse_line: Callable[[str], Any] = parse_json_line
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Records as ``(record_label, dict)`` from ``.jsonl``/``.json``/``.csv``/``.tsv`` (each optionally
    ``.gz``), ``.parquet``, a folder written by ``datasets.save_to_disk``, or a Hub dataset
    ``hf:owner/name[:config][@split]``. ``parse_line`` parses JSON-lines records.

    A file without a single record (e.g. a CSV with only its header) is an error, not an empty dataset.
    """
    empty = True
    source = str(path)
    records = _iter_hub(source[len(HUB_PREFIX):]) if source.startswith(HUB_PREFIX) else _iter_records(Path(path), parse_line)
    for rec in records:
        empty = False
        yield rec
    if empty:
        raise DataError("no records", path=path)


def _iter_records(path: Path, parse_line: Callable[[str], Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if path.is_dir():
        yield from _iter_saved_dataset(path)
        return
    suffix = inner_suffix(path)
    if suffix in (".jsonl", ".ndjson"):
        for n, obj in iter_jsonl(path, parse_line):
            yield f"line {n}", obj
    elif suffix == ".json":
        text = read_text(path)
        try:
            data = json.loads(text) if parse_line is parse_json_line else None
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":
                raise DataError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path=path) from None
            data = None
        if isinstance(data, dict) and len(text.strip().splitlines()) == 1:
            data = None  # a one-line JSON-lines file
        if data is None:
            # Amazon's "*.json.gz" downloads (and many exports) are JSON lines despite the name.
            for n, obj in iter_jsonl(path, parse_line, text=text):
                yield f"line {n}", obj
            return
        if not isinstance(data, list):
            raise DataError(f"expected a JSON list of records, got {type(data).__name__}", path=path)
        if not data:
            raise DataError("no records", path=path)
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, record=i)
            yield f"index {i}", obj
    elif suffix in (".csv", ".tsv"):
        for n, row in iter_delimited(path, delimiter="\t" if suffix == ".tsv" else ","):
            yield f"line {n}", row
    elif suffix == ".parquet":
        for i, row in iter_parquet(path):
            yield f"row {i}", row
    elif not path.exists():
        raise DataError("file not found", path=path)
    else:
        raise DataError(
            f"unsupported file type {suffix!r}; use .jsonl, .json, .csv, .tsv (each optionally .gz), .parquet, "
            "or a folder saved with datasets' save_to_disk",
            path=path,
        )


def _iter_dataset_rows(ds: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for i, row in enumerate(ds):
        yield f"row {i}", row


def _pick_split(ds: Any, split: str | None, where: str) -> Any:
    """A ``Dataset`` from a ``DatasetDict``: the named split, else ``train``, else the only split."""
    if not hasattr(ds, "keys"):
        return ds
    names = list(ds.keys())
    if split is None:
        split = "train" if "train" in names else (names[0] if len(names) == 1 else None)
    if split not in names:
        raise DataError(f"choose a split: this dataset has {names}", path=where)
    return ds[split]


def _iter_saved_dataset(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if not ((path / "dataset_info.json").exists() or (path / "state.json").exists()
            or (path / "dataset_dict.json").exists()):
        raise DataError("a folder here must be one written by datasets' save_to_disk", path=path)
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for a damaged folder
        raise DataError(f"not a readable datasets folder: {exc}", path=path) from None
    yield from _iter_dataset_rows(_pick_split(ds, None, str(path)))


def _iter_hub(spec: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``owner/name[:config][@split]`` through ``datasets.load_dataset`` (needs the Hub or its cache)."""
    import datasets

    where = HUB_PREFIX + spec
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or None)
    except Exception as exc:  # offline, unknown id, gated: datasets raises many types
        raise DataError(f"cannot load Hub dataset {name!r}: {type(exc).__name__}: {exc}", path=where) from None
    yield from _iter_dataset_rows(_pick_split(ds, split or None, where))
