"""Trainer progress that reaches a log file: step/max_steps, s/step, ETA and the latest loss, every few seconds.

On a terminal the Trainer's own tqdm bar does this; elsewhere (a log file, CI) the bar is turned off and
:class:`ProgressLogCallback` logs an INFO line every ``interval`` seconds instead (see :mod:`llmrec.progress`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from llmrec.progress import default_interval, emit, enabled, format_rate, format_seconds, on_terminal
from llmrec.quiet import quiet_libraries

logger = logging.getLogger("llmrec.progress")


class ProgressLogCallback(TrainerCallback):
    """Log ``desc: step/max_steps (x%), s/step, elapsed, ETA, loss=...`` every ``interval`` seconds and at the end."""

    def __init__(self, desc: str = "training", interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.desc = desc
        self.interval = default_interval() if interval is None else interval
        self.clock = clock
        self.start = self.last = 0.0
        self.first_step = 0
        self.postfix: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.last = self.clock()
        self.first_step = state.global_step  # resumed runs: rate and ETA count this run's steps only

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss", "eval_ndcg_at_10"):
            if logs and key in logs:
                self.postfix[key] = float(logs[key])

    def _line(self, state) -> str:
        step, total = state.global_step, state.max_steps
        done, elapsed = step - self.first_step, self.clock() - self.start
        parts = [f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)", format_rate(done, elapsed, "step"),
                 f"elapsed {format_seconds(elapsed)}"]
        if done > 0 and total > step:
            parts.append(f"ETA {format_seconds(elapsed / done * (total - step))}")
        parts += [f"{k}={v:.4g}" for k, v in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(parts)

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # one line per run under DDP, not one per process
            return
        if self.clock() - self.last >= self.interval and state.global_step < state.max_steps:
            emit(self._line(state), logger)
            self.last = self.clock()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            emit(self._line(state), logger)


def drop_printer(trainer) -> None:
    """With our log lines on, drop the Trainer's PrinterCallback (added whenever its tqdm is off), which would
    print every raw metrics dict to stdout beside them."""
    from transformers.trainer_callback import PrinterCallback

    if any(isinstance(cb, ProgressLogCallback) for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(PrinterCallback)


def trainer_progress(desc: str = "training") -> tuple[bool, list[TrainerCallback]]:
    """``(disable_tqdm, callbacks)`` for a Trainer: its tqdm bar on a terminal, log lines elsewhere."""
    quiet_libraries()  # called where every Trainer is built: filters set at import may have been reset since
    if not enabled():
        return True, []
    if on_terminal():
        return False, []
    return True, [ProgressLogCallback(desc)]
