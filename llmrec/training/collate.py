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
