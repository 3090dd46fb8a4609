"""Preference alignment of a supervised generative recommender with trl's ``DPOTrainer``.

For a training user, the prompt is the genrec prompt of their history up to a training position, *chosen* is the
item that truly came next, *rejected* are the highest-ranked wrong items of the model's own trie-constrained beams
(optionally a SASRec's top items too): valid, distinct catalogue items, never the target, never anything the user
interacted with (their later training items and their validation/test items are right answers, not negatives).

trl does the DPO loss, the reference log-probabilities and the Trainer loop; three thin adapters fit our model to it
(each says why where it is): :class:`SidPreferenceCollator` (trl appends EOS to every completion, a semantic ID
never ends with one), :func:`expose_head_bias` (trl's fused LM head reads ``lm_head.bias``, which peft's
trainable-token wrapper does not forward) and :func:`reference_model` (the reference must be the supervised model,
SID rows included, which neither trl's adapter-disabled base nor its copied "ref" LoRA adapter is).
Validation NDCG@10 from constrained beam search selects the checkpoint, as in :mod:`llmrec.training.genrec`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrec.config import Config
from llmrec.data.schema import UserHistory
from llmrec.data.splits import SplitExample
from llmrec.errors import ConfigError, LlmrecError
from llmrec.progress import progress

logger = logging.getLogger(__name__)

REWARDS = ("hit", "rr", "ndcg")


# ------------------------------------------------------------------------------------------------- rewards
def ranking_reward(ranked: Sequence[str], target: str, *, kind: str = "ndcg", k: int = 10) -> float:
    """Reward of a ranked list for one true item: ``hit`` (1 if in the top ``k``), ``rr`` (1 / rank) or ``ndcg``
    (1 / log2(rank + 1), the leave-one-out NDCG@k); 0 when the target is not in the top ``k``."""
    if kind not in REWARDS:
        raise ConfigError(f"reward kind must be one of {list(REWARDS)}, got {kind!r}")
    if k < 1:
        raise ConfigError("k must be >= 1")
    top = list(ranked)[:k]
    if target not in top:
        return 0.0
    rank = top.index(target) + 1
    return {"hit": 1.0, "rr": 1.0 / rank, "ndcg": 1.0 / math.log2(rank + 1)}[kind]


# ------------------------------------------------------------------------------------------------- pairs
@dataclasses.dataclass(frozen=True)
class PreferencePrompt:
    """One training position: predict ``target`` after ``history``; ``forbidden`` may never be rejected."""

    user_id: str
    history: tuple[str, ...]
    target: str
    forbidden: frozenset[str]


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    user_id: str
    history: tuple[str, ...]  # the items before the target, oldest first (the prompt shows the last max_history)
    chosen: str  # item id: the true next item
    rejected: str  # item id: a wrong item the model (or SASRec) ranks high
    source: str  # "beam" | "sasrec"
    rank: int  # the rejected item's rank in its source list (1 = top)


@dataclasses.dataclass
class PairConfig(Config):
    users: int = 0  # training users that get pairs (0 = all), sampled with ``seed``
    positions: int = 1  # training positions per user, newest first (1 = the last training item is the target)
    beam_negatives: int = 3  # rejected items per prompt from the model's beams
    sasrec_negatives: int = 0  # rejected items per prompt from a SASRec's top items (needs ``sasrec``)
    beams: int = 10  # beam width (and list length) of the rollouts negatives are taken from
    batch_users: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 0 or self.positions < 1:
            raise ConfigError("pairs: users must be >= 0 and positions >= 1")
        if self.beam_negatives < 0 or self.sasrec_negatives < 0 or self.beam_negatives + self.sasrec_negatives < 1:
            raise ConfigError("pairs: beam_negatives and sasrec_negatives must be >= 0, with at least one negative")
        if self.beams < self.beam_negatives + 1:
            raise ConfigError(f"pairs: beams ({self.beams}) must exceed beam_negatives ({self.beam_negatives}): "
                              "the target may take one of the places")


def select_rejected(ranked: Sequence[str], *, target: str, forbidden: Collection[str], catalogue: Collection[str],
                    n: int, taken: Collection[str] = ()) -> list[str]:
    """The first ``n`` items of ``ranked`` that are wrong and usable as negatives: in ``catalogue``, not the
    ``target``, not ``forbidden`` (the user's own items), not already ``taken`` (by another source), no repeats."""
    out: list[str] = []
    skip = set(forbidden) | set(taken) | {target}
    for item in ranked:
        if len(out) == n:
            break
        if item in skip or item not in catalogue:
            continue
        out.append(item)
        skip.add(item)
    return out


def preference_prompts(
    train: Mapping[str, UserHistory], held_out: Mapping[str, Collection[str]], *, positions: int = 1,
    users: int = 0, seed: int = 0,
) -> list[PreferencePrompt]:
    """The training positions pairs are built at: each user's last ``positions`` training items as targets (each
    with at least one item before it); ``held_out`` maps a user to their validation/test items. ``users`` > 0:
    a seeded sample of that many users."""
    ids = sorted(train)
    if users and users < len(ids):
        ids = sorted(random.Random(seed).sample(ids, users))
    out: list[PreferencePrompt] = []
    for user in ids:
        items = tuple(train[user].item_ids)
        forbidden = frozenset(items) | frozenset(held_out.get(user, ()))
        for t in range(len(items) - 1, max(0, len(items) - positions) - 1, -1):
            if t >= 1:
                out.append(PreferencePrompt(user, items[:t], items[t], forbidden))
    return out


def sasrec_ranked(encoder, prompts: Sequence[PreferencePrompt], item_ids: Sequence[str], k: int) -> list[list[str]]:
    """A SASRec's top ``k + len(forbidden)`` items per prompt, best first (enough to leave ``k`` after filtering)."""
    from llmrec.users.pretrain import sequence_log_prior

    histories = [UserHistory(p.user_id, p.history, (0,) * len(p.history), (None,) * len(p.history)) for p in prompts]
    logp = sequence_log_prior(encoder, histories, item_ids)
    out = []
    for row, p in zip(logp, prompts, strict=True):
        top = np.argsort(-row, kind="stable")[: k + len(p.forbidden) + 1]
        out.append([item_ids[j] for j in top])
    return out


def beam_rollouts(plm, prompts: Sequence[PreferencePrompt], beams: int, *, batch_users: int = 16,
                  show_progress: bool = False) -> list[list[str]]:
    """The model's top ``beams`` items per prompt, best first, from its trie-constrained beams: the user's own items
    other than the target are excluded from the search, so the beams spend no width on them. The model's training
    mode is left as it was (rollouts also run inside a training step)."""
    model = plm.trainable_model
    was_training = model.training
    out: list[list[str]] = []
    for start in progress(range(0, len(prompts), batch_users), desc=f"beam rollouts ({len(prompts)} prompts)",
                          unit="batch", enable=show_progress):
        chunk = prompts[start:start + batch_users]
        recs = plm.recommend_batch([list(p.history) for p in chunk], k=beams, num_beams=beams,
                                   exclude=[sorted(p.forbidden - {p.target}) for p in chunk])
        out.extend([r["item_id"] for r in rs] for rs in recs)
    if was_training:
        model.train()
    return out


def build_preference_pairs(
    plm, prompts: Sequence[PreferencePrompt], config: PairConfig, *, sasrec=None, show_progress: bool = True,
) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Pairs for ``prompts``: ``beam_negatives`` wrong items from ``plm``'s constrained beams (forbidden items other
    than the target excluded from the search, so the beams spend no width on them) and ``sasrec_negatives`` from
    ``sasrec`` (a :class:`~llmrec.users.sequence.SequenceEncoder` over the same catalogue). Also returns how good
    the beams already are on these prompts (mean hit/rr/ndcg reward of the beam list)."""
    if config.sasrec_negatives and sasrec is None:
        raise ConfigError("pairs.sasrec_negatives > 0 needs a trained SASRec (--sasrec DIR)")
    catalogue = set(plm.item_ids)
    rewards = {kind: [] for kind in REWARDS}
    beam_lists = beam_rollouts(plm, prompts, config.beams, batch_users=config.batch_users,
                               show_progress=show_progress)
    for p, ranked in zip(prompts, beam_lists, strict=True):
        for kind in REWARDS:
            rewards[kind].append(ranking_reward(ranked, p.target, kind=kind, k=config.beams))
    sas_lists = (sasrec_ranked(sasrec, prompts, plm.item_ids, config.sasrec_negatives)
                 if config.sasrec_negatives else [[] for _ in prompts])
    pairs: list[PreferencePair] = []
    for p, beam, sas in zip(prompts, beam_lists, sas_lists, strict=True):
        rejected = select_rejected(beam, target=p.target, forbidden=p.forbidden, catalogue=catalogue,
                                   n=config.beam_negatives)
        more = select_rejected(sas, target=p.target, forbidden=p.forbidden, catalogue=catalogue,
                               n=config.sasrec_negatives, taken=rejected)
        for source, items, ranked in (("beam", rejected, beam), ("sasrec", more, sas)):
            pairs.extend(PreferencePair(p.user_id, p.history, p.target, item, source, ranked.index(item) + 1)
                         for item in items)
    report = {"prompts": len(prompts), "pairs": len(pairs),
              "pairs_by_source": {s: sum(x.source == s for x in pairs) for s in ("beam", "sasrec")},
              "beam_reward": {kind: float(np.mean(v)) if v else 0.0 for kind, v in rewards.items()}}
    return pairs, report


def preference_dataset(plm, pairs: Sequence[PreferencePair]):
    """trl's standard (not conversational) preference format: ``prompt`` / ``chosen`` / ``rejected`` text. The
    prompt is the genrec prompt; the completions are SID strings, which tokenize to exactly the added SID tokens
    (checked here, since trl tokenizes the text itself)."""
    import datasets

    if not pairs:
        raise LlmrecError("no preference pairs (no training user has an item before a training target?)")
    tok = plm.tokenizer
    for item in {pairs[0].chosen, pairs[0].rejected}:
        got = tok(plm.sid_string(item), add_special_tokens=False)["input_ids"]
        if got != plm.index.token_ids(plm.item_row[item]):
            raise LlmrecError(f"item {item!r}: its SID string tokenizes to {got}, not to its SID tokens")
    return datasets.Dataset.from_dict({
        "prompt": [plm.history_prompt(p.history) for p in pairs],
        "chosen": [plm.sid_string(p.chosen) for p in pairs],
        "rejected": [plm.sid_string(p.rejected) for p in pairs],
    })


@torch.no_grad()
def completion_logps(plm, histories: Sequence[Sequence[str]], items: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """log p(item's SID | genrec prompt of history) under ``plm``, one value per (history, item)."""
    model = plm.trainable_model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(items), batch_size):
        prompts = [plm.encode_prompt(h) for h in histories[start:start + batch_size]]
        sids = [plm.index.token_ids(plm.item_row[i]) for i in items[start:start + batch_size]]
        width = max(len(p) + len(s) for p, s in zip(prompts, sids, strict=True))
        ids = torch.full((len(prompts), width), plm.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (p, s) in enumerate(zip(prompts, sids, strict=True)):
            ids[r, : len(p) + len(s)] = torch.tensor(p + s)
            mask[r, : len(p) + len(s)] = 1
        logp = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1).cpu()
        for r, (p, s) in enumerate(zip(prompts, sids, strict=True)):
            pos = torch.arange(len(p) - 1, len(p) + len(s) - 1)
            out.append(float(logp[r, pos, torch.tensor(s)].sum()))
    if was_training:
        model.train()
    return np.asarray(out)


