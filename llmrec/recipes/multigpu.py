"""Multi-process training: shipped ``accelerate`` configs (DDP, FSDP, DeepSpeed ZeRO-2/3; see
``llmrec/recipes/accelerate/README.md``) and the batch arithmetic.

The global batch of a recipe stays fixed whatever the number of processes: the per-device batch and the
gradient accumulation steps are derived from the world size (``WORLD_SIZE`` under ``accelerate launch`` /
``torchrun``), so a config gives the same optimisation on 1 CPU, 2 GPUs or 8.

``train.batch_size`` is the global batch (sequences per optimizer step over all processes) and
``train.gradient_accumulation_steps`` the accumulation on ONE process, so ``batch_size / accumulation`` is the
largest per-device batch (the memory ceiling the config was written for). With N processes each takes
``batch_size / N`` sequences per step, in device batches as large as that ceiling allows.
"""

from __future__ import annotations

import dataclasses
import logging
from importlib import resources
from pathlib import Path

from llmrec.errors import ConfigError

logger = logging.getLogger(__name__)
ACCELERATE_CONFIGS = ("ddp", "fsdp", "zero2", "zero3")


def accelerate_config(name: str) -> Path:
    """The shipped ``accelerate launch --config_file`` file ``name`` (one of :data:`ACCELERATE_CONFIGS`)."""
    if name not in ACCELERATE_CONFIGS:
        raise ConfigError(f"unknown accelerate config {name!r}; shipped: {', '.join(ACCELERATE_CONFIGS)}")
    return Path(str(resources.files("llmrec.recipes").joinpath("accelerate", f"{name}.yaml")))


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    world_size: int
    per_device: int
    accumulation: int

    def record(self) -> dict[str, int]:
        """What results.json keeps under ``batch``."""
        return {"global": self.global_batch, "world_size": self.world_size, "per_device": self.per_device,
                "accumulation": self.accumulation}

    def describe(self) -> str:
        return (f"global batch {self.global_batch} = {self.world_size} process(es) x {self.per_device} per device "
                f"x {self.accumulation} accumulation step(s)")


def plan_batch(global_batch: int, accumulation: int = 1, world_size: int | None = None) -> BatchPlan:
    """Per-device batch and accumulation steps giving exactly ``global_batch`` sequences per optimizer step on
    ``world_size`` processes (default: this run's), never above the per-device batch ``global_batch /
    accumulation`` of one process."""
    if world_size is None:
        from llmrec.distributed import world_size as current

        world_size = current()
    if global_batch < 1 or accumulation < 1 or world_size < 1:
        raise ConfigError(f"batch_size ({global_batch}), gradient_accumulation_steps ({accumulation}) and the world "
                          f"size ({world_size}) must be >= 1")
    if global_batch % accumulation:
        raise ConfigError(f"train.batch_size {global_batch} (the global batch) is not divisible by "
                          f"train.gradient_accumulation_steps {accumulation}")
    if global_batch % world_size:
        raise ConfigError(f"train.batch_size {global_batch} (the global batch) is not divisible by the {world_size} "
                          "processes of this run: choose a multiple of the world size")
    ceiling, share = global_batch // accumulation, global_batch // world_size
    per_device = max(d for d in range(1, min(ceiling, share) + 1) if share % d == 0)
    plan = BatchPlan(global_batch, world_size, per_device, share // per_device)
    logger.info("batch: %s", plan.describe())
    return plan


if __name__ == "__main__":  # python -m llmrec.recipes.multigpu ddp -> the file for accelerate launch --config_file
    import sys

    print(accelerate_config(sys.argv[1] if len(sys.argv) > 1 else "ddp"))
