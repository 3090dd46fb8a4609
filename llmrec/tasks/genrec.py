"""Training rows for generative recommendation: one causal sequence per user window, loss on every item's
semantic-ID tokens (all next-item targets in one pass), plus optional item <-> title alignment rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets

from llmrec.data.schema import UserHistory


@dataclass(frozen=True)
class GenRecRows:
    rows: datasets.Dataset  # columns: input_ids, labels
    sequences: int
    alignment: int
    target_tokens: int


def history_windows(items: Sequence[str], window: int, max_windows: int | None) -> list[list[str]]:
    """Non-overlapping windows from the end, so every item is a target exactly once (most recent first)."""
    out = []
    end = len(items)
    while end > 0 and (max_windows is None or len(out) < max_windows):
        start = max(0, end - window)
        if end - start >= 2 or not out:
            out.append(list(items[start:end]))
        end = start
    return out


def build_genrec_rows(
    plm,
    histories: dict[str, UserHistory],
    *,
    window: int | None = None,
    max_windows: int | None = None,
    title_alignment: bool = False,
) -> GenRecRows:
    """Tokenise windows of each training history with ``plm``'s prompt; labels = SID tokens only."""
    tok = plm.tokenizer
    window = window or plm.config.max_history
    first_sid = plm.first_sid_id
    ids_col, labels_col = [], []
    n_seq = target_tokens = 0
    for h in histories.values():
        for win in history_windows(h.item_ids, window, max_windows):
            ids = plm.encode_prompt(win)
            labels = [t if t >= first_sid else -100 for t in ids]
            ids_col.append(ids)
            labels_col.append(labels)
            target_tokens += sum(1 for t in labels if t != -100)
            n_seq += 1
    n_align = 0
    if title_alignment:
        for item_id in plm.item_ids:
            sid = plm.sid_string(item_id)
            title = plm.titles[item_id]
            for prompt, completion in ((f"Movie {sid} is titled:", f" {title}"), (f"The movie {title} has ID:", sid)):
                p = tok(prompt, add_special_tokens=False)["input_ids"]
                c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                ids_col.append(p + c)
                labels_col.append([-100] * len(p) + c)
                target_tokens += len(c)
                n_align += 1
    rows = datasets.Dataset.from_dict({"input_ids": ids_col, "labels": labels_col})
    return GenRecRows(rows, n_seq, n_align, target_tokens)
