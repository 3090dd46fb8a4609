"""Compare a recipe run's figures with the committed ones they should reproduce -> one results JSON.

    python scripts/compare_recipe_run.py --run adapters/trained/uqa-soft-profile-k8-s20-worked \
        --reproduced accuracy --committed eval/results/uqa_worked_ml100k.json:runs.2.variants.soft_k8.accuracy \
        --command "llmrec train soft-prompt --config smollm2-135m/soft-prompt" --out eval/results/X.json

``--reproduced`` / ``--committed`` are dotted paths (list indices as numbers) into the run's ``results.json`` and
into a committed results file. The output holds both subtrees, the difference of every number they share, the
run's ``config.yaml`` name and its ``run.json`` (machine facts, versions, resolved config, written by the recipe).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def pick(tree: Any, dotted: str, where: str) -> Any:
    node = tree
    for key in [k for k in dotted.split(".") if k]:
        try:
            node = node[int(key)] if isinstance(node, list) else node[key]
        except (KeyError, IndexError, ValueError, TypeError):
            raise SystemExit(f"{where}: no {key!r} on the path {dotted!r}") from None
    return node


def differences(ours: Any, theirs: Any, prefix: str = "") -> dict[str, float]:
    """``{dotted leaf: ours - theirs}`` for every number both trees have at the same place."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out: dict[str, float] = {}
        for key in sorted(ours.keys() & theirs.keys()):
            out.update(differences(ours[key], theirs[key], f"{prefix}{key}."))
        return out
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(theirs, numbers) and not isinstance(ours, bool):
        return {prefix.rstrip("."): round(float(ours) - float(theirs), 6)}
    return {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the recipe's output folder (results.json, run.json)")
    p.add_argument("--reproduced", default="", help="dotted path into the run's results.json")
    p.add_argument("--committed", required=True, help="FILE.json:dotted.path of the committed figures")
    p.add_argument("--command", required=True, help="the command that produced --run")
    p.add_argument("--what", default="", help="one line saying what is compared")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=RUNPATH:COMMITTEDFILE:PATH",
                   help="another pair to compare, e.g. encoder=encoder_pretraining.test:FILE.json:encoder_pretraining.test")
    p.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                   help="another run folder of the same recipe to record beside it (its results at --reproduced, "
                        "its training report and run.json), e.g. the same config with other settings")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from llmrec.io import write_json_atomic

    run = Path(args.run)
    results = json.loads((run / "results.json").read_text())
    file, _, path = args.committed.partition(":")
    ours = pick(results, args.reproduced, str(run / "results.json"))
    theirs = pick(json.loads(Path(file).read_text()), path, file)
    out: dict[str, Any] = {
        "what": args.what, "command": args.command, "run_folder": str(run),
        "reproduced": ours, "committed": {"source": args.committed, "figures": theirs},
        "difference": differences(ours, theirs),
    }
    for spec in args.extra:
        name, _, rest = spec.partition("=")
        run_path, cfile, cpath = rest.split(":", 2)
        mine, committed = pick(results, run_path, str(run)), pick(json.loads(Path(cfile).read_text()), cpath, cfile)
        out[name] = {"reproduced": mine, "committed": {"source": f"{cfile}:{cpath}", "figures": committed},
                     "difference": differences(mine, committed)}
    for spec in args.also:
        name, _, folder = spec.partition("=")
        other = json.loads((Path(folder) / "results.json").read_text())
        out[name] = {"run_folder": folder, "reproduced": pick(other, args.reproduced, folder),
                     "difference": differences(pick(other, args.reproduced, folder), theirs),
                     "train": other.get("train"), "config": other.get("config"),
                     "run": json.loads((Path(folder) / "run.json").read_text())}
    out["run"] = json.loads((run / "run.json").read_text())
    write_json_atomic(args.out, out)
    print(json.dumps(out["difference"], indent=1))


if __name__ == "__main__":
    main()
