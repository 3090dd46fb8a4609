"""The saved-model directory, described in one place: what each file holds and the helpers that read and write
the parts that make it self-describing (the dataset it was trained on, the dtype of its weights).

A :class:`~llmrec.lm.personal.PersonalLM` directory (``PersonalLM.save``)::

    adapter_config.json, adapter_model.safetensors   the PEFT adapter (LoRA + the trainable SID / user rows)
    tokenizer.json, tokenizer_config.json, ...       the base tokenizer plus the added SID / <|user|> tokens
    llmrec_config.json     PersonalLMConfig: base model, dtype, adapter preset, prompt, max_history, seed
    model.json             manifest: format, dtype of the saved weights, parts present, the dataset record,
                           genrec_loss "sid" when trained over the SID vocabulary (decoding normalises alike)
    data_config.json       the DatasetConfig of the training data (``data.config.to_dict()``) when it had one
    sids/                  the semantic-ID table, same layout as ``llmrec items build --out DIR``
    catalogue.json         item id -> title
    user/                  soft-prompt user encoder + projector (models that answer from soft prompts)
    user_state_encoder/, user_state_projector.safetensors   SASRec states fed into the LLM (llmrec.lm.user_states)

``model.json`` and ``data_config.json`` are what ``llmrec recommend|answer|profile --model DIR`` read to find
the users without a ``--data``; directories saved before they existed still load (the commands then fall back
to ml-100k, as they always did).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llmrec.errors import ConfigError, DataError
from llmrec.io import write_json_atomic

logger = logging.getLogger(__name__)

MANIFEST_FILE = "model.json"
DATA_CONFIG_FILE = "data_config.json"
CONFIG_FILE = "llmrec_config.json"
SIDS_DIR = "sids"
CATALOGUE_FILE = "catalogue.json"
USER_DIR = "user"
FORMAT_VERSION = 1
# Old directories (no model.json) were all trained on the offline default; the commands fall back to it.
LEGACY_DATASET = "ml-100k"
_DTYPE_NAMES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}


def dtype_of(model: Any) -> str:
    """``fp32`` / ``bf16`` / ``fp16``: the dtype of ``model``'s floating-point weights (the first one found)."""
    for p in model.parameters():
        if p.is_floating_point():
            return _DTYPE_NAMES.get(str(p.dtype), str(p.dtype).removeprefix("torch."))
    return "fp32"


def dataset_spec(data: Any) -> str | None:
    """What :func:`llmrec.data.load_dataset` takes to load ``data`` again when it has no DatasetConfig: the
    built-in name for the offline ml-100k copy, the folder it was read from, else its name (a built-in name
    reloads; anything else fails at load time with a hint to pass ``--data``)."""
    source = Path(data.source) if getattr(data, "source", "") else None
    if source is not None and source.is_dir():
        from llmrec.resources import cache_dir

        default = cache_dir() / "data" / LEGACY_DATASET
        if data.name == LEGACY_DATASET and source.resolve() == default.resolve():
            return LEGACY_DATASET  # portable: the offline copy lives in each machine's own cache
        return str(source.resolve())
    return data.name or None


def dataset_record(data: Any) -> dict[str, Any]:
    """How to find ``data`` again, plus its size (a check that the reloaded data is the same)."""
    config = getattr(data, "config", None)
    return {
        "name": data.name,
        "spec": None if config is not None else dataset_spec(data),
        "config": config.to_dict() if config is not None else None,
        "source": data.source,
        "users": len(data.histories()),
        "items": len(data.items),
        "interactions": len(data.interactions),
    }


