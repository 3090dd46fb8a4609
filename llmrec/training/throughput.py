"""Bare forward+backward+step loop on the same batches the Trainer sees: the yardstick for pipeline overhead."""

from __future__ import annotations

import time

import torch


def bare_loop_tokens_per_second(model, batches, *, steps: int, lr: float = 1e-4, warmup: int = 1) -> dict[str, float]:
    """Tokens (non-pad) per second of a plain AdamW loop over ready-made ``batches`` (e.g. the Trainer's own
    dataloader, so both see the same data); the first ``warmup`` steps are untimed."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    tokens = 0
    elapsed = 0.0
    done = 0
    for i, batch in enumerate(batches):
        if done >= steps + warmup:
            break
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            elapsed += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
        done += 1
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_second": tokens / max(elapsed, 1e-9),
            "steps": max(0, done - warmup)}
