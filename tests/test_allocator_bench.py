"""scripts/bench_allocator.py's summary on hand-made runs: medians over rounds per policy, speed-ups oriented so
that > 1 means the keep policy is faster (tokens/s ratios, inverted time ratios), incomplete workloads left out."""

from __future__ import annotations

import pytest
from helpers import load_script


def test_summary_orients_speedups_and_takes_medians():
    bench = load_script("bench_allocator")
    sasrec = lambda ms, faults: {"cpu_ms_per_step": ms, "minor_faults_per_step": faults}  # noqa: E731
    tput = lambda genrec, faults: {"real_tokens_per_second": {"genrec": genrec}, "minor_faults": faults}  # noqa: E731
    dec = lambda s: {"median_s_per_user": {"auto/llmrec_batch12": s}, "minor_faults": 10}  # noqa: E731
    runs = {
        "sasrec": {"system": [sasrec(40, 4000), sasrec(44, 3000), sasrec(90, 5000)],
                   "keep": [sasrec(32, 600), sasrec(30, 500), sasrec(35, 700)]},
        "throughput": {"system": [tput(200, 9), tput(100, 7)], "keep": [tput(250, 3), tput(150, 5)]},
        "decoding": {"system": [dec(0.12)], "keep": [dec(0.10)]},
        "unfinished": {"system": [dec(0.1)], "keep": []},
    }
    out = bench.summarise(runs)
    assert set(out) == {"sasrec", "throughput", "decoding"}
    assert out["sasrec"]["system"] == {"cpu_ms_per_step": 44, "minor_faults_per_step": 4000}
    assert out["sasrec"]["keep_speedup"] == pytest.approx(44 / 32)
    assert out["throughput"]["keep_speedup"]["genrec"] == pytest.approx(200 / 150)  # medians of 2: the means
    assert out["throughput"]["child_minor_faults_median"] == {"system": 8, "keep": 4}
    assert out["decoding"]["keep_speedup"]["auto/llmrec_batch12"] == pytest.approx(1.2)
