"""LaMP benchmark files in the official JSON format.

Questions: ``[{"id", "input", "profile": [{"id", <task fields>, "date"?}, ...]}, ...]``.
Outputs / golds / predictions: ``{"task": "LaMP_k", "golds": [{"id", "output"}, ...]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrec.data.readers import read_json
from llmrec.errors import DataError

if TYPE_CHECKING:
    from llmrec.data.config import DatasetConfig
    from llmrec.data.schema import InteractionData

# Fields each task's profile items carry (LaMP paper, Table 1).
LAMP_PROFILE_FIELDS: dict[str, tuple[str, ...]] = {
    "LaMP_1": ("title", "abstract"),
    "LaMP_2": ("description", "tag"),
    "LaMP_3": ("text", "score"),
    "LaMP_4": ("title", "text"),
    "LaMP_5": ("title", "abstract"),
    "LaMP_6": ("text", "title"),
    "LaMP_7": ("text",),
}


@dataclass(frozen=True)
class LampQuestion:
    id: str
    input: str
    profile: tuple[dict[str, Any], ...]


@dataclass
class LampOutputs:
    task: str
    golds: dict[str, str] = field(default_factory=dict)  # id -> output, file order kept


def normalize_task(task: str) -> str:
    """Accept ``LaMP_3``, ``lamp_3``, ``LaMP-3`` or ``3``; return ``LaMP_3``."""
    t = str(task).strip().replace("-", "_")
    num = t.split("_")[-1] if "_" in t else t
    if not num.isdigit() or f"LaMP_{int(num)}" not in LAMP_PROFILE_FIELDS:
        raise DataError(f"unknown LaMP task {task!r}; expected LaMP_1 .. LaMP_7")
    return f"LaMP_{int(num)}"


def load_lamp_questions(path: str | Path, task: str | None = None) -> list[LampQuestion]:
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of questions, got {type(data).__name__}", path=path)
    if not data:
        raise DataError("no questions", path=path)
    required_profile = LAMP_PROFILE_FIELDS[normalize_task(task)] if task else ()
    seen: dict[str, int] = {}
    out: list[LampQuestion] = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"expected an object, got {type(rec).__name__}", path=path, record=i)
        for key in ("id", "input", "profile"):
            if key not in rec:
                raise DataError("missing required field", path=path, record=i, field=key)
        qid = rec["id"]
        if isinstance(qid, bool) or not isinstance(qid, (str, int)):
            raise DataError(f"expected a string id, got {type(qid).__name__}", path=path, record=i, field="id")
        qid = str(qid)
        if qid in seen:
            raise DataError(f"duplicate id {qid!r} (first at record {seen[qid]})", path=path, record=i, field="id")
        seen[qid] = i
        if not isinstance(rec["input"], str):
            raise DataError(f"expected text, got {type(rec['input']).__name__}", path=path, record=qid, field="input")
        profile = rec["profile"]
        if not isinstance(profile, list):
            raise DataError(f"expected a list, got {type(profile).__name__}", path=path, record=qid, field="profile")
        for j, p in enumerate(profile):
            if not isinstance(p, dict):
                raise DataError(f"expected an object, got {type(p).__name__}", path=path, record=qid, field=f"profile[{j}]")
            for key in ("id",) + required_profile:
                if key not in p:
                    raise DataError("missing required field", path=path, record=qid, field=f"profile[{j}].{key}")
        out.append(LampQuestion(qid, rec["input"], tuple(profile)))
    return out


def load_lamp_outputs(path: str | Path, task: str | None = None) -> LampOutputs:
    """Read a golds or predictions file; ``task`` (if given) must match the file's ``task``."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"expected an object with 'task' and 'golds', got {type(data).__name__}", path=path)
    for key in ("task", "golds"):
        if key not in data:
            raise DataError("missing required field", path=path, record="top level", field=key)
    try:
        file_task = normalize_task(data["task"])
    except DataError as exc:
        raise DataError(exc.message, path=path, record="top level", field="task") from None
    if task is not None and normalize_task(task) != file_task:
        raise DataError(f"file is for {file_task}, expected {normalize_task(task)}", path=path, field="task")
    if not isinstance(data["golds"], list):
        raise DataError("expected a list", path=path, record="top level", field="golds")
    out = LampOutputs(file_task)
    for i, rec in enumerate(data["golds"]):
        if not isinstance(rec, dict):
            raise DataError(f"expected an object, got {type(rec).__name__}", path=path, record=i)
        for key in ("id", "output"):
            if key not in rec:
                raise DataError("missing required field", path=path, record=i, field=key)
        qid = rec["id"]
        if isinstance(qid, bool) or not isinstance(qid, (str, int)):
            raise DataError(f"expected a string id, got {type(qid).__name__}", path=path, record=i, field="id")
        qid = str(qid)
        if qid in out.golds:
            raise DataError(f"duplicate id {qid!r}", path=path, record=i, field="id")
        if not isinstance(rec["output"], (str, int, float)) or isinstance(rec["output"], bool):
            raise DataError(f"expected text, got {type(rec['output']).__name__}", path=path, record=qid, field="output")
        out.golds[qid] = str(rec["output"])
    return out


