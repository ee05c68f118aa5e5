"""Resuming a run, decided in one place: which checkpoint it continues from (the newest that
loads, or the one refusal, :func:`~natlearn.training.checkpoint.nothing_to_resume`), the config it
continues with, and the RNG states a checkpoint carries so that a resumed run draws what the
uninterrupted one would have."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch

from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError
from natlearn.training.checkpoint import (
    PARTIAL_NAME,
    checkpoint_paths,
    load_checkpoint,
    nothing_to_resume,
)

__all__ = [
    "latest_checkpoint",
    "resume_config",
    "resume_point",
    "rng_state",
    "set_rng_state",
]


def resume_point(out: Path) -> tuple[Path, dict]:
    """The checkpoint a resumed run in ``out`` continues from, loaded (:func:`latest_checkpoint`);
    :func:`nothing_to_resume` when none loads."""
    found = latest_checkpoint(out)
    if found is None:
        raise nothing_to_resume(out)
    return found


def resume_config(base: Config | None, settings: list[str]) -> Config:
    """The config ``natlearn train --resume`` continues with: with no preset (``base`` None) the
    checkpoint's plus the key=value ``settings``; with one (the same command re-run with --resume),
    the preset plus the settings, as for a new run. Either way a change to a RESUME_LOCKED field is
    refused before any work."""
    out = Path(apply_overrides(base or Config(), settings).out)
    with warnings.catch_warnings():  # train() looks again and warns about damaged checkpoints once
        warnings.simplefilter("ignore")
        _, state = resume_point(out)
    saved = state["config"]
    config = apply_overrides(base, settings) if base else Config.from_checkpoint(saved, settings)
    config.check_resumable(saved)
    return config


def latest_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, a mid-epoch one included when it is ahead of the last
    epoch's; damaged ones are skipped with a warning naming them."""
    candidates = checkpoint_paths(run_dir)
    partial = Path(run_dir) / "checkpoints" / PARTIAL_NAME
    loaded: list[tuple[Path, dict]] = []
    if partial.is_file():
        candidates.append(partial)
    for path in reversed(candidates):
        try:
            loaded.append((path, load_checkpoint(path)))
        except NatlearnError as error:
            warnings.warn(f"{error}; using the previous one", stacklevel=2)
            continue
        if path != partial:
            break
    if not loaded:
        return None
    # A partial checkpoint continues epoch E mid-way; it is ahead only of checkpoints of <= E
    # epochs.
    return max(
        loaded, key=lambda item: (item[1]["epoch"], item[1].get("progress", {}).get("step", 0))
    )


def rng_state() -> dict:
    """Every RNG a run touches, in a form ``weights_only`` loading accepts."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    random.setstate(
        (state["python"]["version"], tuple(state["python"]["state"]), state["python"]["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
