"""Multi-process recipes: the global batch is fixed through accumulation whatever the world size; the shipped
accelerate configs parse; the memory estimates add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.errors import ConfigError
from llmrec.recipes.multigpu import accelerate_config, plan_batch


def test_global_batch_is_fixed_whatever_the_world_size():
    assert (plan_batch(8, 1, 1).per_device, plan_batch(8, 1, 1).accumulation) == (8, 1)  # the measured runs
    assert (plan_batch(8, 1, 2).per_device, plan_batch(8, 1, 2).accumulation) == (4, 1)
    assert (plan_batch(32, 4, 1).per_device, plan_batch(32, 4, 1).accumulation) == (8, 4)
    assert (plan_batch(32, 4, 2).per_device, plan_batch(32, 4, 2).accumulation) == (8, 2)
    assert (plan_batch(32, 4, 8).per_device, plan_batch(32, 4, 8).accumulation) == (4, 1)
    assert (plan_batch(12, 4, 2).per_device, plan_batch(12, 4, 2).accumulation) == (3, 2)
    assert plan_batch(12, 4, 2).record() == {"global": 12, "world_size": 2, "per_device": 3, "accumulation": 2}
    for global_batch in (4, 8, 12, 24, 32, 64, 96):
        for accum in (1, 2, 4, 8):
            for world in (1, 2, 3, 4, 8):
                if global_batch % accum or global_batch % world:
                    with pytest.raises(ConfigError):
                        plan_batch(global_batch, accum, world)
                    continue
                p = plan_batch(global_batch, accum, world)
                assert p.per_device * p.accumulation * world == global_batch
                assert p.per_device <= global_batch // accum  # never more memory per device than on one process


def test_plan_reads_the_launchers_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert plan_batch(32, 1).world_size == 4 and plan_batch(32, 1).per_device == 8
    with pytest.raises(ConfigError, match="not divisible by the 4 processes"):
        plan_batch(6, 1)


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"),
                                        ("zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = accelerate_config(name)
    cfg = load_config_from_file(str(path))  # accelerate's loader: strict about unknown keys
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "bf16" and cfg.num_machines == 1
    if name == "fsdp":
        assert cfg.fsdp_config["fsdp_version"] == 2 and cfg.fsdp_config["fsdp_reshard_after_forward"] is True
    if name.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
        assert "gradient_accumulation_steps" not in cfg.deepspeed_config  # the recipe's derived value ("auto") wins
    # what `accelerate launch --config_file` makes of it
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "x.py"]))
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == (kind == "MULTI_GPU", kind == "FSDP",
                                                                    kind == "DEEPSPEED")
    assert args.mixed_precision == "bf16"


def test_fsdp_config_builds_a_full_shard_plugin(monkeypatch):
    """The FSDP file through the launcher's environment into accelerate's plugin (no GPU needed to build it)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    path = accelerate_config("fsdp")
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "x.py"]))
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"


def test_unknown_accelerate_config_is_a_config_error():
    with pytest.raises(ConfigError, match="ddp, fsdp, zero2, zero3"):
        accelerate_config("zero1")


