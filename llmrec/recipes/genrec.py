"""`llmrec train genrec`: a generative recommender = a causal LM + LoRA + semantic-ID tokens, trained on the
leave-one-out split (validation NDCG@10 from constrained beam search picks the checkpoint), test scored once.

Semantic IDs come from ``--sids DIR`` (a table from ``llmrec items build``, reused as is) or are built here from
item text and/or a SASRec's item table (collaborative IDs). The output directory is a PersonalLM folder
(``llmrec recommend --model DIR``) plus results.json, config.yaml and run.json. Checkpoints go to
``<out>.checkpoints`` (saving replaces ``out`` as a whole); a killed run resumes from the last complete one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from llmrec.recipes.common import RecipeBase, load_data, write_records
from llmrec.recipes.config import RecipeConfig, opt, section
from llmrec.recipes.multigpu import BatchPlan, plan_batch

logger = logging.getLogger(__name__)

VECTOR_SOURCES = ("text", "collaborative", "text+collaborative")  # = llmrec.items.collaborative (checked in tests)


@dataclasses.dataclass
class GenrecModelConfig(RecipeConfig):
    """The LLM and its adapter (llmrec.lm.personal.PersonalLMConfig)."""

    base_model: str = opt("smollm2-135m", "base causal LM: alias, hub id or local folder")
    adapter: str = opt("lora", "PEFT preset in adapters/ (lora, lora-all-linear, qlora) or a YAML path")
    sid_init: str = opt("centred", "initial SID token rows (llmrec.lm.personal.init_sid_embeddings; the committed "
                                   "genrec results before genrec_centred_ml100k.json used projection)",
                        choices=("projection", "centred", "mean", "random"))
    max_history: int = opt(20, "history items in a prompt")
    user_states: bool = opt(False, "add the frozen SASRec's state after each history item to that item's last "
                                   "SID token embedding (llmrec.lm.user_states)")


@dataclasses.dataclass
class GenrecIdsConfig(RecipeConfig):
    """Semantic IDs built by the recipe (not used with --sids)."""

    vectors: str = opt("text", "what is quantized: item text vectors, a SASRec's item table, or both",
                       choices=VECTOR_SOURCES)
    collaborative_weight: float = opt(1.0, "weight of the collaborative part in text+collaborative")
    quantizer: str = opt("rkmeans", "quantizer", choices=("rkmeans", "rqvae"))
    levels: int = opt(3, "quantized levels (a disambiguation level is added)")
    codebook_size: int = opt(256, "codes per level (maximum)")
    encoder: str = opt("all-minilm-l6-v2", "item text encoder: alias, hub id or local folder")
    encoder_kind: str = opt("encoder", "encoder model kind", choices=("encoder", "causal"))
    sasrec: str | None = opt(None, "a trained SASRec folder (llmrec train sasrec, same data) for collaborative "
                                   "vectors and user states; none = train one with the tuned settings")


@dataclasses.dataclass
class GenrecTrainConfig(RecipeConfig):
    """Fine-tuning (llmrec.training.genrec.GenRecTrainConfig, transformers.Trainer)."""

    lr: float = opt(2e-3, "peak learning rate (cosine schedule)")
    epochs: float = opt(2.0, "training epochs")
    max_steps: int = opt(-1, "stop after this many optimizer steps (-1 = use epochs)")
    batch_size: int = opt(8, "sequences per optimizer step over all processes (the global batch: the same "
                             "whatever the world size; per-device batch and accumulation are derived)")
    gradient_accumulation_steps: int = opt(1, "accumulation steps on one process (its device batch = batch_size / "
                                              "this); more processes accumulate less (llmrec.recipes.multigpu)")
    max_windows: int = opt(3, "history windows per user, newest first (0 = all)")
    context_items: int = opt(0, "overlap windows by N context-only items")
    title_alignment: bool = opt(False, "add item <-> title alignment rows")
    row_workers: int = opt(1, "processes building the training rows (datasets.map num_proc)")
    rows_cache: bool = opt(True, "keep the training rows as Arrow files under the llmrec cache (rows/), reused "
                                 "by a run with the same data, tokenizer, semantic IDs and row settings")
    eval_users: int = opt(200, "validation users scored by beam search at each evaluation")
    eval_steps: int = opt(0, "evaluate (and checkpoint) every N steps (0 = once per epoch)")
    eval_beams: int = opt(10, "beams for validation")
    patience: int = opt(3, "stop after this many evaluations without a better validation NDCG@10")
    save_steps: int = opt(0, "checkpoint every N steps (0 = at each evaluation; else a multiple of eval_steps)")
    logging_steps: int = opt(10, "log the loss every N steps")
    report_to: tuple[str, ...] = opt((), "trackers for transformers.Trainer (e.g. tensorboard,wandb; empty = none)")
    time_budget: float = opt(0.0, "minutes of training before stopping cleanly (0 = no budget)")
    checkpoints: str | None = opt(None, "checkpoint folder (none = <out>.checkpoints); resumed from if present")
    seed: int = opt(0, "seed of the quantizer, the SASRec, SID init and training")
    activation_checkpointing: bool = opt(False, "recompute activations in backward: less memory for larger models "
                                                "(llmrec/recipes/accelerate/README.md)")
    loss: str = opt("full", "next-token loss over the whole vocabulary, or over the semantic-ID tokens only "
                            "(sid: no full-vocabulary logits; decoding then normalises the same way)",
                    choices=("full", "sid"))
    packing: bool = opt(False, "pack each batch's windows into fewer rows (attention kept inside each window)")
    compile: bool = opt(False, "torch.compile each decoder layer for the training steps (~1 min of compilation, "
                               "then faster steps on CPU; needs a C++ compiler)")


@dataclasses.dataclass
class GenrecTestConfig(RecipeConfig):
    """The test score at the end."""

    skip: bool = opt(False, "train and save only (score test later, once a variant is selected on validation)")
    users: int = opt(0, "score only the first N test users (0 = all)")
    beams: int = opt(10, "beams for test recommendation")


@dataclasses.dataclass
class GenrecRecipeConfig(RecipeBase):
    out: str = opt("runs/genrec", "output directory: the PersonalLM folder + results.json (replaced)")
    sids: str | None = opt(None, "reuse this semantic-ID table (llmrec items build --out DIR) instead of building one")
    model: GenrecModelConfig = section(GenrecModelConfig, "the LLM and its adapter")
    ids: GenrecIdsConfig = section(GenrecIdsConfig, "semantic IDs built by the recipe (ignored with --sids)")
    train: GenrecTrainConfig = section(GenrecTrainConfig, "fine-tuning")
    test: GenrecTestConfig = section(GenrecTestConfig, "test scoring")


def collaborative_sasrec(data, split, path: str | None = None, seed: int = 0):
    """The SASRec behind collaborative IDs and user states: loaded from ``path`` (it must have been trained on
    the same split), else trained here on ``split.train`` with the tuned settings."""
    from llmrec.users.pretrain import train_sequence_model, tuned_sasrec_configs
    from llmrec.users.sequence import SequenceEncoder

    if path:
        return SequenceEncoder.load(path)
    model_cfg, pretrain_cfg = tuned_sasrec_configs(len(data.items), seed=seed)
    return train_sequence_model(split, data.item_ids, model_cfg, pretrain_cfg).model


def semantic_id_config(ids: GenrecIdsConfig, seed: int):
    from llmrec.items import SemanticIdConfig
    from llmrec.items.encoders import EncoderConfig
    from llmrec.items.quantizers import QuantizerConfig

    return SemanticIdConfig(
        encoder=EncoderConfig(model=ids.encoder, kind=ids.encoder_kind),
        quantizer=QuantizerConfig(kind=ids.quantizer, levels=ids.levels, codebook_size=ids.codebook_size, seed=seed),
        vectors=ids.vectors, collaborative_weight=ids.collaborative_weight,
    )


def reuse_sids(path: str, data, with_vectors: bool = True):
    """A table from ``llmrec items build`` checked against ``data``'s catalogue, and (``with_vectors``: for the
    projection init) the item text vectors it was built from, re-encoded with its encoder and template (a
    vector-cache hit when it was built on this machine) -> ``(sids, vectors | None, report)``."""
    from llmrec.items import load_built_semantic_ids
    from llmrec.items.encoders import encode_items

    sids, built = load_built_semantic_ids(path, data)
    vectors = None
    if with_vectors and built.vectors != "collaborative":
        vectors = encode_items(data, built.encoder, built.template, show_progress=False)
    report = {"table": str(path), "unique_fraction": sids.unique_fraction, "collision_rate": sids.collision_rate}
    return sids, vectors, report


def train_config(config: GenrecRecipeConfig):
    from llmrec.training.genrec import GenRecTrainConfig

    t = config.train
    batch = plan_batch(t.batch_size, t.gradient_accumulation_steps)  # the global batch, whatever the world size
    return GenRecTrainConfig(
        output_dir=t.checkpoints or f"{Path(config.out)}.checkpoints", epochs=t.epochs, max_steps=t.max_steps,
        learning_rate=t.lr, batch_size=batch.per_device, grad_accum=batch.accumulation,
        max_windows=t.max_windows or None, context_items=t.context_items, title_alignment=t.title_alignment,
        row_workers=t.row_workers, rows_cache=t.rows_cache,
        eval_users=t.eval_users, eval_steps=t.eval_steps, eval_beams=t.eval_beams, save_steps=t.save_steps,
        logging_steps=t.logging_steps, report_to=t.report_to, time_budget_minutes=t.time_budget, seed=t.seed,
        gradient_checkpointing=t.activation_checkpointing, early_stopping_patience=t.patience, loss=t.loss,
        packing=t.packing, compile=t.compile,
    )


def run(config: GenrecRecipeConfig) -> Path:
    """Build or load the SIDs, fine-tune, save the PersonalLM to ``config.out``, score test -> that directory."""
    import torch

    from llmrec.distributed import is_main, world_size
    from llmrec.hardware import resolve_dtype
    from llmrec.io import write_json_atomic
    from llmrec.items import build_semantic_ids
    from llmrec.items.collaborative import collaborative_vectors
    from llmrec.items.encoders import encode_items
    from llmrec.lm.personal import PROJECTED_SID_INITS, PersonalLM, PersonalLMConfig
    from llmrec.training.genrec import evaluate_genrec, train_genrec

    t0 = time.perf_counter()
    seed = config.train.seed
    torch.manual_seed(seed)
    dtype = resolve_dtype(config.dtype)
    train_cfg = train_config(config)  # checks the training settings before any slow step
    data, split = load_data(config)
    needs_sasrec = config.model.user_states or (not config.sids and config.ids.vectors != "text")
    sasrec = collaborative_sasrec(data, split, config.ids.sasrec, seed) if needs_sasrec else None
    if config.sids:
        sids, vectors, sid_report = reuse_sids(config.sids, data,
                                               with_vectors=config.model.sid_init in PROJECTED_SID_INITS)
    else:
        sid_cfg = semantic_id_config(config.ids, seed)
        vectors = encode_items(data, sid_cfg.encoder, sid_cfg.template, show_progress=False)
        collab = None if sasrec is None or sid_cfg.vectors == "text" else collaborative_vectors(sasrec, list(data.items))
        sids, report = build_semantic_ids(data, sid_cfg, vectors=vectors, collaborative=collab, show_progress=False)
        sid_report = {k: report[k] for k in ("unique_fraction", "collision_rate", "utilization")}
    m = config.model
    plm_cfg = PersonalLMConfig(base_model=m.base_model, dtype=dtype, adapter=m.adapter, sid_init=m.sid_init,
                               max_history=m.max_history, seed=seed)
    plm = PersonalLM.create(sids, data.items, plm_cfg, item_vectors=vectors, vocabulary=data.vocabulary)
    if m.user_states:
        plm.attach_user_states(sasrec)
    report = train_genrec(plm, split.train, split.valid, train_cfg)
    results = {"config": config.to_dict(), "semantic_ids": sid_report, "train": report, "dtype": dtype,
               "batch": BatchPlan(config.train.batch_size, world_size(), train_cfg.batch_size,
                                  train_cfg.grad_accum).record()}
    if not config.test.skip:  # every process decodes its block of the test users (llmrec.distributed)
        test = split.test[: config.test.users] if config.test.users else split.test
        summary, _, per_user = evaluate_genrec(plm, test, beams=config.test.beams, show_progress=is_main())
        results.update(test=summary, test_users=len(test), decode_seconds_per_user=per_user)
        logger.info("genrec test: %s", json.dumps(summary))
    if not is_main():  # only rank 0 writes
        return Path(config.out)
    # --out was checked before training (recipes.common.guard_out); saved with its data, the model needs no
    # --data in `llmrec recommend|answer --model DIR`
    out = plm.save(config.out, data=data, overwrite=True)
    results["total_seconds"] = time.perf_counter() - t0
    write_json_atomic(out / "results.json", results)
    write_records(out, config, "genrec", dtype_resolved=dtype)
    return out
