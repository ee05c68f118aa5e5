"""Progress of long steps, one way everywhere: a tqdm bar when stderr is a terminal, plain lines
when it is not (CI logs, files), nothing when progress is off. Everything goes to stderr, so stdout
keeps only a command's result.

Callers pass their ``progress`` setting (the config field of that name, or EvalSettings'); code that
is not handed one (folder decoding) follows :func:`progress_enabled`, on by default.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

__all__ = ["progress_enabled", "say", "steps", "on_terminal"]

T = TypeVar("T")

_ENABLED = contextvars.ContextVar("natlearn_progress", default=True)


@contextlib.contextmanager
def progress_enabled(enabled: bool) -> Iterator[None]:
    """Within the block, progress whose caller passes ``enabled=None`` is on or off."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _wanted(enabled: bool | None) -> bool:
    return _ENABLED.get() if enabled is None else bool(enabled)


def on_terminal() -> bool:
    """Whether stderr is a terminal (a bar can redraw itself there; a log gets plain lines)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def say(message: str, enabled: bool | None = None) -> None:
    """One line on stderr (above any bar on a terminal)."""
    if not _wanted(enabled):
        return
    if on_terminal():
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def steps(
    items: Iterable[T],
    desc: str,
    total: int | None = None,
    enabled: bool | None = None,
    every: float = 0.0,
    unit: str = "it",
) -> Iterator[T]:
    """``items``, with progress: a bar on a terminal; otherwise a plain line ``desc: done/total``
    after each item (``every=0``: for items that each take a while), or for fine-grained items at
    most one line per ``every`` seconds and a last one, so a step quicker than ``every`` says
    nothing."""
    if not _wanted(enabled):
        return iter(items)
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if on_terminal():
        return iter(tqdm(items, desc=desc, total=total, leave=False, file=sys.stderr, unit=unit))
    return _plain(items, desc, total, every, unit)


def _plain(
    items: Iterable[T], desc: str, total: int | None, every: float, unit: str
) -> Iterator[T]:
    started = last = time.perf_counter()
    shown = False
    of = f"/{total}" if total is not None else ""
    for done, item in enumerate(items, start=1):
        yield item
        now = time.perf_counter()
        finished = total is not None and done == total
        if now - last >= every or (finished and shown):
            print(f"{desc}: {done}{of} {unit} ({now - started:.1f} s)", file=sys.stderr, flush=True)
            last, shown = now, True
