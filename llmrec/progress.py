"""Progress for long loops: a tqdm bar (rate, ETA) on a terminal, a periodic log line everywhere else.

Logs, CI and ``make demo > log`` get one ``INFO`` line every ``interval`` seconds (``LLMREC_PROGRESS_INTERVAL``,
default 15) with done/total, rate and ETA, and one at the end, instead of either silence or a bar redrawn into
the file. ``LLMREC_PROGRESS=0`` turns both off. Trainer runs get the same through
:class:`llmrec.training.callbacks.ProgressLogCallback`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

logger = logging.getLogger("llmrec.progress")

T = TypeVar("T")
DEFAULT_INTERVAL = 15.0


def on_terminal() -> bool:
    """True when progress goes to a person watching (stderr is a terminal), so a redrawn bar makes sense."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def enabled() -> bool:
    return os.environ.get("LLMREC_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def default_interval() -> float:
    try:
        return float(os.environ.get("LLMREC_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


def emit(line: str, log: logging.Logger = logger) -> None:
    """An INFO log line; printed to stderr instead when logging is not configured at all (a script without
    ``logging.basicConfig`` would otherwise drop it: Python's fallback handler shows warnings only)."""
    if log.hasHandlers():
        log.info(line)
    else:
        print(f"INFO {log.name}: {line}", file=sys.stderr, flush=True)


def format_seconds(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(done: float, elapsed: float, unit: str) -> str:
    """``3.2 it/s`` when fast, ``4.1 s/it`` when slow (more readable for training steps)."""
    if done <= 0 or elapsed <= 0:
        return f"? {unit}/s"
    rate = done / elapsed
    return f"{rate:.3g} {unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{unit}"


def status_line(desc: str, done: float, total: float | None, elapsed: float, unit: str,
                postfix: dict[str, Any] | None = None, *, final: bool = False) -> str:
    """``desc: 12/200 (6%), 1.3 epoch/s, elapsed 0:09, ETA 2:24, loss=3.21`` (``final``: no ETA, e.g. after
    early stopping)."""
    parts = [f"{done:g}/{total:g} ({100 * done / total:.0f}%)" if total else f"{done:g} {unit}"]
    parts.append(format_rate(done, elapsed, unit))
    parts.append(f"elapsed {format_seconds(elapsed)}")
    if total and 0 < done < total and not final:
        parts.append(f"ETA {format_seconds(elapsed / done * (total - done))}")
    for key, value in (postfix or {}).items():
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return f"{desc}: " + ", ".join(parts)


class Progress(Generic[T]):
    """Iterate ``iterable`` showing progress; :meth:`set_postfix` adds values (e.g. a loss) to the display."""

    def __init__(self, iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
                 enable: bool = True, interval: float | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, log: logging.Logger | None = None) -> None:
        self.iterable = iterable
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.interval = default_interval() if interval is None else interval
        self.clock = clock
        self.log = log or logger
        self.postfix: dict[str, Any] = {}
        self.done = 0
        self.mode = "off" if not (enable and enabled()) else ("bar" if (on_terminal() if tty is None else tty)
                                                             else "log")
        self._bar = None

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in self.postfix.items()},
                                  refresh=False)

    def __iter__(self) -> Iterator[T]:
        if self.mode == "off":
            yield from self.iterable
            return
        if self.mode == "bar":
            from tqdm.auto import tqdm

            with tqdm(self.iterable, total=self.total, desc=self.desc, unit=self.unit, dynamic_ncols=True,
                      leave=False) as bar:
                self._bar = bar
                for item in bar:
                    yield item
                    self.done += 1
            self._bar = None
            return
        start = last = self.clock()
        try:
            for item in self.iterable:
                try:
                    yield item
                except GeneratorExit:  # the loop body finished this item, then left the loop (early stopping)
                    self.done += 1
                    raise
                self.done += 1
                now = self.clock()
                if now - last >= self.interval and (self.total is None or self.done < self.total):
                    emit(status_line(self.desc, self.done, self.total, now - start, self.unit, self.postfix),
                         self.log)
                    last = now
        finally:
            elapsed = self.clock() - start
            if elapsed >= self.interval:  # short loops stay quiet; a long one says where it ended and how fast
                emit(status_line(self.desc, self.done, self.total, elapsed, self.unit, self.postfix, final=True),
                     self.log)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", *,
             enable: bool = True, interval: float | None = None) -> Progress[T]:
    """Wrap a loop that may take more than ~10 s: a tqdm bar with rate and ETA when stderr is a terminal, else
    an INFO log line every ``interval`` seconds (done/total, rate, ETA) and one at the end."""
    return Progress(iterable, total=total, desc=desc, unit=unit, enable=enable, interval=interval)
