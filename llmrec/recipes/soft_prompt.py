"""`llmrec train soft-prompt`: personalized QA from soft prompts. A SASRec-style user encoder (pretrained on
next-item prediction) + a projector turn a history into k soft-prompt vectors; with the ``vocab`` projector they
are mixtures of the LLM's embeddings of catalogue words, optionally text-aligned to the categories of the items
(no LLM pass); then LoRA (and, unless frozen, the user side) trains on UQA-style questions whose answers are
computed from the training data. The LLM then answers from k vectors instead of the history as text.

:func:`train_soft_prompt` / :func:`evaluate_soft_prompt` are the one implementation behind this recipe,
``scripts/bench_uqa.py`` (soft variants) and ``scripts/demo.py``. The output directory is a PersonalLM folder
(``llmrec answer --model DIR`` reads the user from ``user/``) plus results.json, config.yaml and run.json.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmrec.recipes.common import RecipeBase, load_data, write_records
from llmrec.recipes.config import RecipeConfig, opt, section
from llmrec.recipes.multigpu import plan_batch

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SoftModelConfig(RecipeConfig):
    """The LLM."""

    base_model: str = opt("smollm2-135m", "base causal LM: alias, hub id or local folder")
    adapter: str | None = opt("lora", "LoRA preset trained with the soft prompt; none = LLM frozen (alignment stage)")


@dataclasses.dataclass
class SoftEncoderConfig(RecipeConfig):
    """The user encoder: a SASRec-style SequenceEncoder pretrained on next-item prediction."""

    path: str | None = opt(None, "a trained SequenceEncoder folder (same data, a last/mean/profile pooling) to use "
                                 "as is; none = pretrain one here with the settings below")
    d_model: int = opt(64, "hidden size")
    layers: int = opt(2, "transformer layers")
    heads: int = opt(2, "attention heads")
    dropout: float = opt(0.2, "dropout")
    pooling: str = opt("profile", "soft slots: k chronological chunks (mean) or a profile (whole history, last "
                                  "recent_window items, then the last items one each)",
                       choices=("last", "mean", "profile"))
    item_vectors: str = opt("minilm", "feed frozen MiniLM item text vectors to the encoder", choices=("none", "minilm"))
    lr: float = opt(1e-3, "pretraining learning rate")
    batch_size: int = opt(64, "pretraining batch size")
    epochs: int = opt(40, "maximum pretraining epochs")
    patience: int = opt(5, "early-stopping patience (epochs)")


@dataclasses.dataclass
class SoftPromptSection(RecipeConfig):
    """The soft prompt: k vectors from the encoder through the projector."""

    k: int = opt(8, "soft tokens per user")
    max_items: int = opt(200, "most recent history items the encoder reads")
    projector: str = opt("vocab", "free MLP vectors, or mixtures of the LLM's embeddings of catalogue words",
                         choices=("vocab", "mlp"))
    anchor_text: str = opt("categories", "vocab anchors and alignment targets: each item's categories, or its "
                                         "title + categories", choices=("categories", "items"))
    align_epochs: int = opt(30, "text-alignment epochs before QA training (0 = off; needs the vocab projector)")
    align_sharpness: float = opt(20.0, "alignment targets: power on each slot's word counts (> 1: commonest words)")
    user_lr: float | None = opt(0.0, "learning rate of encoder + projector in QA training (0 = frozen after "
                                     "alignment; none = the LoRA learning rate)")


@dataclasses.dataclass
class SoftQuestionsConfig(RecipeConfig):
    """UQA-style questions (llmrec.tasks.uqa), answers computed from the data."""

    tasks: tuple[str, ...] = opt((), "tasks to train and test on (empty = every task the dataset supports)")
    train_per_task: int = opt(300, "training questions per task, sampled (0 = all)")
    test_per_task: int = opt(100, "test questions per task scored at the end (0 = no test)")
    worked: bool = opt(True, "train and ask worked answers where a task has one ('Drama, Comedy: yes')")
    recent_window: int = opt(10, "items that count as 'recent' in the questions and the profile pooling")


@dataclasses.dataclass
class SoftTrainConfig(RecipeConfig):
    """QA fine-tuning (llmrec.training.qa.QATrainConfig, transformers.Trainer)."""

    lr: float = opt(1e-3, "LoRA learning rate (cosine schedule)")
    epochs: float = opt(1.0, "epochs over the training questions")
    max_steps: int = opt(-1, "stop after this many optimizer steps (-1 = use epochs)")
    batch_size: int = opt(8, "questions per optimizer step over all processes (the global batch: the same "
                             "whatever the world size; per-device batch and accumulation are derived)")
    gradient_accumulation_steps: int = opt(1, "accumulation steps on one process (its device batch = batch_size / "
                                              "this); more processes accumulate less (llmrec.recipes.multigpu)")
    logging_steps: int = opt(10, "log the loss every N steps")
    save_steps: int = opt(0, "checkpoint every N steps (0 = every half epoch, at least 50 apart)")
    report_to: tuple[str, ...] = opt((), "trackers for transformers.Trainer (e.g. tensorboard,wandb; empty = none)")
    time_budget: float = opt(0.0, "minutes of training before stopping cleanly (0 = no budget)")
    compile: bool = opt(False, "torch.compile each decoder layer for the training steps (~1 min of compilation, "
                               "then faster steps on CPU; needs a C++ compiler)")
    checkpoints: str | None = opt(None, "checkpoint folder (none = <out>.checkpoints); resumed from if present")
    seed: int = opt(0, "seed of questions, encoder, alignment and training")


@dataclasses.dataclass
class SoftPromptRecipeConfig(RecipeBase):
    out: str = opt("runs/soft-prompt", "output directory: the PersonalLM folder + results.json (replaced)")
    model: SoftModelConfig = section(SoftModelConfig, "the LLM")
    encoder: SoftEncoderConfig = section(SoftEncoderConfig, "the user encoder")
    soft: SoftPromptSection = section(SoftPromptSection, "the soft prompt")
    questions: SoftQuestionsConfig = section(SoftQuestionsConfig, "the questions")
    train: SoftTrainConfig = section(SoftTrainConfig, "QA fine-tuning")


# ------------------------------------------------------------------------------------------------- library
def sample_per_task(examples: Sequence, n: int, seed: int) -> list:
    """Up to ``n`` examples of each task (0 = all), drawn with ``seed``, tasks in sorted order."""
    if not n:
        return list(examples)
    by_task: dict[str, list] = defaultdict(list)
    for ex in examples:
        by_task[ex.task].append(ex)
    rng = random.Random(seed)
    return [ex for task in sorted(by_task) for ex in rng.sample(by_task[task], min(n, len(by_task[task])))]


def anchor_texts(data, anchor_text: str) -> list[str]:
    """One text per catalogue item (index i + 1 <-> text i): its categories, or its title + categories."""
    from llmrec.tasks import uqa

    return uqa.anchor_texts(data, anchor_text)


def soft_rows(examples: Sequence, tokenizer, encoder, k: int, max_items: int, worked: bool, data=None):
    """Prompt/answer rows for a soft-prompt model: ``k`` user placeholders, the encoder's item indices."""
    from llmrec.lm.soft_prompt import USER_TOKEN
    from llmrec.tasks.uqa import uqa_prompt
    from llmrec.training.qa import qa_rows

    prompts = [uqa_prompt(ex, "soft", data=data, user=USER_TOKEN * k, worked=worked) for ex in examples]
    # tokenised by datasets.map into Arrow files under the llmrec cache (keyed by texts and tokenizer), as genrec
    # and SASRec rows are: a rerun reuses them
    return qa_rows(prompts, [ex.target(worked) for ex in examples], tokenizer,
                   user_items=[encoder.item_indices(ex.context.item_ids[-max_items:]) for ex in examples], cache=True)


