"""Profile-writer alignment (LettinGo-style) with trl's ``DPOTrainer``: the writer learns to write the profiles
that help a downstream reader.

For a training user, the context is their history up to a seeded training cut and the held-out items are the next
few TRAINING items after it (never the validation / test items, the last two: :func:`writer_tasks` checks). The
writer samples several candidate profiles of the context (prompt variants: with or without the template's facts;
greedy or sampled at a temperature, :class:`Variant`); the zero-shot reader answers the held-out items' downstream
questions (next category, rating; :mod:`llmrec.evaluation.profile_reader`) with each candidate and with no profile,
and a candidate's reward is the reader's mean gain over no profile (:func:`candidate_reward`). Per user the best
and the worst valid candidates whose rewards differ by at least ``margin`` make a chosen / rejected pair
(:func:`build_profile_pairs`). DPO then trains a LoRA on the writer against the frozen zero-shot writer (trl's
adapter-disabled reference) on ONE canonical prompt, the default grounded writer prompt: whichever variant wrote a
candidate, the aligned writer is asked the same way at inference (``PersonalLM.profile(use_adapter=True)``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.config import Config
from llmrec.data.schema import InteractionData, UserHistory
from llmrec.errors import ConfigError, LlmrecError
from llmrec.progress import progress
from llmrec.tasks.profile import PROFILE_TASKS, ProfileExample, examples_at, profile_write_prompt
from llmrec.tasks.uqa import MIN_CONTEXT, context_cuts

logger = logging.getLogger(__name__)

ECHO_OPENING = "this user watched"  # a profile that copies the writing prompt's opening line is not a profile
HELD_OUT_TAIL = 2  # the last two items of a history are the validation and test targets (leave-one-out)


# ------------------------------------------------------------------------------------------------- candidates
@dataclasses.dataclass(frozen=True)
class Variant:
    """How one candidate is written: ``grounded`` = the prompt carries the template's facts; ``temperature`` 0 =
    greedy. Spelled ``grounded@0.8`` / ``ungrounded@1`` in configs."""

    grounded: bool
    temperature: float

    @classmethod
    def parse(cls, text: str) -> Variant:
        kind, _, temp = str(text).partition("@")
        if kind not in ("grounded", "ungrounded"):
            raise ConfigError(f"profile variant {text!r}: expected grounded@T or ungrounded@T (T = temperature)")
        try:
            t = float(temp or 0)
        except ValueError:
            raise ConfigError(f"profile variant {text!r}: temperature {temp!r} is not a number") from None
        if t < 0:
            raise ConfigError(f"profile variant {text!r}: temperature must be >= 0")
        return cls(kind == "grounded", t)

    def __str__(self) -> str:
        return f"{'grounded' if self.grounded else 'ungrounded'}@{self.temperature:g}"


@dataclasses.dataclass
class ProfilePairConfig(Config):
    users: int = 80  # training users that get candidates (a seeded sample, disjoint from the excluded users)
    variants: tuple[str, ...] = ("grounded@0", "grounded@1", "grounded@1", "ungrounded@1")  # one candidate each
    heldout_items: int = 2  # training items after the context that judge a candidate
    tasks: tuple[str, ...] = PROFILE_TASKS
    genre_weight: float = 1.0  # reward = genre_weight x log-prob gain of the true category
    rating_weight: float = 1.0  # + rating_weight x drop in expected-rating absolute error (both vs no profile)
    margin: float = 0.05  # chosen must beat rejected by at least this reward
    pairs_per_user: int = 1  # 1 = best vs worst; n: best vs the n worst that clear the margin
    min_words: int = 8  # shorter candidates are invalid (never chosen nor rejected)
    max_items: int = 20  # history items shown to the writer
    max_new_tokens: int = 64
    top_p: float = 0.95
    gen_batch: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 1 or self.heldout_items < 1 or self.pairs_per_user < 1:
            raise ConfigError("pairs: users, heldout_items and pairs_per_user must be >= 1")
        if len(self.variants) < 2:
            raise ConfigError("pairs: at least two variants (candidates per user) are needed to form a pair")
        for v in self.variants:
            Variant.parse(v)
        unknown = [t for t in self.tasks if t not in PROFILE_TASKS]
        if unknown or not self.tasks:
            raise ConfigError(f"pairs: unknown task(s) {unknown or '(none)'}; known: {list(PROFILE_TASKS)}")
        if self.margin < 0 or self.genre_weight < 0 or self.rating_weight < 0:
            raise ConfigError("pairs: margin and the reward weights must be >= 0")
        if self.max_new_tokens < 1 or self.gen_batch < 1 or not 0 < self.top_p <= 1:
            raise ConfigError("pairs: max_new_tokens, gen_batch >= 1 and 0 < top_p <= 1 are required")


@dataclasses.dataclass(frozen=True)
class WriterTask:
    """A training user's context (history[:cut]) and the downstream rows of their held-out training items."""

    user_id: str
    context: UserHistory
    examples: tuple[ProfileExample, ...]


