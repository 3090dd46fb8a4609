"""`llmrec eval ...`: ls, validate, score, run, report."""

from __future__ import annotations

import argparse

from llmrec.cli_args import add_hardware_args, apply_hardware_args, bounded_int, positive_int
from llmrec.errors import ConfigError
from llmrec.io import dumps_json

MAX_BOOT = 100_000  # as llmrec.evaluation.runner.MAX_BOOT (not imported: --help stays free of numpy)
N_BOOT = bounded_int(0, MAX_BOOT)


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="the LaMP-style evaluation harness").add_subparsers(dest="command", required=True)

    p = ev.add_parser("ls", help="list tasks and groups")
    p.add_argument("--include-path", action="append", default=[], help="extra folder of task YAML files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_ls)

    p = ev.add_parser("validate", help="check every task YAML (unknown keys, metrics, prompts); exit 2 on errors")
    p.add_argument("--include-path", action="append", default=[])
    p.set_defaults(func=_validate)

    p = ev.add_parser("score", help="score a predictions file against golds (LaMP format), no model")
    p.add_argument("--task", required=True, help="LaMP_1..LaMP_7 or a task name such as ml100k_rating")
    p.add_argument("--golds", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--mode", choices=["lamp", "lenient"], default=None, help="default: the task's scoring mode")
    p.add_argument("--n-boot", type=N_BOOT, default=1000, help=f"bootstrap resamples for CIs (0 = none; at most {MAX_BOOT})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include-path", action="append", default=[])
    p.add_argument("--data", metavar="NAME|CONFIG",
                   help="the dataset the predictions are for, where the task takes its labels or rating scale from "
                   "it (next_category, rating; default: the task file's)")
    p.set_defaults(func=_score)

    p = ev.add_parser("run", help="evaluate a model and/or baselines on tasks")
    p.add_argument("--model", action="append", default=[],
                   help="HF model id / folder ('smollm2-135m' = offline default), a PersonalLM directory, "
                   "sasrec:DIR (a trained SASRec, rank_items tasks) or baseline:KIND; repeat it to put several "
                   "models side by side on the same examples")
    p.add_argument("--tasks", required=True, help="comma-separated task or group names")
    p.add_argument("--data", metavar="NAME|CONFIG",
                   help="run the tasks on this dataset ('ml-100k', a dataset config .yaml/.json or a folder) instead "
                   "of the one each task file names (every task but LaMP's); e.g. --tasks personal --data shop.yaml")
    p.add_argument("--dataset", dest="data", help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, help="output folder (results.json, predictions, cache, report.html)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing file or a non-empty folder llmrec did not write at --out (refused "
                   "without it; an earlier eval output there is reused, its cache resumed)")
    p.add_argument("--limit", type=positive_int, help="first N examples per task (after --sample)")
    p.add_argument("--sample", type=positive_int, help="seeded subset of N examples per task")
    p.add_argument("--retriever", default="", help="comma-separated: none,bm25,dense,recency,random (variants)")
    p.add_argument("--k", default="", help="comma-separated profile sizes, e.g. 1,3,5")
    p.add_argument("--max-tokens", type=positive_int, help="token budget of the retrieved profile (whitespace tokens)")
    p.add_argument("--method", choices=["auto", "generate", "score_options"])
    p.add_argument("--baselines", default="", help="comma-separated: user-mean,global-mean,majority,user-majority,popularity")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--mode", choices=["lamp", "lenient"], help="scoring mode override")
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset argument for the tasks, e.g. questions=dev_questions.json outputs=dev_outputs.json")
    p.add_argument("--include-path", action="append", default=[])
    p.add_argument("--n-boot", type=N_BOOT, default=1000, help=f"bootstrap resamples (0..{MAX_BOOT})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-report", action="store_true")
    add_hardware_args(p)
    p.set_defaults(func=_run)

    p = ev.add_parser("report", help="(re)write the HTML report of a results.json")
    p.add_argument("results")
    p.add_argument("--out", help="default: report.html beside the results")
    p.add_argument("--overwrite", action="store_true", help="replace a file at --out that is not an llmrec report")
    p.set_defaults(func=_report)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _csv_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in _csv(text))
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ConfigError(f"{option} values must be >= 1 (use --retriever none for no profile), got {text!r}")
    return values


def _ls(args: argparse.Namespace) -> int:
    from llmrec.evaluation.tasks import load_registry

    reg = load_registry(args.include_path)
    rows = [{"name": t.task, "kind": "task", "output": t.output.type, "metrics": list(t.metrics),
             "description": t.description, "source": t.source} for t in reg.tasks.values()]
    rows += [{"name": g.group, "kind": "group", "tasks": list(g.tasks), "description": g.description,
              "source": g.source} for g in reg.groups.values()]
    rows.sort(key=lambda r: (r["kind"], r["name"]))
    if args.json:
        print(dumps_json(rows))
    else:
        for r in rows:
            what = r.get("output") or ("group: " + ",".join(r["tasks"]))
            print(f"{r['name']:20s} {what:28s} {r['description'][:70]}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from llmrec.evaluation.tasks import validate_paths

    errors = validate_paths(args.include_path)
    for path, msg in sorted(errors.items()):
        print(f"{path}: {msg}")
    if errors:
        raise ConfigError(f"{len(errors)} invalid task file(s)")
    print("all task files are valid")
    return 0


def _score(args: argparse.Namespace) -> int:
    from llmrec.evaluation.scoring import score_files

    res = score_files(args.task, args.golds, args.predictions, args.mode, args.n_boot, args.seed, args.include_path,
                      data=args.data)
    print(dumps_json(res))
    return 0


def _run(args: argparse.Namespace) -> int:
    from llmrec.evaluation.runner import RunConfig, run

    task_args = {}
    for kv in args.task_arg:
        if "=" not in kv:
            raise ConfigError(f"--task-arg expects KEY=VALUE, got {kv!r}")
        key, value = kv.split("=", 1)
        task_args[key.strip()] = value
    dtype = apply_hardware_args(args) if args.model else args.dtype  # pins --threads, resolves auto (logged)
    cfg = RunConfig(
        tasks=_csv(args.tasks), out=args.out, model=args.model[0] if args.model else None,
        models=tuple(args.model[1:]), limit=args.limit, sample=args.sample, data=args.data,
        retrievers=_csv(args.retriever), ks=_csv_ints(args.k, "--k"), max_tokens=args.max_tokens,
        method=args.method, baselines=_csv(args.baselines), batch_size=args.batch_size, scoring=args.mode,
        task_args=task_args, include_paths=tuple(args.include_path), n_boot=args.n_boot, seed=args.seed,
        dtype=dtype, progress=not args.no_progress, report=not args.no_report, overwrite=args.overwrite,
    )
    res = run(cfg)
    summary = {t: {v: {m: round(x["value"], 4) for m, x in row.get("metrics", {}).items()}
                   for v, row in r["variants"].items()} for t, r in res["tasks"].items()}
    from llmrec.distributed import is_main

    if is_main():  # under torchrun every rank has the same results
        print(dumps_json({"out": args.out, "results": summary}))
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmrec.data.readers import read_json
    from llmrec.evaluation.report import check_results, is_report, write_report
    from llmrec.io import guard_output

    out = Path(args.out) if args.out else Path(args.results).with_name("report.html")
    guard_output(out, overwrite=args.overwrite, ours=is_report)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give the report's file name")
    write_report(check_results(read_json(args.results), args.results), out)
    print(out)
    return 0
