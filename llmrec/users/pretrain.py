"""Next-item pretraining of :class:`SequenceEncoder` with full cross-entropy over the catalogue.

One causal pass per user sequence trains every prefix target at once (position t predicts item t + 1).
Validation NDCG@10 (rated items removed) picks the best epoch; training stops after ``patience`` epochs
without improvement and the best weights are restored. Deterministic for a seed on CPU.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from llmrec.config import Config
from llmrec.data.schema import UserHistory
from llmrec.data.splits import Split, SplitExample
from llmrec.distributed import gather, shard, world_size
from llmrec.errors import ConfigError, DataError
from llmrec.evaluation.ranking import PROTOCOLS, RankingResult, full_catalogue_metrics, full_rank_metrics
from llmrec.hardware import resolve_dtype
from llmrec.progress import progress
from llmrec.users.catalogue_loss import catalogue_cross_entropy
from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

logger = logging.getLogger(__name__)


SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The learning-rate multiplier of ``schedule`` at optimizer step ``step`` (0-based) of ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))


@dataclass
class PretrainConfig(Config):
    """Optimisation of next-item pretraining. ``windows="all"`` also trains on the older parts of histories
    longer than ``max_len`` (consecutive windows from the end); ``"last"`` uses each user's last window only.

    ``fast`` trains the same model with the same objective at several times the speed on CPU (windows built once
    as tensors, :meth:`SequenceEncoder.train_states`' cheap dropout, the fused full-catalogue loss, fused AdamW,
    validation histories encoded once); its random stream differs, so a seed gives different (not worse) weights.
    ``dtype`` is its matrix-multiply dtype (``auto``: bf16 where the CPU runs it natively, llmrec.hardware).
    ``valid_from`` skips validation before that epoch (early epochs are never the best).

    ``schedule``: ``constant`` keeps ``lr``; ``cosine`` warms up linearly over ``warmup_epochs`` and then decays
    to 0 along a half cosine that ends with epoch ``max_epochs`` (stepped every batch), so the last epochs train at
    small steps and the model settles instead of riding the noise of a constant rate (early stopping still applies).
    """

    lr: float = 1e-3
    weight_decay: float = 0.1
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 15
    grad_clip: float = 1.0
    windows: str = "last"
    seed: int = 0
    select_metric: str = "ndcg@10"
    ks: tuple[int, ...] = (5, 10)
    eval_batch_size: int = 256
    fast: bool = False
    dtype: str = "fp32"
    valid_from: int = 1
    schedule: str = "constant"
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ConfigError("lr and grad_clip must be > 0, weight_decay >= 0")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch_size, max_epochs, patience and eval_batch_size must be >= 1")
        if self.windows not in ("last", "all"):
            raise ConfigError(f"windows must be 'last' or 'all', got {self.windows!r}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"ks must be positive, got {self.ks}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"dtype must be auto, fp32 or bf16, got {self.dtype!r}")
        if self.dtype != "fp32" and not self.fast:
            raise ConfigError(f"dtype {self.dtype!r} needs fast=True (the reference path trains in fp32)")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= self.warmup_epochs < self.max_epochs:
            raise ConfigError(f"warmup_epochs must be in [0, max_epochs ({self.max_epochs})), got {self.warmup_epochs}")
        if not 1 <= self.valid_from <= self.max_epochs:
            raise ConfigError(f"valid_from must be in 1..max_epochs ({self.max_epochs}), got {self.valid_from}")


@dataclass
class PretrainResult:
    model: SequenceEncoder
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    wall_s: float
    history: list[dict[str, float]] = field(default_factory=list)


def training_windows(
    model: SequenceEncoder, histories: Sequence[UserHistory], windows: str = "last"
) -> list[tuple[list[int], list[int]]]:
    """(item indices, rating levels) windows of at most ``max_len + 1`` items; consecutive windows overlap by
    one item so every target is predicted exactly once. Histories shorter than 2 items give nothing."""
    span = model.config.max_len + 1
    out = []
    for h in histories:
        idx, lev = model.encode_histories([h], max_len=len(h))
        idx_l, lev_l = idx[0].tolist(), (lev[0].tolist() if lev is not None else [0] * len(h))
        end = len(idx_l)
        while end >= 2:
            start = max(0, end - span)
            out.append((idx_l[start:end], lev_l[start:end]))
            if windows == "last":
                break
            end = start + 1
    return out


def _batch(rows: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r[0]) for r in rows)
    idx = torch.zeros(len(rows), width, dtype=torch.long)
    lev = torch.zeros(len(rows), width, dtype=torch.long)
    for b, (items, levels) in enumerate(rows):
        idx[b, : len(items)] = torch.tensor(items)
        lev[b, : len(levels)] = torch.tensor(levels)
    return idx, lev


def next_item_loss(model: SequenceEncoder, idx: torch.Tensor, lev: torch.Tensor | None) -> torch.Tensor:
    """Mean full-catalogue cross-entropy of every next-item target in the right-padded batch ``idx``."""
    inputs, targets = idx[:, :-1], idx[:, 1:]
    states = model(inputs, lev[:, :-1] if lev is not None else None)
    keep = targets != 0
    logits = model.score_all(states[keep])
    return F.cross_entropy(logits, targets[keep] - 1)


def window_tensors(
    model: SequenceEncoder, histories: Sequence[UserHistory], windows: str = "last"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`training_windows` built once as tensors: right-padded item indices and rating levels
    ``[N, max_len + 1]`` and each window's length ``[N]``; a batch is rows of these cut to its longest window,
    exactly what :func:`_batch` builds from the same windows."""
    rows = training_windows(model, histories, windows)
    if not rows:
        return torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    idx, lev = _batch(rows)
    return idx, lev, torch.tensor([len(items) for items, _ in rows])


