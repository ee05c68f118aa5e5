"""Fault injection for the reliability tests: ``NATLEARN_FAULT=<point>`` kills the process at that
point.

Points are named where they are declared (``after-step:E:S``, ``in-checkpoint:NAME``); ``<point>#K``
kills at its K-th visit. Nothing happens unless the environment variable names a point exactly.
"""

from __future__ import annotations

import os
import signal

__all__ = ["fault_point"]


_visits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process if ``NATLEARN_FAULT`` names this visit of ``name`` (no cleanup, like a
    power cut)."""
    wanted = os.environ.get("NATLEARN_FAULT")
    if not wanted or not wanted.startswith(name):
        return
    _visits[name] = _visits.get(name, 0) + 1
    if wanted in (name, f"{name}#{_visits[name]}"):
        os.kill(os.getpid(), signal.SIGKILL)