def writer_tasks(data: InteractionData, *, users: int, heldout_items: int, tasks: Sequence[str] = PROFILE_TASKS,
                 exclude: Sequence[str] = (), seed: int = 0) -> list[WriterTask]:
    """A seeded sample of ``users`` users (not in ``exclude``) with one training cut each (as
    :func:`~llmrec.tasks.uqa.context_cuts` draws it) and the downstream rows of the ``heldout_items`` items after the
    cut, all of them training items: positions < len - 2, so never a validation or test item."""
    excluded = set(exclude)
    out: list[WriterTask] = []
    histories = data.histories()
    ids = [u for u in sorted(histories, key=lambda u: (len(u), u)) if u not in excluded]
    random.Random(seed).shuffle(ids)
    for user in ids:
        if len(out) == users:
            break
        history = histories[user]
        for cut in context_cuts(history, "train", seed=seed, train_cuts_per_user=1, min_context=MIN_CONTEXT):
            last = min(cut + heldout_items, len(history) - HELD_OUT_TAIL)
            rows = [ex for pos in range(cut, last)
                    for ex in examples_at(data, history, cut, pos, split="train", tasks=tasks)]
            if rows:
                out.append(WriterTask(user, history.prefix(cut), tuple(rows)))
    return sorted(out, key=lambda t: (len(t.user_id), t.user_id))


def writer_prompt(context: UserHistory, data: InteractionData, *, max_items: int, grounded: bool) -> str:
    """The writing prompt (``prompts/profile_write.jinja``), as ``PersonalLM.profile`` sends it."""
    return profile_write_prompt(context, data, max_items=max_items, grounded=grounded)


def sample_profiles(model, tokenizer, prompts: Sequence[str], *, temperature: float, max_new_tokens: int,
                    top_p: float = 0.95, batch: int = 8, seed: int = 0, show_progress: bool = False) -> list[str]:
    """One profile per prompt (chat template, left-padded batches, reply started with ``This user`` as
    ``PersonalLM.profile`` does): greedy at temperature 0, else nucleus sampling (seeded per batch)."""
    import torch

    from llmrec.lm.personal import PROFILE_PREFIX

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) + PROFILE_PREFIX for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with little padding
    out: list[str] = [""] * len(texts)
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0
                else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
    try:
        for start in progress(range(0, len(order), batch), desc=f"writing {len(order)} profiles", unit="batch",
                              enable=show_progress):
            idx = order[start:start + batch]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(seed * 1_000_003 + start)
            with torch.inference_mode():
                ids = model.generate(**{k: v.to(device) for k, v in enc.items()}, max_new_tokens=max_new_tokens,
                                     num_beams=1, pad_token_id=tokenizer.pad_token_id, **sampling)
            replies = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, reply in zip(idx, replies, strict=True):
                out[i] = (PROFILE_PREFIX + reply).strip()
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return out


def is_valid_profile(text: str, *, min_words: int = 8) -> bool:
    """A usable profile: at least ``min_words`` words and not a copy of the writing prompt's item list."""
    words = str(text).split()
    return len(words) >= min_words and ECHO_OPENING not in " ".join(words[:6]).lower()


