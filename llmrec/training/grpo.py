"""Online alignment of a supervised generative recommender with trl's ``GRPOTrainer``, its rollouts being the
model's own trie-constrained beams.

For a training position (a user's history, the true next item), the group of ``generations`` completions is the
model's top beams over the catalogue (never the user's own items, as at recommendation time) -- the rollout
MiniOneRec uses for semantic IDs: sampling a 3-code ID gives mostly duplicates and a beam list is what the
recommender is judged on. The reward is ``hit`` (1 for the true item, else 0) or ``rank`` (1 for the true item;
a wrong item at beam position r gets -1/log2(r + 1), normalised to sum to -1, so confident mistakes cost most);
trl turns each group's rewards into advantages (mean / std within the group) and does the policy-gradient loss,
the optimizer and the Trainer loop. Without guiding only the groups whose beams already hold the true item (about
a fifth on ml-100k) carry a signal: the true item is raised over the beams that outrank it. ``guided`` (off by
default) puts the true item in place of the last beam when the beams missed it, so every group carries a signal --
a listwise contrast with the model's own hardest mistakes; on ml-100k that, like the ``rank`` reward, pushed the
top beams down, flattened the distribution and lowered validation NDCG@10 (eval/results/genrec_grpo_ml100k.json).

Two thin adapters, since trl cannot drive a constrained beam search itself: :class:`BeamRollouts` is trl's
``rollout_func`` (it tokenizes the prompt, runs :meth:`PersonalLM.recommend_batch` and returns SID token ids), and
the dataset's ``prompt`` column is a key (``user@position``), not text, because ``rollout_func`` receives only that
column and must find the position's history, target and forbidden items from it. Validation NDCG@10 from beam
search picks the checkpoint, as in :mod:`llmrec.training.preference`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from llmrec.data.splits import SplitExample
from llmrec.errors import ConfigError, LlmrecError
from llmrec.training.preference import (
    AlignmentTrainConfig,
    CompactCheckpointMixin,
    PreferencePrompt,
    beam_rollouts,
    expose_head_bias,
    reference_model,
    run_alignment,
    start_alignment,
)

logger = logging.getLogger(__name__)

GROUP_REWARDS = ("hit", "rank")


# ------------------------------------------------------------------------------------------------- groups, rewards
def rollout_group(ranked: Sequence[str], target: str, size: int, *, guided: bool) -> list[str]:
    """The ``size`` completions of one prompt: the first ``size`` beams (best first); ``guided`` puts the true item
    in the last place when the beams missed it."""
    group = list(ranked[:size])
    if len(group) < size or len(set(group)) < size:
        raise LlmrecError(f"the beam search returned {len(set(group))} distinct items, the group needs {size}: "
                          "lower grpo.generations or use a larger catalogue")
    if guided and target not in group:
        group[-1] = target
    return group


def group_rewards(items: Sequence[str], target: str, kind: str = "hit") -> list[float]:
    """Rewards of one group (``items`` in beam order): ``hit`` = 1 for the true item, else 0; ``rank`` = 1 for the
    true item and -(1/log2(r + 1)) / sum over the wrong items of the same, for a wrong item at position r."""
    if kind not in GROUP_REWARDS:
        raise ConfigError(f"grpo reward must be one of {list(GROUP_REWARDS)}, got {kind!r}")
    hits = [1.0 if item == target else 0.0 for item in items]
    if kind == "hit":
        return hits
    wrong = [1.0 / math.log2(r + 2) if not h else 0.0 for r, h in enumerate(hits)]
    total = sum(wrong) or 1.0
    return [1.0 if h else -w / total for h, w in zip(hits, wrong, strict=True)]


def prompt_key(p: PreferencePrompt) -> str:
    """The dataset's ``prompt`` value for a training position: unique per (user, position)."""
    return f"{p.user_id}@{len(p.history)}"


