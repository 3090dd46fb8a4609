"""Generated docs stay generated: eval/RESULTS.md, the README's results table and the config reference equal a
fresh rendering (CI fails on drift), and every figure in them comes from the JSON."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import render_config_reference  # noqa: E402
import render_results  # noqa: E402


def test_results_md_and_readme_table_are_up_to_date():
    assert render_results.main(["--check"]) == 0, "run: python scripts/render_results.py"


def test_config_reference_is_up_to_date():
    assert render_config_reference.main(["--check"]) == 0, "run: python scripts/render_config_reference.py"


def test_every_results_file_is_rendered_with_provenance():
    text = (REPO / "eval/RESULTS.md").read_text(encoding="utf-8")
    for path in sorted((REPO / "eval/results").glob("*.json")):
        assert f"### {path.stem}\n" in text, path.name
    assert text.count("| hardware |") == len(list((REPO / "eval/results").glob("*.json")))


def test_headline_figures_follow_the_json(tmp_path):
    """Changing a committed figure changes the README table and RESULTS.md; --check then reports drift."""
    results = tmp_path / "results"
    shutil.copytree(REPO / "eval/results", results)
    readme, results_md = tmp_path / "README.md", tmp_path / "RESULTS.md"
    shutil.copy(REPO / "README.md", readme)
    args = ["--results", str(results), "--readme", str(readme), "--results-md", str(results_md)]
    assert render_results.main(args) == 0 and render_results.main([*args, "--check"]) == 0
    data = json.loads((results / "baselines_ml100k.json").read_text())
    data["popularity"]["test"]["rated_removed"]["ndcg@10"] = 0.4321
    (results / "baselines_ml100k.json").write_text(json.dumps(data))
    assert render_results.main([*args, "--check"]) == 1
    render_results.main(args)
    assert "test NDCG@10 0.4321" in readme.read_text() and "0.4321" in results_md.read_text()


def test_missing_provenance_says_not_recorded():
    lines = render_results.render_file("old", {"score": 0.5})
    text = "\n".join(lines)
    assert "| hardware | not recorded |" in text and "| versions | not recorded |" in text
    assert render_results.config_of({}) == render_results.NOT_RECORDED


def test_unknown_headline_path_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        render_results.lookup({"f": {"a": 1}}, "f:a/nope")


def test_dataset_fields_all_documented():
    import dataclasses

    from llmrec.data.config import DatasetConfig

    helps = render_config_reference.dataset_help()
    documented = {f.name for f in dataclasses.fields(DatasetConfig) if helps.get(f.name)}
    assert documented >= {"format", "path", "items", "interactions", "columns", "timestamp_format", "category",
                          "vocabulary", "k_core", "min_user_interactions"}
