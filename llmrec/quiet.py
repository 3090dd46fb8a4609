"""Silence library messages a user cannot act on, each matched precisely (message + module or logger).

Our own deprecated calls are fixed at the source instead (``cache=`` for the KV cache, ``activation_checkpointing``
in TrainingArguments). What remains comes from inside the libraries:

- peft's ``PeftModel.__init__`` reads ``model.is_gradient_checkpointing``, deprecated in transformers 5
  (FutureWarning from ``transformers.modeling_utils`` on every LoRA wrap);
- bitsandbytes, imported by peft/transformers, logs a WARNING on CPU that its optional ``kernels`` package is
  missing (4-bit on CPU, which llmrec refuses anyway);
- faiss logs its CPU-feature probing ("Loading faiss with AVX2 support") at INFO, which our CLI shows;
- the Trainer warns "mtime may not be reliable on this filesystem" when two checkpoints are saved within a
  second (tiny runs), then sorts checkpoints by step number, which is right.

Nothing here imports the libraries; :func:`quiet_libraries` is idempotent and cheap.
"""

from __future__ import annotations

import logging
import warnings

_DROPPED_LOG_MESSAGES = {
    "transformers.trainer_utils": ("mtime may not be reliable on this filesystem",),
}
_LOGGER_LEVELS = {
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
    "faiss.loader": logging.WARNING,
}


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
                            module=r"transformers\.modeling_utils")
    for name, level in _LOGGER_LEVELS.items():
        log = logging.getLogger(name)
        if log.level < level:
            log.setLevel(level)
    for name, prefixes in _DROPPED_LOG_MESSAGES.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in log.filters):
            log.addFilter(_DropMessages(prefixes))