class BeamRollouts:
    """trl's ``rollout_func(prompts, trainer)``: ``prompts`` holds each position's key ``generations`` times in a
    row (trl's sampler repeats each dataset row that often); for each run of keys one constrained beam search
    gives the group. Returns the prompt's token ids, each completion's SID token ids, and per-token log-probs
    as NaN: the beam search scores whole IDs, and trl reads these only for vLLM's importance-sampling correction
    (off here; NaN is trl's "no value"). ``item``, ``position`` and ``beams_hit`` (the beams held the true item
    before any guiding) go on to the reward function."""

    def __init__(self, plm, prompts: Sequence[PreferencePrompt], *, generations: int, guided: bool, beams: int,
                 batch_users: int = 16) -> None:
        self.plm = plm
        self.by_key = {prompt_key(p): p for p in prompts}
        if len(self.by_key) != len(prompts):
            raise LlmrecError("two training positions share a user and a history length")
        self.generations, self.guided, self.beams, self.batch_users = generations, guided, beams, batch_users
        self.calls = 0
        self.target_in_beams: list[bool] = []

    def __call__(self, prompts: list[str], trainer: Any = None) -> dict[str, list]:
        g = self.generations
        if len(prompts) % g:
            raise LlmrecError(f"rollout_func got {len(prompts)} prompts, not a multiple of generations ({g})")
        keys = [prompts[i] for i in range(0, len(prompts), g)]
        for i, key in enumerate(keys):
            if prompts[i * g:(i + 1) * g] != [key] * g:
                raise LlmrecError(f"rollout_func: prompt {key!r} is not repeated {g} times in a row (trl's sampler "
                                  "changed?)")
            if key not in self.by_key:
                raise LlmrecError(f"rollout_func: unknown training position {key!r}")
        positions = [self.by_key[k] for k in keys]
        ranked = beam_rollouts(self.plm, positions, self.beams, batch_users=self.batch_users)
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "item": [], "position": [],
                                "beams_hit": []}
        for p, beams in zip(positions, ranked, strict=True):
            hit = p.target in beams[:g]
            self.target_in_beams.append(hit)
            prompt_ids = self.plm.encode_prompt(p.history)
            for r, item in enumerate(rollout_group(beams, p.target, g, guided=self.guided)):
                ids = self.plm.index.token_ids(self.plm.item_row[item])
                out["prompt_ids"].append(prompt_ids)
                out["completion_ids"].append(ids)
                out["logprobs"].append([float("nan")] * len(ids))
                out["item"].append(item)
                out["position"].append(r + 1)
                out["beams_hit"].append(hit)
        self.calls += 1
        return out


def reward_function(kind: str):
    """trl reward function (named, trl logs it by name): per completion, :func:`group_rewards` of its group."""

    def reward(prompts, completions, completion_ids=None, *, target, item, position, beams_hit=None,
               log_metric=None, **kwargs) -> list[float]:
        starts = [i for i, r in enumerate(position) if r == 1] + [len(item)]  # a group: positions 1..G in a row
        out: list[float] = []
        for a, b in itertools.pairwise(starts):
            out.extend(group_rewards(item[a:b], target[a], kind))
        if log_metric is not None and beams_hit is not None:
            # with guided groups the reward's mean is 1/G by construction: how often the model's own beams
            # already held the true item is the figure that shows progress
            log_metric("rollouts/beams_hit", float(np.mean([beams_hit[a] for a in starts[:-1]])))
        return out

    reward.__name__ = f"{kind}_reward"
    return reward


# ------------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class GenrecGrpoConfig(AlignmentTrainConfig):
    output_dir: str = "runs/genrec-grpo.checkpoints"
    learning_rate: float = 1e-4  # the measured setting (smollm2-135m/genrec-pref_grpo); 1e-3 collapsed
    generations: int = 8  # completions per prompt (the group): the model's top beams
    guided: bool = False  # the true item replaces the last beam when the beams missed it
    reward: str = "hit"  # hit | rank (GROUP_REWARDS)
    beams: int = 0  # beam width of the rollouts (0 = generations)
    prompts_per_step: int = 8  # training positions per optimizer step
    micro_prompts: int = 2  # positions per forward/backward (x generations sequences)
    loss_type: str = "dapo"  # trl GRPOConfig.loss_type
    beta: float = 0.0  # KL to the supervised model (0: none, no reference model is kept)
    rollout_batch_users: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.generations < 2:
            raise ConfigError("grpo.generations must be >= 2 (advantages are relative within a group)")
        if self.beams and self.beams < self.generations:
            raise ConfigError(f"grpo.beams ({self.beams}) must be >= generations ({self.generations})")
        if self.reward not in GROUP_REWARDS:
            raise ConfigError(f"grpo.reward must be one of {list(GROUP_REWARDS)}, got {self.reward!r}")
        if self.micro_prompts < 1 or self.prompts_per_step % self.micro_prompts:
            raise ConfigError("grpo.prompts_per_step must be a multiple of grpo.micro_prompts (>= 1)")
        if self.beta < 0:
            raise ConfigError("grpo.beta must be >= 0")


def _trainer_class():
    from trl import GRPOTrainer

    from llmrec.training.genrec import ValidationRankingMixin

    class GenrecGRPOTrainer(CompactCheckpointMixin, ValidationRankingMixin, GRPOTrainer):
        """``evaluate`` = NDCG@10 of constrained beam search on validation users (the mixin), compact checkpoints."""

        eval_progress = False

        def __init__(self, *args: Any, train_config: GenrecGrpoConfig | None = None, **kwargs: Any) -> None:
            super().__init__(*args, train_config=train_config or GenrecGrpoConfig(), **kwargs)

    return GenrecGRPOTrainer


def grpo_dataset(prompts: Sequence[PreferencePrompt]):
    """One row per training position: ``prompt`` (its key, see the module docstring) and ``target``."""
    import datasets

    if not prompts:
        raise LlmrecError("no training positions (no training user has an item before a training target?)")
    return datasets.Dataset.from_dict({"prompt": [prompt_key(p) for p in prompts],
                                       "target": [p.target for p in prompts]})