def candidate_reward(logps: Sequence[np.ndarray], base_logps: Sequence[np.ndarray],
                     examples: Sequence[ProfileExample], *, genre_weight: float = 1.0,
                     rating_weight: float = 1.0) -> float:
    """The reader's mean gain over no profile on one user's held-out rows (per task, then weighted):
    ``genre_weight`` x gain in log-prob of the true category + ``rating_weight`` x drop in the expected rating's
    absolute error (:func:`~llmrec.evaluation.profile_reader.downstream_gain`). 0 when there are no rows."""
    from llmrec.evaluation.profile_reader import downstream_gain

    gains: dict[str, list[float]] = {}
    for lp, base, ex in zip(logps, base_logps, examples, strict=True):
        gains.setdefault(ex.task, []).append(downstream_gain(lp, base, ex))
    weights = {"next_genre": genre_weight, "rating": rating_weight}
    return float(sum(weights[t] * np.mean(g) for t, g in gains.items()))


@dataclasses.dataclass(frozen=True)
class Candidate:
    text: str
    variant: str
    reward: float
    valid: bool


@dataclasses.dataclass(frozen=True)
class ProfilePair:
    user_id: str
    prompt: str  # the canonical (grounded) writer prompt of the user's context
    chosen: str
    rejected: str
    chosen_reward: float
    rejected_reward: float
    chosen_variant: str
    rejected_variant: str


def build_profile_pairs(prompts: Mapping[str, str], candidates: Mapping[str, Sequence[Candidate]], *,
                        margin: float, pairs_per_user: int = 1) -> list[ProfilePair]:
    """Per user: the best valid candidate is chosen, the ``pairs_per_user`` worst valid candidates with a distinct
    text and a reward at least ``margin`` lower are rejected (worst first)."""
    pairs: list[ProfilePair] = []
    for user in sorted(candidates, key=lambda u: (len(u), u)):
        valid = sorted((c for c in candidates[user] if c.valid), key=lambda c: -c.reward)
        if len(valid) < 2:
            continue
        best = valid[0]
        below = [c for c in reversed(valid[1:]) if best.reward - c.reward >= margin and c.text != best.text]
        seen: set[str] = set()
        for c in below:
            if len(seen) == pairs_per_user:
                break
            if c.text in seen:
                continue
            seen.add(c.text)
            pairs.append(ProfilePair(user, prompts[user], best.text, c.text, best.reward, c.reward, best.variant,
                                     c.variant))
    return pairs


def score_candidates(reader, tasks: Sequence[WriterTask], texts: Mapping[str, Sequence[str]],
                     variants: Sequence[str], config: ProfilePairConfig,
                     show_progress: bool = True) -> dict[str, list[Candidate]]:
    """Each user's candidates with their reward under ``reader`` (an :class:`~llmrec.evaluation.models.HFModel`)."""
    from llmrec.evaluation.profile_reader import read_examples

    out: dict[str, list[Candidate]] = {}
    for task in progress(tasks, desc=f"reading candidates of {len(tasks)} users", unit="user",
                         enable=show_progress):
        base = read_examples(reader, {task.user_id: None}, task.examples)
        cands = []
        for text, variant in zip(texts[task.user_id], variants, strict=True):
            valid = is_valid_profile(text, min_words=config.min_words)
            reward = candidate_reward(read_examples(reader, {task.user_id: text}, task.examples), base,
                                      task.examples, genre_weight=config.genre_weight,
                                      rating_weight=config.rating_weight) if valid else float("nan")
            cands.append(Candidate(text, variant, reward, valid))
        out[task.user_id] = cands
    return out


def write_candidates(model, tokenizer, data: InteractionData, tasks: Sequence[WriterTask],
                     config: ProfilePairConfig, show_progress: bool = True) -> dict[str, list[str]]:
    """``{user: [one profile per variant]}`` from ``model`` (the zero-shot writer)."""
    texts: dict[str, list[str]] = {t.user_id: [] for t in tasks}
    for n, spec in enumerate(config.variants):
        v = Variant.parse(spec)
        prompts = [writer_prompt(t.context, data, max_items=config.max_items, grounded=v.grounded) for t in tasks]
        written = sample_profiles(model, tokenizer, prompts, temperature=v.temperature,
                                  max_new_tokens=config.max_new_tokens, top_p=config.top_p, batch=config.gen_batch,
                                  seed=config.seed * 100 + n, show_progress=show_progress)
        for t, text in zip(tasks, written, strict=True):
            texts[t.user_id].append(text)
    return texts