def write_model_manifest(directory: str | Path, *, dtype: str, parts: list[str],
                         dataset: dict[str, Any] | None, genrec_loss: str = "full") -> None:
    """``model.json`` (+ ``data_config.json`` when the dataset came from a DatasetConfig) into ``directory``.
    ``genrec_loss``: ``sid`` when trained with the SID-vocabulary loss (decoding normalises the same way);
    the default ``full`` is left out, so older readers and directories see the same file."""
    directory = Path(directory)
    record = dict(dataset) if dataset is not None else None
    if record is not None and record.get("config") is not None:
        write_json_atomic(directory / DATA_CONFIG_FILE, record["config"])
        record["config"] = DATA_CONFIG_FILE  # the file beside the manifest holds it
    write_json_atomic(directory / MANIFEST_FILE, {
        "format_version": FORMAT_VERSION, "kind": "personal_lm", "dtype": dtype, "parts": sorted(parts),
        "dataset": record,
    } | ({"genrec_loss": genrec_loss} if genrec_loss != "full" else {}))


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_FILE = "tokenizer.json"
RESAVE = "save the model again (PersonalLM.save / `llmrec train ...`) or restore the directory from a good copy"


def is_model_dir(directory: str | Path) -> bool:
    """Whether ``directory`` is a PersonalLM directory (an output llmrec may replace as a whole)."""
    return (Path(directory) / CONFIG_FILE).is_file()


