"""Genrec training rows from columnar training histories, built by ``datasets.map`` workers and cached.

The same rows as :func:`llmrec.tasks.genrec.build_genrec_rows` over a dict of histories (same ``input_ids`` and
``labels``, same order; tests/test_genrec_rows.py checks it), but built from a
:class:`~llmrec.data.split_view.TrainHistories` (item codes as Arrow lists) by a picklable
:class:`GenrecRowMaker` that holds only the tokenizer, the prompt template's source and one SID string and title
per item, so ``num_proc`` worker processes can run it without the model. Rows go to Arrow files under the
llmrec cache, keyed by the data, tokenizer, SID table, prompt and row settings (:mod:`llmrec.data.rowcache`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llmrec.data.rowcache import cached_map, source_dataset
from llmrec.data.split_view import TrainHistories
from llmrec.errors import ConfigError, DataError, LlmrecError
from llmrec.nouns import PromptVocab, prompt_vocab
from llmrec.prompting import compile_template, load_template_source, render_template

# The types Dataset.from_dict gives these columns (datasets stores input_ids as int32), so both builders agree.
ROW_FEATURES = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                  "labels": datasets.List(datasets.Value("int64"))})
STATE_FEATURES = datasets.Features({**ROW_FEATURES, "user_item_idx": datasets.List(datasets.Value("int64"))})


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, pa.Array):
            for buf in pa.concat_arrays([p]).buffers():
                if buf is not None:
                    h.update(buf)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def tokenizer_digest(tokenizer) -> str:
    """What decides the token ids: the fast tokenizer's full JSON (vocabulary, merges, added tokens, normaliser)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return _digest(type(tokenizer).__name__, backend.to_str())
    from datasets.fingerprint import Hasher

    return Hasher.hash(tokenizer)


def sid_strings(sids, levels: Sequence[int]) -> list[str]:
    """Every item's semantic ID as the model reads it (``PersonalLM.sid_string``), rows in ``sids.item_ids`` order,
    built per level with numpy instead of one call per item."""
    codes = np.asarray(sids.codes)
    out = np.full(len(codes), "", dtype=object)
    for lv in levels:
        tokens = np.array([sids.token(lv, c) for c in range(sids.codebook_sizes[lv])], dtype=object)
        out = out + tokens[codes[:, lv]]
    return out.tolist()


@dataclass
class GenrecRowMaker:
    """``batch -> rows`` for ``Dataset.map(batched=True)``: the windows of each history in ``batch["items"]``
    (table item codes) as prompts, tokenised, labels on the SID tokens of every non-context item."""

    tokenizer: Any
    template_source: str
    template_label: str
    vocab: PromptVocab
    sids: list[str]  # per table item code: its SID string ("" when not in the table; checked before mapping)
    titles: list[str]
    first_sid: int
    n_levels: int
    window: int
    max_windows: int | None
    context: int
    max_history: int
    state_index: np.ndarray | None = None  # per table item code: the user-state encoder's index

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_template", None)  # compiled again in each worker
        return state

    def template(self):
        template = self.__dict__.get("_template")
        if template is None:
            template = self.__dict__["_template"] = compile_template(self.template_source,
                                                                     f"prompt {self.template_label}")
        return template

    def prompt(self, codes: Sequence[int]) -> str:
        """``PersonalLM.history_prompt`` of these items (the last ``max_history``)."""
        window = list(codes)[-self.max_history:]
        items = [{"sid": self.sids[c], "title": self.titles[c]} for c in window]
        return render_template(self.template(), {"history": items, "vocab": self.vocab},
                               missing_is_data=False).strip("\n")

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        from llmrec.tasks.genrec import history_windows

        texts, skips, states = [], [], []
        for codes in batch["items"]:
            for win, n_context in history_windows(codes, self.window, self.max_windows, self.context):
                texts.append(self.prompt(win))
                skips.append(n_context * self.n_levels)  # SID tokens of the context-only items
                if self.state_index is not None:
                    states.append(self.state_index[win[-self.max_history:]].tolist())
        ids_col = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        labels_col = []
        for ids, skip in zip(ids_col, skips, strict=True):
            arr = np.asarray(ids, dtype=np.int64)
            is_sid = arr >= self.first_sid
            keep = is_sid & (np.cumsum(is_sid) > skip)
            labels_col.append(np.where(keep, arr, -100).tolist())
        out = {"input_ids": [list(x) for x in ids_col], "labels": labels_col}
        if self.state_index is not None:
            out["user_item_idx"] = states
        return out


