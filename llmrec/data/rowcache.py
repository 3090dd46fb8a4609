"""Training rows built with ``datasets.Dataset.map`` (``num_proc`` workers) into Arrow files cached by a key.

The key is whatever decides the rows (a digest of the data read, the tokenizer, the semantic-ID table, the
prompt and the row settings); its SHA-256 names a folder under ``<llmrec cache>/rows/<kind>/``. A complete
folder holds the Arrow files ``map`` wrote plus ``rows.json`` (the key, the files in order, the row count),
written last and moved into place at once, so a killed build leaves no folder that looks complete. Rows are
memory-mapped from those files: building streams batches to disk and reading pages them in, so memory stays
flat in the number of users, and a second run with the same key maps the files without building anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from llmrec.io import write_json_atomic

logger = logging.getLogger(__name__)

MARKER = "rows.json"
FORMAT = 1  # bump when the cached layout or a builder's output changes for the same key


@dataclass(frozen=True)
class MappedRows:
    rows: datasets.Dataset
    cached: bool  # True: read from an earlier build with the same key
    folder: Path | None  # where the Arrow files live (None: built in memory)


def key_digest(key: dict[str, Any]) -> str:
    """SHA-256 of the key's canonical JSON."""
    text = json.dumps({"format": FORMAT, **key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def rows_cache_root(override: str | Path | None = None) -> Path:
    """``override``, else ``<llmrec cache>/rows`` (see :func:`llmrec.resources.cache_dir`)."""
    if override is not None:
        return Path(override)
    from llmrec.resources import cache_dir

    return cache_dir() / "rows"


def source_dataset(table: pa.Table, fingerprint: str) -> datasets.Dataset:
    """An in-memory ``datasets.Dataset`` over ``table`` (no copy) with a given fingerprint (``datasets`` would
    otherwise hash the whole table)."""
    from datasets.table import InMemoryTable

    return datasets.Dataset(InMemoryTable(table), fingerprint=fingerprint)


def _load(folder: Path) -> datasets.Dataset | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        parts = [datasets.Dataset.from_file(str(folder / name)) for name in marker["files"]]
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None
    rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return rows if len(rows) == marker.get("rows") else None


def cached_map(
    source: datasets.Dataset,
    function: Callable[[dict[str, list]], dict[str, list]],
    *,
    kind: str,
    key: dict[str, Any],
    features: datasets.Features,
    num_proc: int = 1,
    cache: bool = True,
    cache_root: str | Path | None = None,
    batch_size: int = 256,
    desc: str | None = None,
) -> MappedRows:
    """``source.map(function, batched=True, num_proc=num_proc)`` into ``features`` (source columns dropped),
    reused from the cache when an earlier build had the same ``kind`` and ``key``. ``cache=False`` builds in
    memory (nothing written). Rows keep the source's order whatever ``num_proc``."""
    num_proc = max(1, min(int(num_proc), len(source))) if len(source) else 1
    map_kwargs: dict[str, Any] = dict(batched=True, batch_size=batch_size, remove_columns=source.column_names,
                                      features=features, desc=desc)
    digest = key_digest({"kind": kind, **key})
    if not cache:
        rows = source.map(function, num_proc=num_proc if num_proc > 1 else None, keep_in_memory=True,
                          new_fingerprint=digest[:32], **map_kwargs)
        return MappedRows(rows, False, None)
    root = rows_cache_root(cache_root) / kind
    folder = root / digest[:32]
    hit = _load(folder)
    if hit is not None:
        logger.info("%s rows: reused %s (%d rows)", kind, folder, len(hit))
        return MappedRows(hit, True, folder)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
    try:
        built = source.map(function, num_proc=num_proc if num_proc > 1 else None, cache_file_name=str(tmp / "rows.arrow"),
                           load_from_cache_file=False, new_fingerprint=digest[:32], writer_batch_size=batch_size,
                           **map_kwargs)
        files = [Path(f["filename"]).name for f in built.cache_files]
        n_rows = len(built)
        del built  # release the memory maps before the folder moves
        write_json_atomic(tmp / MARKER, {"kind": kind, "key": key, "files": files, "rows": n_rows})
        if folder.exists() and _load(folder) is None:  # left by a killed build (a complete one stays)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process (a DDP rank) finished the same build first: use its files
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    rows = _load(folder)
    if rows is None:
        raise OSError(f"{folder}: rows were built but could not be read back")
    logger.info("%s rows: built %s (%d rows, %d workers)", kind, folder, len(rows), num_proc)
    return MappedRows(rows, False, folder)