def pair_margins(plm, pairs: Sequence[PreferencePair]) -> np.ndarray:
    """log p(chosen) - log p(rejected) per pair under ``plm`` (what DPO pushes up)."""
    hist = [p.history for p in pairs]
    return completion_logps(plm, hist, [p.chosen for p in pairs]) - completion_logps(plm, hist, [p.rejected for p in pairs])


# ------------------------------------------------------------------------------------------------- trl adapters
class SidPreferenceCollator:
    """trl's ``DataCollatorForPreference`` minus the EOS trl appends to every text completion: a semantic ID is a
    fixed number of codes that the trie ends, never followed by EOS in supervised training or in decoding, so an
    EOS term would add to both sides of the margin something the recommender never uses."""

    def __init__(self, pad_token_id: int, eos_token_id: int | None) -> None:
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        self.inner = DataCollatorForPreference(pad_token_id=pad_token_id)
        self.eos = eos_token_id

    def _strip(self, ids: list[int]) -> list[int]:
        return ids[:-1] if ids and ids[-1] == self.eos else ids

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.inner([dict(e, chosen_ids=self._strip(list(e["chosen_ids"])),
                                rejected_ids=self._strip(list(e["rejected_ids"]))) for e in examples])


def expose_head_bias(peft_model) -> None:
    """trl's fused LM head reads ``lm_head.weight`` and ``lm_head.bias``; on a tied model peft wraps the head in a
    ``TrainableTokensWrapper`` that forwards ``.weight`` (merged: the trained SID rows included) but not ``.bias``,
    so the wrapped layer's bias (None on Llama-style heads) is made visible on the wrapper."""
    head = peft_model.get_output_embeddings()
    if hasattr(head, "token_adapter") and "bias" not in vars(head):
        object.__setattr__(head, "bias", getattr(head.token_adapter.base_layer, "bias", None))


