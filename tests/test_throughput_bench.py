"""scripts/bench_throughput.py --quick on the tiny model: every row is there, with positive finite figures (the
numbers themselves are machine-dependent and not asserted); the FLOP count follows its formula."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from llmrec.training.flops import LmShapes, step_flops
from llmrec.training.throughput import batch_tokens, summarize_steps

REPO = Path(__file__).resolve().parents[1]


def test_step_flops_is_the_stated_formula():
    s = LmShapes(hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, head_dim=4, vocab=100,
                 lora=((2, 8, 8), (2, 8, 4)))
    assert s.linear_params() == 2 * (2 * 8 * 8 + 2 * 8 * 4 + 3 * 8 * 16)
    p = step_flops(s, rows=3, width=5)
    t = 15
    assert p["linear_forward"] == p["linear_backward"] == 2 * s.linear_params() * t
    assert p["lora_backward"] == 2 * p["lora_forward"] == 4 * (2 * 16 + 2 * 12) * t
    assert p["attention_backward"] == 2 * p["attention_forward"] == 2 * 4 * 2 * 5 * 8 * t
    assert p["head_forward"] == p["head_backward_input"] == 2 * 8 * 100 * t and p["head_backward_weight"] == 0
    sid = step_flops(LmShapes(**{**s.__dict__, "head_weight_grad": True}), rows=3, width=5, head_positions=4,
                     head_rows=10)
    assert sid["head_forward"] == 2 * 8 * 10 * 4 and sid["head_backward_weight"] == 2 * 8 * 100 * 4
    assert p["total"] == sum(v for k, v in p.items() if k != "total")


def test_summary_counts_real_and_padded_tokens():
    import torch

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": mask,
             "labels": torch.tensor([[-100, 5, 6, -100], [-100, 7, -100, -100]])}
    assert batch_tokens(batch) == {"rows": 2, "width": 4, "computed": 8, "real": 5, "targets": 3}
    s = summarize_steps([9.0, 2.0, 4.0], [batch] * 3, [8e9] * 3, warmup=1, peak_gflops=8.0, mix_gflops=4.0)
    assert s["timed_steps"] == 2 and s["median_step_seconds"] == 3.0
    assert s["real_tokens_per_second"] == pytest.approx((5 / 2 + 5 / 4) / 2)
    assert s["achieved_gflops"] == pytest.approx(3.0) and s["pct_of_peak"] == pytest.approx(37.5)
    assert s["padding_fraction"] == pytest.approx(3 / 8)


def _numbers(node):
    if isinstance(node, bool):
        return
    if isinstance(node, (int, float)):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)


def test_quick_run_writes_every_row(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    sys.modules.pop("bench_throughput", None)
    import bench_throughput

    out = tmp_path / "throughput.json"
    assert bench_throughput.main(["--quick", "--base-model", str(tiny_llama_dir), "--dtypes", "fp32",
                                  "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in ("summary", "ratios", "memory", "matmul_peak", "rows", "flops_formula", "machine", "versions"):
        assert key in res, key
    rows = res["rows"]["fp32"]
    for name in ("genrec_llmrec", "bare_hf_loop", "qa_llmrec", "qa_bare_loop"):
        r = rows[name]
        for k in ("real_tokens_per_second", "computed_tokens_per_second", "gflop_per_computed_token", "pct_of_peak",
                  "peak_rss_mb", "median_step_seconds"):
            assert r[k] > 0 and math.isfinite(r[k]), (name, k)
        assert r["real_tokens"] <= r["computed_tokens"] and r["timed_steps"] == 2
    # the bare loops replay the Trainer's own batches
    assert rows["bare_hf_loop"]["batches_digest"] == rows["genrec_llmrec"]["batches_digest"]
    assert rows["qa_bare_loop"]["batches_digest"] == rows["qa_llmrec"]["batches_digest"]
    # the kernel each row ran: llmrec's CPU attention by default, SDPA for the bare loops and the "before" rows
    assert rows["genrec_llmrec"]["attention"] == rows["qa_llmrec"]["attention"] == "llmrec_cpu"
    for name in ("genrec_llmrec_sdpa", "bare_hf_loop", "qa_llmrec_sdpa", "qa_bare_loop"):
        assert rows[name]["attention"] == "sdpa", name
    assert rows["qa_llmrec_sdpa"]["batches_digest"] == rows["qa_llmrec"]["batches_digest"]
    assert res["ratios"]["fp32"]["genrec_llmrec_over_genrec_llmrec_sdpa"] > 0
    for name in ("genrec_llmrec_sid_loss", "genrec_llmrec_packed", "genrec_llmrec_compiled",
                 "genrec_llmrec_sid_loss_packed_compiled", "qa_llmrec_compiled"):  # a row or why it is absent
        assert isinstance(rows[name], dict) or rows[name].startswith("skipped")
    for dt in ("fp32", "bf16"):
        assert res["matmul_peak"][dt]["peak_gflops"] >= res["matmul_peak"][dt]["mix_gflops"] > 0
    assert isinstance(res["matmul_peak"]["bf16_native"], bool)
    assert all(math.isfinite(x) and x >= 0 for x in _numbers({k: res[k] for k in ("summary", "ratios", "rows")}))