@pytest.mark.slow
def test_recipe_checkpoint_resumes_under_another_world_size_with_the_ddp_config(tiny_llama_dir, tmp_path):
    """`llmrec train genrec` for 2 steps alone (global batch 4 = 1 x 4), then resumed to step 4 by 2 CPU processes
    launched with the shipped DDP config (global batch 4 = 2 x 2, gloo): validation inside the Trainer and the test
    score are sharded, rank 0 writes the model and results."""
    from llmrec.cli import main

    sids = _random_sid_table(tmp_path / "sids")
    out = tmp_path / "genrec"
    assert main(["train", "genrec", "--config", "tiny/genrec", "--model.base_model", str(tiny_llama_dir),
                 "--sids", str(sids), "--model.sid_init", "random", "--out", str(out), "--test.skip"]) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["batch"] == {"global": 4, "world_size": 1, "per_device": 4, "accumulation": 1}
    assert first["train"]["steps"] == 2 and "test" not in first
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    # --mixed_precision no: the file's bf16 autocast is for GPUs (slow on CPUs without native bf16)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config("ddp")),
           "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
           "-m", "llmrec.cli", "train", "genrec", "--config", str(out / "config.yaml"), "--train.max_steps", "4",
           "--test.skip", "false"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())
    assert again["batch"] == {"global": 4, "world_size": 2, "per_device": 2, "accumulation": 1}
    assert again["train"]["resumed_from"].endswith("checkpoint-2") and again["train"]["steps"] == 4
    assert again["test_users"] == 4 and "ndcg@10" in again["test"]
    assert (tmp_path / "genrec.checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
    assert not list(tmp_path.glob("genrec.tmp*")) and not list(out.glob("*.tmp"))


def _random_sid_table(path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_recipes import _random_sid_table as make

    return make(path)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_memory_estimate_terms_by_hand():
    from llmrec.recipes.memory import GIB, estimate_memory

    # 2 layers, h 4, i 8, kv 4, vocab 5; 3 sequences of 2 tokens; bf16
    est = estimate_memory(1000, 10, "bf16", seq_len=2, batch=3, layers=2, hidden=4, intermediate=8, kv_dim=4, vocab=5)
    assert est.weights == 1000 * 2 and est.trainable == 10 * 16
    assert est.activations == 6 * 2 * (6 * 4 + 2 * 4 + 4 * 8) * 2  # tokens x layers x elements x bytes
    assert est.logits == 6 * 5 * 10 and est.overhead == 0.75 * GIB
    assert est.total == est.weights + est.trainable + est.activations + est.logits + est.overhead
    ckpt = estimate_memory(1000, 10, "bf16", seq_len=2, batch=3, layers=2, hidden=4, intermediate=8, kv_dim=4,
                           activation_checkpointing=True)
    assert ckpt.activations == 6 * (2 * 4 * 2 + (6 * 4 + 2 * 4 + 4 * 8) * 2)  # layer inputs + one layer's set
    fsdp = estimate_memory(1000, 10, seq_len=2, batch=3, layers=2, hidden=4, strategy="fsdp", world_size=4)
    assert fsdp.weights == 2000 / 4 + 2000 / 2 and fsdp.trainable == 160 / 4
    assert estimate_memory(1000, 10, layers=2, hidden=4, strategy="zero2", world_size=4).trainable == 10 * (4 + 3)
    q = estimate_memory(1000, 10, layers=2, hidden=4, quantized_bits=4.0, embedding_params=200)
    assert q.weights == 800 * 0.5 + 200 * 2
    with pytest.raises(ConfigError):
        estimate_memory(1000, 10, "int3")
    with pytest.raises(ConfigError):
        estimate_memory(1000, 10, strategy="zero1")


def test_model_shapes_match_the_published_sizes_and_qlora_saves_weights():
    from llmrec.recipes.memory import QWEN25_1_5B, QWEN25_7B, SMOLLM2_135M, estimate_for

    for shape, published in ((SMOLLM2_135M, 134.5e6), (QWEN25_1_5B, 1.54e9), (QWEN25_7B, 7.62e9)):
        assert abs(shape.params() - published) / published < 0.01, shape.name
    assert SMOLLM2_135M.lora_params(16) == 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192))
    lora, qlora = estimate_for(QWEN25_7B, "lora"), estimate_for(QWEN25_7B, "qlora")
    assert qlora.weights < lora.weights / 2.5 and qlora.trainable > lora.trainable  # all-linear adapters
    ckpt = estimate_for(QWEN25_7B, "lora", activation_checkpointing=True)
    assert ckpt.activations < lora.activations / 10 and ckpt.logits == lora.logits


def test_readme_memory_table_is_generated_from_the_calculator():
    from llmrec.recipes.memory import memory_table

    readme = accelerate_config("ddp").with_name("README.md").read_text(encoding="utf-8")
    assert memory_table() in readme
    for name in ("ddp", "fsdp", "zero2", "zero3"):
        assert f"python -m llmrec.recipes.multigpu {name})" in readme