def reference_model(peft_model):
    """A frozen merged copy of the supervised model (LoRA and SID rows folded in): DPO's reference. Left to
    itself trl would disable the adapter (the base LM, whose SID rows are untrained) or copy the LoRA weights into
    a "ref" adapter (not the trainable-token SID rows), neither of which is the supervised model."""
    ref = copy.deepcopy(peft_model).merge_and_unload()
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def check_tokenization(plm, pair: PreferencePair, row: dict[str, Any], collator: SidPreferenceCollator) -> None:
    """trl tokenized the text itself: its prompt must be our genrec prompt's tokens and, once the collator has
    dropped trl's EOS, its completions exactly the two items' SID tokens (else the wrong thing would be trained)."""
    want = {"prompt_ids": plm.encode_prompt(pair.history),
            "chosen_ids": plm.index.token_ids(plm.item_row[pair.chosen]),
            "rejected_ids": plm.index.token_ids(plm.item_row[pair.rejected])}
    got = {"prompt_ids": list(row["prompt_ids"]), "chosen_ids": collator._strip(list(row["chosen_ids"])),
           "rejected_ids": collator._strip(list(row["rejected_ids"]))}
    for key, ids in want.items():
        if got[key] != ids:
            raise LlmrecError(f"trl tokenized the {key.split('_')[0]} of the first pair as {got[key]}, expected {ids}")


