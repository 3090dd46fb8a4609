"""Which Trainer checkpoint a run resumes from: the newest COMPLETE ``checkpoint-N``.

``transformers.Trainer`` writes a checkpoint in place (weights, then optimizer / scheduler / RNG states, then
``trainer_state.json`` last), and its ``get_last_checkpoint`` picks the highest step whatever the folder holds,
so a run killed while saving could never resume ("Can't find a valid checkpoint"). Here a checkpoint counts only
when its trainer state parses, its safetensors weights are whole and its optimizer state is there; newer
incomplete ones are skipped with a warning (left in place: the Trainer rewrites or rotates them away).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from llmrec.filecheck import safetensors_problem

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
# The weights files llmrec's trainers write: a PEFT adapter, the QA trainer's trainable tensors, a full model.
WEIGHT_FILES = ("adapter_model.safetensors", "trainable.safetensors", "model.safetensors")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # = transformers.trainer_utils' PREFIX_CHECKPOINT_DIR pattern


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or None when it is one."""
    path = Path(path)
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{TRAINER_STATE} is truncated"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{TRAINER_STATE} has no global_step"
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        return f"no weights ({', '.join(WEIGHT_FILES)})"
    for file in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem is not None:
            return f"{file.name}: {problem}"
    optimizer = path / OPTIMIZER
    if not optimizer.is_file() or optimizer.stat().st_size == 0:
        return f"no {OPTIMIZER}"
    empty = [f.name for f in sorted(path.iterdir()) if f.suffix in (".pt", ".pth", ".bin") and f.is_file()
             and f.stat().st_size == 0]
    return f"{empty[0]} is empty" if empty else None


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir`` (None when there is none, or no folder)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in output_dir.iterdir()
                    if (m := _CHECKPOINT.match(p.name)) and p.is_dir()), reverse=True)
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        logger.warning("skipping checkpoint %s: incomplete (%s; a run killed while saving it?)", path, problem)
    if found:
        logger.warning("%s: no complete checkpoint; training starts from the beginning", output_dir)
    return None
