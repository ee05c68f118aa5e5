"""Fingerprints of fixed-seed training runs: what "the refactor changed no behaviour" is checked
against.

Three runs on the bundled digits (the ``digits`` preset): NAT for 3 epochs, the supervised baseline
for 3 epochs, and NAT for 2 epochs with a mid-epoch checkpoint every 2 steps. Each run's fingerprint
holds SHA-256 digests of its final weights (and BatchNorm statistics), SGD momentum buffers, image
-> target assignment, and its log lines without the wall-clock fields, plus the logged losses
themselves.

``python tests/behaviour.py --record`` rewrites ``tests/golden/behaviour.json``; do that only for a
change that is meant to alter training, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from helpers import untimed_log
from natlearn.config import apply_overrides
from natlearn.presets import load_preset
from natlearn.training.checkpoint import checkpoint_paths, load_checkpoint
from natlearn.training.trainer import train

GOLDEN = Path(__file__).parent / "golden" / "behaviour.json"
RUNS = {
    "nat_3_epochs": ["epochs=3"],
    "supervised_3_epochs": ["epochs=3", "objective=supervised"],
    "nat_2_epochs_mid_epoch_checkpoints": ["epochs=2", "checkpoint_every_steps=2"],
}


def machine() -> dict:
    """What bit-identical floating point depends on: the same library and the same CPU kernels."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }


def _digest(tensors: list[torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for tensor in tensors:
        sha.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return sha.hexdigest()


def fingerprint(overrides: list[str], out: Path) -> dict:
    """Train the digits preset with ``overrides`` into ``out`` and fingerprint the result."""
    train(apply_overrides(load_preset("digits"), [*overrides, "progress=false", f"out={out}"]))
    state = load_checkpoint(checkpoint_paths(out)[-1])
    model = state["model"]
    momentum = [
        entry["momentum_buffer"] for _, entry in sorted(state["optimizer"]["state"].items())
    ]
    assignment = state["objective"].get("assignment")
    untimed = untimed_log(out)
    return {
        "weights": _digest([model[key] for key in sorted(model)]),
        "momentum": _digest(momentum),
        "assignment": _digest([assignment["image_to_target"], assignment["spare"]])
        if assignment
        else None,
        "log": hashlib.sha256(json.dumps(untimed, sort_keys=True).encode()).hexdigest(),
        "losses": [row["loss"] for row in untimed],
    }


def fingerprints(folder: Path) -> dict:
    return {name: fingerprint(overrides, folder / name) for name, overrides in RUNS.items()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(
            "usage: python tests/behaviour.py --record   (rewrites tests/golden/behaviour.json)"
        )
    with tempfile.TemporaryDirectory() as folder:
        record = {"machine": machine(), "runs": fingerprints(Path(folder))}
    GOLDEN.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {GOLDEN}")
