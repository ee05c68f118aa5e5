"""Shared by the tests that compare two runs: one checkpoint's training state with named fields, and
ONE comparison, so "bit-identical" means the same thing in every test that claims it.

The comparison refuses to be vacuous: a run trained with momentum must have saved one momentum
buffer per parameter (an empty optimizer state compared with another empty one would prove nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from natlearn.training.checkpoint import checkpoint_paths, load_checkpoint

__all__ = [
    "TIMINGS",
    "RunState",
    "assert_same_run",
    "assert_same_state",
    "final_state",
    "untimed_log",
]

TIMINGS = (
    "seconds",
    "images_per_s",
    "step_ms",
    "assign_ms",
)  # wall clock: differs between any two runs


@dataclass(frozen=True)
class RunState:
    """What a resumed run must restore exactly, read from one checkpoint."""

    epoch: int
    model: dict[str, torch.Tensor]  # weights and BatchNorm statistics
    momentum: dict[int, torch.Tensor]  # parameter index -> SGD momentum buffer
    parameters: int  # how many parameters the optimizer steps
    assignment: (
        dict | None
    )  # image -> target, spare targets, the assignment's generator (None: supervised)
    rng: torch.Tensor  # torch's global RNG state

    @classmethod
    def load(cls, path: str | Path) -> RunState:
        state = load_checkpoint(path)
        optimizer = state["optimizer"]
        return cls(
            epoch=state["epoch"],
            model=state["model"],
            momentum={
                index: entry["momentum_buffer"]
                for index, entry in optimizer["state"].items()
                if "momentum_buffer" in entry
            },
            parameters=sum(len(group["params"]) for group in optimizer["param_groups"]),
            assignment=state["objective"].get("assignment"),
            rng=state["rng"]["torch"],
        )


def final_state(run_dir: str | Path) -> RunState:
    """The state in the newest epoch checkpoint of a run folder."""
    return RunState.load(checkpoint_paths(Path(run_dir))[-1])


def assert_same_state(got: RunState, want: RunState, rng: bool = True) -> None:
    """Every weight, BatchNorm statistic, momentum buffer, the assignment (and the RNG)
    bit-identical."""
    assert got.epoch == want.epoch
    assert got.model.keys() == want.model.keys()
    for key, value in want.model.items():
        assert torch.equal(got.model[key], value), key
    assert len(want.momentum) == want.parameters > 0, (
        "the checkpoint holds no momentum buffers: optimizer state dropped"
    )
    assert got.momentum.keys() == want.momentum.keys(), "momentum buffers of different parameters"
    for index, buffer in want.momentum.items():
        assert torch.equal(got.momentum[index], buffer), f"momentum buffer of parameter {index}"
    assert (got.assignment is None) == (want.assignment is None)
    if want.assignment is not None:
        for key in ("image_to_target", "spare", "generator"):
            assert torch.equal(got.assignment[key], want.assignment[key]), key
    if rng:
        assert torch.equal(got.rng, want.rng), "global torch RNG state"


def untimed_log(run_dir: str | Path) -> list[dict]:
    """A run's log.jsonl rows without the wall-clock fields."""
    rows = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key not in TIMINGS} for row in rows]


def assert_same_run(got: str | Path, want: str | Path, rng: bool = True) -> None:
    """Two run folders ended in the same state (:func:`assert_same_state` of their newest
    checkpoints) and logged the same epochs, losses, cosines and re-assigned fractions."""
    assert_same_state(final_state(got), final_state(want), rng=rng)
    assert untimed_log(got) == untimed_log(want)