def train_genrec_grpo(
    plm, prompts: Sequence[PreferencePrompt], valid_examples: Sequence[SplitExample], config: GenrecGrpoConfig,
) -> dict[str, Any]:
    """GRPO over ``prompts`` in place; the best validation checkpoint is loaded at the end, or the supervised
    weights are restored when no checkpoint beat them (``report["selected"]``). Resumes from ``config.output_dir``."""
    import warnings

    from transformers import EarlyStoppingCallback
    from trl import GRPOConfig

    from llmrec.training.callbacks import drop_printer, trainer_progress
    from llmrec.training.genrec import CHECKPOINTING_ARG, TimeBudgetCallback

    model, n_trainable, eval_examples, before, initial = start_alignment(plm, valid_examples, config)
    # beta > 0: trl would take the adapter-disabled base model as the KL reference (its SID rows untrained); the
    # reference is the supervised model, copied before trl patches the policy's forward (as in DPO)
    ref = reference_model(model) if config.beta > 0 else None
    expose_head_bias(model)  # trl's fused LM head reads lm_head.bias, as in DPO
    dataset = grpo_dataset(prompts)
    g = config.generations
    rollouts = BeamRollouts(plm, prompts, generations=g, guided=config.guided, beams=config.beams or g,
                            batch_users=config.rollout_batch_users)
    grad_accum = config.prompts_per_step // config.micro_prompts
    steps_per_epoch = math.ceil(len(dataset) / config.prompts_per_step)
    strategy = "steps" if config.eval_steps else "epoch"
    disable_tqdm, progress_callbacks = trainer_progress("genrec GRPO training")
    args = GRPOConfig(
        output_dir=config.output_dir, num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, per_device_train_batch_size=config.micro_prompts * g,
        per_device_eval_batch_size=g, gradient_accumulation_steps=grad_accum, num_generations=g,
        max_completion_length=plm.index.levels,
        lr_scheduler_type="cosine", warmup_steps=int(config.warmup_ratio * steps_per_epoch * max(config.epochs, 1)),
        beta=config.beta, loss_type=config.loss_type, logging_steps=config.logging_steps,
        eval_strategy=strategy, save_strategy=strategy, eval_steps=config.eval_steps or None,
        save_steps=config.eval_steps or None, save_total_limit=config.save_total_limit, load_best_model_at_end=True,
        metric_for_best_model="ndcg_at_10", greater_is_better=True, use_cpu=not torch.cuda.is_available(),
        seed=config.seed, data_seed=config.seed, report_to=list(config.report_to) or "none",
        dataloader_num_workers=0, disable_tqdm=disable_tqdm,
        # the model trains in the dtype it was loaded in (--dtype), as the supervised recipe does
        bf16=False, fp16=False, **{CHECKPOINTING_ARG: False},
        # the policy's log-probs are then those the rollouts and the KL reference see (LoRA dropout off)
        disable_dropout=True,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*rollout_func.*experimental.*")
        trainer = _trainer_class()(
            model=model, reward_funcs=[reward_function(config.reward)], args=args, train_dataset=dataset,
            eval_dataset=dataset.select(range(1)), processing_class=plm.tokenizer, rollout_func=rollouts,
            callbacks=[EarlyStoppingCallback(config.early_stopping_patience)]
            + ([TimeBudgetCallback(config.time_budget_minutes)] if config.time_budget_minutes > 0 else [])
            + progress_callbacks,
            plm=plm, eval_examples=eval_examples, train_config=config,
        )
    if ref is not None:
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(ref, temperature=args.temperature, cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
        trainer.ref_model = trainer.accelerator.prepare_model(ref, evaluation_mode=True)
    drop_printer(trainer)
    run = run_alignment(trainer, model, before, initial, config)
    out, seconds, best = run["output"], run["seconds"], run["best"]
    log = trainer.state.log_history
    seq_tokens = np.mean([len(plm.encode_prompt(p.history)) + plm.index.levels for p in prompts[:256]])
    n_tokens = run["steps_run"] * config.prompts_per_step * g * seq_tokens
    return {
        "prompts": len(dataset), "trainable_parameters": n_trainable, "steps": out.global_step,
        "train_seconds": seconds, "train_loss": out.training_loss,
        # prompt + completion tokens through the policy per second (rollouts and evaluation included in the time)
        "tokens_per_second": float(n_tokens / max(seconds, 1e-9)),
        "valid_users": len(eval_examples), "valid_before": before,
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_valid_ndcg@10": best, "selected": run["selected"],
        "valid_curve": [h for h in log if "eval_ndcg_at_10" in h],
        "grpo_curve": [{k: v for k, v in h.items() if k in ("step", "loss", "entropy", "kl")
                        or k.startswith(("reward", "rollouts/"))}
                       for h in log if "loss" in h],
        "rollouts": {"calls": rollouts.calls, "target_in_beams": float(np.mean(rollouts.target_in_beams))
                     if rollouts.target_in_beams else None},
        "resumed_from": run["resumed_from"],
    }
