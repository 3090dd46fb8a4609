"""SASRec training windows from columnar training histories, built by ``datasets.map`` workers and cached.

The same ``(item indices, rating levels)`` windows as :func:`llmrec.users.pretrain.training_windows` (same order;
tests/test_genrec_rows.py checks it) from a :class:`~llmrec.data.split_view.TrainHistories`: item codes and
rating levels are mapped to the encoder's indices with numpy, then :class:`WindowMaker` cuts windows in
``num_proc`` workers into Arrow files cached by the data, the encoder's catalogue and the settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch

from llmrec.data.rowcache import cached_map, source_dataset
from llmrec.data.split_view import TrainHistories
from llmrec.errors import ConfigError, DataError

WINDOW_FEATURES = datasets.Features({"items": datasets.List(datasets.Value("int64")),
                                     "levels": datasets.List(datasets.Value("int64"))})


@dataclass(frozen=True)
class WindowMaker:
    """``batch -> windows`` of at most ``span`` items, from the end; consecutive windows overlap by one item so
    every target is predicted once; ``all_windows=False`` keeps each user's last window only."""

    span: int
    all_windows: bool

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        items_out, levels_out = [], []
        for idx, lev in zip(batch["items"], batch["levels"], strict=True):
            end = len(idx)
            while end >= 2:
                start = max(0, end - self.span)
                items_out.append(idx[start:end])
                levels_out.append(lev[start:end])
                if not self.all_windows:
                    break
                end = start + 1
        return {"items": items_out, "levels": levels_out}


def encoder_columns(model, train: TrainHistories) -> pa.Table:
    """One row per training user: ``items`` (the encoder's 1-based indices) and ``levels`` (rating levels, 0 when
    the encoder has none), as ``SequenceEncoder.encode_histories`` maps them, without a Python loop per item."""
    if model.item_ids is None:
        raise ConfigError("this encoder has no item ids; build it with item_ids=... to encode histories")
    table = train.table
    index = {item: k + 1 for k, item in enumerate(model.item_ids)}
    of_code = np.array([index.get(i, 0) for i in table.item_id_list()], dtype=np.int64)
    rows = train.rows()
    idx = of_code[table.item[rows]]
    if (idx == 0).any():
        first = int(np.argmax(idx == 0))
        user_pos = int(np.searchsorted(np.cumsum(train.lengths), first, side="right"))
        raise DataError(f"unknown item {table.item_ids[int(table.item[rows[first]])].as_py()!r}",
                        record=table.user_ids[int(train.users[user_pos])].as_py(), field="item_ids")
    top = model.config.n_rating_levels
    rating = table.rating[rows].astype(np.float64)
    lev = np.zeros(len(rows), dtype=np.int64)
    if top:
        known = ~np.isnan(rating)
        lev[known] = np.clip(np.round(rating[known]).astype(np.int64), 1, top)
    offsets = np.zeros(len(train.users) + 1, dtype=np.int32)
    np.cumsum(train.lengths, out=offsets[1:])
    offsets = pa.array(offsets, type=pa.int32())
    return pa.table({"items": pa.ListArray.from_arrays(offsets, pa.array(idx, type=pa.int64())),
                     "levels": pa.ListArray.from_arrays(offsets, pa.array(lev, type=pa.int64()))})


def sasrec_windows(model, train: TrainHistories, windows: str = "last", *, num_proc: int = 1,
                   cache: bool | str | Path = True) -> datasets.Dataset:
    """:func:`~llmrec.users.pretrain.training_windows` as a ``datasets.Dataset`` (``items``, ``levels`` columns);
    ``cache``: True = under the llmrec cache, a folder = there, False = in memory."""
    if windows not in ("last", "all"):
        raise ConfigError(f"windows must be 'last' or 'all', got {windows!r}")
    columns = encoder_columns(model, train)
    h = hashlib.sha256(train.fingerprint().encode())
    for name in ("items", "levels"):
        for chunk in columns.column(name).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    digest = h.hexdigest()[:32]
    key = {"columns": digest, "span": model.config.max_len + 1, "windows": windows}
    out = cached_map(source_dataset(columns, digest), WindowMaker(model.config.max_len + 1, windows == "all"),
                     kind="sasrec", key=key, features=WINDOW_FEATURES, num_proc=num_proc,
                     cache=cache is not False, cache_root=None if isinstance(cache, bool) else cache,
                     batch_size=1024, desc="SASRec windows")
    return out.rows


def window_arrays(windows: datasets.Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sasrec_windows` rows as :func:`~llmrec.users.pretrain.window_tensors` returns them: right-padded
    item indices and rating levels ``[N, longest window]`` and the lengths ``[N]``, scattered from the Arrow
    columns without a Python loop."""
    table = windows.with_format("arrow")[:]
    if not len(table):
        empty = torch.zeros(0, 0, dtype=torch.long)
        return empty, empty.clone(), torch.zeros(0, dtype=torch.long)
    items = table.column("items").combine_chunks()
    levels = table.column("levels").combine_chunks()
    offsets = items.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    start = offsets[0]
    values = items.values.to_numpy()[start : offsets[-1]]
    level_offsets = levels.offsets.to_numpy()  # a window's levels are as long as its items, but sliced on their own
    level_values = levels.values.to_numpy()[level_offsets[0] : level_offsets[-1]]
    row = np.repeat(np.arange(len(lengths)), lengths)
    col = np.arange(len(values)) - np.repeat(offsets[:-1] - start, lengths)
    idx = np.zeros((len(lengths), int(lengths.max())), dtype=np.int64)
    lev = np.zeros_like(idx)
    idx[row, col] = values
    lev[row, col] = level_values
    return torch.from_numpy(idx), torch.from_numpy(lev), torch.from_numpy(lengths)