def validate_model_dir(directory: str | Path, *, allow_pickle: bool = False) -> None:
    """Check every file of a saved PersonalLM directory before anything parses it: missing, empty, truncated or
    wrong-shaped files and pickle-based weights are one :class:`ConfigError` naming the file and what to do.

    ``allow_pickle``: accept ``*.bin`` / ``*.pt`` / ... weights (peft then reads ``adapter_model.bin`` with
    ``torch.load(weights_only=True)``); never the default, since a shared model directory is untrusted input."""
    from llmrec.filecheck import check_safetensors, read_json, refuse_pickles

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: model directory not found; pass a folder written by PersonalLM.save or "
                          "`llmrec train genrec|soft-prompt`")
    if not (directory / CONFIG_FILE).is_file():
        raise ConfigError(f"{directory}: not a PersonalLM directory (no {CONFIG_FILE}); pass a folder written by "
                          "PersonalLM.save or `llmrec train genrec|soft-prompt`")
    pickles = refuse_pickles(directory, allow=allow_pickle)
    read_json(directory / CONFIG_FILE, fix=RESAVE)
    adapter = read_json(directory / ADAPTER_CONFIG, fix=RESAVE)
    if not isinstance(adapter.get("peft_type"), str):
        raise ConfigError(f"{directory / ADAPTER_CONFIG}: no 'peft_type': not a PEFT adapter config; {RESAVE}")
    weights = directory / ADAPTER_WEIGHTS
    if weights.exists() or directory / "adapter_model.bin" not in pickles:
        check_safetensors(weights, fix=RESAVE)
    read_json(directory / TOKENIZER_CONFIG, fix=RESAVE)
    if (directory / TOKENIZER_FILE).exists():
        read_json(directory / TOKENIZER_FILE, fix=RESAVE)
    catalogue = read_json(directory / CATALOGUE_FILE, fix=RESAVE)
    bad = next((k for k, v in catalogue.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise ConfigError(f"{directory / CATALOGUE_FILE}: item {bad!r}: expected a title string, got "
                          f"{type(catalogue[bad]).__name__}; {RESAVE}")
    if (directory / MANIFEST_FILE).exists():
        read_json(directory / MANIFEST_FILE, fix=RESAVE)
    user = directory / USER_DIR
    if user.is_dir():  # the soft-prompt user encoder (llmrec.lm.soft_prompt.save_user_model)
        read_json(user / "user_encoder.json", fix=RESAVE)
        read_json(user / "soft_prompt_config.json", fix=RESAVE)
        check_safetensors(user / "user_modules.safetensors", fix=RESAVE)
    states = directory / "user_state_encoder"
    if states.is_dir():  # llmrec.lm.user_states
        read_json(states / "config.json", fix=RESAVE)
        check_safetensors(states / "model.safetensors", fix=RESAVE)
        check_safetensors(directory / "user_state_projector.safetensors", fix=RESAVE)


def read_model_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest with the dataset record resolved (``config`` = the DatasetConfig dict); None for directories
    saved before manifests existed."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the model manifest: {exc}", path=path) from exc
    if not isinstance(manifest, dict):
        raise DataError(f"expected a JSON object, got {type(manifest).__name__}; {RESAVE}", path=path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"unsupported format_version {manifest.get('format_version')!r}", path=path,
                        field="format_version")
    if manifest.get("genrec_loss", "full") not in ("full", "sid"):
        raise DataError(f"expected 'full' or 'sid', got {manifest.get('genrec_loss')!r}; {RESAVE}", path=path,
                        field="genrec_loss")
    record = manifest.get("dataset")
    if record is not None and not isinstance(record, dict):
        raise DataError(f"expected an object or null, got {type(record).__name__}; {RESAVE}", path=path,
                        field="dataset")
    if record is not None and isinstance(record.get("config"), str):
        if record["config"] != DATA_CONFIG_FILE:  # a name, never a path: the file sits beside the manifest
            raise DataError(f"expected {DATA_CONFIG_FILE!r}, got {record['config']!r}; {RESAVE}", path=path,
                            field="dataset.config")
        config_path = directory / record["config"]
        try:
            record["config"] = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read the model's dataset config: {exc}", path=config_path) from exc
    return manifest


def load_dataset_from_record(record: dict[str, Any], *, where: str = "model") -> Any:
    """The InteractionData a dataset record (:func:`dataset_record`) describes, through
    :func:`llmrec.data.load_dataset`; ``where`` names the record's owner in errors.

    The one place that turns a saved record back into data: a DatasetConfig dict goes through
    ``DatasetConfig.from_dict``; a record without one through its name or folder."""
    from llmrec.data import load_dataset
    from llmrec.data.config import DatasetConfig

    config = record.get("config")
    spec: Any = record.get("spec")
    if config is not None:
        spec = DatasetConfig.from_dict(config, source=f"{where}: {DATA_CONFIG_FILE}")
    if not spec:
        raise ConfigError(f"{where}: the dataset it was trained on cannot be reloaded (no config, name or folder "
                          "recorded); pass --data NAME|CONFIG")
    try:
        data = load_dataset(spec)
    except DataError as exc:
        raise ConfigError(f"{where}: cannot reload its dataset {record.get('name')!r} ({exc}); pass --data "
                          "NAME|CONFIG (a dataset built in Python has no config to reload)") from exc
    n_items = record.get("items")
    if n_items is not None and len(data.items) != n_items:
        logger.warning("%s: the dataset %r now has %d items, the model was trained on %d", where,
                       record.get("name"), len(data.items), n_items)
    return data


def recorded_dataset_spec(directory: str | Path) -> str | None:
    """What ``--data`` would name to reach the dataset a model directory was trained on: its dataset config
    file inside the directory, else the recorded built-in name or folder; None when it records none."""
    manifest = read_model_manifest(directory)
    record = manifest.get("dataset") if manifest is not None else None
    if record is None:
        return None
    config = record.get("config")
    if config is not None:
        from llmrec.data import BUILTIN_DATASETS

        builtin = BUILTIN_DATASETS.get(str(config.get("name")))
        if builtin is not None and json.loads(json.dumps(builtin().to_dict())) == config:
            return str(config["name"])  # the built-in, by name (the offline copy of each machine's cache)
        return str(Path(directory) / DATA_CONFIG_FILE)
    return record.get("spec") or None


def load_model_dataset(directory: str | Path) -> Any | None:
    """The dataset a saved model directory was trained on, or None when it does not record one (directories
    saved before ``model.json``, or models saved without their data)."""
    manifest = read_model_manifest(directory)
    if manifest is None or manifest.get("dataset") is None:
        return None
    return load_dataset_from_record(manifest["dataset"], where=str(directory))
