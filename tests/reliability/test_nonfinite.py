"""A NaN or inf anywhere in a step (outputs, loss, gradients, weights, BatchNorm statistics) stops
the run with one line, or with on_nonfinite=skip skips the batch without leaving a trace of it in
the model."""

from __future__ import annotations

import pytest
import torch

from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError
from natlearn.nat.objective import NoiseAsTargets
from natlearn.training.trainer import train

RUN = [
    "data=digits",
    "widths=[8,16]",
    "dim=16",
    "subset=512",
    "batch_size=128",
    "epochs=1",
    "progress=false",
]


def _config(tmp_path, *extra: str) -> Config:
    return apply_overrides(Config(), [*RUN, f"out={tmp_path / 'run'}", *extra])


def _poison_step(monkeypatch, step: int, poison) -> None:
    """Apply ``poison(loss)`` to the objective's loss at the given (1-based) step."""
    real, calls = NoiseAsTargets.loss, {"n": 0}

    def poisoned(self, *args, **kwargs):
        loss, stats = real(self, *args, **kwargs)
        calls["n"] += 1
        return (poison(loss) if calls["n"] == step else loss), stats

    monkeypatch.setattr(NoiseAsTargets, "loss", poisoned)


class _InfiniteGradient(torch.autograd.Function):
    """Identity forward, inf backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_nonfinite_gradients_stop_the_run_before_the_step(tmp_path, monkeypatch):
    """Fault: the loss of step 2 is finite but its gradients are inf.
    Expected: the run stops with one line naming non-finite gradients at epoch 1, step 2, before the
    optimizer step."""
    _poison_step(monkeypatch, 2, _InfiniteGradient.apply)
    with pytest.raises(NatlearnError, match="non-finite gradients .* epoch 1, step 2"):
        train(_config(tmp_path))


def test_nonfinite_gradients_are_skipped_without_touching_the_weights(tmp_path, monkeypatch):
    """Fault: as above, with on_nonfinite=skip.
    Expected: one warning, the batch is counted as skipped, and every weight stays finite (the inf
    gradients never reach them)."""
    _poison_step(monkeypatch, 2, _InfiniteGradient.apply)
    with pytest.warns(UserWarning, match="skipping batch 2 of epoch 1: non-finite gradients"):
        result = train(_config(tmp_path, "on_nonfinite=skip"))
    assert result.history[0]["skipped_batches"] == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_nan_batchnorm_statistics_stop_the_run(tmp_path, monkeypatch):
    """Fault: BatchNorm running variances become NaN silently (training-mode BatchNorm never reads
    them, so the loss stays finite). Expected: the epoch-end check stops the run with one line
    naming the BatchNorm statistics, and no checkpoint of the broken model is written."""
    real_forward = torch.nn.BatchNorm2d.forward

    def nan_statistics(self, x):
        out = real_forward(self, x)
        self.running_var.data.fill_(
            float("nan")
        )  # .data: behind autograd's back, as a silent corruption would be
        return out

    monkeypatch.setattr(torch.nn.BatchNorm2d, "forward", nan_statistics)
    with pytest.raises(NatlearnError, match="non-finite weights or BatchNorm statistics"):
        train(_config(tmp_path))
    assert not list((tmp_path / "run" / "checkpoints").glob("epoch_*.pt")), (
        "no checkpoint of a broken model"
    )


def test_skipping_stops_once_the_weights_are_nan(tmp_path, monkeypatch):
    """Fault: the first optimizer step leaves a NaN weight, with on_nonfinite=skip. Expected: the
    run stops at step 2 with one line saying the weights are no longer finite, instead of skipping
    every remaining batch."""
    real_step, calls = torch.optim.SGD.step, {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned)
    with pytest.raises(NatlearnError, match="epoch 1, step 2 .*no longer finite"):
        train(_config(tmp_path, "on_nonfinite=skip"))


def test_an_epoch_end_removes_the_mid_epoch_checkpoint_and_its_digest(tmp_path):
    """Fault: none; mid-epoch checkpoints every 2 steps. Expected: at the epoch's end the mid-epoch
    checkpoint and its .sha256 are both removed (no orphan digest)."""
    train(_config(tmp_path, "checkpoint_every_steps=2"))
    names = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch_0001.pt", "epoch_0001.pt.sha256", "last.pt", "last.pt.sha256"]
