"""Recipes: the config layer (YAML + dotted overrides, strict keys, typed values, help from the dataclasses), every
shipped config against its recipe, and `llmrec train sasrec|genrec|soft-prompt` end to end on tiny settings."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmrec.errors import ConfigError, DataError
from llmrec.recipes.commands import RECIPES, recipe_of
from llmrec.recipes.config import load_config, shipped_configs
from llmrec.recipes.genrec import GenrecRecipeConfig
from llmrec.recipes.genrec_pref import GenrecPrefRecipeConfig
from llmrec.recipes.profile_dpo import ProfileDpoRecipeConfig
from llmrec.recipes.sasrec import SasrecRecipeConfig
from llmrec.recipes.soft_prompt import SoftPromptRecipeConfig

CLASSES = {"sasrec": SasrecRecipeConfig, "genrec": GenrecRecipeConfig, "soft-prompt": SoftPromptRecipeConfig,
           "genrec-pref": GenrecPrefRecipeConfig, "profile-dpo": ProfileDpoRecipeConfig}
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ config hub
def test_every_shipped_config_loads_strictly_into_its_recipe():
    names = shipped_configs()
    assert {"sasrec/ml-100k", "smollm2-135m/genrec", "smollm2-135m/soft-prompt", "tiny/sasrec", "tiny/genrec",
            "tiny/soft-prompt"} <= set(names)
    for name in names:
        recipe = recipe_of(name)
        assert recipe in RECIPES, name
        load_config(CLASSES[recipe], name)  # strict: an unknown key or a wrong type raises
        text = (REPO / "llmrec/recipes/configs" / f"{name}.yaml").read_text()
        assert text.startswith("#") and f"--config {name}" in text, f"{name}: header must give the launch command"


def test_shipped_measured_configs_hold_the_measured_settings():
    from llmrec.users.pretrain import tuned_sasrec_configs

    sas = load_config(SasrecRecipeConfig, "sasrec/ml-100k")
    model, train = tuned_sasrec_configs(1)
    assert (sas.model.d_model, sas.model.layers, sas.model.heads, sas.model.dropout, sas.model.max_len) == (
        model.d_model, model.n_layers, model.n_heads, model.dropout, model.max_len)
    assert (sas.train.lr, sas.train.weight_decay, sas.train.batch_size, sas.train.windows) == (
        train.lr, train.weight_decay, train.batch_size, train.windows)
    # the budget is the variant selected on validation by scripts/bench_sasrec_tuning.py (fast path)
    tuning = json.loads((REPO / "eval/results/sasrec_tuning_ml100k.json").read_text(encoding="utf-8"))
    selected = tuning["variants"][tuning["selected_on_validation"]]
    assert {k: getattr(sas.train, k.split(".")[1]) for k in selected} == selected and sas.train.fast
    fast = load_config(SasrecRecipeConfig, "sasrec/ml-100k-fast")  # the fast budget selected the same way
    chosen = tuning["variants"][tuning["selected_fast"]["variant"]]
    assert {k: getattr(getattr(fast, k.split(".")[0]), k.split(".")[1]) for k in chosen} == chosen and fast.train.fast
    assert dataclasses.replace(fast.model, dropout=sas.model.dropout) == sas.model
    assert SasrecRecipeConfig() == dataclasses.replace(sas, data="ml-100k", out="runs/sasrec", threads=0)
    gen = load_config(GenrecRecipeConfig, "smollm2-135m/genrec")  # genrec_llm_cf_ml100k.json's command
    assert (gen.ids.vectors, gen.model.max_history, gen.train.max_windows, gen.train.epochs, gen.train.eval_steps,
            gen.train.eval_users, gen.train.lr) == ("text+collaborative", 20, 0, 2.0, 200, 200, 2e-3)
    soft = load_config(SoftPromptRecipeConfig, "smollm2-135m/soft-prompt")  # uqa_worked_ml100k.json, soft row
    assert (soft.soft.k, soft.soft.max_items, soft.soft.align_epochs, soft.soft.align_sharpness, soft.soft.user_lr,
            soft.encoder.pooling, soft.questions.train_per_task, soft.questions.worked) == (
        8, 200, 30, 20.0, 0.0, "profile", 300, True)


def test_recipe_constants_match_the_library():
    from llmrec.items.collaborative import VECTOR_SOURCES
    from llmrec.recipes import genrec

    assert genrec.VECTOR_SOURCES == VECTOR_SOURCES


# ------------------------------------------------------------------------------------------------ overrides
def test_dotted_overrides_are_coerced_to_the_field_types():
    cfg = load_config(GenrecRecipeConfig, "tiny/genrec", {
        "train.lr": "1e-3", "train.epochs": "3", "model.adapter": "lora-all-linear", "data": "shop.yaml",
        "train.report_to": "tensorboard,wandb", "test.skip": "true", "sids": "none", "threads": "2",
        "train.checkpoints": "/tmp/ck", "ids.sasrec": "null",
    })
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3.0 and isinstance(cfg.train.epochs, float)
    assert cfg.model.adapter == "lora-all-linear" and cfg.data == "shop.yaml"
    assert cfg.train.report_to == ("tensorboard", "wandb") and cfg.test.skip is True
    assert cfg.sids is None and cfg.ids.sasrec is None and cfg.threads == 2 and cfg.train.checkpoints == "/tmp/ck"
    assert cfg.train.max_steps == 2  # untouched values come from the file
    assert load_config(GenrecRecipeConfig, "tiny/genrec", {"threads": "auto"}).threads == "auto"  # as --threads auto


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train.lrr": "1"}, "train.lrr"),
    ({"nope": "1"}, "'nope'"),
    ({"train": "1"}, "is a section"),
    ({"data.x": "1"}, "not a section"),
    ({"train.lr": "fast"}, "train.lr: expected float, got 'fast'"),
    ({"train.max_steps": "2.5"}, "train.max_steps: expected int"),
    ({"test.skip": "maybe"}, "test.skip: expected bool"),
    ({"ids.quantizer": "pq"}, "ids.quantizer: 'pq' is not one of ['rkmeans', 'rqvae']"),
    ({"dtype": "int8"}, "dtype: 'int8' is not one of"),
    ({"threads": "many"}, "threads: expected an integer >= 0 or 'auto', got 'many'"),
    ({"threads": "-1"}, "threads: expected an integer >= 0 or 'auto', got -1"),
])
def test_bad_overrides_are_config_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(GenrecRecipeConfig, None, overrides)
    assert message in str(err.value)
    if "lrr" in message:  # the allowed keys are named too
        assert "'lr'" in str(err.value) and "'batch_size'" in str(err.value)


def test_yaml_files_are_strict_and_typed(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: ml-100k\ntrain:\n  lr: 1e-3\n  learning_rate: 2\n")
    with pytest.raises(ConfigError, match="learning_rate") as err:
        load_config(GenrecRecipeConfig, bad)
    assert "allowed" in str(err.value) and "'lr'" in str(err.value) and str(bad) in str(err.value)
    bad.write_text("train:\n  epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(GenrecRecipeConfig, bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(GenrecRecipeConfig, bad)
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  lr: 1e-3\n  report_to: [tensorboard]\nsids: null\n")  # PyYAML reads 1e-3 as a string
    cfg = load_config(GenrecRecipeConfig, good)
    assert cfg.train.lr == 1e-3 and cfg.train.report_to == ("tensorboard",)
    with pytest.raises(ConfigError, match="no shipped config"):
        load_config(GenrecRecipeConfig, "smollm2-135m/nope")


# ------------------------------------------------------------------------------------------------ CLI
def test_help_lists_every_option_with_default_and_imports_no_torch():
    code = ("import argparse, sys\n"
            "from llmrec.recipes import commands\n"
            "p = argparse.ArgumentParser(prog='llmrec'); commands.register(p.add_subparsers())\n"
            "try:\n    p.parse_args(['train', 'genrec', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported while building the train parser'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--train.lr FLOAT" in out.stdout and "(default: 0.002)" in out.stdout
    assert "--ids.quantizer rkmeans|rqvae" in out.stdout and "--config FILE|NAME" in out.stdout


def test_print_config_and_unknown_option(capsys):
    from llmrec.cli import main

    assert main(["train", "soft-prompt", "--config", "tiny/soft-prompt", "--soft.k", "5", "--dtype", "fp32",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["soft"]["k"] == 5 and printed["users"] == 30 and printed["dtype"] == "fp32"
    assert main(["train", "genrec", "--train.lr", "fast", "--print-config"]) == 2
    assert "train.lr: expected float" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "genrec", "--train.lrr", "1"])
    assert "--train.lrr" in capsys.readouterr().err
    assert main(["train", "configs"]) == 0
    assert "smollm2-135m/genrec" in capsys.readouterr().out.split()


def _records(out: Path, cls):
    run = json.loads((out / "run.json").read_text())
    resolved = load_config(cls, out / "config.yaml")
    assert run["config"] == json.loads(json.dumps(resolved.to_dict()))
    assert run["machine"]["cpu_cores"] and "peak_memory_mb" in run["machine"] and run["versions"]["torch"]
    return run, resolved


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("fast", ["false", "true"])
def test_train_sasrec_end_to_end(tmp_path, fast):
    from llmrec.cli import main
    from llmrec.users.sequence import SequenceEncoder

    out = tmp_path / "sasrec"
    assert main(["train", "sasrec", "--config", "tiny/sasrec", "--out", str(out), "--train.epochs", "1",
                 "--train.fast", fast]) == 0
    run, cfg = _records(out, SasrecRecipeConfig)
    assert cfg.train.epochs == 1 and cfg.users == 40 and run["recipe"] == "sasrec" and cfg.train.fast == (fast == "true")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_config"]["fast"] == (fast == "true")
    assert meta["train_config"]["dtype"] == ("auto" if fast == "true" else "fp32")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and "ndcg@10" in metrics["test"]["rated_removed"]
    assert SequenceEncoder.load(out).config.d_model == 16


def _random_sid_table(path: Path) -> Path:
    import numpy as np

    from llmrec.data import load_dataset
    from llmrec.items import SemanticIds

    items = load_dataset("ml-100k").item_ids
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, 8, len(items)), rng.integers(0, 8, len(items))], axis=1)
    SemanticIds.from_quantized(items, codes, (8, 8)).save(path)
    return path


def test_train_genrec_end_to_end_reusing_a_sid_table(tmp_path, tiny_llama_dir):
    from llmrec.cli import main
    from llmrec.lm.personal import PersonalLM

    sids = _random_sid_table(tmp_path / "sids")
    out = tmp_path / "genrec"
    assert main(["train", "genrec", "--config", "tiny/genrec", "--model.base_model", str(tiny_llama_dir),
                 "--sids", str(sids), "--model.sid_init", "random", "--out", str(out),
                 "--train.gradient_accumulation_steps", "2"]) == 0
    run, cfg = _records(out, GenrecRecipeConfig)
    assert cfg.sids == str(sids) and run["dtype_resolved"] == "fp32"
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["steps"] == 2 and results["test_users"] == 4 and "ndcg@10" in results["test"]
    assert results["semantic_ids"]["table"] == str(sids)
    assert (tmp_path / "genrec.checkpoints" / "checkpoint-2").is_dir()  # resumable
    plm = PersonalLM.load(out)
    assert list(plm.sids.codebook_sizes)[:2] == [8, 8]
    # a longer budget on the same output resumes from <out>.checkpoints instead of starting over
    assert main(["train", "genrec", "--config", str(out / "config.yaml"), "--train.max_steps", "4",
                 "--test.skip"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["resumed_from"].endswith("checkpoint-2") and results["train"]["steps"] == 4
    assert "test" not in results


def test_genrec_refuses_a_sid_table_of_another_catalogue(tmp_path, tiny_llama_dir):
    from llmrec.items import SemanticIds
    from llmrec.recipes import genrec

    SemanticIds.from_quantized(["1", "2", "x"], [[0, 0], [0, 1], [1, 0]], (2, 2)).save(tmp_path / "sids")
    cfg = load_config(GenrecRecipeConfig, "tiny/genrec", {"sids": str(tmp_path / "sids"), "out": str(tmp_path / "o"),
                                                          "model.base_model": str(tiny_llama_dir)})
    with pytest.raises(DataError, match="have no semantic ID") as err:
        genrec.run(cfg)
    assert err.value.field == "item_ids"


def test_train_soft_prompt_end_to_end(tmp_path, tiny_llama_dir):
    from llmrec.cli import main
    from llmrec.lm.personal import PersonalLM

    out = tmp_path / "soft"
    assert main(["train", "soft-prompt", "--config", "tiny/soft-prompt", "--model.base_model", str(tiny_llama_dir),
                 "--out", str(out)]) == 0
    run, cfg = _records(out, SoftPromptRecipeConfig)
    assert cfg.soft.k == 3 and run["recipe"] == "soft-prompt"
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["steps"] == 2 and results["train"]["text_align"]["steps"] >= 1
    assert results["test_questions"] == 6 and set(results["accuracy"]["task"]) == set(cfg.questions.tasks)
    plm = PersonalLM.load(out)
    assert plm.soft is not None and plm.soft.user_encoder.k == 3


def test_results_name_shipped_configs():
    """Every recorded figure that says which recipe config produced it names a config that ships."""
    import re

    named = []
    for path in sorted((REPO / "eval/results").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        named += [(path.name, m) for m in re.findall(r'"recipe_config": "[^"]*--config ([\w./-]+)', text)]
    assert len(named) >= 6
    for name, config in named:
        assert config in shipped_configs(), f"{name} names {config}, which is not shipped"
