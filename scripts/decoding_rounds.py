"""Add alternating before/after rounds to a decoding record: one scripts/bench_decoding.py run is noisy on a shared
machine (+-15 % between identical runs), so the speed claim rests on several runs of the old and the new code,
alternating, each a bench_decoding.py output (``--searches llmrec`` is enough).

    python scripts/decoding_rounds.py --record runs/decoding_final.json --out eval/results/decoding_ml100k.json \
        --round old=runs/d_old_1.json --round new=runs/d_new_1.json --round old=runs/d_old_2.json ...

Writes ``rounds`` into the record: per round its label, command, time written and s/user (batched and single), per
label the median over its rounds, the ratio of the medians (first label over second), and how many rounds of each
label meet the issue-18 targets (<= 0.1 s/user batched, <= 0.3 single). ``--round`` order is the order they ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

TARGETS = {"batched": 0.1, "single": 0.3}


def round_figures(record: dict, dtype: str = "auto") -> dict[str, float]:
    """``{"batched": s/user, "single": s/user}`` of llmrec's search in one bench_decoding record."""
    run = record["runs"][dtype]
    batched = next(k for k in run if k.startswith("llmrec_batch") and k != "llmrec_batch1")
    return {"batched": run[batched]["median_s_per_user"], "single": run["llmrec_batch1"]["median_s_per_user"]}


def summarise_rounds(rounds: list[dict]) -> dict:
    labels = list(dict.fromkeys(r["label"] for r in rounds))
    by_label = {lab: {kind: statistics.median(r[kind] for r in rounds if r["label"] == lab)
                      for kind in TARGETS} for lab in labels}
    out = {"rounds": rounds, "median_s_per_user": by_label,
           "rounds_meeting_target": {lab: {kind: sum(r[kind] <= limit for r in rounds if r["label"] == lab)
                                           for kind, limit in TARGETS.items()} for lab in labels},
           "rounds_per_label": {lab: sum(r["label"] == lab for r in rounds) for lab in labels}, "targets": TARGETS}
    if len(labels) == 2:
        a, b = labels
        out[f"{a}_over_{b}_median"] = {kind: by_label[a][kind] / by_label[b][kind] for kind in TARGETS}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--record", type=Path, required=True, help="the bench_decoding.py record to extend")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--round", action="append", default=[], metavar="LABEL=JSON", help="a round, in the order run")
    p.add_argument("--code", action="append", default=[], metavar="LABEL=WHAT", help="which code a label ran")
    args = p.parse_args()
    from llmrec.io import write_json_atomic

    record = json.loads(args.record.read_text(encoding="utf-8"))
    rounds = []
    for spec in args.round:
        label, _, path = spec.partition("=")
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        # records written before bench_decoding.py stamped them: the file's modification time
        written = data.get("created") or datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc).isoformat(
            timespec="seconds")
        rounds.append({"label": label, "command": data["command"], "written": written, **round_figures(data)})
    record["rounds"] = {**summarise_rounds(rounds), "code": dict(c.partition("=")[::2] for c in args.code),
                        "command": "python scripts/decoding_rounds.py " + " ".join(sys.argv[1:])}
    write_json_atomic(args.out, record)
    print(json.dumps({k: v for k, v in record["rounds"].items() if k != "rounds"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
