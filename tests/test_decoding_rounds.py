"""scripts/decoding_rounds.py: per-label medians over alternating rounds, the ratio of the medians, and rounds
meeting the decoding targets, from bench_decoding.py records."""

from __future__ import annotations

import pytest
from helpers import load_script


def test_rounds_summary():
    script = load_script("decoding_rounds")
    record = {"runs": {"auto": {"llmrec_batch12": {"median_s_per_user": 0.09}, "llmrec_batch1": {
        "median_s_per_user": 0.31}, "hf_generate_batch12": {"median_s_per_user": 3.0}}}}
    assert script.round_figures(record) == {"batched": 0.09, "single": 0.31}
    rounds = [{"label": "old", "batched": 0.12, "single": 0.30}, {"label": "new", "batched": 0.09, "single": 0.25},
              {"label": "old", "batched": 0.10, "single": 0.32}, {"label": "new", "batched": 0.11, "single": 0.27},
              {"label": "old", "batched": 0.14, "single": 0.28}]
    out = script.summarise_rounds(rounds)
    assert out["median_s_per_user"] == {"old": {"batched": 0.12, "single": 0.30},
                                        "new": {"batched": 0.10, "single": 0.26}}
    assert out["old_over_new_median"]["batched"] == pytest.approx(1.2)
    assert out["rounds_meeting_target"] == {"old": {"batched": 1, "single": 2}, "new": {"batched": 1, "single": 2}}
    assert out["rounds_per_label"] == {"old": 3, "new": 2}
