"""Decoding speed and validity: llmrec's trie-constrained beam search next to Hugging Face ``generate`` with a
``prefix_allowed_tokens_fn`` over the same trie (what a user would otherwise write), on the same prompts.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_decoding.py --threads 1 --users 48 \
        --out eval/results/decoding_ml100k.json

The model is SmolLM2-135M + the ml-100k semantic IDs (default rkmeans config) + an untrained LoRA adapter, or a
trained genrec model (``--model DIR``, e.g. adapters/trained/genrec-cf): speed and validity do not depend on
training, agreement between the searches is measured on the model used. Both searches exclude the user's history, 10 beams, top 10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path


def _hf_prefix_fn(index, prompt_width: int, excluded_counts: list[dict]):
    """The prefix function a user writes: allowed next SID tokens given the generated prefix, history excluded."""

    def allowed(batch_id: int, input_ids) -> list[int]:
        user = batch_id  # HF passes the prompt's index in the batch (beams of one prompt share it)
        gen = input_ids[prompt_width:].tolist()
        level = len(gen)
        if level >= index.levels:
            return [0]  # never reached: max_new_tokens == levels
        prefix = tuple(t - index.level_offsets[lv] for lv, t in enumerate(gen))
        out = []
        for c in index.trie.next_codes(prefix).tolist():
            p = prefix + (c,)
            if excluded_counts[user].get(p, 0) < index.counts[p]:
                out.append(index.level_offsets[level] + c)
        return out or [index.level_offsets[level]]  # a dead beam must still take a token; it is scored -inf-ish

    return allowed


def hf_generate(plm, histories, beams: int, k: int):
    """Top-k item rows per history via ``model.generate(num_beams, prefix_allowed_tokens_fn)``; None = invalid."""
    import torch

    index = plm.index
    tok = plm.tokenizer
    prompts = [plm.encode_prompt(h) for h in histories]
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    excl = [index.excluded_counts([plm.item_row[i] for i in h]) for h in histories]
    model = plm.model
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=k, do_sample=False,
            max_new_tokens=index.levels, min_new_tokens=index.levels, early_stopping=True, pad_token_id=pad,
            prefix_allowed_tokens_fn=_hf_prefix_fn(index, width, excl), length_penalty=1.0,
        )
    rows: list[list[int | None]] = []
    for u in range(len(histories)):
        items: list[int | None] = []
        for seq in out[u * k:(u + 1) * k, width:].tolist():
            codes = tuple(t - index.level_offsets[lv] for lv, t in enumerate(seq[:index.levels]))
            try:
                items.append(index.trie.row(codes))
            except (KeyError, ValueError, IndexError):
                items.append(None)
        rows.append(items)
    return rows


def ours(plm, histories, beams: int, k: int):
    recs = plm.recommend_batch(histories, k=k, num_beams=beams)
    return [[plm.item_row[r["item_id"]] for r in rs] for rs in recs]


def ours_unmerged(plm, histories, beams: int, k: int):
    """The same search on the PEFT model itself (LoRA unmerged: the path before the merged decoding copy)."""
    plm.merge_lora_for_decoding = False
    try:
        return ours(plm, histories, beams, k)
    finally:
        plm.merge_lora_for_decoding = True


def invalid_rate(plm, histories, lists, k: int) -> float:
    """Share of returned slots that are not a real, non-history, not-yet-returned item (short lists count too)."""
    bad = total = 0
    for h, items in zip(histories, lists, strict=True):
        hist = {plm.item_row[i] for i in h}
        seen: set[int] = set()
        for it in items:
            total += 1
            if it is None or it in hist or it in seen or not (0 <= it < plm.index.n_items):
                bad += 1
            else:
                seen.add(it)
        missing = k - len(items)
        bad += max(missing, 0)
        total += max(missing, 0)
    return bad / max(total, 1)


def timed(fn, histories, batch: int, beams: int, k: int, plm):
    per_user, lists = [], []
    fn(plm, histories[:min(batch, 2)], beams, k)  # warm-up
    for i in range(0, len(histories), batch):
        chunk = histories[i:i + batch]
        t0 = time.perf_counter()
        lists.extend(fn(plm, chunk, beams, k))
        per_user.append((time.perf_counter() - t0) / len(chunk))
    return {"batch_users": batch, "calls": len(per_user), "median_s_per_user": statistics.median(per_user),
            "mean_s_per_user": statistics.fmean(per_user)}, lists


def agreement(a, b, k: int) -> dict:
    overlap = [len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b, strict=True)]
    exact = [list(x[:k]) == list(y[:k]) for x, y in zip(a, b, strict=True)]
    return {"overlap@10": statistics.fmean(overlap), "exact_order_match_rate": statistics.fmean(exact)}


SEARCHES = (("llmrec", ours), ("llmrec_unmerged", ours_unmerged), ("hf_generate", hf_generate))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="eval/results/decoding_ml100k.json")
    p.add_argument("--users", type=int, default=48)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--beams", type=int, default=10)
    p.add_argument("--dtypes", default="auto,fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="a saved genrec model folder (default: an untrained LoRA)")
    p.add_argument("--before", default=None,
                   help="the JSON of this benchmark run with earlier code (same model, machine and settings, run "
                        "just before or after): its llmrec timings are kept beside these, with the speed-ups")
    p.add_argument("--before-code", default="", help="which code --before ran (a commit)")
    p.add_argument("--searches", default="llmrec,llmrec_unmerged,hf_generate",
                   help="comma list of the searches to time (the comparisons need all three)")
    args = p.parse_args()
    import torch

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.hardware import machine_facts, resolve_dtype, set_threads
    from llmrec.io import write_json_atomic
    from llmrec.items import SemanticIdConfig, build_semantic_ids
    from llmrec.items.encoders import encode_items
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.runinfo import package_versions

    set_threads(args.threads)
    before = json.loads(Path(args.before).read_text(encoding="utf-8")) if args.before else None
    k = 10
    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    vectors = encode_items(data, show_progress=False)
    t0 = time.perf_counter()
    sids, _ = build_semantic_ids(data, SemanticIdConfig(), vectors=vectors, show_progress=False)
    sid_seconds = time.perf_counter() - t0
    histories = [list(e.history.item_ids) for e in split.test[:args.users]]
    runs = {}
    for name in args.dtypes.split(","):
        dtype = resolve_dtype(name)
        torch.manual_seed(args.seed)
        if args.model:
            plm = PersonalLM.load(args.model, dtype=dtype)
        else:
            plm = PersonalLM.create(sids, data.items, PersonalLMConfig(max_history=20, seed=args.seed, dtype=dtype),
                                    item_vectors=vectors, vocabulary=data.vocabulary)
        run = {"dtype_requested": name, "dtype": dtype, "levels": plm.index.levels}
        lists = {}
        searches = [(label, fn) for label, fn in SEARCHES if label in args.searches.split(",")]
        for label, fn in searches:
            for batch in (args.batch, 1):
                timing, got = timed(fn, histories, batch, args.beams, k, plm)
                timing["invalid_rate"] = invalid_rate(plm, histories, got, k)
                run[f"{label}_batch{batch}"] = timing
                lists[(label, batch)] = got
                print(name, label, batch, timing, flush=True)
        for batch in (args.batch, 1) if len(searches) == len(SEARCHES) else ():
            run[f"hf_over_llmrec_batch{batch}"] = (run[f"hf_generate_batch{batch}"]["median_s_per_user"]
                                                   / run[f"llmrec_batch{batch}"]["median_s_per_user"])
            run[f"agreement_batch{batch}"] = agreement(lists[("llmrec", batch)], lists[("hf_generate", batch)], k)
            run[f"unmerged_over_merged_batch{batch}"] = (run[f"llmrec_unmerged_batch{batch}"]["median_s_per_user"]
                                                         / run[f"llmrec_batch{batch}"]["median_s_per_user"])
            run[f"merged_vs_unmerged_agreement_batch{batch}"] = agreement(
                lists[("llmrec", batch)], lists[("llmrec_unmerged", batch)], k)
        if ("llmrec", 1) in lists:
            run["llmrec_batched_vs_single_agreement"] = agreement(lists[("llmrec", args.batch)], lists[("llmrec", 1)], k)
        if before is not None and name in before["runs"]:
            for batch in (args.batch, 1):
                old = before["runs"][name][f"llmrec_batch{batch}"]["median_s_per_user"]
                run[f"before_llmrec_batch{batch}_median_s_per_user"] = old
                run[f"before_over_now_batch{batch}"] = old / run[f"llmrec_batch{batch}"]["median_s_per_user"]
        runs[name] = run
        del plm
    result = {
        "command": "python scripts/bench_decoding.py " + " ".join(f"--{a.replace('_', '-')} {v}"
                                                                   for a, v in vars(args).items()),
        "what": "trie-constrained beam search (10 beams, top 10, history excluded): llmrec constrained_beam_search "
                "via PersonalLM.recommend_batch (LoRA-merged decoding copy; llmrec_unmerged: the PEFT model itself) vs HF generate(num_beams, num_return_sequences, "
                "prefix_allowed_tokens_fn) over the same trie and exclusions, same prompts",
        "model": (f"trained genrec model {args.model}" if args.model else
                  "SmolLM2-135M + ml-100k semantic IDs (default SemanticIdConfig, rkmeans) + untrained LoRA")
                 + " (speed and validity do not depend on training; agreement measured on this model)",
        "users": len(histories), "beams": args.beams, "k": k, "threads": torch.get_num_threads(),
        "semantic_id_build_seconds": sid_seconds,
        **({"before": {"code": args.before_code, "command": before["command"], "created": before.get("created"),
                       "file": args.before}} if before else {}),
        "runs": runs,
        "machine": machine_facts(),
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(args.out, result)
    print({n: {key: r[key] for key in r if key.startswith(("hf_over", "unmerged_over", "agreement"))} for n, r in runs.items()})


if __name__ == "__main__":
    main()