def mark_trainable(peft_model) -> int:
    """A loaded PeftModel is frozen: make its LoRA matrices and SID rows trainable again -> trainable count."""
    n = 0
    for name, p in peft_model.named_parameters():
        trainable = ("lora_" in name or "trainable_tokens_delta" in name) and ".default" in name
        p.requires_grad_(trainable)
        n += p.numel() if trainable else 0
    if not n:
        raise LlmrecError("the model has no LoRA / SID-row parameters to align")
    return n


# ------------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class AlignmentTrainConfig(Config):
    """What DPO and GRPO alignment runs share: the schedule, validation-based selection, logging, budget, seed."""

    output_dir: str = "runs/genrec-pref.checkpoints"
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.05
    eval_users: int = 200
    eval_steps: int = 0  # 0 = once per epoch
    eval_beams: int = 10
    eval_batch_users: int = 16
    early_stopping_patience: int = 3
    save_total_limit: int = 2
    logging_steps: int = 10
    report_to: tuple[str, ...] = ()
    time_budget_minutes: float = 0.0
    init_is_candidate: bool = True  # restore the supervised weights when no checkpoint beats them on validation
    seed: int = 0

    def __post_init__(self) -> None:
        if self.logging_steps < 1 or self.eval_steps < 0:
            raise ConfigError("logging_steps must be >= 1 and eval_steps >= 0")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("set epochs > 0 or max_steps > 0")


@dataclasses.dataclass
class GenrecPrefTrainConfig(AlignmentTrainConfig):
    beta: float = 0.1
    loss_type: tuple[str, ...] = ("sigmoid",)  # trl DPOConfig.loss_type, e.g. ("sigmoid", "sft") for RPO-style
    loss_weights: tuple[float, ...] | None = None
    batch_size: int = 8
    grad_accum: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("batch_size and grad_accum must be >= 1")
        if self.beta <= 0:
            raise ConfigError("beta must be > 0")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ConfigError("loss_weights needs one weight per loss_type")