# ------------------------------------------------------------------------------------------------- DPO data
def dpo_prompt_text(tokenizer, prompt: str) -> str:
    """The DPO prompt as text: the chat-formatted writer prompt plus the reply's fixed start (``This user``),
    exactly what :func:`sample_profiles` and ``PersonalLM.profile`` condition on."""
    from llmrec.lm.personal import PROFILE_PREFIX

    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True) + PROFILE_PREFIX


def completion_text(profile: str) -> str:
    """A profile minus the reply's fixed start (that is part of the prompt)."""
    from llmrec.lm.personal import PROFILE_PREFIX

    if not profile.startswith(PROFILE_PREFIX):
        raise LlmrecError(f"a candidate profile must start with {PROFILE_PREFIX!r}, got {profile[:40]!r}")
    return profile[len(PROFILE_PREFIX):]


def preference_dataset(tokenizer, pairs: Sequence[ProfilePair]):
    """trl's standard (text) preference format: ``prompt`` / ``chosen`` / ``rejected``."""
    import datasets

    if not pairs:
        raise LlmrecError("no profile preference pairs: no user had two valid candidates whose rewards differ by "
                          "the margin (more users or variants, or a smaller pairs.margin)")
    return datasets.Dataset.from_dict({
        "prompt": [dpo_prompt_text(tokenizer, p.prompt) for p in pairs],
        "chosen": [completion_text(p.chosen) for p in pairs],
        "rejected": [completion_text(p.rejected) for p in pairs],
    })