def train_soft_prompt(data, encoder, train_histories: dict, examples: Sequence, soft: SoftPromptSection,
                      train, *, base_model: str = "smollm2-135m", adapter: str | None = "lora",
                      dtype: str = "fp32", worked: bool = True) -> tuple[Any, dict[str, Any]]:
    """A PersonalLM that answers from ``soft.k`` soft-prompt vectors of ``encoder`` (used as is, not copied):
    build the soft-prompt LLM, text-align the user side on ``train_histories`` (if ``soft.align_epochs``),
    freeze it (``soft.user_lr == 0``), then train on ``examples`` with ``train`` (a QATrainConfig) -> (model,
    report with the QA training report and ``text_align``)."""
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.lm.soft_prompt import build_soft_prompt_lm, text_token_ids
    from llmrec.tasks.uqa import item_title
    from llmrec.training.qa import train_qa
    from llmrec.training.text_align import TextAlignConfig, align_to_text

    texts = anchor_texts(data, soft.anchor_text)
    model, tok, llm = build_soft_prompt_lm(encoder, soft.k, base_model=base_model, adapter=adapter,
                                           max_items=soft.max_items, projector=soft.projector,
                                           anchor_texts=texts if soft.projector == "vocab" else (), dtype=dtype)
    align = None
    if soft.align_epochs:
        align = align_to_text(model, [encoder.item_indices(h.item_ids) for h in train_histories.values()],
                              text_token_ids(tok, texts), TextAlignConfig(epochs=soft.align_epochs, seed=train.seed,
                                                                          sharpness=soft.align_sharpness))
    if soft.user_lr == 0:
        model.freeze_user_modules()
    rows = soft_rows(examples, tok, encoder, soft.k, soft.max_items, worked, data)
    train = dataclasses.replace(train, user_learning_rate=soft.user_lr or None)
    report = train_qa(model, rows, tok.pad_token_id, train)
    model.eval()
    report["text_align"] = {k: v for k, v in align.items() if k != "curve"} if align else None
    titles = {i: item_title(it) for i, it in data.items.items()}
    plm = PersonalLM(llm, tok, None, titles,
                     PersonalLMConfig(base_model=base_model, dtype=dtype, adapter=adapter or "lora"),
                     soft=model, soft_item_ids=data.item_ids)
    return plm, report