class CompactCheckpointMixin:
    """For trl Trainer subclasses: checkpoints hold the adapter + SID rows only (PersonalLM.save's format); peft
    would otherwise add the whole resized embedding matrix to every checkpoint. Resuming and best-model loading
    read them as is."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if self.args.world_size > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super().save_model(output_dir, _internal_call)
        import os

        from transformers.trainer import TRAINING_ARGS_NAME

        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.model.save_pretrained(output_dir, save_embedding_layers=False)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))


def _trainer_class():
    from trl import DPOTrainer

    from llmrec.training.genrec import ValidationRankingMixin

    class GenrecDPOTrainer(CompactCheckpointMixin, ValidationRankingMixin, DPOTrainer):
        """``evaluate`` = NDCG@10 of constrained beam search on validation users (model selection, the mixin), not
        the DPO loss on held-out pairs: the pairs' loss says nothing about the ranking the recommender is judged by."""

        eval_progress = False

        def __init__(self, *args: Any, train_config: GenrecPrefTrainConfig | None = None, **kwargs: Any) -> None:
            super().__init__(*args, train_config=train_config or GenrecPrefTrainConfig(), **kwargs)

    return GenrecDPOTrainer


def eval_sample(examples: Sequence[SplitExample], n: int, seed: int) -> list[SplitExample]:
    """The validation users scored at each evaluation: all, or a seeded sample of ``n`` (same as genrec's)."""
    examples = list(examples)
    if n and len(examples) > n:
        examples = sorted(random.Random(seed).sample(examples, n), key=lambda e: e.user_id)
    return examples


def start_alignment(plm, valid_examples: Sequence[SplitExample], config) -> tuple[Any, int, list[SplitExample],
                                                                             dict[str, float], dict[str, torch.Tensor]]:
    """What every alignment run does first (DPO here, GRPO in :mod:`llmrec.training.grpo`): check the model can be
    aligned by a trl trainer, seed, make the LoRA and SID rows trainable, score the supervised model on the
    validation sample -> ``(peft model, trainable count, validation sample, its metrics, initial weights)``.
    ``config`` needs ``seed``, ``eval_users``, ``eval_beams`` and ``eval_batch_users``."""
    from llmrec.training.genrec import evaluate_genrec

    if plm.user_states is not None:
        raise ConfigError("preference alignment of user-state models is not supported (trl's trainer drives the PEFT "
                          "model itself, not the user-state wrapper)")
    if plm.genrec_loss != "full":
        # its beams are normalised over the SID rows (llmrec.lm.sid_vocab), trl's log-probs over the whole
        # vocabulary: the trained objective and the validation ranking would measure different distributions
        raise ConfigError(f"preference alignment of a model trained with the {plm.genrec_loss!r} genrec loss is not "
                          "supported: trl's trainers score log-probabilities over the full vocabulary; start from "
                          "a model trained with --train.loss full")
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = plm.model
    n_trainable = mark_trainable(model)
    eval_examples = eval_sample(valid_examples, config.eval_users, config.seed)
    before, _, _ = evaluate_genrec(plm, eval_examples, beams=config.eval_beams, batch_users=config.eval_batch_users,
                                   show_progress=False)
    logger.info("supervised model, validation (%d users): %s", len(eval_examples), before)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return model, n_trainable, eval_examples, before, initial


def run_alignment(trainer, model, before: Mapping[str, float], initial: Mapping[str, torch.Tensor],
                  config: AlignmentTrainConfig) -> dict[str, Any]:
    """Train (resuming from the last complete checkpoint in ``config.output_dir``); the best validation checkpoint
    is loaded at the end, or the supervised weights are restored when none beat them on validation and
    ``config.init_is_candidate`` -> ``{"output", "seconds", "steps_run", "resumed_from", "best", "selected"}``."""
    from llmrec.training.checkpoints import last_complete_checkpoint

    last = last_complete_checkpoint(config.output_dir)  # a half-written newer one is skipped
    if last:
        logger.info("resuming from %s", last)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - t0
    best = trainer.state.best_metric
    selected = "aligned"
    if config.init_is_candidate and (best is None or best < before["ndcg@10"]):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in initial:
                    p.copy_(initial[name])
        selected = "init"
        logger.info("no aligned checkpoint beat the supervised model on validation (%s < %.4f): kept it",
                    best, before["ndcg@10"])
    model.eval()
    steps_run = out.global_step - (int(Path(last).name.rsplit("-", 1)[1]) if last else 0)
    return {"output": out, "seconds": seconds, "steps_run": steps_run, "resumed_from": last, "best": best,
            "selected": selected}