def completion_logps(model, tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """log p(completion | DPO prompt text) per pair under ``model`` (prompt and completion tokenized apart, as the
    writer generates the completion after the prompt's tokens)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions, strict=True):
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = torch.tensor([p + c], device=device)
            logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=device)
            out.append(float(logp[pos, torch.tensor(c, device=device)].sum()))
    if was_training:
        model.train()
    return np.asarray(out)


def pair_margins(model, tokenizer, pairs: Sequence[ProfilePair]) -> np.ndarray:
    """log p(chosen) - log p(rejected) per pair (what DPO pushes up)."""
    prompts = [dpo_prompt_text(tokenizer, p.prompt) for p in pairs]
    return (completion_logps(model, tokenizer, prompts, [completion_text(p.chosen) for p in pairs])
            - completion_logps(model, tokenizer, prompts, [completion_text(p.rejected) for p in pairs]))


# ------------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class ProfileDPOTrainConfig(Config):
    output_dir: str = "runs/profile-dpo.checkpoints"
    adapter: str = "lora"  # LoRA preset (adapters/*.yaml) trained on the writer
    beta: float = 0.1
    loss_type: tuple[str, ...] = ("sigmoid",)
    epochs: float = 2.0
    max_steps: int = -1
    learning_rate: float = 5e-4
    batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    save_steps: int = 0  # 0 = every epoch
    save_total_limit: int = 2
    logging_steps: int = 5
    report_to: tuple[str, ...] = ()
    time_budget_minutes: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.logging_steps < 1 or self.save_steps < 0:
            raise ConfigError("batch_size, grad_accum, logging_steps must be >= 1 and save_steps >= 0")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("set epochs > 0 or max_steps > 0")
        if self.beta <= 0 or self.learning_rate <= 0:
            raise ConfigError("beta and learning_rate must be > 0")


def check_tokenization(tokenizer, pair: ProfilePair, row: Mapping[str, Any]) -> None:
    """trl tokenized the text itself: its prompt ids must be the writer's prompt as generation sees it (chat
    template + ``This user``), else DPO would train a context the writer never writes from."""
    from llmrec.lm.personal import PROFILE_PREFIX
    from llmrec.prompting import chat_ids

    want = chat_ids(tokenizer, pair.prompt) + tokenizer(PROFILE_PREFIX, add_special_tokens=False)["input_ids"]
    got = list(row["prompt_ids"])
    if got != want:
        raise LlmrecError(f"trl tokenized the first pair's prompt as {len(got)} tokens ending {got[-5:]}, expected "
                          f"{len(want)} ending {want[-5:]}")


def train_profile_dpo(model, tokenizer, pairs: Sequence[ProfilePair], config: ProfileDPOTrainConfig):
    """DPO of a LoRA on ``model`` (the plain base writer; trl wraps it with the preset's LoRA and uses the
    adapter-disabled model, i.e. the zero-shot writer, as the reference) -> ``(peft model, report)``. Resumes from
    the last complete checkpoint in ``config.output_dir``; the final weights are the last step's (no validation
    metric selects among checkpoints: the reward needs the reader, which the benchmark runs on held-out users)."""
    import torch
    from trl import DPOConfig, DPOTrainer

    from llmrec.lm.personal import load_adapter_preset, lora_config
    from llmrec.training.callbacks import drop_printer, trainer_progress
    from llmrec.training.checkpoints import last_complete_checkpoint
    from llmrec.training.genrec import CHECKPOINTING_ARG, TimeBudgetCallback

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    dataset = preference_dataset(tokenizer, pairs)
    steps_per_epoch = math.ceil(len(dataset) / (config.batch_size * config.grad_accum))
    disable_tqdm, progress_callbacks = trainer_progress("profile-writer DPO")
    args = DPOConfig(
        output_dir=config.output_dir, num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, lr_scheduler_type="cosine",
        warmup_steps=int(config.warmup_ratio * steps_per_epoch * max(config.epochs, 1)),
        beta=config.beta, loss_type=list(config.loss_type), max_length=None, logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "epoch", save_steps=config.save_steps or None,
        save_total_limit=config.save_total_limit, eval_strategy="no", use_cpu=not torch.cuda.is_available(),
        seed=config.seed, data_seed=config.seed, report_to=list(config.report_to) or "none",
        dataloader_num_workers=0, disable_tqdm=disable_tqdm, dataset_num_proc=None,
        # the writer trains in the dtype it was loaded in (trl would turn on bf16 autocast and checkpointing)
        bf16=False, fp16=False, **{CHECKPOINTING_ARG: False},
    )
    peft_config = lora_config(load_adapter_preset(config.adapter))
    trainer = DPOTrainer(
        model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=([TimeBudgetCallback(config.time_budget_minutes)] if config.time_budget_minutes > 0 else [])
        + progress_callbacks,
    )
    drop_printer(trainer)
    check_tokenization(tokenizer, pairs[0], trainer.train_dataset[0])
    peft_model = trainer.model
    margin_before = pair_margins(peft_model, tokenizer, pairs)  # LoRA B = 0: the zero-shot writer
    last = last_complete_checkpoint(config.output_dir)
    if last:
        logger.info("resuming from %s", last)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - t0
    peft_model.eval()
    margin_after = pair_margins(peft_model, tokenizer, pairs)
    n_tokens = sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"])
                   for r in trainer.train_dataset)
    steps_run = out.global_step - (int(Path(last).name.rsplit("-", 1)[1]) if last else 0)
    log = trainer.state.log_history
    report = {
        "pairs": len(dataset), "steps": out.global_step, "train_seconds": seconds, "train_loss": out.training_loss,
        "tokens_per_epoch": int(n_tokens),
        "tokens_per_second": n_tokens / steps_per_epoch * steps_run / max(seconds, 1e-9),
        "trainable_parameters": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
        "pair_margin": {"before": float(margin_before.mean()), "after": float(margin_after.mean()),
                        "chosen_preferred_before": float((margin_before > 0).mean()),
                        "chosen_preferred_after": float((margin_after > 0).mean())},
        "dpo_curve": [{k: h[k] for k in ("step", "loss", "rewards/margins", "rewards/accuracies") if k in h}
                      for h in log if "loss" in h],
        "resumed_from": last,
    }
    return peft_model, report
