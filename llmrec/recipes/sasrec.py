"""`llmrec train sasrec`: the SASRec-style next-item encoder (full cross-entropy over the catalogue), trained on the
leave-one-out split with early stopping on validation NDCG@10 (rated items removed), test scored under both
protocols. The defaults are the settings tuned on ml-100k validation (architecture and lr:
eval/results/baselines_ml100k.json; training budget: eval/results/sasrec_tuning_ml100k.json).

The output directory is a :class:`~llmrec.users.sequence.SequenceEncoder` folder (config.json, model.safetensors,
items.json, meta.json with the training config and curves) plus metrics.json, config.yaml and run.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from llmrec.recipes.common import RecipeBase, load_data, write_records
from llmrec.recipes.config import RecipeConfig, opt, section

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SasrecModelConfig(RecipeConfig):
    """Architecture (llmrec.users.sequence.SequenceEncoderConfig)."""

    d_model: int = opt(64, "hidden size")
    layers: int = opt(2, "transformer layers")
    heads: int = opt(2, "attention heads")
    dropout: float = opt(0.5, "dropout")
    max_len: int = opt(50, "most recent items the encoder reads")
    ratings: bool = opt(False, "add a rating embedding (5 levels)")
    item_vectors: str = opt("none", "add frozen MiniLM item text vectors to the ID embedding",
                            choices=("none", "minilm"))


@dataclasses.dataclass
class SasrecTrainConfig(RecipeConfig):
    """Optimisation (llmrec.users.pretrain.PretrainConfig)."""

    lr: float = opt(3e-3, "AdamW learning rate")
    weight_decay: float = opt(0.1, "AdamW weight decay")
    batch_size: int = opt(32, "sequences per batch")
    epochs: int = opt(200, "maximum epochs")
    patience: int = opt(30, "stop after this many epochs without a better validation NDCG@10")
    windows: str = opt("all", "train on every max_len+1 window of a history, or on its last one only",
                       choices=("all", "last"))
    seed: int = opt(0, "random seed")
    fast: bool = opt(True, "the fast training path (cheap dropout, fused catalogue loss, bf16 matmuls where the "
                            "CPU runs them natively, see --dtype): the same model and objective, another random "
                            "stream; false = the reference path")
    valid_from: int = opt(1, "first epoch scored on validation (earlier epochs only train)")
    schedule: str = opt("constant", "learning rate over training: constant, or linear warm-up then a half cosine "
                                    "to 0 at the last epoch", choices=("constant", "cosine"))
    warmup_epochs: float = opt(0.0, "epochs of linear learning-rate warm-up")


@dataclasses.dataclass
class SasrecRecipeConfig(RecipeBase):
    out: str = opt("runs/sasrec", "output directory: the SequenceEncoder folder + metrics.json (replaced)")
    dtype: str = opt("auto", "matrix-multiply dtype of --train.fast (auto: bf16 where the CPU runs it natively); "
                     "the reference path always trains in fp32", choices=("auto", "fp32", "bf16"))
    model: SasrecModelConfig = section(SasrecModelConfig, "architecture")
    train: SasrecTrainConfig = section(SasrecTrainConfig, "training")


def item_vectors_for(data, kind: str):
    """Frozen item text vectors for the encoder (``minilm``) or None (``none``)."""
    if kind == "none":
        return None
    import torch

    from llmrec.items.encoders import encode_items

    return torch.from_numpy(encode_items(data, show_progress=False))


def encoder_configs(config: SasrecRecipeConfig, n_items: int, item_vector_dim: int = 0):
    """The library configs this recipe config stands for -> ``(SequenceEncoderConfig, PretrainConfig)``."""
    from llmrec.users.pretrain import PretrainConfig
    from llmrec.users.sequence import SequenceEncoderConfig

    m, t = config.model, config.train
    return (
        SequenceEncoderConfig(n_items=n_items, d_model=m.d_model, n_layers=m.layers, n_heads=m.heads,
                              max_len=m.max_len, dropout=m.dropout, n_rating_levels=5 if m.ratings else 0,
                              item_vector_dim=item_vector_dim),
        PretrainConfig(lr=t.lr, weight_decay=t.weight_decay, batch_size=t.batch_size, max_epochs=t.epochs,
                       patience=t.patience, windows=t.windows, seed=t.seed, fast=t.fast,
                       dtype=config.dtype if t.fast else "fp32", valid_from=t.valid_from, schedule=t.schedule,
                       warmup_epochs=t.warmup_epochs),
    )


def run(config: SasrecRecipeConfig) -> Path:
    """Train, score test once, save the encoder to ``config.out`` -> that directory."""
    from llmrec.distributed import is_main
    from llmrec.evaluation.ranking import summaries
    from llmrec.io import write_json_atomic
    from llmrec.users.pretrain import evaluate_examples, train_sequence_model

    data, split = load_data(config)
    vectors = item_vectors_for(data, config.model.item_vectors)
    model_cfg, train_cfg = encoder_configs(config, len(data.items), 0 if vectors is None else int(vectors.shape[1]))
    result = train_sequence_model(split, data.item_ids, model_cfg, train_cfg, vectors)
    t0 = time.perf_counter()
    test_res = evaluate_examples(result.model, split.test)
    ci = {f"{p}/{m}": [round(x, 4) for x in test_res[p].ci(m)] for p in test_res for m in ("recall@10", "ndcg@10")}
    metrics = {
        "valid_rated_removed": {k: round(v, 4) for k, v in result.best_valid.items()},
        "test": summaries(test_res), "test_ci95_bootstrap": ci, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "train_wall_s": round(result.wall_s, 1),
        "test_eval_s": round(time.perf_counter() - t0, 2),
    }
    out = Path(config.out)
    if not is_main():  # under a launcher every rank trains the same model and shares the test ranking; one writes
        return out
    result.model.save(out, extra={"train_config": train_cfg.to_dict(), "history": result.history,
                                  "item_vectors": config.model.item_vectors, "data": config.data})
    write_json_atomic(out / "metrics.json", metrics)
    write_records(out, config, "sasrec")
    logger.info("sasrec: %s", json.dumps({"test": metrics["test"], "best_epoch": result.best_epoch}))
    return out