def train_genrec_pref(
    plm, pairs: Sequence[PreferencePair], valid_examples: Sequence[SplitExample], config: GenrecPrefTrainConfig,
) -> dict[str, Any]:
    """DPO on ``pairs`` in place; the best validation checkpoint is loaded at the end, or the supervised weights
    are restored when no checkpoint beat them (``report["selected"]``). Resumes from ``config.output_dir``."""
    from transformers import EarlyStoppingCallback
    from trl import DPOConfig

    from llmrec.training.callbacks import drop_printer, trainer_progress
    from llmrec.training.genrec import CHECKPOINTING_ARG, TimeBudgetCallback

    model, n_trainable, eval_examples, before, initial = start_alignment(plm, valid_examples, config)
    dataset = preference_dataset(plm, pairs)
    ref = reference_model(model)
    expose_head_bias(model)
    steps_per_epoch = math.ceil(len(dataset) / (config.batch_size * config.grad_accum))
    strategy = "steps" if config.eval_steps else "epoch"
    disable_tqdm, progress_callbacks = trainer_progress("genrec preference training")
    args = DPOConfig(
        output_dir=config.output_dir, num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, lr_scheduler_type="cosine",
        warmup_steps=int(config.warmup_ratio * steps_per_epoch * max(config.epochs, 1)),
        beta=config.beta, loss_type=list(config.loss_type),
        loss_weights=list(config.loss_weights) if config.loss_weights else None,
        max_length=None, logging_steps=config.logging_steps, eval_strategy=strategy, save_strategy=strategy,
        eval_steps=config.eval_steps or None, save_steps=config.eval_steps or None,
        save_total_limit=config.save_total_limit, load_best_model_at_end=True, metric_for_best_model="ndcg_at_10",
        greater_is_better=True, use_cpu=not torch.cuda.is_available(), seed=config.seed, data_seed=config.seed,
        report_to=list(config.report_to) or "none", dataloader_num_workers=0,
        disable_tqdm=disable_tqdm, dataset_num_proc=None,
        # trl turns on bf16 autocast by default; the model trains in the dtype it was loaded in (--dtype), as the
        # supervised recipe does, and accelerate's autocast wrapper would otherwise stay on the model's forward
        bf16=False, fp16=False, **{CHECKPOINTING_ARG: False},  # trl turns checkpointing on; small models need no
    )
    trainer = _trainer_class()(
        model=model, ref_model=ref, args=args, train_dataset=dataset, eval_dataset=dataset.select(range(1)),
        processing_class=plm.tokenizer,
        data_collator=SidPreferenceCollator(plm.tokenizer.pad_token_id, plm.tokenizer.eos_token_id),
        callbacks=[EarlyStoppingCallback(config.early_stopping_patience)]
        + ([TimeBudgetCallback(config.time_budget_minutes)] if config.time_budget_minutes > 0 else [])
        + progress_callbacks,
        plm=plm, eval_examples=eval_examples, train_config=config,
    )
    drop_printer(trainer)
    check_tokenization(plm, pairs[0], trainer.train_dataset[0], trainer.data_collator)
    run = run_alignment(trainer, model, before, initial, config)
    out, seconds, best = run["output"], run["seconds"], run["best"]
    log = trainer.state.log_history
    strip = trainer.data_collator._strip
    n_tokens = sum(len(r["prompt_ids"]) * 2 + len(strip(r["chosen_ids"])) + len(strip(r["rejected_ids"]))
                   for r in trainer.train_dataset)
    return {
        "pairs": len(dataset), "trainable_parameters": n_trainable, "steps": out.global_step,
        "train_seconds": seconds, "train_loss": out.training_loss, "tokens_per_epoch": int(n_tokens),
        # tokens through the policy per second (the frozen reference reads them once more)
        "tokens_per_second": n_tokens / steps_per_epoch * run["steps_run"] / max(seconds, 1e-9),
        "valid_users": len(eval_examples), "valid_before": before,
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_valid_ndcg@10": best, "selected": run["selected"],
        "valid_curve": [h for h in log if "eval_ndcg_at_10" in h],
        "dpo_curve": [{k: h[k] for k in ("step", "loss", "rewards/margins", "rewards/accuracies") if k in h}
                      for h in log if "loss" in h],
        "resumed_from": run["resumed_from"],
    }
