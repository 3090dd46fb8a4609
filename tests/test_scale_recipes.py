"""Multi-process recipes: the global batch is fixed through accumulation whatever the world size; the shipped
accelerate configs parse; the memory estimates add up."""

from __future__ import annotations

import pytest

from llmrec.errors import ConfigError
from llmrec.recipes.batch import plan_batch


def test_global_batch_is_fixed_whatever_the_world_size():
    assert (plan_batch(8, 1, 1).per_device, plan_batch(8, 1, 1).accumulation) == (8, 1)  # the measured runs
    assert (plan_batch(8, 1, 2).per_device, plan_batch(8, 1, 2).accumulation) == (4, 1)
    assert (plan_batch(32, 4, 1).per_device, plan_batch(32, 4, 1).accumulation) == (8, 4)
    assert (plan_batch(32, 4, 2).per_device, plan_batch(32, 4, 2).accumulation) == (8, 2)
    assert (plan_batch(32, 4, 8).per_device, plan_batch(32, 4, 8).accumulation) == (4, 1)
    assert (plan_batch(12, 4, 2).per_device, plan_batch(12, 4, 2).accumulation) == (3, 2)
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
