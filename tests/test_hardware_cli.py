"""Hardware-aware defaults: dtype auto chosen by the CPU's flags, --dtype/--threads on every model command,
PersonalLM records the dtype it used, and --help imports no torch/transformers."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmrec.hardware as hardware
from llmrec.cli import build_parser
from llmrec.cli_args import add_hardware_args, apply_hardware_args
from llmrec.errors import ConfigError
from llmrec.lm.loading import dtype_name, parse_dtype

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cpu(monkeypatch):
    """``cpu("avx2")`` makes this process see a CUDA-less Linux CPU with exactly those flags."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware.sys, "platform", "linux")

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))

    return set_flags


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it(cpu, caplog):
    cpu("sse4_2", "avx2", "fma")  # the AMD EPYC of the issue
    with caplog.at_level("INFO", logger="llmrec.hardware"):
        assert hardware.resolve_dtype("auto") == "fp32"
    assert "dtype auto -> fp32" in caplog.text and "no avx512_bf16/amx_bf16" in caplog.text
    assert parse_dtype(None) is torch.float32 and parse_dtype("auto") is torch.float32
    cpu("avx2", "avx512f", "avx512_bf16")
    assert hardware.resolve_dtype("auto") == "bf16" and parse_dtype("auto") is torch.bfloat16
    cpu("avx2", "amx_bf16", "amx_tile")
    assert dtype_name("auto") == "bf16"


def test_explicit_dtypes_pass_and_bad_ones_are_config_errors(cpu):
    cpu("avx2")
    for name, want in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16),
                       ("bfloat16", torch.bfloat16), (torch.float16, torch.float16)):
        assert parse_dtype(name) is want
    for bad in ("fp8", "float64", torch.float64):
        with pytest.raises(ConfigError, match="unknown dtype"):
            parse_dtype(bad)
    with pytest.raises(ConfigError, match="unknown dtype"):
        from llmrec.lm.personal import PersonalLMConfig

        PersonalLMConfig(dtype="half-ish")


def test_apply_hardware_args_resolves_and_pins_threads(cpu):
    cpu("avx2")
    p = add_hardware_args(argparse.ArgumentParser())
    before = torch.get_num_threads()
    try:
        args = p.parse_args(["--threads", "1"])
        assert apply_hardware_args(args) == "fp32" == args.dtype and torch.get_num_threads() == 1
        assert apply_hardware_args(p.parse_args(["--dtype", "bf16"])) == "bf16"
        with pytest.raises(ConfigError, match="threads"):
            apply_hardware_args(p.parse_args(["--threads", "-2"]))
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        p.parse_args(["--dtype", "fp8"])


@pytest.mark.parametrize("argv", [
    ["recommend", "--model", "M", "--user", "1"],
    ["answer", "--user", "1", "Which genre?"],
    ["profile", "--user", "1"],
    ["eval", "run", "--tasks", "t", "--out", "o", "--model", "m"],
    ["items", "build", "--out", "o"],
])
def test_model_commands_take_dtype_and_threads(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    assert (args.dtype, args.threads) == ("auto", 0)
    args = parser.parse_args(argv + ["--dtype", "fp32", "--threads", "2"])
    assert (args.dtype, args.threads) == ("fp32", 2)
    with pytest.raises(SystemExit):
        parser.parse_args(argv + ["--dtype", "int8"])


def test_personal_lm_saves_the_dtype_it_used_and_auto_chooses_again_on_load(cpu, tiny_llama_dir, tmp_path):
    from test_genrec import _catalogue_data, _sids

    from llmrec.lm.personal import PersonalLM, PersonalLMConfig

    cpu("avx2")
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), max_history=8)
    assert cfg.dtype == "auto"
    plm = PersonalLM.create(_sids(), _catalogue_data().items, cfg)
    assert plm.config.dtype == "fp32"
    assert next(plm.model.parameters()).dtype == torch.float32
    direct = PersonalLM(plm.model, plm.tokenizer, None, {}, PersonalLMConfig(base_model=str(tiny_llama_dir)))
    assert direct.config.dtype == "fp32"  # built around a loaded model: records the model's dtype, not "auto"
    plm.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "llmrec_config.json").read_text())
    assert saved["dtype"] == "fp32"
    cpu("avx512_bf16")  # the same model on a machine with native bf16
    again = PersonalLM.load(tmp_path / "m")
    assert again.config.dtype == "bf16" and next(again.model.parameters()).dtype == torch.bfloat16
    assert PersonalLM.load(tmp_path / "m", dtype=None).config.dtype == "fp32"  # None: as saved
    saved["dtype"] = "bf16"  # a model saved before dtype auto, on an AMX machine, opened on an AVX2-only one
    (tmp_path / "m" / "llmrec_config.json").write_text(json.dumps(saved))
    cpu("avx2")
    old = PersonalLM.load(tmp_path / "m")
    assert old.config.dtype == "fp32" and next(old.model.parameters()).dtype == torch.float32


# --help must not pay for torch/transformers: imports are deferred to the work.
_HELP_PROBE = """
import sys
from llmrec.cli import build_parser, main
parser = build_parser()
groups = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0].choices
argvs = [["--help"]]
for name, sub in groups.items():
    argvs.append([name, "--help"])
    for action in sub._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            argvs += [[name, leaf, "--help"] for leaf in action.choices]
for argv in argvs:
    try:
        main(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "transformers", "peft", "datasets", "faiss") if m in sys.modules)
print(len(argvs), ",".join(heavy))
"""


def test_help_imports_no_torch_or_transformers():
    out = subprocess.run([sys.executable, "-c", _HELP_PROBE], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.splitlines()[-1].split()  # the help texts come first
    assert int(out[0]) >= 10, out  # llmrec --help, every group and every command
    assert out[1:] == [], f"--help imported {out[1:]}"


def test_module_help_is_light():
    probe = ("import runpy, sys\nsys.argv = ['llmrec', '--help']\ntry:\n    runpy.run_module('llmrec.cli', "
             "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, "
             "'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout + out.stderr


# Scripts whose --help still imports torch (none now): drop a name from here once its script is light.
HEAVY_HELP_SCRIPTS: set[str] = set()


@pytest.mark.parametrize("script", sorted(p.stem for p in (ROOT / "scripts").glob("*.py")
                                          if p.stem not in HEAVY_HELP_SCRIPTS))
def test_script_help_imports_no_torch(script):
    path = ROOT / "scripts" / f"{script}.py"
    probe = (f"import runpy, sys\nsys.argv = [{str(path)!r}, '--help']\nsys.path.insert(0, {str(path.parent)!r})\n"
             f"try:\n    runpy.run_path({str(path)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print([m for m in ('torch', 'transformers', 'peft', 'datasets', 'faiss') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout and out.stdout.splitlines()[-1] == "[]", out.stdout[-500:] + out.stderr
