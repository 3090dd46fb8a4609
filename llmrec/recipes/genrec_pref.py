"""`llmrec train genrec-pref`: preference alignment of a supervised generative recommender with trl, offline
(``--method dpo``, DPOTrainer) or online (``--method grpo``, GRPOTrainer with the model's own beams as rollouts).

Starts from a saved PersonalLM (``--init DIR``, from ``llmrec train genrec``). DPO: for training users, chosen = the
true next training item's semantic ID, rejected = the highest-ranked wrong items of the model's own constrained
beams (and, with ``--sasrec DIR``, a SASRec's top items); never the target, never the user's own items (so never
their validation/test items); the frozen supervised model is the reference. GRPO: each training position's group is
the model's current top beams (the true item put in when missed, ``--grpo.guided``), rewarded by hit or rank
(:mod:`llmrec.training.grpo`). Either way the LoRA and the SID rows train; validation NDCG@10 from beam search
picks the checkpoint (the supervised model is a candidate too), test is scored once. The output is a PersonalLM
folder (``llmrec recommend --model DIR``) plus results.json, config.yaml and run.json; checkpoints go to
``<out>.checkpoints`` and a killed run resumes from the last one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from llmrec.recipes.common import RecipeBase, subset_users, write_records
from llmrec.recipes.common import load_data as load_recipe_data
from llmrec.recipes.config import RecipeConfig, opt, section

logger = logging.getLogger(__name__)
MARGIN_PAIRS = 512  # training pairs whose log-probability margin is reported before and after


@dataclasses.dataclass
class GenrecPrefPairsConfig(RecipeConfig):
    """Preference pairs (llmrec.training.preference.PairConfig)."""

    users: int = opt(0, "training users that get pairs (0 = all), a seeded sample")
    positions: int = opt(1, "training positions per user, newest first (1 = the last training item is the target)")
    beam_negatives: int = opt(3, "rejected items per prompt: the model's highest-ranked wrong beams")
    sasrec_negatives: int = opt(0, "rejected items per prompt from the SASRec's top items (needs --sasrec)")
    beams: int = opt(10, "beam width of the rollouts the negatives come from")


@dataclasses.dataclass
class GenrecPrefTrainConfig(RecipeConfig):
    """DPO (trl DPOTrainer; llmrec.training.preference.GenrecPrefTrainConfig)."""

    beta: float = opt(0.1, "DPO beta (strength of the pull towards the supervised reference, inverted)")
    loss_type: tuple[str, ...] = opt(("sigmoid",), "trl DPO loss type(s), e.g. sigmoid or sigmoid,sft")
    loss_weights: tuple[float, ...] = opt((), "one weight per loss_type (empty = 1 each), e.g. 1,0.5")
    lr: float = opt(1e-4, "peak learning rate (cosine schedule)")
    epochs: float = opt(1.0, "epochs over the pairs")
    max_steps: int = opt(-1, "stop after this many optimizer steps (-1 = use epochs)")
    batch_size: int = opt(8, "pairs per device batch")
    gradient_accumulation_steps: int = opt(1, "batches per optimizer step")
    eval_users: int = opt(200, "validation users scored by beam search at each evaluation")
    eval_steps: int = opt(0, "evaluate (and checkpoint) every N steps (0 = once per epoch)")
    eval_beams: int = opt(10, "beams for validation")
    logging_steps: int = opt(10, "log the DPO loss every N steps")
    report_to: tuple[str, ...] = opt((), "trackers for transformers.Trainer (empty = none)")
    time_budget: float = opt(0.0, "minutes of training before stopping cleanly (0 = no budget)")
    checkpoints: str | None = opt(None, "checkpoint folder (none = <out>.checkpoints); resumed from if present")
    seed: int = opt(0, "seed of the user sample, the validation sample and training")


@dataclasses.dataclass
class GenrecPrefGrpoConfig(RecipeConfig):
    """GRPO with beam rollouts (``--method grpo``; trl GRPOTrainer; llmrec.training.grpo.GenrecGrpoConfig). The
    training positions come from ``pairs.users`` / ``pairs.positions``; lr, epochs, max_steps, evaluation, logging,
    time budget, checkpoints and seed from ``train``."""

    generations: int = opt(8, "completions per training position (the group): the model's top beams")
    guided: bool = opt(False, "the true item replaces the last beam when the beams missed it (a signal in every "
                              "group; on ml-100k it lowered validation NDCG@10)")
    reward: str = opt("hit", "hit (1 for the true item) or rank (also -1/log2(r+1) for a wrong item at beam r)",
                      choices=("hit", "rank"))
    beams: int = opt(0, "beam width of the rollouts (0 = generations)")
    prompts_per_step: int = opt(8, "training positions per optimizer step")
    micro_prompts: int = opt(2, "positions per forward/backward (times generations sequences)")
    loss_type: str = opt("dapo", "trl GRPO loss type (dapo, grpo, dr_grpo, ...)")
    beta: float = opt(0.0, "KL coefficient to the supervised model (0 = none)")


@dataclasses.dataclass
class GenrecPrefTestConfig(RecipeConfig):
    """The test score at the end."""

    skip: bool = opt(False, "train and save only")
    users: int = opt(0, "score only the first N test users (0 = all)")
    beams: int = opt(10, "beams for test recommendation")


@dataclasses.dataclass
class GenrecPrefRecipeConfig(RecipeBase):
    data: str | None = opt(None, "dataset (a built-in name, a dataset config file or a MovieLens folder); none = the "
                                 "one the --init model was trained on")
    out: str = opt("runs/genrec-pref", "output directory: the aligned PersonalLM folder + results.json (replaced)")
    init: str | None = opt(None, "the supervised PersonalLM folder to align (llmrec train genrec --out DIR)")
    sasrec: str | None = opt(None, "a trained SASRec folder (llmrec train sasrec, same data) for extra negatives")
    method: str = opt("dpo", "dpo: offline pairs, trl DPOTrainer; grpo: online beam rollouts, trl GRPOTrainer",
                      choices=("dpo", "grpo"))
    pairs: GenrecPrefPairsConfig = section(GenrecPrefPairsConfig, "preference pairs (grpo: users, positions only)")
    train: GenrecPrefTrainConfig = section(GenrecPrefTrainConfig, "training (DPO; shared leaves for grpo)")
    grpo: GenrecPrefGrpoConfig = section(GenrecPrefGrpoConfig, "GRPO (--method grpo)")
    test: GenrecPrefTestConfig = section(GenrecPrefTestConfig, "test scoring")


def library_configs(config: GenrecPrefRecipeConfig):
    """The recipe's sections as the library's configs -> ``(PairConfig, GenrecPrefTrainConfig)`` (checked early)."""
    from llmrec.training import preference as pref

    p, t = config.pairs, config.train
    pairs = pref.PairConfig(users=p.users, positions=p.positions, beam_negatives=p.beam_negatives,
                            sasrec_negatives=p.sasrec_negatives, beams=p.beams, seed=t.seed)
    train = pref.GenrecPrefTrainConfig(
        output_dir=t.checkpoints or f"{Path(config.out)}.checkpoints", beta=t.beta, loss_type=t.loss_type,
        loss_weights=t.loss_weights or None,
        epochs=t.epochs, max_steps=t.max_steps, learning_rate=t.lr, batch_size=t.batch_size,
        grad_accum=t.gradient_accumulation_steps, eval_users=t.eval_users, eval_steps=t.eval_steps,
        eval_beams=t.eval_beams, logging_steps=t.logging_steps, report_to=t.report_to,
        time_budget_minutes=t.time_budget, seed=t.seed,
    )
    return pairs, train


def grpo_config(config: GenrecPrefRecipeConfig):
    """The recipe's ``grpo`` section and the shared ``train`` leaves as the library's GenrecGrpoConfig."""
    from llmrec.training.grpo import GenrecGrpoConfig

    g, t = config.grpo, config.train
    return GenrecGrpoConfig(
        output_dir=t.checkpoints or f"{Path(config.out)}.checkpoints", generations=g.generations, guided=g.guided,
        reward=g.reward, beams=g.beams, prompts_per_step=g.prompts_per_step, micro_prompts=g.micro_prompts,
        loss_type=g.loss_type, beta=g.beta, epochs=t.epochs, max_steps=t.max_steps, learning_rate=t.lr,
        eval_users=t.eval_users, eval_steps=t.eval_steps, eval_beams=t.eval_beams, logging_steps=t.logging_steps,
        report_to=t.report_to, time_budget_minutes=t.time_budget, seed=t.seed,
    )


def load_data(config: GenrecPrefRecipeConfig, plm):
    """``config.data``, else the dataset the ``--init`` model recorded (first ``config.users`` users) -> ``(data,
    leave-one-out split)``, the split columnar as in the other recipes."""
    from llmrec.data.split_view import columnar_split
    from llmrec.errors import ConfigError
    from llmrec.hardware import set_threads

    if config.data:
        return load_recipe_data(config)
    set_threads(config.threads)
    data = plm.load_dataset()
    if data is None:
        raise ConfigError(f"{config.init} does not record its dataset: pass --data NAME|CONFIG")
    data = subset_users(data, config.users)
    return data, columnar_split(data, "leave_one_out")


def check_catalogue(plm, data) -> None:
    """Every item of ``data`` must have a semantic ID in ``plm`` (the model was trained on this catalogue)."""
    from llmrec.errors import DataError

    missing = [i for i in data.items if i not in plm.item_row]
    if missing:
        raise DataError(f"{len(missing)} item(s) of the data have no semantic ID in the --init model, e.g. "
                        f"{missing[0]!r}: align on the dataset the model was trained on", record=missing[0],
                        field="item_ids")


def run(config: GenrecPrefRecipeConfig) -> Path:
    """Load ``--init``, build pairs, DPO, save the aligned PersonalLM to ``config.out``, score test -> that directory."""
    import torch

    from llmrec.errors import ConfigError
    from llmrec.hardware import resolve_dtype
    from llmrec.io import write_json_atomic
    from llmrec.lm.personal import PersonalLM
    from llmrec.training.genrec import evaluate_genrec
    from llmrec.training.preference import (
        build_preference_pairs,
        pair_margins,
        preference_prompts,
        train_genrec_pref,
    )

    t0 = time.perf_counter()
    if not config.init:
        raise ConfigError("genrec-pref needs --init DIR: a supervised PersonalLM (llmrec train genrec --out DIR)")
    pair_cfg, train_cfg = library_configs(config)
    grpo_cfg = grpo_config(config) if config.method == "grpo" else None  # checked before the model loads
    if grpo_cfg is not None and config.sasrec:
        raise ConfigError("--sasrec gives DPO negatives; --method grpo takes its groups from the model's own beams")
    if pair_cfg.sasrec_negatives and not config.sasrec:
        raise ConfigError("pairs.sasrec_negatives > 0 needs --sasrec DIR")
    torch.manual_seed(config.train.seed)
    dtype = resolve_dtype(config.dtype)
    plm = PersonalLM.load(config.init, dtype=dtype)
    data, split = load_data(config, plm)
    check_catalogue(plm, data)
    sasrec = None
    if config.sasrec:
        from llmrec.users.sequence import SequenceEncoder

        sasrec = SequenceEncoder.load(config.sasrec)
    held_out: dict[str, set[str]] = {}
    for e in split.valid + split.test:
        held_out.setdefault(e.user_id, set()).add(e.target)
    prompts = preference_prompts(split.train, held_out, positions=pair_cfg.positions, users=pair_cfg.users,
                                 seed=pair_cfg.seed)
    if grpo_cfg is not None:
        from llmrec.training.grpo import train_genrec_grpo
        from llmrec.training.preference import completion_logps

        probe = prompts[:MARGIN_PAIRS]  # the objective's own progress: log p(true item) on training positions
        args = ([p.history for p in probe], [p.target for p in probe])
        logp_before = completion_logps(plm, *args)
        report = train_genrec_grpo(plm, prompts, split.valid, grpo_cfg)
        logp_after = completion_logps(plm, *args)
        report["target_logp"] = {"positions": len(probe), "before": float(logp_before.mean()),
                                 "after": float(logp_after.mean())}
        pair_report = None
    else:
        pairs, pair_report = build_preference_pairs(plm, prompts, pair_cfg, sasrec=sasrec)
        logger.info("preference pairs: %s", json.dumps(pair_report))
        probe = pairs[:MARGIN_PAIRS]  # the DPO objective's own progress, on (a fixed slice of) the training pairs
        margin_before = pair_margins(plm, probe)
        report = train_genrec_pref(plm, pairs, split.valid, train_cfg)
        margin_after = pair_margins(plm, probe)
        report["pair_margin"] = {"pairs": len(probe), "before": float(margin_before.mean()),
                                 "after": float(margin_after.mean()),
                                 "chosen_preferred_before": float((margin_before > 0).mean()),
                                 "chosen_preferred_after": float((margin_after > 0).mean())}
    out = plm.save(config.out, data=data)  # same folder format: `llmrec recommend --model DIR` works
    results = {"config": config.to_dict(), "init": config.init, "method": config.method, "pairs": pair_report,
               "train": report, "dtype": dtype}
    if not config.test.skip:
        test = split.test[: config.test.users] if config.test.users else split.test
        summary, _, per_user = evaluate_genrec(plm, test, beams=config.test.beams, show_progress=True)
        results.update(test=summary, test_users=len(test), decode_seconds_per_user=per_user)
        logger.info("genrec-pref test: %s", json.dumps(summary))
    results["total_seconds"] = time.perf_counter() - t0
    write_json_atomic(out / "results.json", results)
    write_records(out, config, "genrec-pref", dtype_resolved=dtype)
    return out
