"""Fine-tune a PersonalLM for generative recommendation with ``transformers.Trainer``.

Validation = next-item NDCG@10 from constrained beam search on a fixed sample of validation users (model
selection and early stopping); test is only touched by :func:`evaluate_genrec`. Resumes from the last
complete checkpoint in ``output_dir``; runs unchanged under ``accelerate launch`` (DDP, gloo on CPU).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

from llmrec.config import Config
from llmrec.data.splits import SplitExample
from llmrec.distributed import gather, local_range, world_size
from llmrec.errors import ConfigError
from llmrec.evaluation.ranking import ranking_metrics
from llmrec.lm.compiled import compiled_for_training
from llmrec.lm.sid_vocab import GENREC_LOSSES, sid_vocab_loss
from llmrec.lm.target_loss import full_vocab_loss
from llmrec.lm.user_states import UserStateLM
from llmrec.progress import progress
from llmrec.tasks.genrec import build_genrec_rows
from llmrec.training.callbacks import drop_printer, trainer_progress
from llmrec.training.checkpoints import last_complete_checkpoint
from llmrec.training.collate import CausalCollator, PackingCollator, padding_fractions

logger = logging.getLogger(__name__)
# transformers 5.x renamed TrainingArguments.gradient_checkpointing (the old name warns); older 5.x lack the new one
CHECKPOINTING_ARG = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                      else "gradient_checkpointing")


@dataclasses.dataclass
class GenRecTrainConfig(Config):
    output_dir: str = "runs/genrec"
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-3
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_windows: int | None = 1  # windows of `max_history` items per user (None = the whole history)
    context_items: int = 0  # leading items of each window that are context only (overlap with the older window)
    title_alignment: bool = False
    row_workers: int = 1  # datasets.map processes building rows from columnar histories (a recipe's split)
    rows_cache: bool = True  # keep those rows as Arrow files under the llmrec cache, reused by an identical run
    eval_users: int = 200  # validation users scored by beam search at each evaluation
    eval_steps: int = 0  # 0 = evaluate once per epoch
    save_steps: int = 0  # 0 = checkpoint at each evaluation; else a multiple of eval_steps (best-model selection)
    eval_beams: int = 10
    eval_batch_users: int = 16
    early_stopping_patience: int = 3
    save_total_limit: int = 2
    logging_steps: int = 10
    report_to: tuple[str, ...] = ()  # Trainer integrations, e.g. ("tensorboard",) or ("wandb",); () = none
    seed: int = 0
    gradient_checkpointing: bool = False
    time_budget_minutes: float = 0.0  # > 0: stop (evaluate + save) once training has used this much wall time
    # full: next-token loss over the whole vocabulary; sid: over the semantic-ID tokens only (llmrec.lm.sid_vocab:
    # no [tokens, vocab] logits; the saved model then decodes with the same normalisation)
    loss: str = "full"
    packing: bool = False  # pack a batch's windows into fewer rows (training.collate.PackingCollator)
    # torch.compile each decoder layer for the training steps (llmrec.lm.compiled): ~1 min of compilation, then
    # faster steps on CPU (fused casts and elementwise work); needs a C++ compiler
    compile: bool = False

    def __post_init__(self) -> None:
        if self.compile and self.gradient_checkpointing:
            raise ConfigError("compile and gradient_checkpointing together are not supported: choose one")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("batch_size and grad_accum must be >= 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("set epochs > 0 or max_steps > 0")
        if self.early_stopping_patience < 1:
            raise ConfigError(f"early_stopping_patience must be >= 1, got {self.early_stopping_patience}")
        if self.logging_steps < 1 or self.eval_steps < 0 or self.save_steps < 0:
            raise ConfigError("logging_steps must be >= 1, eval_steps and save_steps >= 0")
        if self.loss not in GENREC_LOSSES:
            raise ConfigError(f"loss must be one of {GENREC_LOSSES}, got {self.loss!r}")
        if self.loss == "sid" and self.title_alignment:
            raise ConfigError("loss 'sid' scores semantic-ID targets only; title_alignment rows have text targets "
                              "(use loss 'full' with them)")
        if self.save_steps and (not self.eval_steps or self.save_steps % self.eval_steps):
            raise ConfigError(f"save_steps={self.save_steps} must be a multiple of eval_steps={self.eval_steps} "
                              "(the best checkpoint is chosen at evaluations)")


def evaluate_genrec(
    plm, examples: Sequence[SplitExample], *, k: int = 10, beams: int = 10, batch_users: int = 16,
    show_progress: bool = True, log_prior: np.ndarray | None = None, prior_weight: float = 1.0,
) -> tuple[dict[str, float], list[list[str]], float]:
    """Beam-search top-``k`` for each example (history items excluded) -> metrics, lists, seconds/user.

    ``beams=0`` ranks by the exact log-probability of every catalogue item instead (``PersonalLM.score_items``):
    the limit beam search approaches, to tell search errors from model errors (slow; small catalogues).
    ``log_prior`` (one row per example, columns in ``plm.item_ids`` order): shallow fusion, score = LLM +
    ``prior_weight`` x prior (see :func:`~llmrec.lm.decoding.constrained_beam_search`). Under ``accelerate launch``
    / ``torchrun`` each process decodes its block of users and every process gets all lists back (same metrics)."""
    ranked: list[list[str]] = []
    t0 = time.perf_counter()
    all_examples, part = examples, local_range(len(examples))  # under a launcher: this rank's users only
    examples = all_examples[part.start:part.stop]
    if log_prior is not None:
        log_prior = log_prior[part.start:part.stop]
    if beams == 0:
        for n, e in enumerate(progress(examples, desc="score all items", unit="user", enable=show_progress)):
            scores = plm.score_items(list(e.history.item_ids))
            if log_prior is not None:
                scores = scores + prior_weight * log_prior[n]
            scores[[plm.item_row[i] for i in e.history.item_ids if i in plm.item_row]] = -np.inf
            top = np.lexsort((np.arange(len(scores)), -scores))[:k]  # ties by catalogue row, as beam search
            ranked.append([plm.item_ids[r] for r in top])
    else:
        for start in progress(range(0, len(examples), batch_users), desc=f"beam search ({len(examples)} users)",
                              unit="batch", enable=show_progress):
            chunk = examples[start:start + batch_users]
            prior = log_prior[start:start + batch_users] if log_prior is not None else None
            recs = plm.recommend_batch([list(e.history.item_ids) for e in chunk], k=k, num_beams=beams,
                                       log_prior=prior, prior_weight=prior_weight)
            ranked.extend([r["item_id"] for r in rs] for rs in recs)
    ranked = gather(ranked)  # every rank's lists, in the original user order
    per_user = (time.perf_counter() - t0) / max(1, len(all_examples))
    result = ranking_metrics(ranked, [e.target for e in all_examples], ks=(5, 10), valid_items=set(plm.item_ids))
    return result.summary, ranked, per_user


class TimeBudgetCallback(TrainerCallback):
    """Ends training after a wall-time budget, with a final checkpoint and, where the Trainer evaluates, a final
    evaluation (CPU budgets)."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.start = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.start > self.seconds:
            logger.info("time budget of %.1f min reached at step %d", self.seconds / 60, state.global_step)
            control.should_training_stop = True
            # a Trainer without evaluation (profile-writer DPO, QA) would fail asking for an eval dataset
            control.should_evaluate = args.eval_strategy != "no"  # IntervalStrategy is a str enum
            control.should_save = True
        return control


