"""Sharded evaluation (llmrec.distributed): 1 vs 2 CPU processes (torchrun, gloo) give identical metrics and
predictions for genrec beam search, SASRec ranking and `llmrec eval run`; only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec import distributed
from llmrec.distributed import shard_bounds

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("dist_eval_worker.py")


def test_shard_bounds_cover_every_item_once_in_order():
    for n in (0, 1, 5, 11, 64):
        for world in (1, 2, 3, 8):
            blocks = [shard_bounds(n, world, r) for r in range(world)]
            assert blocks[0][0] == 0 and blocks[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))  # contiguous, in rank order
            sizes = [e - s for s, e in blocks]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError):
        shard_bounds(5, 2, 2)


def test_one_process_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    items = list("abcde")
    assert distributed.shard(items) == items and distributed.gather(items) == items
    assert distributed.world_size() == 1 and distributed.is_main() and distributed.broadcast(3) == 3


def _env() -> dict[str, str]:
    # the worker imports this checkout's llmrec (not the installed one), one thread per process
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.slow
def test_two_processes_give_the_metrics_and_predictions_of_one(tiny_llama_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    env = _env()
    alone = subprocess.Popen([sys.executable, str(WORKER), str(tiny_llama_dir), str(one)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), str(tiny_llama_dir), str(two)],
                          env=env, capture_output=True, text=True, timeout=300)
    log = alone.communicate(timeout=300)[0]
    assert alone.returncode == 0, log[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert single["world"] == 1 and single["local_users"] == 11
    assert [r["world"] for r in ranks] == [2, 2] and [r["local_users"] for r in ranks] == [6, 5]
    keys = [k for k in single if k.startswith(("genrec_", "sasrec", "eval_")) and k != "eval_files"]
    assert len(keys) == 6
    for key in keys:  # every rank gets the whole gathered result, equal to one process' to the last digit
        assert ranks[0][key] == single[key], key
        assert ranks[1][key] == single[key], key
    assert len(single["genrec_beam"]["ranked"]) == 11
    # the files (predictions, golds, results, caches) come from rank 0 alone and match one process' files
    assert ranks[0]["predictions"] == single["predictions"] and ranks[0]["eval_files"] == single["eval_files"]
    assert "predictions" not in ranks[1]
    for cache in (two / "eval" / "cache" / "lamp_3").glob("*.jsonl"):
        lines = [json.loads(x) for x in cache.read_text().splitlines()]
        assert "header" in lines[0] and sorted(x["id"] for x in lines[1:]) == ["3001", "3002", "3003"]


def test_default_device_is_the_local_rank_gpu_or_cpu(monkeypatch):
    import torch

    from llmrec.distributed import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert default_device() == "cuda:0"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device() == "cuda:1"  # under a launcher each process takes its own GPU
