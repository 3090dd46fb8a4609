"""SID row initialisation and the early loss plateau of genrec training: ``projection`` vs ``centred``, paired seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/bench_sid_init.py --seeds 0 1 2 --steps 300 --eval-steps 150 \
        --work runs/sid_init --out eval/results/genrec_sid_init_ml100k.json

With ``projection`` the new SID rows are nearly parallel (pairwise cosine ~0.95 on SmolLM2 against ~0.45 between
ordinary tokens), and training sits at the codes' marginal entropy (loss ~4.9) for 100-400 steps before it starts
to use the history. For every seed, both inits train ``--config`` for ``--steps`` steps with the same semantic-ID
table, seed and budget (``llmrec train genrec --model.sid_init I --train.seed S --sids T``, test skipped):
validation NDCG@10 at each evaluation, the logged loss curve and the first logged step below ``--exit-loss`` (the
end of the plateau). Also the initial rows' mean pairwise cosine per init next to the vocabulary's. Each run's
folder is kept under ``--work``: a finished run is not rerun, so rerunning the command continues.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path


def plateau_exit(loss_curve: list[list[float]], exit_loss: float) -> int | None:
    """The first logged step whose training loss is below ``exit_loss`` (None: still on the plateau)."""
    return next((int(step) for step, loss in loss_curve if loss < exit_loss), None)


def summarise(runs: dict[str, dict[str, dict]], inits: list[str], exit_loss: float) -> dict:
    """Per init: mean validation NDCG@10 at each evaluated step and median plateau exit over the seeds all inits
    finished; per-seed paired differences of the later inits against the first."""
    seeds = sorted(set.intersection(*(set(runs.get(i, {})) for i in inits)), key=int) if inits else []
    out: dict = {"seeds": seeds, "exit_loss": exit_loss, "inits": {}}
    if not seeds:
        return out
    for init in inits:
        per_seed = [runs[init][s] for s in seeds]
        steps = sorted({int(p["step"]) for r in per_seed for p in r["valid_curve"]})
        valid = {str(st): statistics.mean(next(p["eval_ndcg_at_10"] for p in r["valid_curve"] if int(p["step"]) == st)
                                          for r in per_seed) for st in steps}
        exits = [plateau_exit(r["loss_curve"], exit_loss) for r in per_seed]
        out["inits"][init] = {"mean_valid_ndcg@10": valid, "plateau_exit_steps": exits,
                              "median_plateau_exit": statistics.median(e for e in exits if e is not None)
                              if any(e is not None for e in exits) else None}
    base = inits[0]
    out["paired_vs_" + base] = {
        init: {s: {str(p["step"]): round(p["eval_ndcg_at_10"] - q["eval_ndcg_at_10"], 6)
                   for p, q in zip(runs[init][s]["valid_curve"], runs[base][s]["valid_curve"], strict=True)}
               for s in seeds}
        for init in inits[1:]}
    return out


def row_geometry(config: str, sids_dir: str, inits: list[str]) -> dict:
    """Mean pairwise cosine of the new SID rows per init and of 768 sampled vocabulary rows (fp32)."""
    import torch

    from llmrec.data import load_dataset
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.recipes.config import load_config
    from llmrec.recipes.genrec import GenrecRecipeConfig, reuse_sids

    def mean_cos(rows: torch.Tensor) -> float:
        unit = torch.nn.functional.normalize(rows.float(), dim=-1)
        cos = unit @ unit.T
        return round(float(cos[~torch.eye(len(rows), dtype=torch.bool)].mean()), 4)

    base_model = load_config(GenrecRecipeConfig, config).model.base_model
    data = load_dataset("ml-100k")
    sids, vectors, _ = reuse_sids(sids_dir, data)
    out: dict = {}
    for init in inits:
        plm = PersonalLM.create(sids, data.items, PersonalLMConfig(base_model=base_model, dtype="fp32", sid_init=init),
                                item_vectors=vectors, vocabulary=data.vocabulary)
        weight = plm.model.get_input_embeddings().weight.detach()
        out[init] = mean_cos(weight[plm.sid_token_ids])
    # the base vocabulary's rows are the same whichever init built the model
    sample = torch.randperm(plm.sid_token_ids[0], generator=torch.Generator().manual_seed(0))[:768]
    out["vocabulary_sample"] = mean_cos(weight[sample])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smollm2-135m/genrec")
    p.add_argument("--inits", nargs="+", default=["projection", "centred"])
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-steps", type=int, default=150)
    p.add_argument("--exit-loss", type=float, default=4.0)
    p.add_argument("--sids", default="", help="a built SID table; default: the first run builds the config's own")
    p.add_argument("--work", default="runs/sid_init")
    p.add_argument("--out", default="eval/results/genrec_sid_init_ml100k.json")
    args = p.parse_args(argv)

    from llmrec.cli import main as cli
    from llmrec.hardware import machine_facts, resolve_dtype
    from llmrec.io import write_json_atomic
    from llmrec.runinfo import package_versions

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/bench_sid_init.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    common = ["--config", args.config, "--threads", "1", "--train.max_steps", str(args.steps),
              "--train.eval_steps", str(args.eval_steps), "--test.skip", "true"]
    sids_dir = args.sids
    runs: dict[str, dict[str, dict]] = {}
    geometry: dict = {}

    def write() -> None:  # after every run, so an interrupted measurement leaves what it has
        write_json_atomic(args.out, {
            "benchmark": "SID row initialisation vs the early loss plateau of genrec training (issue 18: time to "
                         "quality), paired seeds, same SID table and budget",
            "command": command,
            "protocol": {"recipe_args": common, "inits": args.inits, "seeds": args.seeds, "sids": sids_dir,
                         "dtype": resolve_dtype("auto", announce=False), "threads": 1,
                         "note": "validation = NDCG@10 of 10-beam constrained search on the config's sampled "
                                 "validation users; test not scored"},
            "initial_row_cosine": geometry,
            "summary": summarise(runs, args.inits, args.exit_loss),
            "runs": runs,
            "machine": machine_facts(),
            "versions": package_versions(),
        })

    for seed in args.seeds:
        for init in args.inits:
            out = work / f"{init}-s{seed}"
            if not (out / "results.json").exists():
                table = ["--sids", sids_dir] if sids_dir else []
                cli(["train", "genrec", *common, *table, "--model.sid_init", init, "--train.seed", seed,
                     "--out", str(out)])
            if not sids_dir:
                sids_dir = str(out / "sids")
            rep = json.loads((out / "results.json").read_text())["train"]
            runs.setdefault(init, {})[seed] = {
                "valid_curve": [{k: p[k] for k in ("step", "eval_ndcg_at_10", "eval_recall_at_10")}
                                for p in rep["valid_curve"]],
                "loss_curve": rep["loss_curve"], "train_seconds": rep["train_seconds"],
                "plateau_exit_step": plateau_exit(rep["loss_curve"], args.exit_loss)}
            write()
    geometry.update(row_geometry(args.config, sids_dir, args.inits))
    write()
    print(json.dumps(summarise(runs, args.inits, args.exit_loss)["inits"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
