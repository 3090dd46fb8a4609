"""`llmrec data info` and `llmrec resources` through the CLI entry point (and once as a real process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_data_info_ml100k_json(capsys):
    rc, out, _ = run_cli(capsys, "data", "info", "ml-100k", "--json")
    assert rc == 0
    info = json.loads(out)  # exactly one JSON object
    assert (info["users"], info["items"], info["interactions"]) == (943, 1682, 100_000)
    assert info["density"] == pytest.approx(100_000 / (943 * 1682))
    assert info["history_length"]["p0"] == 20 and info["history_length"]["p100"] == 737
    assert info["history_length"]["mean"] == pytest.approx(100_000 / 943)
    assert info["ratings"]["distribution"] == {"1": 6110, "2": 11370, "3": 27145, "4": 34174, "5": 21201}
    assert info["repeat_interactions"] == 0


def test_data_info_text(capsys, ml_folder):
    rc, out, _ = run_cli(capsys, "data", "info", str(ml_folder("recbole")))
    assert rc == 0
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["users"] == "3" and lines["items"] == "5" and lines["interactions"] == "10"
    assert lines["density"] == "0.666667"
    assert "p50=4, " in lines["history_length"] and "mean=3.333" in lines["history_length"]
    assert lines["ratings"].startswith("count=10, mean=3.3")


def test_data_info_subprocess():
    exe = Path(sys.executable).parent / "llmrec"
    if not exe.exists():
        pytest.skip(f"console script not installed beside {sys.executable}")
    proc = subprocess.run([str(exe), "data", "info", "ml-100k", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["users"], info["items"], info["interactions"]) == (943, 1682, 100_000)


def test_data_info_grouplens_folder(capsys, ml_folder):
    rc, out, _ = run_cli(capsys, "data", "info", str(ml_folder("grouplens")), "--json")
    assert rc == 0
    info = json.loads(out)
    assert (info["users"], info["items"], info["interactions"]) == (3, 5, 10)
    assert info["density"] == pytest.approx(10 / 15)
    assert info["history_length"]["p50"] == 4 and info["history_length"]["mean"] == pytest.approx(10 / 3)
    assert info["time_span"] == [50, 500]


def test_data_info_lamp(capsys, lamp_files):
    q_path, o_path = lamp_files()
    rc, out, _ = run_cli(capsys, "data", "info", str(q_path), "--format", "lamp", "--task", "LaMP_3",
                         "--outputs", str(o_path), "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["task"] == "LaMP_3" and info["questions"] == 3 and info["golds"] == 3
    assert info["profile_items"] == 3
    assert info["profile_size"]["p50"] == 1 and info["profile_size"]["mean"] == 1
    assert info["input_words"]["p0"] == 8  # "What is the score of this review? Dull."
    rc, out, _ = run_cli(capsys, "data", "info", str(q_path))  # .json means LaMP by default
    assert rc == 0 and "questions" in out


def _one_line_error(rc: int, out: str, err: str, *needles: str) -> None:
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmrec: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_data_info_bad_input_exit_2(capsys, ml_folder, lamp_files, tmp_path):
    folder = ml_folder("grouplens", ratings=[("1", "1", 3, 10), ("1", "7", 4, 11)])
    _one_line_error(*run_cli(capsys, "data", "info", str(folder)), str(folder / "u.data"), "record line 2",
                    "field 'item_id'", "unknown item '7'")
    q_path, o_path = lamp_files(outputs={"task": "LaMP_3", "golds": [{"id": "310", "output": "3"}]})
    _one_line_error(*run_cli(capsys, "data", "info", str(q_path), "--outputs", str(o_path)), str(o_path),
                    "2 question id(s) have no gold output")
    html = tmp_path / "page.json"
    html.write_text("<html><body>not found</body></html>")
    _one_line_error(*run_cli(capsys, "data", "info", str(html), "--format", "lamp"), str(html), "HTML page")
    _one_line_error(*run_cli(capsys, "data", "info", str(tmp_path / "missing")), "unknown dataset")


def test_data_info_bad_input_subprocess(tmp_path):
    exe = Path(sys.executable).parent / "llmrec"
    if not exe.exists():
        pytest.skip(f"console script not installed beside {sys.executable}")
    bad = tmp_path / "q.json"
    bad.write_bytes(b"\xff\xfe not json")
    proc = subprocess.run([str(exe), "data", "info", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and str(bad) in proc.stderr and "not valid utf-8" in proc.stderr


def test_resources_status_and_fetch_without_network(capsys, empty_cache):
    rc, out, _ = run_cli(capsys, "resources", "status")
    assert rc == 0
    assert json.loads(out) == {"ml-100k": None, "all-minilm-l6-v2": None, "smollm2-135m": None}
    _one_line_error(*run_cli(capsys, "resources", "fetch"), "llmrec resources fetch", "LLMREC_NO_AUTO_FETCH")
