"""What every recipe shares: the top-level options (data, out, dtype, threads, user subset), loading the data and
its leave-one-out split, and the record written beside every output (``config.yaml`` + ``run.json``)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from llmrec.errors import ConfigError
from llmrec.hardware import DTYPES
from llmrec.io import write_text_atomic
from llmrec.recipes.config import RecipeConfig, opt, to_yaml

logger = logging.getLogger(__name__)
CONFIG_YAML = "config.yaml"


@dataclasses.dataclass
class RecipeBase(RecipeConfig):
    """Top-level options of every recipe (``--data``, ``--out``, ``--dtype``, ``--threads``, ``--users``)."""

    data: str = opt("ml-100k", "dataset: a built-in name, a dataset config file (.yaml/.json) or a MovieLens folder")
    out: str = opt("runs/recipe", "output directory (written atomically; a previous llmrec output there is replaced, "
                   "anything else refused unless --overwrite)")
    overwrite: bool = opt(False, "replace --out even when it is a file or a non-empty folder llmrec did not write")
    dtype: str = opt("auto", "LLM weights dtype; auto = bf16 only where the hardware runs it natively", choices=DTYPES)
    threads: int | str = opt(0, "torch threads: N, 0 = torch's default, auto = the cores other processes leave free "
                             "now (1 is fastest on a busy shared 2-core CPU)")
    users: int = opt(0, "keep only the first N users of the dataset (0 = all): quick runs and smoke tests")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threads != "auto" and not (isinstance(self.threads, int) and self.threads >= 0):
            raise ConfigError(f"threads: expected an integer >= 0 or 'auto', got {self.threads!r}")


def subset_users(data, n: int):
    """``data`` restricted to its first ``n`` users (catalogue unchanged, so item tables keep their shape)."""
    table = data.table  # users are coded in order of first appearance, the histories' order
    if not n or n >= table.n_users:
        return data
    sub = dataclasses.replace(data, interactions=table.take_rows(table.user < n))
    logger.info("users: kept the first %d of %d users (%d interactions)", n, table.n_users, len(sub.interactions))
    return sub


def load_data(config: RecipeBase):
    """Pin threads, load ``config.data`` (only first ``config.users`` users) -> ``(data, leave-one-out split)``.

    The split is a :class:`~llmrec.data.split_view.ColumnarSplit`: the same users, histories and examples as
    ``leave_one_out(data.histories())``, built from the columns only where read (genrec rows read the columns)."""
    from llmrec.data import load_dataset
    from llmrec.data.split_view import columnar_split
    from llmrec.hardware import set_threads

    guard_out(config)  # before any slow step: a refused --out costs nothing
    set_threads(config.threads)
    data = subset_users(load_dataset(config.data), config.users)
    return data, columnar_split(data, "leave_one_out")


def is_llmrec_output(path: Path) -> bool:
    """Whether ``path`` holds an output llmrec wrote (a recipe's, a model directory, a SASRec folder or a
    semantic-ID table), which a recipe may replace as a whole."""
    from llmrec.items.semantic_ids import is_sid_table
    from llmrec.lm.model_dir import is_model_dir
    from llmrec.runinfo import RUN_FILE

    sasrec = all((path / name).is_file() for name in ("config.json", "model.safetensors", "items.json"))
    return (path / RUN_FILE).is_file() or is_model_dir(path) or sasrec or is_sid_table(path)


def guard_out(config: RecipeBase) -> None:
    """Refuse ``config.out`` when it is a file or a non-empty folder llmrec did not write (unless ``overwrite``)."""
    from llmrec.io import guard_output

    guard_output(Path(config.out), overwrite=config.overwrite, ours=is_llmrec_output)


def write_records(out: str | Path, config: RecipeConfig, recipe: str, **extra: Any) -> None:
    """``config.yaml`` (the resolved config, reloadable with ``--config``) and ``run.json`` (config, versions,
    machine facts measured now) into ``out``."""
    from llmrec.runinfo import write_run_info

    header = f"resolved config of `llmrec train {recipe}`; rerun with: llmrec train {recipe} --config {Path(out) / CONFIG_YAML}"
    write_text_atomic(Path(out) / CONFIG_YAML, to_yaml(config, header))
    write_run_info(out, config, recipe=recipe, **extra)