@dataclass
class AlignmentRowMaker:
    """``batch -> rows``: the two item <-> title rows per item of ``batch`` (``sid``, ``title`` columns)."""

    tokenizer: Any
    vocab: PromptVocab

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        v, tok = self.vocab, self.tokenizer
        prompts, completions = [], []
        for sid, title in zip(batch["sid"], batch["title"], strict=True):
            prompts += [f"{v.Item} {sid} is titled:", f"The {v.item} {title} has ID:"]
            completions += [f" {title}", sid]
        p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        c_ids = tok(completions, add_special_tokens=False)["input_ids"]
        ids_col, labels_col = [], []
        for p, c in zip(p_ids, c_ids, strict=True):
            c = list(c) + [tok.eos_token_id]
            ids_col.append(list(p) + c)
            labels_col.append([-100] * len(p) + c)
        return {"input_ids": ids_col, "labels": labels_col}


def _check_known(train: TrainHistories, known: np.ndarray, what: str) -> None:
    """A training item the SID table (or user-state encoder) lacks: an error naming the first such user."""
    codes = train.table.item[train.rows()]
    bad = ~known[codes]
    if bad.any():
        first = int(np.argmax(bad))
        user_pos = int(np.searchsorted(np.cumsum(train.lengths), first, side="right"))
        user = train.table.user_ids[int(train.users[user_pos])].as_py()
        item = train.table.item_ids[int(codes[first])].as_py()
        raise DataError(f"history has {int(bad.sum())} item(s) not in {what}, e.g. {item!r}", record=user,
                        field="item_ids")


def genrec_row_maker(plm, train: TrainHistories, *, window: int, max_windows: int | None,
                     context: int) -> GenrecRowMaker:
    """The maker for ``plm``'s tokenizer, prompt and SID table over ``train``'s item codes."""
    encoder_items = plm.user_states.encoder.item_ids if plm.user_states is not None else None
    return row_maker(plm.tokenizer, plm.sids, plm.levels, plm.titles, train, prompt=plm.config.prompt,
                     vocabulary=plm.vocabulary, max_history=plm.config.max_history, window=window,
                     max_windows=max_windows, context=context, first_sid=plm.first_sid_id,
                     encoder_items=encoder_items)


def row_maker(tokenizer, sids, levels: Sequence[int], titles: dict[str, str], train: TrainHistories, *,
              prompt: str = "genrec", vocabulary=None, max_history: int = 50, window: int | None = None,
              max_windows: int | None = 1, context: int = 0, first_sid: int | None = None,
              encoder_items: Sequence[str] | None = None) -> GenrecRowMaker:
    """A maker from the pieces a PersonalLM holds (a tokenizer that has ``sids``' tokens, the prompt levels, item
    titles), without loading a model; ``encoder_items``: a user-state encoder's catalogue (``user_item_idx``)."""
    window = window or max_history
    if not 0 <= context <= window - 2:
        raise ValueError(f"context ({context}) must be between 0 and window - 2 ({window - 2}): "
                         "a window needs at least two targets")
    if first_sid is None:
        first_sid = int(min(tokenizer.convert_tokens_to_ids(sids.token_strings())))
    table_items = train.table.item_id_list()
    sid_row = {item: k for k, item in enumerate(sids.item_ids)}
    row_of = np.array([sid_row.get(i, -1) for i in table_items], dtype=np.int64)
    _check_known(train, row_of >= 0, "the SID table")
    all_sids = sid_strings(sids, levels)
    sid_col = [all_sids[r] if r >= 0 else "" for r in row_of.tolist()]
    title_col = [titles[i] if r >= 0 else "" for i, r in zip(table_items, row_of.tolist(), strict=True)]
    state_index = None
    if encoder_items is not None:
        encoder_index = {item: k + 1 for k, item in enumerate(encoder_items)}
        state_index = np.array([encoder_index.get(i, 0) for i in table_items], dtype=np.int64)
        _check_known(train, state_index > 0, "the user-state encoder's catalogue")
    label, source = load_template_source(prompt)
    return GenrecRowMaker(tokenizer, source, label, prompt_vocab(vocabulary), sid_col, title_col, first_sid,
                          len(levels), window, max_windows, context, max_history, state_index)


