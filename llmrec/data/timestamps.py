"""Timestamp parsing for dataset files: epoch seconds or milliseconds, ISO-8601, a strftime format, or auto.

Every result is integer epoch seconds (UTC), the clock ``Interaction.timestamp`` uses. Naive datetimes (no
zone) are taken as UTC, so the same file gives the same clock on every machine.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from pathlib import Path
from typing import Any

from llmrec.errors import DataError

TIMESTAMP_FORMATS = ("auto", "seconds", "milliseconds", "iso")
# Epoch values above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is March 1973.
_MS_THRESHOLD = 1e11


def check_timestamp_format(fmt: str) -> None:
    """Accept one of ``TIMESTAMP_FORMATS`` or a strftime format (anything with a ``%`` directive)."""
    if fmt not in TIMESTAMP_FORMATS and "%" not in fmt:
        raise ValueError(f"timestamp_format must be one of {list(TIMESTAMP_FORMATS)} or a strftime format "
                         f"such as '%d/%m/%Y %H:%M', got {fmt!r}")


def parse_timestamp(value: Any, fmt: str = "auto") -> int:
    """``value`` as integer epoch seconds; ``ValueError`` says why it does not parse under ``fmt``."""
    if isinstance(value, bool):
        raise ValueError("expected a timestamp, got a boolean")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"expected a timestamp, got {value!r}")
    if isinstance(value, (dt.datetime, dt.date)):  # Parquet / Arrow / datasets timestamp columns
        return _datetime_seconds(value)
    if fmt == "seconds":
        return _epoch(value, 1.0)
    if fmt == "milliseconds":
        return _epoch(value, 1000.0)
    if fmt == "iso":
        return _iso(value)
    if fmt == "auto":
        number = _number(value)
        if number is None:
            return _iso(value)
        return _epoch(number, 1000.0 if abs(number) > _MS_THRESHOLD else 1.0)
    if not isinstance(value, str):
        raise ValueError(f"expected text in the format {fmt!r}, got {value!r}")
    try:
        return _datetime_seconds(dt.datetime.strptime(value.strip(), fmt))
    except ValueError:
        raise ValueError(f"{value!r} does not match the format {fmt!r}") from None


def field_timestamp(rec: dict[str, Any], name: str, path: Path | str, record: str | int, fmt: str = "auto") -> int:
    """The record's ``name`` column as epoch seconds; a DataError names file, record and field otherwise."""
    value = rec.get(name)
    if value is None or value == "":
        raise DataError("missing required field", path=path, record=record, field=name)
    try:
        return parse_timestamp(value, fmt)
    except ValueError as exc:
        raise DataError(f"bad timestamp ({fmt}): {exc}", path=path, record=record, field=name) from None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _epoch(value: Any, per_second: float) -> int:
    number = _number(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"expected an epoch number, got {value!r}")
    if isinstance(value, int) and per_second == 1.0:
        return value
    return math.floor(number / per_second)


def _iso(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 date or datetime, got {value!r}")
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text)  # 3.11: dates, 'T' or ' ', fractions, 'Z' and offsets
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 date or datetime") from None
    return _datetime_seconds(parsed)


def _datetime_seconds(value: dt.date) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return math.floor(value.timestamp())
        return calendar.timegm(value.timetuple())
    return calendar.timegm(value.timetuple())
