"""`llmrec eval score` on hand-written LaMP files: values, both modes, and the bad-input cases (exit 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmrec.cli import main
from llmrec.errors import DataError
from llmrec.evaluation.scoring import score_files

FIX = Path(__file__).parent / "fixtures" / "lamp"


def run_cli(capsys, *args):
    code = main(["eval", "score", "--n-boot", "50", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_score_lamp3_both_modes(capsys):
    code, out, _ = run_cli(capsys, "--task", "LaMP_3", "--golds", str(FIX / "lamp3_dev_outputs.json"),
                           "--predictions", str(FIX / "lamp3_predictions.json"))
    assert code == 0
    res = json.loads(out)
    assert res["task"] == "LaMP_3" and res["n"] == 3 and res["mode"] == "lamp"
    assert res["metrics"]["mae"]["value"] == pytest.approx(5 / 3)
    assert res["metrics"]["rmse"]["value"] == pytest.approx(math.sqrt(17 / 3))
    assert res["metrics"]["parse_failure_rate"]["value"] == pytest.approx(1 / 3)
    res = score_files("lamp_3", FIX / "lamp3_dev_outputs.json", FIX / "lamp3_predictions.json", mode="lenient",
                      n_boot=0)
    assert res["metrics"]["mae"]["value"] == pytest.approx(2 / 3)
    assert res["metrics"]["parse_failure_rate"]["value"] == 0


def test_score_lamp2_and_lamp4():
    res = score_files("2", FIX / "lamp2_dev_outputs.json", FIX / "lamp2_predictions.json", n_boot=0)
    assert res["metrics"]["accuracy"]["value"] == 0.25
    assert res["metrics"]["macro_f1"]["value"] == pytest.approx(1 / 15)
    res = score_files("LaMP-2", FIX / "lamp2_dev_outputs.json", FIX / "lamp2_predictions.json", mode="lenient",
                      n_boot=0)
    assert res["metrics"]["accuracy"]["value"] == 0.75
    res = score_files("LaMP_4", FIX / "lamp4_outputs.json", FIX / "lamp4_predictions.json", n_boot=0)
    assert 0 < res["metrics"]["rougeL"]["value"] <= res["metrics"]["rouge1"]["value"] < 1


def _write(tmp_path: Path, name: str, obj) -> str:
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return str(p)


def test_bad_inputs_exit_2_with_a_clear_message(tmp_path, capsys):
    golds = str(FIX / "lamp3_dev_outputs.json")
    missing = _write(tmp_path, "missing.json", {"task": "LaMP_3", "golds": [{"id": "3001", "output": "4"}]})
    extra = _write(tmp_path, "extra.json", {"task": "LaMP_3", "golds": [
        {"id": i, "output": "4"} for i in ("3001", "3002", "3003", "9999")]})
    wrong_task = _write(tmp_path, "wrong.json", {"task": "LaMP_2", "golds": [{"id": "3001", "output": "4"}]})
    cases = [
        (["--task", "LaMP_3", "--golds", golds, "--predictions", missing], "have no prediction, e.g. '3002'"),
        (["--task", "LaMP_3", "--golds", golds, "--predictions", extra], "not in the golds file"),
        (["--task", "LaMP_3", "--golds", golds, "--predictions", wrong_task], "file is for LaMP_2, expected LaMP_3"),
        (["--task", "LaMP_2", "--golds", golds, "--predictions", golds], "file is for LaMP_3, expected LaMP_2"),
        (["--task", "LaMP_3", "--golds", golds, "--predictions", str(FIX / "html_page.json")], "HTML page"),
        (["--task", "LaMP_9", "--golds", golds, "--predictions", golds], "unknown task"),
        (["--task", "LaMP_3", "--golds", golds, "--predictions", str(tmp_path / "nope.json")], "file not found"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, *args)
        assert code == 2, args
        assert message in err and out == "", (message, err)
        assert err.count("\n") == 1  # one line, no traceback


def test_non_lamp_task_files(tmp_path):
    g = _write(tmp_path, "g.json", {"task": "ml100k_rating", "golds": [{"id": "1:2", "output": "4"}]})
    p = _write(tmp_path, "p.json", {"task": "ml100k_rating", "golds": [{"id": "1:2", "output": "3.5"}]})
    assert score_files("ml100k_rating", g, p, n_boot=0)["metrics"]["mae"]["value"] == 0.5
    with pytest.raises(DataError, match="expected 'ml100k_next_genre'"):
        score_files("ml100k_next_genre", g, p)
