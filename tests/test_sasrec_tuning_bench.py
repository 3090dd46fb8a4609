"""scripts/bench_sasrec_tuning.py's summary on hand-made runs: the variant is selected on validation (never on
test), the paired difference against the shipped config is over the same users and seeds, the issue-18 target is
counted per run."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_sasrec_tuning")


def _run(valid, test, per_user, cpu=100.0, epochs=40):
    return {"valid_ndcg@10": valid, "test_ndcg@10": test, "best_epoch": 10, "to_best_cpu_s": cpu,
            "total_cpu_s": cpu + 20, "per_user_test_ndcg@10": per_user, "train_config": {"max_epochs": epochs}}


def test_selection_is_on_validation_and_the_paired_difference_on_test(bench):
    users = np.linspace(0, 1, 50)
    runs = {
        "shipped": {0: _run(0.11, 0.09, users * 0.1), 1: _run(0.12, 0.10, users * 0.1, cpu=50)},
        "long": {0: _run(0.13, 0.08, users * 0.1 + 0.02), 1: _run(0.13, 0.09, users * 0.1 + 0.04)},
        "test_best": {0: _run(0.10, 0.20, users), 1: _run(0.10, 0.20, users)},  # best on test, never selected
    }
    out = bench.summarise(runs)
    assert out["selected_on_validation"] == "long" == out["selected"]["variant"]
    assert out["table"]["long"]["valid_ndcg@10_mean"] == 0.13
    assert out["table"]["long"]["test_ndcg@10_by_seed"] == [0.08, 0.09]
    paired = out["selected_vs_shipped_test_ndcg@10"]
    assert paired["seeds"] == [0, 1] and paired["difference"] == pytest.approx(0.03)
    assert paired["ci95_paired_bootstrap"] == [pytest.approx(0.03), pytest.approx(0.03)]  # a constant shift
    assert out["table"]["shipped"]["runs_meeting_target"] == 0  # 50 CPU-s but test 0.10 < 0.1018
    assert out["variants_meeting_target_every_seed"] == []
    assert out["selected_fast"] is None  # no budget of <= 30 epochs among these


def test_the_fast_budget_is_selected_on_validation_among_short_budgets(bench):
    users = np.linspace(0, 1, 20)
    runs = {
        "long": {0: _run(0.13, 0.11, users, epochs=200)},
        "short_a": {0: _run(0.12, 0.09, users, cpu=40, epochs=30)},
        "short_b": {0: _run(0.11, 0.12, users, cpu=30, epochs=20)},  # better on test: not what selects
    }
    out = bench.summarise(runs)
    assert out["selected_on_validation"] == "long"
    assert out["selected_fast"]["variant"] == "short_a" and out["selected_fast"]["max_epochs_allowed"] == 30
    assert bench.summarise(runs, fast_max_epochs=20)["selected_fast"]["variant"] == "short_b"


def test_every_variant_is_the_recipe_config_plus_valid_overrides(bench):
    from llmrec.recipes.config import load_config
    from llmrec.recipes.sasrec import SasrecRecipeConfig, encoder_configs

    for name, overrides in bench.VARIANTS.items():
        config = load_config(SasrecRecipeConfig, "sasrec/ml-100k", {**overrides, "train.fast": True})
        _, train = encoder_configs(config, 100)
        assert train.fast, name


def _recipe_folder(root, seed, best_epoch, cpu_per_epoch, test):
    import json

    import yaml

    folder = root / f"seed{seed}"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"train": {"seed": seed, "epochs": 30}}))
    (folder / "metrics.json").write_text(json.dumps({
        "best_epoch": best_epoch, "valid_rated_removed": {"ndcg@10": 0.12}, "test": {"rated_removed": {"ndcg@10": test}},
        "test_ci95_bootstrap": {}, "train_wall_s": 99.0}))
    history = [{"epoch": e, "cpu_s": e * cpu_per_epoch, "elapsed_s": e * cpu_per_epoch + 1} for e in range(1, 31)]
    (folder / "meta.json").write_text(json.dumps({"history": history}))
    (folder / "run.json").write_text(json.dumps({"machine": {"allocator": "keep"}, "created": "now"}))
    return folder


def test_fast_runs_only_records_the_recipe_runs_against_the_target(bench, tmp_path):
    import json

    folders = [_recipe_folder(tmp_path, 0, 20, 2.5, 0.105), _recipe_folder(tmp_path, 1, 22, 3.0, 0.110),
               _recipe_folder(tmp_path, 2, 18, 3.0, 0.099)]
    out = tmp_path / "fast.json"
    assert bench.main(["--fast-runs-only", "--fast-recipe-runs", *map(str, folders), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    fast = record["fast_recipe_runs"]
    assert [fast["runs"][f"seed{s}"]["to_best_cpu_s"] for s in range(3)] == [50.0, 66.0, 54.0]
    assert fast["to_best_cpu_s_median"] == 54.0 and fast["test_ndcg@10_mean"] == pytest.approx(0.1047, abs=1e-4)
    assert fast["runs_meeting_target"] == 1  # seed 0 only: seed 1 too slow, seed 2 below 0.1018
    assert fast["target_met_on_median_time_and_mean_test"] is True
    assert "--fast-runs-only" in record["command"] and "machine" in record
