"""Training rows for generative recommendation: one causal sequence per user window, loss on every item's
semantic-ID tokens (all next-item targets in one pass), plus optional item <-> title alignment rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from llmrec.data.schema import UserHistory
from llmrec.data.split_view import TrainHistories
from llmrec.errors import ConfigError
from llmrec.nouns import prompt_vocab


@dataclass(frozen=True)
class GenRecRows:
    rows: datasets.Dataset  # columns: input_ids, labels (+ user_item_idx with user states: encoder indices)
    sequences: int
    alignment: int
    target_tokens: int
    tokens: int = 0  # all input tokens
    cached: bool = False  # read from an earlier build (columnar histories, llmrec.tasks.genrec_rows)


def history_windows(
    items: Sequence[str], window: int, max_windows: int | None, context: int = 0
) -> list[tuple[list[str], int]]:
    """Windows from the end (most recent first), each as ``(items, n_context)``: every item is a target exactly
    once. With ``context > 0`` each window but the oldest starts with the ``context`` items that end the next
    older window; they are context only there, so those targets are predicted from a longer history (as SASRec
    sees every earlier item) at the cost of ``window / (window - context)`` times the tokens."""
    if not 0 <= context <= window - 2:
        raise ValueError(f"context ({context}) must be between 0 and window - 2 ({window - 2}): "
                         "a window needs at least two targets")
    out: list[tuple[list[str], int]] = []
    end = len(items)
    while end > 0 and (max_windows is None or len(out) < max_windows):
        start = max(0, end - window)
        n_context = context if start > 0 else 0
        if end - start - n_context >= 2 or not out:
            out.append((list(items[start:end]), n_context))
        end = start + n_context
    return out


def build_genrec_rows(
    plm,
    histories: dict[str, UserHistory] | TrainHistories,
    *,
    window: int | None = None,
    max_windows: int | None = None,
    context: int = 0,
    title_alignment: bool = False,
    num_proc: int = 1,
    cache: bool | str | Path = True,
) -> GenRecRows:
    """Tokenise windows of each training history with ``plm``'s prompt; labels = the SID tokens of every item
    but a window's ``context`` leading items (see :func:`history_windows`).

    ``histories`` as a :class:`~llmrec.data.split_view.TrainHistories` (a recipe's columnar split) builds the
    same rows with ``datasets.map`` over ``num_proc`` workers into Arrow files cached by the inputs (``cache``: True
    = under the llmrec cache, a folder = there, False = in memory; see :mod:`llmrec.tasks.genrec_rows`); a plain
    dict is tokenised here, in memory."""
    if isinstance(histories, TrainHistories):
        from llmrec.tasks.genrec_rows import build_genrec_rows_columnar

        return build_genrec_rows_columnar(plm, histories, window=window, max_windows=max_windows, context=context,
                                          title_alignment=title_alignment, num_proc=num_proc, cache=cache)
    tok = plm.tokenizer
    window = window or plm.config.max_history
    first_sid = plm.first_sid_id
    states = plm.user_states is not None
    if states and title_alignment:
        raise ConfigError("title alignment rows carry no history for the user-state encoder; use one or the other")
    ids_col, labels_col, state_col = [], [], []
    n_seq = target_tokens = 0
    for h in histories.values():
        for win, n_context in history_windows(h.item_ids, window, max_windows, context):
            ids = plm.encode_prompt(win)
            if states:
                state_col.append(plm.user_states.encoder.item_indices(plm.prompt_items(win), record=h.user_id))
            skip = n_context * len(plm.levels)  # SID tokens of the context-only items
            labels, seen = [], 0
            for t in ids:
                seen += t >= first_sid
                labels.append(t if t >= first_sid and seen > skip else -100)
            ids_col.append(ids)
            labels_col.append(labels)
            target_tokens += sum(1 for t in labels if t != -100)
            n_seq += 1
    n_align = 0
    if title_alignment:
        v = prompt_vocab(plm.vocabulary)  # the dataset's noun: "Movie 12 is titled:" on MovieLens
        for item_id in plm.item_ids:
            sid = plm.sid_string(item_id)
            title = plm.titles[item_id]
            for prompt, completion in ((f"{v.Item} {sid} is titled:", f" {title}"), (f"The {v.item} {title} has ID:", sid)):
                p = tok(prompt, add_special_tokens=False)["input_ids"]
                c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                ids_col.append(p + c)
                labels_col.append([-100] * len(p) + c)
                target_tokens += len(c)
                n_align += 1
    columns = {"input_ids": ids_col, "labels": labels_col} | ({"user_item_idx": state_col} if states else {})
    rows = datasets.Dataset.from_dict(columns)
    return GenRecRows(rows, n_seq, n_align, target_tokens, tokens=sum(len(x) for x in ids_col))
