"""Fine-tune and evaluate personalized QA: soft-prompt users (encoder + projector [+ LoRA]) or text prompts
(question only / history as text, LoRA) on the same prompt/completion rows, with the loss on the answer only."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from llmrec.config import Config
from llmrec.distributed import world_size
from llmrec.errors import ConfigError
from llmrec.lm.compiled import compiled_for_training
from llmrec.progress import progress
from llmrec.prompting import chat_ids
from llmrec.training.callbacks import drop_printer, trainer_progress
from llmrec.training.checkpoints import last_complete_checkpoint
from llmrec.training.genrec import TimeBudgetCallback

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"


@dataclasses.dataclass
class QATrainConfig(Config):
    output_dir: str = "runs/qa"
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 1e-3
    # Learning rate of the user encoder + projector (None = learning_rate). Higher than the LoRA rate so the
    # soft tokens become informative before LoRA settles on answer priors (LLaVA-style projector warm-up).
    user_learning_rate: float | None = None
    batch_size: int = 8
    grad_accum: int = 1  # gradient accumulation steps (the effective batch is batch_size x grad_accum)
    warmup_ratio: float = 0.03
    logging_steps: int = 10
    save_steps: int = 0  # 0 = twice per epoch, at least every 50 steps
    report_to: tuple[str, ...] = ()  # Trainer integrations, e.g. ("tensorboard",); () = none
    time_budget_minutes: float = 0.0
    seed: int = 0
    compile: bool = False  # torch.compile each decoder layer for the training steps (llmrec.lm.compiled)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError("batch_size >= 1 and learning_rate > 0 are required")
        if self.grad_accum < 1 or self.logging_steps < 1 or self.save_steps < 0:
            raise ConfigError("grad_accum and logging_steps must be >= 1, save_steps >= 0")
        if self.user_learning_rate is not None and self.user_learning_rate <= 0:
            raise ConfigError("user_learning_rate must be > 0")


@dataclasses.dataclass
class QARowMaker:
    """``batch -> rows`` for ``Dataset.map(batched=True)`` (picklable: the tokenizer only), as :func:`qa_rows`."""

    tokenizer: Any

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        tok = self.tokenizer
        prompt_ids = [chat_ids(tok, p) for p in batch["prompt"]]
        answer_ids = tok(list(batch["answer"]), add_special_tokens=False)["input_ids"] if batch["answer"] else []
        out: dict[str, list] = {"input_ids": [], "labels": [], "prompt_len": []}
        for p, a in zip(prompt_ids, answer_ids, strict=True):
            a = list(a) + [tok.eos_token_id]
            out["input_ids"].append(list(p) + a)
            out["labels"].append([-100] * len(p) + a)
            out["prompt_len"].append(len(p))
        return out


def qa_rows(prompts: Sequence[str], answers: Sequence[str], tokenizer,
            user_items: Sequence[Sequence[int]] | None = None, query_vecs=None, *, num_proc: int = 1,
            cache: bool | str = False) -> datasets.Dataset:
    """Prompt/completion rows; labels cover the answer and the end-of-turn token only.

    ``num_proc > 1`` or ``cache`` tokenise with ``datasets.map`` (:class:`QARowMaker`) over ``num_proc``
    workers, into Arrow files under the llmrec cache keyed by the texts and tokenizer (``cache``: True = the llmrec
    cache, a folder = there); the rows are the same."""
    if num_proc > 1 or cache:
        return _mapped_qa_rows(prompts, answers, tokenizer, user_items, query_vecs, num_proc, cache)
    end = tokenizer.eos_token_id
    cols: dict[str, list[Any]] = {"input_ids": [], "labels": [], "prompt_len": []}
    for prompt, answer in zip(prompts, answers, strict=True):
        p = chat_ids(tokenizer, prompt)
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [end]
        cols["input_ids"].append(p + a)
        cols["labels"].append([-100] * len(p) + a)
        cols["prompt_len"].append(len(p))
    if user_items is not None:
        cols["user_item_idx"] = [list(x) for x in user_items]
    if query_vecs is not None:
        cols["user_query_vec"] = [list(map(float, v)) for v in query_vecs]
    return datasets.Dataset.from_dict(cols)


def _mapped_qa_rows(prompts, answers, tokenizer, user_items, query_vecs, num_proc: int,
                    cache: bool | str) -> datasets.Dataset:
    import pyarrow as pa

    from llmrec.data.rowcache import cached_map, key_digest, source_dataset
    from llmrec.tasks.genrec_rows import tokenizer_digest

    source = pa.table({"prompt": pa.array(list(prompts), pa.string()), "answer": pa.array(list(answers), pa.string())})
    key = {"texts": key_digest({"prompts": list(prompts), "answers": list(answers)}),
           "tokenizer": tokenizer_digest(tokenizer), "chat_template": getattr(tokenizer, "chat_template", None)}
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                  "labels": datasets.List(datasets.Value("int64")),
                                  "prompt_len": datasets.Value("int64")})
    rows = cached_map(source_dataset(source, key["texts"][:32]), QARowMaker(tokenizer), kind="qa", key=key,
                      features=features, num_proc=num_proc, cache=bool(cache),
                      cache_root=None if isinstance(cache, bool) else cache, desc="QA rows").rows
    if user_items is not None:
        rows = rows.add_column("user_item_idx", [list(x) for x in user_items])
    if query_vecs is not None:
        rows = rows.add_column("user_query_vec", [list(map(float, v)) for v in query_vecs])
    return rows


class QACollator:
    """Right-pads tokens for training (left-pads for generation) and user item sequences (0 = pad)."""

    def __init__(self, pad_token_id: int, left: bool = False) -> None:
        self.pad = pad_token_id
        self.left = left

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        key = "input_ids"
        seqs = [r[key] if not self.left else r[key][: r["prompt_len"]] for r in rows]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r, s) in enumerate(zip(rows, seqs, strict=True)):
            sl = slice(width - len(s), width) if self.left else slice(0, len(s))
            ids[i, sl] = torch.tensor(s)
            mask[i, sl] = 1
            if not self.left:
                labels[i, sl] = torch.tensor(r["labels"])
        out = {"input_ids": ids, "attention_mask": mask}
        if not self.left:
            out["labels"] = labels
        if "user_item_idx" in rows[0]:
            w = max(len(r["user_item_idx"]) for r in rows)
            items = torch.zeros((len(rows), w), dtype=torch.long)
            for i, r in enumerate(rows):
                items[i, : len(r["user_item_idx"])] = torch.tensor(r["user_item_idx"])
            out["user_item_idx"] = items
        if "user_query_vec" in rows[0]:
            out["user_query_vec"] = torch.tensor([r["user_query_vec"] for r in rows], dtype=torch.float32)
        return out


class TrainableOnlyTrainer(Trainer):
    """Checkpoints hold only trainable tensors (encoder, projector, LoRA) so they are small and tied LLM weights
    never trip safetensors; resuming loads them back into the same architecture.

    Why not trl's ``SFTTrainer`` (issue 20 item 3), although the rows are its prompt/completion format: the
    soft-prompt model is a plain ``nn.Module`` around the LLM whose forward splices the user vectors in at the
    ``<|user|>`` tokens from extra batch columns (``user_item_idx`` / ``user_query_vec``). SFTTrainer reads
    ``model.config`` (no such thing on the wrapper), tokenizes the text itself (our rows carry ids, prompt lengths
    and those columns) and collates with its own collator (which drops the columns); switching all of that off
    (``skip_prepare_dataset``, a custom collator) leaves a plain Trainer plus token-accuracy logging. The
    text-prompt QA variant would fit, but one Trainer for both keeps their comparisons identical."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The public hook ``Trainer._save_checkpoint`` calls; written by the main process only (DDP)."""
        from safetensors.torch import save_file
        from transformers.trainer import TRAINING_ARGS_NAME

        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        tensors = {n: p.detach().contiguous().cpu() for n, p in self.model.named_parameters() if p.requires_grad}
        save_file(tensors, os.path.join(output_dir, TRAINABLE_FILE))
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    # No public hook loads a checkpoint's weights in transformers 5 (train(resume_from_checkpoint=...) calls this
    # private method; callbacks' on_train_begin runs after it). tests/test_trainer_hooks.py fails loudly if its
    # signature changes or the Trainer stops calling it; tests/test_qa_training.py resumes through it.
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        load_trainable(model or self.model, resume_from_checkpoint)


