"""Low-level file readers that fail loudly: empty files, HTML pages, bad encodings, malformed records."""

from __future__ import annotations

import csv
import io
import json
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


def read_json(path: str | Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path=path) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)``; blank lines are allowed, anything else must be a JSON object."""
    text = read_text(path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", path=path, record=f"line {lineno}") from None
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
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    lineno = 0
    if header is None:
        for row in reader:
            lineno += 1
            if row:
                header = [(rename or str.strip)(h.strip()) for h in row]
                break
        if not header:
            raise DataError("no header row", path=path)
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"duplicate column name(s) {dupes}", path=path, record="header")
    for row in reader:
        lineno += 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataError(
                f"expected {len(header)} columns ({', '.join(header)}), found {len(row)}",
                path=path,
                record=f"line {lineno}",
            )
        yield lineno, dict(zip(header, row, strict=True))


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
    yield from enumerate(table.to_pylist())


def iter_records(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Records from ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` as ``(record_label, dict)``.

    A file without a single record (e.g. a CSV with only its header) is an error, not an empty dataset.
    """
    empty = True
    for rec in _iter_records(Path(path)):
        empty = False
        yield rec
    if empty:
        raise DataError("no records", path=path)


def _iter_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        for n, obj in iter_jsonl(path):
            yield f"line {n}", obj
    elif suffix == ".json":
        data = read_json(path)
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
    else:
        raise DataError(f"unsupported file type {suffix!r}; use .jsonl, .json, .csv, .tsv or .parquet", path=path)