def fast_next_item_loss(
    model: SequenceEncoder, idx: torch.Tensor, lev: torch.Tensor | None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """:func:`next_item_loss` (the same objective) through :meth:`SequenceEncoder.train_states` and the fused
    :func:`catalogue_cross_entropy`; ``dtype=torch.bfloat16`` runs the encoder under bf16 autocast and the
    catalogue scores in bf16 (softmax and weights stay fp32)."""
    inputs, targets = idx[:, :-1], idx[:, 1:]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        states = model.train_states(inputs, lev[:, :-1] if lev is not None else None)
    keep = targets != 0
    return catalogue_cross_entropy(states[keep].float(), model.item_table()[1:], targets[keep] - 1, dtype)


EncodedBatches = list[tuple[torch.Tensor, torch.Tensor | None]]


def encode_batches(model: SequenceEncoder, histories: Sequence[UserHistory], batch_size: int = 256) -> EncodedBatches:
    """The ``(item indices, rating levels)`` batches :func:`score_histories` feeds the model, built once so that
    scoring the same histories every epoch does no per-history Python work."""
    return [model.encode_histories(histories[start : start + batch_size])
            for start in range(0, len(histories), batch_size)]


@torch.no_grad()
def score_histories(
    model: SequenceEncoder, histories: Sequence[UserHistory], batch_size: int = 256,
    encoded: EncodedBatches | None = None,
) -> np.ndarray:
    """``[len(histories), n_items]`` next-item logits from each history's last ``max_len`` items (``encoded``:
    their :func:`encode_batches`, if already built)."""
    was_training = model.training
    model.eval()
    out = []
    for idx, lev in encoded if encoded is not None else encode_batches(model, histories, batch_size):
        out.append(model.score_all(model.last_states(idx, lev)).float().numpy())
    model.train(was_training)
    return np.concatenate(out, axis=0) if out else np.zeros((0, model.config.n_items), dtype=np.float32)


def sequence_log_prior(model: SequenceEncoder, histories: Sequence[UserHistory], item_ids: Sequence[str]) -> np.ndarray:
    """``[len(histories), len(item_ids)]`` next-item log-probabilities (softmax over the catalogue), columns in
    ``item_ids`` order: the prior of shallow fusion (``PersonalLM.recommend_batch(log_prior=...)``)."""
    if model.item_ids is None or set(model.item_ids) != set(item_ids):
        raise ConfigError("the sequence model must be built over the same catalogue (item ids) as the recommender")
    logits = torch.from_numpy(score_histories(model, histories)).double()
    logp = torch.log_softmax(logits, dim=-1).numpy()
    column = {item: j for j, item in enumerate(model.item_ids)}
    return logp[:, [column[i] for i in item_ids]]


def ensemble_log_prior(
    models: Sequence[SequenceEncoder], histories: Sequence[UserHistory], item_ids: Sequence[str]
) -> np.ndarray:
    """:func:`sequence_log_prior` of several models (e.g. seeds) as one: the mean of their log-probabilities,
    renormalised (a product of experts). The mean, not the sum, keeps a fusion weight tuned for one model meaning
    the same for an ensemble."""
    if not models:
        raise ConfigError("ensemble_log_prior needs at least one model")
    mean = np.mean([sequence_log_prior(m, histories, item_ids) for m in models], axis=0)
    return torch.log_softmax(torch.from_numpy(mean), dim=-1).numpy()


def evaluate_examples(
    model: SequenceEncoder,
    examples: Sequence[SplitExample],
    ks: Sequence[int] = (5, 10),
    protocols: Sequence[str] = PROTOCOLS,
    batch_size: int = 256,
    encoded: EncodedBatches | None = None,
) -> dict[str, RankingResult]:
    """Full-catalogue leave-one-out metrics of ``examples`` under each protocol. Under ``accelerate launch`` /
    ``torchrun`` each process scores its block of users; the ranks are gathered, so every process returns the
    metrics of one process. ``encoded``: the :func:`encode_batches` of this process's histories, if built."""
    if model.item_ids is None:
        raise ConfigError("evaluate_examples needs an encoder built with item_ids")
    local = shard(examples)
    scores = score_histories(model, [ex.history for ex in local], batch_size, encoded)
    results = full_catalogue_metrics(
        scores, model.item_ids, [ex.target for ex in local], [ex.history.item_ids for ex in local],
        ks, protocols,
    )
    if world_size() == 1:
        return results
    return {p: full_rank_metrics(np.asarray(gather(r.per_example["rank"].tolist())), ks) for p, r in results.items()}


def _columnar_windows(model: SequenceEncoder, split: Split, windows: str):
    """The windows as a cached ``datasets.Dataset`` when ``split.train`` is columnar (a recipe's
    :class:`~llmrec.data.split_view.ColumnarSplit`: no per-interaction objects), else None."""
    from llmrec.data.split_view import TrainHistories

    if not isinstance(split.train, TrainHistories) or model.item_ids is None:
        return None
    from llmrec.users.windows import sasrec_windows

    return sasrec_windows(model, split.train, windows)


def _window_tensors(model: SequenceEncoder, split: Split, windows: str):
    built = _columnar_windows(model, split, windows)
    if built is None:
        return window_tensors(model, list(split.train.values()), windows)
    from llmrec.users.windows import window_arrays

    return window_arrays(built)


def _training_windows(model: SequenceEncoder, split: Split, windows: str) -> list[tuple[list[int], list[int]]]:
    built = _columnar_windows(model, split, windows)
    if built is None:
        return training_windows(model, list(split.train.values()), windows)
    return list(zip(built["items"], built["levels"], strict=True))


def pretrain(model: SequenceEncoder, split: Split, config: PretrainConfig | None = None, *,
             on_epoch: Callable[[int, SequenceEncoder], Mapping[str, float]] | None = None) -> PretrainResult:
    """Train ``model`` on ``split.train``, select the epoch by ``split.valid``; returns the best model.
    ``on_epoch(epoch, model)``: called after each validated epoch, its figures are added to that epoch's history
    entry (diagnostics such as a held-out curve; never used for selection)."""
    config = config or PretrainConfig()
    if not split.valid:
        raise DataError("the split has no validation examples for early stopping", field="valid")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    lev_on = bool(model.config.n_rating_levels)
    if config.fast:
        all_idx, all_lev, lengths = _window_tensors(model, split, config.windows)
        n_rows = len(lengths)
        dtype = torch.bfloat16 if resolve_dtype(config.dtype, device="cpu", announce=False) == "bf16" else torch.float32
        valid_encoded = encode_batches(model, [ex.history for ex in shard(split.valid)], config.eval_batch_size)
    else:
        rows = _training_windows(model, split, config.windows)
        n_rows = len(rows)
    if not n_rows:
        raise DataError("no training sequence has 2 or more items", field="train")
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            fused=True if config.fast else None)
    steps_per_epoch = math.ceil(n_rows / config.batch_size)
    total_steps, warmup_steps = steps_per_epoch * config.max_epochs, round(config.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, total_steps, warmup_steps, config.schedule))
    best_metric, best_epoch, best_state, best_valid = -1.0, 0, None, {}
    history: list[dict[str, float]] = []
    t0, cpu0 = time.perf_counter(), time.process_time()  # CPU time too: wall time on a shared machine is noise
    epoch = 0
    epochs = progress(range(1, config.max_epochs + 1), desc="SASRec epochs", unit="epoch")
    for epoch in epochs:
        model.train()
        order = rng.permutation(n_rows)
        total, count = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            if config.fast:
                sel = torch.from_numpy(order[start : start + config.batch_size])
                width = int(lengths[sel].max())
                idx, lev = all_idx[sel, :width], all_lev[sel, :width]
                loss = fast_next_item_loss(model, idx, lev if lev_on else None, dtype)
            else:
                idx, lev = _batch([rows[i] for i in order[start : start + config.batch_size]])
                loss = next_item_loss(model, idx, lev if lev_on else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            n = int((idx[:, 1:] != 0).sum())
            total += loss.item() * n
            count += n
        if epoch < config.valid_from:
            history.append({"epoch": epoch, "loss": total / count, "elapsed_s": time.perf_counter() - t0,
                            "cpu_s": time.process_time() - cpu0})
            continue
        valid = evaluate_examples(model, split.valid, config.ks, ("rated_removed",), config.eval_batch_size,
                                  valid_encoded if config.fast else None)
        summary = valid["rated_removed"].summary
        metric = summary[config.select_metric]
        history.append({"epoch": epoch, "loss": total / count, **{f"valid_{k}": v for k, v in summary.items()},
                        "elapsed_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0})
        if on_epoch is not None:
            wall_d, cpu_d = time.perf_counter(), time.process_time()
            history[-1].update(on_epoch(epoch, model))
            # the clocks move on by the diagnostic's cost: it is not training time
            t0 += time.perf_counter() - wall_d
            cpu0 += time.process_time() - cpu_d
        logger.debug("epoch %d loss %.4f valid %s %.4f", epoch, total / count, config.select_metric, metric)
        epochs.set_postfix(loss=total / count, **{f"valid {config.select_metric}": metric})
        if metric > best_metric:
            best_metric, best_epoch, best_valid = metric, epoch, dict(summary)
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    wall = time.perf_counter() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return PretrainResult(model, best_epoch, best_valid, epoch, wall, history)


def tuned_sasrec_configs(n_items: int, seed: int = 0) -> tuple[SequenceEncoderConfig, PretrainConfig]:
    """The SASRec of the genrec recipe's collaborative semantic IDs: the architecture and lr selected on ml-100k
    validation (eval/results/baselines_ml100k.json) with the 40-epoch / patience-8 budget the committed genrec
    results were built with. The baseline itself (``llmrec train sasrec``, config sasrec/ml-100k) trains longer
    (eval/results/sasrec_tuning_ml100k.json)."""
    return (
        SequenceEncoderConfig(n_items=n_items, d_model=64, n_layers=2, n_heads=2, max_len=50, dropout=0.5),
        PretrainConfig(lr=3e-3, weight_decay=0.1, batch_size=32, max_epochs=40, patience=8, windows="all", seed=seed),
    )


def train_sequence_model(
    split: Split,
    item_ids: Sequence[str],
    model_config: SequenceEncoderConfig,
    config: PretrainConfig | None = None,
    item_vectors: torch.Tensor | None = None,
    *,
    on_epoch: Callable[[int, SequenceEncoder], Mapping[str, float]] | None = None,
) -> PretrainResult:
    """Build a seeded :class:`SequenceEncoder` over ``item_ids`` (optionally with frozen item vectors) and
    pretrain it (``on_epoch``: see :func:`pretrain`)."""
    config = config or PretrainConfig()
    torch.manual_seed(config.seed)
    model = SequenceEncoder(model_config, item_ids)
    if item_vectors is not None:
        model.set_item_vectors(torch.as_tensor(item_vectors, dtype=torch.float32))
    return pretrain(model, split, config, on_epoch=on_epoch)
