"""What a run's TensorBoard shows besides its training scalars (``logger=tensorboard``): the
evaluations, the figures, and an embedding projector of test images.

Training writes ``RUN/tensorboard/``; this module writes two more TensorBoard runs beside it:

- ``RUN/tensorboard/eval``: scalars ``eval/<protocol>/<layer>`` (top-1) from ``eval/eval.json``
  and ``evolution/evolution.json``, each at the global step of the epoch it measured (the step of
  that epoch's ``epoch/*`` scalars), so they line up with the training curves; and every figure
  of the run folder as an image ``figures/<name>``. It is rewritten from those files each time, so
  evaluating again never duplicates a point.
- ``RUN/tensorboard/projector``: features of a sample of test images with their class names and
  thumbnails, for TensorBoard's projector (written by ``natlearn neighbors``, which has them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

__all__ = ["uses_tensorboard", "update_board", "write_projector", "PROJECTOR_SAMPLE"]

PROJECTOR_SAMPLE = 1000  # points TensorBoard's projector shows at once without lag


def uses_tensorboard(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` was trained with ``logger=tensorboard``."""
    config = run_dir / "config.yaml"
    return (
        config.is_file()
        and (yaml.safe_load(config.read_text()) or {}).get("logger") == "tensorboard"
    )


def _epoch_steps(run_dir: Path) -> dict[int, int]:
    """Epoch -> the global step its ``epoch/*`` scalars were logged at (0 -> 0, before training)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    if "epoch/epoch" not in events.Tags()["scalars"]:
        return {0: 0}
    return {0: 0} | {round(e.value): e.step for e in events.Scalars("epoch/epoch")}


def _measured(run_dir: Path) -> list[tuple[int, dict]]:
    """(epoch, protocols) of every evaluation of the run's own checkpoints: evolution's rows, and
    eval.json's (its checkpoint's epoch)."""
    rows: list[tuple[int, dict]] = []
    evolution = run_dir / "evolution" / "evolution.json"
    if evolution.is_file():
        rows += [(row["epoch"], row["protocols"]) for row in json.loads(evolution.read_text())]
    evaluated = run_dir / "eval" / "eval.json"
    if evaluated.is_file():
        results = json.loads(evaluated.read_text())
        epoch = results.get("epoch")
        if epoch is not None and epoch not in {e for e, _ in rows}:
            rows.append((epoch, results["protocols"]))
    return sorted(rows, key=lambda row: row[0])


def _figures(run_dir: Path) -> list[Path]:
    return sorted([*run_dir.glob("*.png"), *run_dir.glob("evolution/*.png")])


def update_board(run_dir: str | Path) -> Path | None:
    """Rewrite ``RUN/tensorboard/eval`` from the run folder's evaluations and figures; None (and
    nothing written) for a run not logged to TensorBoard."""
    run_dir = Path(run_dir)
    if not uses_tensorboard(run_dir):
        return None
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    folder = run_dir / "tensorboard" / "eval"
    shutil.rmtree(folder, ignore_errors=True)
    steps = _epoch_steps(run_dir)
    last = max(steps.values())
    with SummaryWriter(str(folder)) as writer:
        for epoch, protocols in _measured(run_dir):
            if epoch not in steps:  # an epoch whose training events are gone: no step to put it at
                continue
            for protocol, layers in protocols.items():
                for layer, result in layers.items():
                    if isinstance(result, dict) and "top1" in result:
                        writer.add_scalar(f"eval/{protocol}/{layer}", result["top1"], steps[epoch])
        for path in _figures(run_dir):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            writer.add_image(f"figures/{path.stem}", pixels, last, dataformats="HWC")
    return folder


def write_projector(
    run_dir: Path,
    features: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    tag: str,
    seed: int = 0,
) -> Path:
    """Write a seeded sample of at most :data:`PROJECTOR_SAMPLE` test images to
    ``RUN/tensorboard/projector`` (replacing an earlier one).

    Args:
        features: (n, d) features of the images.
        images: (n, c, h, w) uint8 images: the projector's thumbnails.
        labels: (n,) int64 class indices into ``classes``: the projector's metadata.
    """
    from torch.utils.tensorboard import SummaryWriter

    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(features), generator=generator)[:PROJECTOR_SAMPLE].sort().values
    folder = run_dir / "tensorboard" / "projector"
    shutil.rmtree(folder, ignore_errors=True)
    thumbnails = images[chosen].float() / 255
    if thumbnails.shape[1] == 1:
        thumbnails = thumbnails.expand(-1, 3, -1, -1)
    with SummaryWriter(str(folder)) as writer:
        writer.add_embedding(
            features[chosen].float(),
            metadata=[classes[i] for i in labels[chosen].tolist()],
            label_img=thumbnails,
            tag=tag,
        )
    return folder
