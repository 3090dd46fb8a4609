"""The record every run leaves beside its outputs: resolved config, package versions, machine facts.

Results and model directories carry ``run.json`` so a figure can be traced to the exact configuration,
library versions and hardware that produced it, measured at run time rather than typed by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from llmrec.hardware import machine_facts
from llmrec.io import write_json_atomic

RUN_FILE = "run.json"
PACKAGES = (
    "llmrec", "torch", "transformers", "peft", "accelerate", "datasets", "trl", "faiss-cpu", "numpy", "pyarrow",
    "jinja2", "bitsandbytes",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _plain(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return config


def run_info(config: Any = None, *, command: str | None = None, **extra: Any) -> dict[str, Any]:
    """A JSON-able record: when, the command line, the resolved config, versions, machine facts."""
    info: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "config": _plain(config),
        "versions": package_versions(),
        "machine": machine_facts(),
    }
    info.update(extra)
    return info


def write_run_info(out_dir: str | Path, config: Any = None, **extra: Any) -> Path:
    """Write ``run.json`` into ``out_dir`` atomically (at the end of a run, so peak memory is the run's)."""
    path = Path(out_dir) / RUN_FILE
    write_json_atomic(path, run_info(config, **extra))
    return path
