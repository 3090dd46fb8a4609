"""Exceptions that carry where bad input was found (file, record, field)."""

from __future__ import annotations

from pathlib import Path


class LlmrecError(Exception):
    """Base class for every error llmrec raises on purpose; the CLI prints these as one line."""


class DataError(LlmrecError, ValueError):
    """Bad input data. The message names the file, the record (line/index/id) and the field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        record: str | int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.record = record
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path)
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        super().__init__(f"{prefix}{message}")
        self.message = message


class ResourceMissingError(LlmrecError, FileNotFoundError):
    """An offline default is not available; the message says which command fixes it."""


class ConfigError(LlmrecError, ValueError):
    """A config has unknown keys, wrong types, or values out of range."""