def maker_key(maker: GenrecRowMaker, train: TrainHistories) -> dict[str, Any]:
    """What decides the rows: the data read, tokenizer, SID strings and titles, prompt and settings."""
    return {
        "train": train.fingerprint(), "tokenizer": tokenizer_digest(maker.tokenizer),
        "sids": _digest(maker.sids, maker.titles), "prompt": _digest(maker.template_source),
        "vocab": dataclasses.asdict(maker.vocab), "first_sid": maker.first_sid, "n_levels": maker.n_levels,
        "window": maker.window, "max_windows": maker.max_windows, "context": maker.context,
        "max_history": maker.max_history,
        "states": None if maker.state_index is None else _digest(maker.state_index),
    }


def build_rows(maker: GenrecRowMaker, train: TrainHistories, *, num_proc: int = 1, cache: bool = True,
               cache_root: str | Path | None = None, alignment: tuple[list[str], list[str]] | None = None,
               align_vocab: PromptVocab | None = None, batch_size: int = 256):
    """Sequence rows (then title-alignment rows for ``alignment = (sid strings, titles)``) as a
    :class:`~llmrec.tasks.genrec.GenRecRows` over memory-mapped Arrow files (in memory with ``cache=False``)."""
    from llmrec.tasks.genrec import GenRecRows

    features = STATE_FEATURES if maker.state_index is not None else ROW_FEATURES
    key = maker_key(maker, train)
    source = source_dataset(train.to_arrow().select(["items"]), key["train"])
    seq = cached_map(source, maker, kind="genrec", key=key, features=features, num_proc=num_proc, cache=cache,
                     cache_root=cache_root, batch_size=batch_size, desc="genrec rows")
    parts, n_align, cached = [seq.rows], 0, seq.cached
    if alignment is not None:
        sids, titles = alignment
        align_key = {"tokenizer": key["tokenizer"], "items": _digest(sids, titles),
                     "vocab": dataclasses.asdict(align_vocab or maker.vocab)}
        src = source_dataset(pa.table({"sid": pa.array(sids, pa.string()), "title": pa.array(titles, pa.string())}),
                             _digest(align_key))
        align = cached_map(src, AlignmentRowMaker(maker.tokenizer, align_vocab or maker.vocab), kind="genrec-align",
                           key=align_key, features=ROW_FEATURES, num_proc=num_proc, cache=cache,
                           cache_root=cache_root, batch_size=batch_size, desc="title alignment rows")
        parts.append(align.rows)
        n_align, cached = len(align.rows), cached and align.cached
    rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    data = rows.data.table
    tokens = int(pc.sum(pc.list_value_length(data.column("input_ids"))).as_py() or 0)
    labels = pc.list_flatten(data.column("labels"))
    target_tokens = int(pc.sum(pc.not_equal(labels, -100)).as_py() or 0)
    return GenRecRows(rows, len(seq.rows), n_align, target_tokens, tokens=tokens, cached=cached)


def build_genrec_rows_columnar(plm, train: TrainHistories, *, window: int | None = None,
                               max_windows: int | None = None, context: int = 0, title_alignment: bool = False,
                               num_proc: int = 1, cache: bool | str | Path = True):
    """:func:`llmrec.tasks.genrec.build_genrec_rows` over columnar training histories (see the module doc);
    ``cache``: True = under the llmrec cache, a folder = there, False = in memory."""
    if plm.index is None:
        raise LlmrecError("this model has no semantic-ID vocabulary; train one with `llmrec train genrec`")
    if plm.user_states is not None and title_alignment:
        raise ConfigError("title alignment rows carry no history for the user-state encoder; use one or the other")
    maker = genrec_row_maker(plm, train, window=window or plm.config.max_history, max_windows=max_windows,
                             context=context)
    alignment = None
    if title_alignment:
        alignment = (sid_strings(plm.sids, plm.levels), [plm.titles[i] for i in plm.item_ids])
    root = None if isinstance(cache, bool) else cache
    return build_rows(maker, train, num_proc=num_proc, cache=cache is not False, cache_root=root, alignment=alignment)
