"""Turn raw model outputs into task values, in LaMP's strict way or leniently.

``lamp`` mode copies the official LaMP scorer: a class output must equal a label after ``strip()``; a rating
is ``float(output)``. ``lenient`` extracts the first label / number from free text. In both modes an output
that yields nothing is a *parse failure*; the scorer then treats it as LaMP does (wrong class; the worse of
the range ends for ratings), so MAE/accuracy stay comparable across modes and the failure rate is reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MODES = ("lamp", "lenient")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclass
class ParsedLabels:
    """Class outputs as indices into ``labels``; -1 = not a label (counts as a wrong class)."""

    index: np.ndarray  # (n,) int
    parse_failed: np.ndarray  # (n,) bool: nothing label-like could be read
    invalid: np.ndarray  # (n,) bool: the output is not usable as one of the labels


@dataclass
class ParsedNumbers:
    value: np.ndarray  # (n,) float, after the worst-case substitution for failures
    parse_failed: np.ndarray  # (n,) bool
    invalid: np.ndarray  # (n,) bool: parse failed or the number lies outside the range


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; use one of {MODES}")
    return mode


def parse_label(output: str, labels: Sequence[str], mode: str = "lamp") -> int:
    """Index of the label ``output`` names, or -1."""
    text = str(output).strip()
    try:
        return list(labels).index(text)
    except ValueError:
        pass
    if mode == "lamp":
        return -1
    low = text.lower()
    for i, lab in enumerate(labels):  # case-insensitive exact match first
        if low == lab.lower():
            return i
    best, best_pos, best_len = -1, len(low) + 1, 0
    for i, lab in enumerate(labels):  # then the earliest (longest on ties) label mentioned in the text
        pos = _find_word(low, lab.lower())
        if pos >= 0 and (pos < best_pos or (pos == best_pos and len(lab) > best_len)):
            best, best_pos, best_len = i, pos, len(lab)
    return best


def _find_word(text: str, label: str) -> int:
    """Position of ``label`` in ``text`` not glued to word characters on either side, or -1."""
    start = 0
    while True:
        pos = text.find(label, start)
        if pos < 0:
            return -1
        end = pos + len(label)
        left_ok = pos == 0 or not (text[pos - 1].isalnum() and label[0].isalnum())
        right_ok = end == len(text) or not (text[end].isalnum() and label[-1].isalnum())
        if left_ok and right_ok:
            return pos
        start = pos + 1


def parse_number(output: str, mode: str = "lamp") -> float | None:
    """The rating an output states, or None. ``lamp``: ``float(output)``; ``lenient``: the first number."""
    text = str(output).strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None and mode == "lenient":
        m = _NUMBER.search(text)
        value = float(m.group()) if m else None
    if value is None or not math.isfinite(value):
        return None
    return value


def parse_labels(outputs: Sequence[str], labels: Sequence[str], mode: str = "lamp") -> ParsedLabels:
    check_mode(mode)
    index = np.array([parse_label(o, labels, mode) for o in outputs], dtype=np.int64)
    failed = index < 0
    return ParsedLabels(index, failed, failed.copy())


def parse_numbers(
    outputs: Sequence[str], golds: np.ndarray, value_range: tuple[float, float] = (1.0, 5.0), mode: str = "lamp"
) -> ParsedNumbers:
    """Parse ratings; a failure becomes whichever range end is farther from the gold (LaMP's worst case).

    LaMP does not clip parsed numbers to the range; neither do we, but out-of-range values count as invalid.
    """
    check_mode(mode)
    lo, hi = value_range
    raw = [parse_number(o, mode) for o in outputs]
    failed = np.array([v is None for v in raw], dtype=bool)
    worst = np.where(np.abs(lo - golds) > np.abs(hi - golds), lo, hi)
    value = np.array([worst[i] if v is None else v for i, v in enumerate(raw)], dtype=np.float64)
    invalid = failed | (value < lo) | (value > hi)
    return ParsedNumbers(value, failed, invalid)


def parse_ranked(output: str | Sequence[str]) -> list[str]:
    """A ranked item list: a JSON-ish list already, or text with one id per comma / whitespace."""
    if isinstance(output, (list, tuple)):
        return [str(x) for x in output]
    return [t for t in re.split(r"[,\s]+", str(output).strip().strip("[]")) if t]