def evaluate_soft_prompt(plm, encoder, examples: Sequence, *, worked: bool = True, data=None,
                         max_new_tokens: int = 12) -> dict[str, Any]:
    """Greedy answers of ``plm`` (a soft-prompt PersonalLM over ``encoder``) to ``examples``, scored by
    :func:`~llmrec.tasks.uqa.uqa_accuracy` -> accuracy, mean prompt tokens, seconds per question, predictions."""
    from llmrec.tasks.uqa import uqa_accuracy
    from llmrec.training.qa import generate_answers

    soft, tok = plm.soft, plm.tokenizer
    rows = soft_rows(examples, tok, encoder, soft.user_encoder.k, soft.config.max_items, worked, data)

    def gen(batch, n):
        return soft.generate(batch["input_ids"], batch["attention_mask"], batch["user_item_idx"], max_new_tokens=n,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    preds, seconds = generate_answers(gen, rows, tok, max_new_tokens=max_new_tokens)
    return {"accuracy": uqa_accuracy(preds, examples), "mean_prompt_tokens": sum(rows["prompt_len"]) / max(1, len(rows)),
            "answer_seconds_per_question": seconds, "predictions": preds}


def user_encoder(config: SoftPromptRecipeConfig, data, split):
    """The recipe's user encoder: loaded from ``encoder.path`` or pretrained on ``split`` -> (encoder, report)."""
    import torch

    from llmrec.evaluation.ranking import summaries
    from llmrec.recipes.sasrec import item_vectors_for
    from llmrec.users.pretrain import PretrainConfig, evaluate_examples, train_sequence_model
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    e = config.encoder
    if e.path:
        return SequenceEncoder.load(e.path), {"path": e.path}
    t0 = time.perf_counter()
    vectors = item_vectors_for(data, e.item_vectors)
    enc_cfg = SequenceEncoderConfig(n_items=len(data.items), d_model=e.d_model, n_layers=e.layers, n_heads=e.heads,
                                    max_len=config.soft.max_items, dropout=e.dropout, pooling=e.pooling,
                                    recent_window=config.questions.recent_window,
                                    item_vector_dim=0 if vectors is None else int(vectors.shape[1]))
    torch.manual_seed(config.train.seed)
    pre = train_sequence_model(split, data.item_ids, enc_cfg,
                               PretrainConfig(lr=e.lr, batch_size=e.batch_size, max_epochs=e.epochs,
                                              patience=e.patience, seed=config.train.seed), vectors)
    report = {"test": summaries(evaluate_examples(pre.model, split.test)), "best_epoch": pre.best_epoch,
              "train_seconds": round(time.perf_counter() - t0, 1)}
    return pre.model, report


def run(config: SoftPromptRecipeConfig) -> Path:
    """Pretrain (or load) the encoder, train the soft prompt + LoRA, save to ``config.out``, score test."""
    from llmrec.distributed import is_main
    from llmrec.hardware import resolve_dtype
    from llmrec.io import write_json_atomic
    from llmrec.tasks.uqa import build_uqa, majority_baseline
    from llmrec.training.qa import QATrainConfig

    t0 = time.perf_counter()
    dtype = resolve_dtype(config.dtype)
    t, q = config.train, config.questions
    batch = plan_batch(t.batch_size, t.gradient_accumulation_steps)  # the global batch, whatever the world size
    train_cfg = QATrainConfig(
        output_dir=t.checkpoints or f"{Path(config.out)}.checkpoints", epochs=t.epochs, max_steps=t.max_steps,
        learning_rate=t.lr, batch_size=batch.per_device, grad_accum=batch.accumulation,
        logging_steps=t.logging_steps, save_steps=t.save_steps, report_to=t.report_to,
        time_budget_minutes=t.time_budget, seed=t.seed, compile=t.compile,
    )
    data, split = load_data(config)
    encoder, encoder_report = user_encoder(config, data, split)

    def questions(which: str, n: int) -> list:
        made = build_uqa(data, split=which, tasks=q.tasks or None, seed=t.seed, recent_window=q.recent_window)
        return sample_per_task(made, n, t.seed)

    train_q = questions("train", q.train_per_task)
    plm, report = train_soft_prompt(data, encoder, split.train, train_q, config.soft, train_cfg,
                                    base_model=config.model.base_model, adapter=config.model.adapter, dtype=dtype,
                                    worked=q.worked)
    if not is_main():  # only rank 0 saves, scores test and writes
        return Path(config.out)
    # --out was checked before training (recipes.common.guard_out); saved with its data, the model needs no
    # --data in `llmrec recommend|answer --model DIR`
    out = plm.save(config.out, data=data, overwrite=True)
    results: dict[str, Any] = {"config": config.to_dict(), "encoder_pretraining": encoder_report,
                               "train_questions": len(train_q), "train": report, "dtype": dtype,
                               "batch": batch.record()}
    if q.test_per_task:
        test_q = questions("test", q.test_per_task)
        scored = evaluate_soft_prompt(plm, encoder, test_q, worked=q.worked, data=data)
        results.update(test_questions=len(test_q), majority_baseline=majority_baseline(train_q, test_q),
                       **{k: v for k, v in scored.items() if k != "predictions"})
        logger.info("soft-prompt test: macro accuracy %.4f on %d questions", scored["accuracy"]["macro"], len(test_q))
    results["total_seconds"] = time.perf_counter() - t0
    write_json_atomic(out / "results.json", results)
    write_records(out, config, "soft-prompt", dtype_resolved=dtype)
    return out
