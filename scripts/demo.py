"""The README demo, on the offline defaults (MovieLens-100k + SmolLM2-135M-Instruct).

    make demo            # or: .venv/bin/python scripts/demo.py

It grows with each capability until it shows the whole mission end to end.
"""

from __future__ import annotations

import time

import torch

from llmrec.data import leave_one_out, load_dataset
from llmrec.data.stats import dataset_info
from llmrec.lm.loading import load_causal_lm


def main() -> None:
    torch.manual_seed(0)
    t0 = time.time()
    data = load_dataset("ml-100k")
    info = dataset_info(data)
    print(f"[data] MovieLens-100k: {info['users']} users, {info['items']} items, "
          f"{info['interactions']} ratings, density {info['density']:.4f}, "
          f"median history {info['history_length']['p50']:.0f}")
    split = leave_one_out(data.histories())
    ex = split.test[0]
    recent = [data.items[i] for i in ex.history.item_ids[-5:]]
    print(f"[split] leave-one-out: {len(split.train)} train histories, {len(split.valid)} valid, {len(split.test)} test")
    print(f"[user {ex.user_id}] last watched: " + "; ".join(f"{it.title} ({it.attributes['year']})" for it in recent))

    model, tok = load_causal_lm()  # offline default, bf16
    print(f"[model] SmolLM2-135M-Instruct loaded ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params)")
    titles = ", ".join(it.title for it in recent)
    msgs = [{"role": "user", "content": f"I recently watched {titles}. In one sentence, what kind of movies do I like?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=40, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    print(f"[answer] {answer}")
    print(f"[done] {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
