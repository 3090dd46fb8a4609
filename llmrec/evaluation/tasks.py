"""Tasks as data: strict YAML task and group definitions under ``eval/tasks`` (plus user folders).

A task file names its dataset, split, Jinja prompt, profile retriever, output type, generation settings and
metrics. ``include: base.yaml`` merges a shared base first (the including file wins, mappings merge
key-by-key). Files whose name starts with ``_`` are bases only and are not listed. A group file has
``group:`` and ``tasks:`` and aggregates its members' metrics. Unknown keys anywhere are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmrec.config import Config
from llmrec.errors import ConfigError
from llmrec.evaluation.metrics import OUTPUT_TYPES, get_metric
from llmrec.evaluation.parsing import MODES
from llmrec.io import check_path_name
from llmrec.package_data import tasks_dir
from llmrec.retrieval import RETRIEVERS

METHODS = ("auto", "generate", "score_options")


@dataclass
class RetrieverSpec(Config):
    name: str = "none"
    k: int = 0
    max_tokens: int | None = None  # whitespace-token budget for the retrieved profile text
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in RETRIEVERS:
            raise ConfigError(f"retriever.name must be one of {RETRIEVERS}, got {self.name!r}")
        if self.k < 0 or (self.max_tokens is not None and self.max_tokens <= 0):
            raise ConfigError("retriever.k must be >= 0 and retriever.max_tokens > 0")


@dataclass
class OutputSpec(Config):
    """``labels`` (classify) or ``range`` (regress) left empty: the builder takes them from the dataset (the
    interaction builders do: the dataset's categories, its rating scale; see ``builders.resolve_spec``)."""

    type: str = "generate"
    labels: tuple[str, ...] = ()
    range: tuple[float, ...] = ()
    k: int = 10  # rank_items: list length asked of the model

    def __post_init__(self) -> None:
        if self.type not in OUTPUT_TYPES:
            raise ConfigError(f"output.type must be one of {OUTPUT_TYPES}, got {self.type!r}")
        if self.type == "classify" and len(self.labels) == 1:
            raise ConfigError("output.labels: a classify task needs at least two labels (or none: from the dataset)")
        if self.type == "classify" and len(set(self.labels)) != len(self.labels):
            raise ConfigError("output.labels: duplicate labels")
        if self.type == "regress" and self.range:
            if len(self.range) != 2 or not self.range[0] < self.range[1]:
                raise ConfigError("output.range: a regress task needs [low, high] with low < high")
            self.range = tuple(float(x) for x in self.range)
        if self.k <= 0:
            raise ConfigError("output.k must be positive")


@dataclass
class GenerationSpec(Config):
    max_new_tokens: int = 16
    batch_size: int = 8
    method: str = "auto"  # auto: score_options for classify/regress when the model offers it, else generate
    chat_template: bool = True  # False: the prompt is sent as raw text to continue (completion-style prompts)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"generation.method must be one of {METHODS}, got {self.method!r}")
        if self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise ConfigError("generation.max_new_tokens and generation.batch_size must be positive")


@dataclass
class TaskSpec(Config):
    task: str
    dataset: str
    builder: str
    prompt: str
    output: OutputSpec
    metrics: tuple[str, ...]
    description: str = ""
    split: str = "test"
    dataset_args: dict[str, Any] = field(default_factory=dict)
    retriever: RetrieverSpec = field(default_factory=RetrieverSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    scoring: str = "lamp"
    sample: int | None = None  # seeded subset of examples (None = all)
    seed: int = 0
    source: str = ""  # file it came from (filled in by the loader)

    def __post_init__(self) -> None:
        # the name becomes OUT/<task>/ and OUT/cache/<task>/: never a path of its own
        check_path_name(self.task, where=f"{self.source or 'task'}: field 'task'")
        if self.scoring not in MODES:
            raise ConfigError(f"{self.task}: scoring must be one of {MODES}, got {self.scoring!r}")
        if not self.metrics:
            raise ConfigError(f"{self.task}: metrics must not be empty")
        for name in self.metrics:
            try:
                metric = get_metric(name)
            except KeyError as exc:
                raise ConfigError(f"{self.task}: {exc.args[0]}") from None
            if self.output.type not in metric.output_types:
                raise ConfigError(f"{self.task}: metric {name!r} does not apply to output type {self.output.type!r}")
        if self.sample is not None and self.sample <= 0:
            raise ConfigError(f"{self.task}: sample must be positive")

    def with_overrides(self, **changes: Any) -> TaskSpec:
        return dataclasses.replace(self, **changes)


@dataclass
class GroupSpec(Config):
    group: str
    tasks: tuple[str, ...]
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        check_path_name(self.group, where=f"{self.source or 'group'}: field 'group'")
        if not self.tasks:
            raise ConfigError(f"group {self.group}: tasks must not be empty")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 at byte {exc.start}; re-save the task file as UTF-8") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A task file with its ``include:`` chain merged (relative to the including file)."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle: {' -> '.join(str(p) for p in _seen + (path,))}")
    data = _read_yaml(path)
    include = data.pop("include", None)
    if include is None:
        return data
    includes = [include] if isinstance(include, str) else include
    if not isinstance(includes, list) or not all(isinstance(x, str) for x in includes):
        raise ConfigError(f"{path}: include must be a file name or a list of them")
    merged: dict[str, Any] = {}
    for inc in includes:
        inc_path = (path.parent / inc).resolve()
        if not (inc_path.is_relative_to(path.parent) or inc_path.is_relative_to(tasks_dir().resolve())):
            raise ConfigError(f"{path}: field 'include': {inc!r} is outside the task file's folder (and not a "
                              "built-in task file); task files may include only files beside them")
        if not inc_path.is_file():
            raise ConfigError(f"{path}: included file {inc!r} not found")
        merged = _merge(merged, resolve_yaml(inc_path, _seen + (path,)))
    return _merge(merged, data)


def parse_spec(data: dict[str, Any], source: str) -> TaskSpec | GroupSpec:
    data = dict(data)
    data["source"] = source
    if "group" in data:
        return GroupSpec.from_dict(data, source=source)
    if "task" not in data:
        raise ConfigError(f"{source}: a task file needs 'task:' (or 'group:' for a group)")
    return TaskSpec.from_dict(data, source=source)


@dataclass
class TaskRegistry:
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    groups: dict[str, GroupSpec] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file -> message, filled by load(strict=False)

    def names(self) -> list[str]:
        return sorted(self.tasks) + sorted(self.groups)

    def expand(self, names: str | list[str]) -> list[TaskSpec]:
        """Task specs for comma-separated task and group names (groups expand to their members)."""
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        out: list[TaskSpec] = []
        for name in names:
            if name in self.tasks:
                out.append(self.tasks[name])
            elif name in self.groups:
                out.extend(self.expand(list(self.groups[name].tasks)))
            else:
                raise ConfigError(f"unknown task {name!r}; known: {', '.join(self.names())}")
        return list({t.task: t for t in out}.values())


def load_registry(include_paths: list[str | Path] | None = None, strict: bool = True) -> TaskRegistry:
    """Every task under ``eval/tasks`` and the ``include_paths`` folders (later folders override earlier)."""
    reg = TaskRegistry()
    folders = [tasks_dir()] + [Path(p) for p in include_paths or []]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: task folder not found")
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            if path.name.startswith("_"):
                continue
            try:
                spec = parse_spec(resolve_yaml(path), str(path))
            except ConfigError as exc:
                if strict:
                    raise
                reg.errors[str(path)] = str(exc)
                continue
            if isinstance(spec, GroupSpec):
                reg.groups[spec.group] = spec
            else:
                reg.tasks[spec.task] = spec
    for g in reg.groups.values():
        missing = [t for t in g.tasks if t not in reg.tasks and t not in reg.groups]
        if missing:
            msg = f"{g.source}: group {g.group} names unknown task(s) {missing}"
            if strict:
                raise ConfigError(msg)
            reg.errors[g.source] = msg
    return reg


def validate_paths(include_paths: list[str | Path] | None = None) -> dict[str, str]:
    """File -> error for every invalid task file; also checks each builder exists and renders each prompt once
    with a made-up example (:mod:`llmrec.evaluation.samples`), with and without a profile, so sandbox
    violations and variables no example has are found now rather than mid-run."""
    from llmrec.errors import LlmrecError
    from llmrec.evaluation.builders import BUILDERS
    from llmrec.evaluation.prompts import load_template, render
    from llmrec.evaluation.samples import sample_variables

    reg = load_registry(include_paths, strict=False)
    errors = dict(reg.errors)
    for spec in reg.tasks.values():
        try:
            template = load_template(spec.prompt, spec.source)
            if spec.builder not in BUILDERS:
                raise ConfigError(f"unknown builder {spec.builder!r}; known: {sorted(BUILDERS)}")
            for variables in sample_variables(spec):
                render(template, variables, record="sample example")
        except LlmrecError as exc:
            errors[spec.source] = str(exc)
    return errors
