"""Crash-safe file writes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "current_umask", "relative_paths", "write_record"]


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it,
    which races with other threads creating files); falls back to set-and-restore where /proc is
    missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # the strictest value while it is briefly set
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it onto
    ``path``.

    A crash at any point leaves either the old file or the complete new one, never a partial one.
    The file gets the mode a plain ``open(path, "w")`` would give (0o666 less the umask), not
    mkstemp's 0o600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def relative_paths(value: Any, root: Path) -> Any:
    """``value`` (JSON-like) with every absolute path inside ``root`` or beside it written
    relative to ``root``: ``/x/repo/runs/a`` -> ``runs/a``, ``/x/shared/data`` ->
    ``../shared/data``. Paths elsewhere (a scratch folder in /tmp) are kept as they are."""
    root = Path(root).resolve()
    end = r"(?![\w.-])"  # the prefix as whole path components: /x/repo, not /x/repository

    def strip(text: str) -> str:
        inside, beside = re.escape(str(root)), re.escape(str(root.parent))
        text = re.sub(inside + "/", "", text)  # /x/repo/runs/a -> runs/a
        text = re.sub(inside + end, ".", text)  # /x/repo -> .
        if root.parent != root:
            text = re.sub(beside + "(?=/)|" + beside + end, "..", text)  # /x/shared -> ../shared
        return text

    if isinstance(value, str):
        return strip(value)
    if isinstance(value, dict):
        return {strip(k): relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [relative_paths(v, root) for v in value]
    return value


def write_record(path: Path, payload: dict, root: Path) -> Path:
    """A results record ``path`` (JSON, written atomically) whose paths are relative to the
    repository ``root`` (:func:`relative_paths`), so a committed record names no one's machine."""
    text = json.dumps(relative_paths(payload, root), indent=2) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))
    return Path(path)