class ValidationRankingMixin:
    """For a Trainer subclass (supervised genrec, DPO): ``evaluate`` = NDCG@10 etc. of constrained beam search on
    validation users, which is what model selection should look at. ``train_config`` needs ``eval_beams`` and
    ``eval_batch_users``; ``eval_progress`` says whether that beam search shows its own progress."""

    eval_progress = True

    def __init__(self, *args: Any, plm=None, eval_examples: Sequence[SplitExample] = (), train_config=None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plm = plm
        self.eval_examples = list(eval_examples)
        self.train_config = train_config

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        cfg = self.train_config
        was_training = self.model.training
        summary, _, per_user = evaluate_genrec(self.plm, self.eval_examples, beams=cfg.eval_beams,
                                               batch_users=cfg.eval_batch_users, show_progress=self.eval_progress)
        if was_training:
            self.model.train()
        metrics = {f"{metric_key_prefix}_{k.replace('@', '_at_')}": v for k, v in summary.items()}
        metrics[f"{metric_key_prefix}_seconds_per_user"] = per_user
        metrics["epoch"] = self.state.epoch or 0.0
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class GenRecTrainer(ValidationRankingMixin, Trainer):
    """The supervised genrec Trainer: validation ranking as ``evaluate`` (mixin), compact checkpoints."""

    # Loss ``full`` builds logits at the target positions only (:func:`~llmrec.lm.target_loss.full_vocab_loss`, the
    # same loss as the model's own); False leaves it to the model's forward (the throughput benchmark's "before" row).
    logits_at_targets_only: bool = True

    def __init__(self, *args: Any, train_config: GenRecTrainConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, train_config=train_config or GenRecTrainConfig(), **kwargs)
        self._sid_vocab: torch.Tensor | None = None
        self._step_seconds: list[float] = []  # wall time of each training_step (forward + backward)
        self._step_tokens: list[int] = []  # window tokens (not padding) of each

    def training_step(self, model, inputs, num_items_in_batch=None):
        t0 = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_seconds.append(time.perf_counter() - t0)
        if "attention_mask" in inputs:
            self._step_tokens.append(int(inputs["attention_mask"].sum()))
        else:  # packed rows: every position but the padding tails (genrec windows never hold the pad token)
            self._step_tokens.append(int((inputs["input_ids"] != self.plm.tokenizer.pad_token_id).sum()))
        return loss

    def step_timing(self, warmup: int = 2) -> dict[str, float]:
        """Median seconds and window tokens/s of the forward+backward micro-steps of this run (the first
        ``warmup`` untimed; evaluation and optimizer steps not included)."""
        secs, toks = self._step_seconds[warmup:], self._step_tokens[warmup:]
        if not secs:
            return {"micro_steps": 0}
        rates = [t / s for t, s in zip(toks, secs, strict=True) if s > 0]
        return {"micro_steps": len(secs), "median_seconds": float(np.median(secs)),
                "median_tokens_per_second": float(np.median(rates)),
                "tokens_per_second": float(sum(toks) / sum(secs))}

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """Loss ``sid``: the SID-vocabulary cross-entropy (:func:`~llmrec.lm.sid_vocab.sid_vocab_loss`); loss
        ``full``: the model's own full-vocabulary loss with logits at the target positions only
        (:func:`~llmrec.lm.target_loss.full_vocab_loss`). Both normalised as the Trainer normalises the model's own
        loss (by ``num_items_in_batch`` when the model takes loss kwargs, else the batch mean). Both call the model's
        body directly, which a DDP/FSDP wrapper must not be bypassed for (its forward prepares the gradient
        all-reduce): under one, loss ``full`` is the wrapper's forward and loss ``sid`` is refused."""
        sid = self.train_config.loss == "sid"
        wrapped = self.accelerator.unwrap_model(model) is not model
        if not sid and (wrapped or not self.logits_at_targets_only):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if sid and wrapped:
            raise ConfigError(f"train.loss 'sid' does not run under {type(model).__name__} (multi-process "
                              "training): it scores the SID rows outside the wrapper's forward; use loss 'full'")
        if sid and self._sid_vocab is None:
            self._sid_vocab = torch.tensor(self.plm.sid_vocab, dtype=torch.long, device=inputs["input_ids"].device)
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        items = num_items_in_batch if scaled else None
        loss = (sid_vocab_loss(model, inputs, self._sid_vocab, items) if sid
                else full_vocab_loss(model, inputs, items))
        if scaled and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss does for the model's loss
        return (loss, None) if return_outputs else loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Adapter + trainable SID rows only (the default would also write the whole resized embedding); the
        public hook ``Trainer._save_checkpoint`` calls, written by the main process only (DDP)."""
        import os

        from transformers.trainer import TRAINING_ARGS_NAME

        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.model.save_pretrained(output_dir, save_embedding_layers=False)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    # transformers 5 has no public hook for loading a checkpoint's weights: train(resume_from_checkpoint=...) and
    # load_best_model_at_end call these two private methods, so a UserStateLM (not a PEFT model to the Trainer)
    # still needs them; tests/test_trainer_hooks.py fails loudly if their signatures change or the Trainer stops
    # calling them, and tests/test_genrec.py resumes such a model.
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        model = model or self.model
        if isinstance(model, UserStateLM):  # not a PEFT model to Trainer: adapter + projector by hand
            model.load_checkpoint(resume_from_checkpoint)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if isinstance(self.model, UserStateLM):
            self.model.load_checkpoint(self.state.best_model_checkpoint)
        else:
            super()._load_best_model()


def train_genrec(
    plm,
    train_histories: dict,
    valid_examples: Sequence[SplitExample],
    config: GenRecTrainConfig,
    *,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train in place (best validation checkpoint is loaded at the end); returns a training report.
    ``callbacks``: extra Trainer callbacks (e.g. :class:`~llmrec.training.throughput.StepRecorder`)."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    rows = build_genrec_rows(plm, train_histories, max_windows=config.max_windows, context=config.context_items,
                             title_alignment=config.title_alignment, num_proc=config.row_workers,
                             cache=config.rows_cache)
    if config.packing and plm.user_states is not None:
        raise ConfigError("packing cannot hold user-state rows (the encoder reads one user per row); "
                          "set packing false for user-state models")
    if config.loss == "sid" and world_size() > 1:
        # the loss calls the model body directly, which a DDP wrapper's forward (gradient sync) would not see
        raise ConfigError("loss 'sid' runs on one process for now; use loss 'full' under accelerate/torchrun")
    plm.genrec_loss = config.loss  # validation beam search (and the saved model) normalise as training does
    pad = plm.tokenizer.pad_token_id
    collator = PackingCollator(pad) if config.packing else CausalCollator(pad)
    group = config.batch_size * config.grad_accum
    padding = padding_fractions(rows.rows, {"unpacked": CausalCollator(pad), "packed": PackingCollator(pad)},
                                config.batch_size, seed=config.seed, group_size=group)
    logger.info("padding fraction of computed positions: %.3f unpacked, %.3f packed (packing %s)",
                padding["unpacked"], padding["packed"], "on" if config.packing else "off")
    eval_examples = valid_examples  # a lazy view (columnar split) builds only the sampled users' examples
    if config.eval_users and len(eval_examples) > config.eval_users:
        rng = random.Random(config.seed)
        eval_examples = sorted(rng.sample(eval_examples, config.eval_users), key=lambda e: e.user_id)
    eval_examples = list(eval_examples)
    steps_per_epoch = math.ceil(len(rows.rows) / (config.batch_size * config.grad_accum * world_size()))
    strategy = "steps" if config.eval_steps else "epoch"
    disable_tqdm, progress_callbacks = trainer_progress("genrec training")
    args = TrainingArguments(
        output_dir=config.output_dir,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=int(config.warmup_ratio * steps_per_epoch * max(config.epochs, 1)),
        weight_decay=config.weight_decay,
        lr_scheduler_type="cosine",
        logging_steps=config.logging_steps,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=config.eval_steps or None,
        save_steps=config.save_steps or config.eval_steps or None,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="ndcg_at_10",
        greater_is_better=True,
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        data_seed=config.seed,
        report_to=list(config.report_to) or "none",
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",  # less padding between long and short windows
        dataloader_num_workers=0,
        **{CHECKPOINTING_ARG: config.gradient_checkpointing},
        disable_tqdm=disable_tqdm,
    )
    trainer = GenRecTrainer(
        model=plm.trainable_model,
        args=args,
        train_dataset=rows.rows,
        eval_dataset=rows.rows.select(range(1)),  # unused by our evaluate(), but Trainer wants one
        data_collator=collator,
        callbacks=[EarlyStoppingCallback(config.early_stopping_patience)]
        + ([TimeBudgetCallback(config.time_budget_minutes)] if config.time_budget_minutes > 0 else [])
        + progress_callbacks + list(callbacks),
        plm=plm,
        eval_examples=eval_examples,
        train_config=config,
    )
    drop_printer(trainer)
    last = last_complete_checkpoint(config.output_dir)  # a half-written newer one is skipped
    if last:
        logger.info("resuming from %s", last)
    t0 = time.perf_counter()
    with compiled_for_training(plm.model, config.compile):
        out = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - t0
    history = [h for h in trainer.state.log_history if "eval_ndcg_at_10" in h]
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    return {
        "train_rows": len(rows.rows),
        "sequences": rows.sequences,
        "alignment_rows": rows.alignment,
        "tokens_per_epoch": rows.tokens,
        "target_tokens_per_epoch": rows.target_tokens,
        "steps": out.global_step,
        "train_seconds": seconds,
        "train_loss": out.training_loss,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_valid_ndcg@10": trainer.state.best_metric,
        "valid_curve": history,
        "loss_curve": losses,
        "resumed_from": last,
        "loss": config.loss,
        "packing": config.packing,
        "padding_fraction": padding["packed" if config.packing else "unpacked"],
        "padding_fraction_unpacked": padding["unpacked"],
        "padding_fraction_packed": padding["packed"],
        "step_timing": trainer.step_timing(),
    }
