"""What a run prints: the three start-up lines (data, network and objective, run and machine) and
the epoch prefix of its progress bar and epoch lines."""

from __future__ import annotations

from natlearn.training.run import Run

__all__ = ["describe_epoch", "start_up_summary"]


def start_up_summary(run: Run, start_epoch: int) -> str:
    """What a run is about to do, in three lines: the data as found, the network and objective,
    the run and the machine."""
    config, resolved, data = run.config, run.resolved, run.data
    classes = f"{len(data.classes)} classes" if data.labels is not None else "no labels"
    crop = {
        "pad": f"random {resolved.crop_size} px crops of the {config.crop_padding}-px padded image",
        "resized": f"random resized crops ({config.crop_scale:g}-1 of the area) to "
        f"{resolved.crop_size} px",
        "none": f"centre {resolved.crop_size} px crops",
    }[config.crop]
    extras = [" + flips" if config.flip else ""]
    if config.color_jitter or config.grayscale:
        extras.append(f", colour jitter {config.color_jitter:g}, grayscale {config.grayscale:g}")
    parameters = sum(p.numel() for p in run.model.parameters())
    if config.objective == "nat":
        every = f"every {config.reassign_every}" if config.reassign_every else "never"
        objective = (
            f"NAT, {resolved.k:,} {config.targets} targets in R^{config.dim}, {resolved.loss} "
            f"loss, re-assigned {every} epochs"
        )
    else:
        objective = f"supervised ({resolved.loss} loss on the labels)"
    state = f"resumed at epoch {start_epoch + 1}" if start_epoch else "new"
    device = f"{resolved.device}, {resolved.precision}" + (
        f", {run.ranks.world_size} processes" if run.ranks.world_size > 1 else ""
    )
    return "\n".join(
        [
            f"data: {config.data}: {len(data):,} images ({data.split_note}), {classes}; "
            f"{data.image_size} px, {config.input} input; {crop}{''.join(extras)}",
            f"network: {config.arch}, {parameters:,} parameters; {objective}",
            f"run: {run.folder.path} ({state}): {config.epochs} epochs of {run.steps_per_epoch} "
            f"steps of {config.batch_size} images, lr {config.lr:g} {config.lr_schedule}; {device}",
        ]
    )


def describe_epoch(run: Run, epoch: int) -> str:
    """The progress bar's and the epoch line's prefix: ``epoch 3/40 (re-assign)``."""
    return f"epoch {epoch + 1}/{run.config.epochs}" + (
        " (re-assign)" if run.objective.reassigns(epoch) else ""
    )