def lamp_outputs_json(task: str, outputs: dict[str, str]) -> dict[str, Any]:
    """The official file shape for predictions or golds."""
    return {"task": normalize_task(task), "golds": [{"id": k, "output": v} for k, v in outputs.items()]}


# ---------------------------------------------------------------- the `lamp` dataset format
#
# LaMP gives one question per user, with that user's profile: the documents they wrote or tagged before.
# As a dataset, each question id is a user, each profile entry an item the user interacted with, dated by
# its ``date`` (ISO or the config's timestamp_format) or, where any entry lacks one, by its profile position.
# The entry's first text field among title / description / text is the item title; the other fields are
# attributes (LaMP_2's ``tag`` plays category, LaMP_3's ``score`` is the rating). The question input and,
# with ``outputs``, its gold answer are kept as user features (``users[qid] = {"input", "output"}``).

_TITLE_FIELDS = ("title", "description", "text")
_LAMP_VOCABULARY = {"item": "document", "items": "documents", "interacted": "wrote", "category": "tag",
                    "categories": "tags"}


def read_lamp(cfg: DatasetConfig) -> InteractionData:
    """The ``lamp`` format: ``cfg.interactions`` is the questions file, ``cfg.outputs`` its golds (optional)."""
    from llmrec.data.builder import DatasetBuilder, field_float
    from llmrec.data.schema import Vocabulary
    from llmrec.data.timestamps import field_timestamp

    q_path = Path(str(cfg.interactions))
    outputs = load_lamp_outputs(cfg.outputs) if cfg.outputs else None
    task = outputs.task if outputs else None
    questions = load_lamp_questions(q_path, task)
    if outputs is not None:
        missing = [q.id for q in questions if q.id not in outputs.golds]
        if missing:
            raise DataError(f"{len(missing)} question id(s) have no gold output, e.g. {missing[0]!r}",
                            path=cfg.outputs, field="golds")
    entries = [p for q in questions for p in q.profile]
    has_tags = any("tag" in p for p in entries)
    has_scores = any("score" in p for p in entries)
    b = DatasetBuilder(
        cfg.name or task or q_path.stem, (1.0, 5.0) if has_scores else None, source=str(q_path),
        category_fields=("tag",) if has_tags else (), vocabulary=Vocabulary(**_LAMP_VOCABULARY),
    )
    for q in questions:
        features = {"input": q.input}
        if outputs is not None:
            features["output"] = outputs.golds[q.id]
        b.add_user(q.id, features, path=q_path, record=q.id)
        dated = bool(q.profile) and all(p.get("date") for p in q.profile)
        for j, p in enumerate(q.profile):
            where = f"{q.id} profile[{j}]"
            item_id = str(p["id"])
            title = next((p[f] for f in _TITLE_FIELDS if isinstance(p.get(f), str) and p[f].strip()), None)
            if title is None:
                raise DataError(f"no text in any of {list(_TITLE_FIELDS)}", path=q_path, record=where, field="title")
            attrs = {k: v for k, v in p.items() if k not in ("id", "date", "score")}
            known = b.items.get(item_id)
            if known is None:
                b.add_item(item_id, title, attrs, path=q_path, record=where)
            elif known.title != title.strip():
                raise DataError(f"profile id {item_id!r} reused for a different document", path=q_path,
                                record=where, field="id")
            stamp = field_timestamp(p, "date", q_path, where, cfg.timestamp_format) if dated else j
            b.add_interaction(q.id, item_id, stamp, field_float(p, "score", q_path, where), None,
                              path=q_path, record=where, rating_field="score")
    return b.build()
