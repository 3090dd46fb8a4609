"""Right-padding collator for pre-tokenised causal LM rows (input_ids + labels)."""

from __future__ import annotations

from typing import Any

import torch


class CausalCollator:
    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = 8) -> None:
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if "user_item_idx" in rows[0]:  # user-state models: the prompt's items, right-padded with 0
            items = torch.zeros((len(rows), max(len(r["user_item_idx"]) for r in rows)), dtype=torch.long)
            for i, r in enumerate(rows):
                items[i, : len(r["user_item_idx"])] = torch.tensor(r["user_item_idx"], dtype=torch.long)
            batch["user_item_idx"] = items
        return batch


class PackingCollator:
    """Packs a batch's windows into as few rows as hold them, each row as wide as the batch's longest window
    (first-fit, longest first); ``position_ids`` restart at 0 for every window and no ``attention_mask`` is
    passed, so transformers (>= 4.5x ``masking_utils``) turns the restarts into a block-diagonal causal mask: a
    window attends only to itself, on CPU (SDPA / eager) as on GPU (the batch says ``use_cache=False``: with a
    cache transformers would not look for restarts). Rows stay as wide as unpacked ones, so
    attention costs no more than before; only rows are saved. The tail of a row is padding with its own restart
    (its positions attend to each other only, labels -100). Each window's first label is -100 (it is never a
    target: a prompt starts with text), so no window predicts the next one's first token.
    ``user_item_idx`` (user-state models) cannot be packed: their encoder reads one user per row."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = 8) -> None:
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def plan(self, lengths: list[int]) -> tuple[int, list[list[int]]]:
        """``(width, rows)``: each row a list of window indices (first-fit decreasing into ``width``)."""
        width = max(lengths)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        rows: list[list[int]] = []
        free: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
            for r, room in enumerate(free):
                if lengths[i] <= room:
                    rows[r].append(i)
                    free[r] -= lengths[i]
                    break
            else:
                rows.append([i])
                free.append(width - lengths[i])
        return width, rows

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if "user_item_idx" in rows[0]:
            raise ValueError("packing cannot hold user-state rows (user_item_idx): their encoder reads one user "
                             "per row; train user-state models without packing")
        width, plan = self.plan([len(r["input_ids"]) for r in rows])
        ids = torch.full((len(plan), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(plan), width), -100, dtype=torch.long)
        pos = torch.zeros((len(plan), width), dtype=torch.long)
        for b, members in enumerate(plan):
            start = 0
            for i in members:
                n = len(rows[i]["input_ids"])
                ids[b, start:start + n] = torch.tensor(rows[i]["input_ids"])
                labels[b, start + 1:start + n] = torch.tensor(rows[i]["labels"][1:])
                pos[b, start:start + n] = torch.arange(n)
                start += n
            pos[b, start:] = torch.arange(width - start)  # the padding tail: its own block
        # use_cache=False: transformers only reads packing from position_ids when no KV cache is made
        return {"input_ids": ids, "labels": labels, "position_ids": pos, "use_cache": False}


def padding_fractions(rows, collators: dict, batch_size: int, *, group_by_length: bool = True, seed: int = 0,
                      group_size: int | None = None) -> dict[str, float]:
    """Fraction of the positions a model computes that are padding (not a window's token), over one epoch of
    ``rows`` (a dataset with ``input_ids``) batched as the genrec Trainer does: ``batch_size`` windows per batch,
    grouped by length (transformers' ``LengthGroupedSampler`` over ``group_size`` windows, default
    ``batch_size``; the Trainer groups by batch x accumulation) or in order, then each of ``collators``
    (name -> collator; the columns are read and the batch order drawn once for all of them)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    ids, labels = list(rows["input_ids"]), list(rows["labels"])  # a Dataset column is rebuilt at each access
    lengths = [len(x) for x in ids]
    if group_by_length:
        order = list(LengthGroupedSampler(group_size or batch_size, lengths=lengths,
                                          generator=torch.Generator().manual_seed(seed)))
    else:
        order = list(range(len(lengths)))
    computed = dict.fromkeys(collators, 0)
    real = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        windows = [{"input_ids": ids[i], "labels": labels[i]} for i in chunk]
        for name, collator in collators.items():
            computed[name] += collator(windows)["input_ids"].numel()
        real += sum(lengths[i] for i in chunk)
    return {name: 1.0 - real / n if n else 0.0 for name, n in computed.items()}


def padding_fraction(rows, collator, batch_size: int, **kwargs) -> float:
    """:func:`padding_fractions` for one collator."""
    return padding_fractions(rows, {"only": collator}, batch_size, **kwargs)["only"]
