"""Genrec training runs unchanged under `accelerate launch` with 2 CPU processes (DDP over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_process_cpu_ddp(tiny_llama_dir, tmp_path):
    worker = Path(__file__).with_name("ddp_genrec_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # `--multi_gpu` selects accelerate's torchrun launcher; with no GPU the Trainer (use_cpu) runs DDP over gloo.
    # (`--cpu` alone would fall back to a single process.)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(worker), str(tiny_llama_dir), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["steps"] == 3 for r in ranks)
