"""RecBole atomic files: ``<name>.inter`` / ``<name>.item`` / ``<name>.user`` in one folder, tab-separated,
with typed headers (``user_id:token	item_id:token	rating:float	timestamp:float``).

``token`` columns stay text, ``float`` columns become numbers, ``token_seq`` / ``float_seq`` columns become
lists (space-separated in the file). The title column is ``title`` (or ``movie_title`` / ``item_name`` /
``name``, the names RecBole's converted datasets use) unless ``columns.title`` says otherwise; it stays text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrec.data.generic import ITEM_FIELDS, Layout, load_records
from llmrec.data.readers import iter_delimited, read_text
from llmrec.errors import DataError

if TYPE_CHECKING:
    from llmrec.data.config import DatasetConfig
    from llmrec.data.schema import InteractionData

TYPES = ("token", "token_seq", "float", "float_seq")
_TITLE_COLUMNS = ("title", "movie_title", "item_name", "name")


def read_recbole(cfg: DatasetConfig) -> InteractionData:
    folder = Path(str(cfg.path))
    stem = _stem(folder, cfg.name)
    inter, item, user = (folder / f"{stem}.{ext}" for ext in ("inter", "item", "user"))
    if not item.exists():
        raise DataError(f"no {item.name}: llmrec needs the item file for titles", path=folder)
    item_types = _header_types(item)
    title_col = cfg.columns.get("title") or next((c for c in _TITLE_COLUMNS if c in item_types), "title")
    columns = {f: f for f in ITEM_FIELDS + ("user_id", "timestamp", "rating")} | {"title": title_col}
    return load_records(
        cfg, Layout(columns=columns), name=cfg.name or stem,
        paths=(str(item), str(inter), str(user) if user.exists() else None),
        item_rows=_typed_rows(item, keep_text={title_col}),
        interaction_rows=_typed_rows(inter),
        user_rows=_typed_rows(user) if user.exists() else None,
    )


def _stem(folder: Path, name: str) -> str:
    if not folder.is_dir():
        raise DataError("expected a folder of RecBole atomic files", path=folder)
    if name and (folder / f"{name}.inter").exists():
        return name
    found = sorted(folder.glob("*.inter"))
    if len(found) != 1:
        raise DataError(f"expected one <name>.inter file (or name: set to pick one), found "
                        f"{[p.name for p in found]}", path=folder)
    return found[0].stem


def _parse_header(path: Path, header: str) -> dict[str, str]:
    types: dict[str, str] = {}
    for cell in header.split("\t"):
        name, _, kind = cell.strip().partition(":")
        if kind not in TYPES:
            raise DataError(f"column {cell.strip()!r}: expected name:type with type one of {list(TYPES)}",
                            path=path, record="header", field=name)
        types[name] = kind
    return types


def _header_types(path: Path) -> dict[str, str]:
    first = next((line for line in read_text(path).splitlines() if line.strip()), "")
    return _parse_header(path, first)


def _typed_rows(path: Path, keep_text: set[str] = frozenset()) -> Iterator[tuple[str, dict[str, Any]]]:
    types = _header_types(path)
    for lineno, row in iter_delimited(path, delimiter="\t", rename=lambda h: h.split(":")[0].strip()):
        rid = f"line {lineno}"
        yield rid, {k: _convert(v, types[k] if k not in keep_text else "token", path, rid, k) for k, v in row.items()}


def _convert(value: str, kind: str, path: Path, rid: str, name: str) -> Any:
    value = value.strip()
    if kind == "token":
        return value
    if kind == "token_seq":
        return value.split()
    try:
        numbers = [float(v) for v in value.split()] if kind == "float_seq" else (float(value) if value else None)
    except ValueError:
        raise DataError(f"expected {kind}, got {value!r}", path=path, record=rid, field=name) from None
    for x in numbers if isinstance(numbers, list) else [numbers]:
        if x is not None and not math.isfinite(x):
            raise DataError(f"expected a finite number, got {value!r}", path=path, record=rid, field=name)
    return numbers