def load_trainable(model, checkpoint_dir: str) -> None:
    from safetensors.torch import load_file

    tensors = load_file(os.path.join(checkpoint_dir, TRAINABLE_FILE))
    missing = set(tensors) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ConfigError(f"{checkpoint_dir}: checkpoint has tensors this model lacks, e.g. {sorted(missing)[0]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def _optimizer(model, config: QATrainConfig) -> torch.optim.Optimizer | None:
    """AdamW with the user modules (everything outside ``llm.``) at ``user_learning_rate``; None = Trainer's."""
    if config.user_learning_rate is None or not hasattr(model, "user_encoder"):
        return None
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    llm = [p for n, p in params if n.startswith("llm.")]
    user = [p for n, p in params if not n.startswith("llm.")]
    groups = [{"params": user, "lr": config.user_learning_rate}] + ([{"params": llm, "lr": config.learning_rate}]
                                                                   if llm else [])
    return torch.optim.AdamW(groups, weight_decay=0.0)


def train_qa(model, rows: datasets.Dataset, pad_token_id: int, config: QATrainConfig, *,
             callbacks: Sequence[TrainerCallback] = ()) -> dict[str, Any]:
    """Train ``model`` (a SoftPromptModel or a PEFT LLM) on QA rows; resumes from ``output_dir``.
    ``callbacks``: extra Trainer callbacks (e.g. :class:`~llmrec.training.throughput.StepRecorder`)."""
    torch.manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(rows) / (config.batch_size * config.grad_accum * world_size()))
    args = TrainingArguments(
        output_dir=config.output_dir, num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=int(config.warmup_ratio * steps_per_epoch * max(config.epochs, 1)),
        lr_scheduler_type="cosine", logging_steps=config.logging_steps, save_strategy="steps",
        save_steps=config.save_steps or max(50, steps_per_epoch // 2), save_total_limit=1,
        use_cpu=not torch.cuda.is_available(), seed=config.seed, data_seed=config.seed,
        report_to=list(config.report_to) or "none", remove_unused_columns=False,
        disable_tqdm=True,
    )
    disable_tqdm, progress_callbacks = trainer_progress("QA training")
    args.disable_tqdm = disable_tqdm  # the Trainer's bar on a terminal, our log lines elsewhere
    extra = list(callbacks)
    callbacks = [TimeBudgetCallback(config.time_budget_minutes)] if config.time_budget_minutes > 0 else []
    callbacks += progress_callbacks + extra
    trainer = TrainableOnlyTrainer(model=model, args=args, train_dataset=rows.remove_columns(["prompt_len"]),
                                   data_collator=QACollator(pad_token_id), callbacks=callbacks,
                                   optimizers=(_optimizer(model, config), None))
    drop_printer(trainer)
    last = last_complete_checkpoint(config.output_dir)  # a half-written newer one is skipped
    t0 = time.perf_counter()
    with compiled_for_training(model, config.compile):
        out = trainer.train(resume_from_checkpoint=last)
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    return {"steps": out.global_step, "train_seconds": time.perf_counter() - t0, "train_loss": out.training_loss,
            "loss_curve": losses, "resumed_from": last, "rows": len(rows)}


@torch.no_grad()
def generate_answers(generate_fn: Callable[..., torch.Tensor], rows: datasets.Dataset, tokenizer, *,
                     batch_size: int = 16, max_new_tokens: int = 12) -> tuple[list[str], float]:
    """Greedy answers for each row's prompt (left-padded batches) -> (answers, seconds per example)."""
    collate = QACollator(tokenizer.pad_token_id, left=True)
    answers: list[str] = []
    t0 = time.perf_counter()
    for start in progress(range(0, len(rows), batch_size), desc=f"answering {len(rows)} questions", unit="batch"):
        batch = collate([rows[i] for i in range(start, min(len(rows), start + batch_size))])
        new = generate_fn(batch, max_new_tokens)
        answers.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return [a.strip().split("\n")[0].strip() for a in answers], (time.perf_counter() - t0) / max(1, len(rows))
