"""scripts/verify_results.py: the cheap mode reproduces the committed figures; a drift is reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import verify_results  # noqa: E402


def test_compare_flags_figures_outside_tolerance():
    rows = verify_results.compare({"a": 0.105, "b": 0.2}, {"a": 0.1, "b": 0.2, "c": 1.0}, tolerance=0.001)
    assert [r["ok"] for r in rows] == [False, True, False]  # a drifted, b equal, c not measured
    assert rows[0]["diff"] == 0.005 and rows[2]["measured"] is None


def test_every_check_names_committed_figures():
    for check in verify_results.CHECKS:
        for figure, ref in check.committed.items():
            assert isinstance(verify_results.committed_value(ref), (int, float)), (check.name, figure)
    assert {c.name for c in verify_results.CHECKS if c.cheap} >= {"popularity", "semantic_ids_rkmeans"}


def test_cheap_mode_reproduces_committed_results(tmp_path):
    out = tmp_path / "verify.json"
    assert verify_results.main(["--cheap", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "cheap" and report["ok"]
    assert {c["name"] for c in report["checks"]} == {c.name for c in verify_results.CHECKS if c.cheap}
    assert all(r["measured"] is not None for c in report["checks"] for r in c["figures"])
    assert report["machine"]["cpu_cores"] and report["versions"]["torch"]
