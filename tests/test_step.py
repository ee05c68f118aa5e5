"""One training step on a generated batch: what it does, in the paper's order, without a whole
run."""

import pytest
import torch

from natlearn.config import Config
from natlearn.data import ImageDataset
from natlearn.nat.loss import square_loss
from natlearn.training.nonfinite import NonFiniteBatch
from natlearn.training.run import Run, build_run
from natlearn.training.trainer import train_step


def _run(tmp_path, **changes) -> Run:
    """A run over 8 generated 8x8 images, ready to step."""
    settings = {"widths": (4, 8), "dim": 6, "batch_size": 4, "reassign_every": 1, "crop_padding": 1}
    config = Config(**{**settings, **changes, "out": str(tmp_path)})
    images = torch.randint(
        0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    return build_run(
        config, ImageDataset(images, torch.arange(8) % 2, ["even", "odd"], (0.5,), (0.25,))
    )


def _batch(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([5, 0, 3, 6])
    return ids, run.augment(run.data.images[ids], torch.Generator().manual_seed(1))


def _outputs_of(run: Run, inputs: torch.Tensor) -> torch.Tensor:
    run.model.train()
    with torch.no_grad(), torch.random.fork_rng():
        return run.model(inputs).clone()


def test_a_reassigning_step_takes_the_loss_to_the_targets_held_after_the_reassignment(tmp_path):
    run = _run(tmp_path)
    ids, inputs = _batch(run)
    before = run.objective.assignment[ids].clone()
    outputs = _outputs_of(_run(tmp_path), inputs)  # the same network, fresh BatchNorm statistics
    weights = [p.detach().clone() for p in run.model.parameters()]
    stats = train_step(run, ids, inputs, (0, 4), epoch=0)
    after = run.objective.assignment[ids]
    assert float(stats["reassigned"]) == float((after != before).double().mean()) > 0
    held_after = float(square_loss(outputs, run.objective.targets[after]))
    held_before = float(square_loss(outputs, run.objective.targets[before]))
    assert (
        float(stats["loss"]) == pytest.approx(held_after, abs=1e-6)
        and abs(held_after - held_before) > 1e-3
    )
    assert all(
        not torch.equal(p, w) for p, w in zip(run.model.parameters(), weights, strict=True)
    ), "no SGD step"
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in stats.values()), (
        "statistics stay on the device"
    )


def test_a_step_outside_reassignment_epochs_keeps_the_assignment(tmp_path):
    run = _run(tmp_path, reassign_every=3)
    ids, inputs = _batch(run)
    before = run.objective.assignment.image_to_target.clone()
    stats = train_step(run, ids, inputs, (0, 4), epoch=1)
    assert (
        torch.equal(run.objective.assignment.image_to_target, before) and "reassigned" not in stats
    )


@pytest.mark.parametrize("poisoned", ["outputs", "gradients"])
def test_a_nonfinite_batch_raises_before_the_optimizer_steps(tmp_path, poisoned):
    run = _run(tmp_path)
    ids, inputs = _batch(run)
    if poisoned == "outputs":
        inputs = inputs * float("nan")
    else:
        run.model.head.register_full_backward_hook(
            lambda module, grad_in, grad_out: (grad_in[0] * float("inf"),)
        )
    assignment = run.objective.assignment.image_to_target.clone()
    weights = [p.detach().clone() for p in run.model.parameters()]
    with pytest.raises(NonFiniteBatch) as raised:
        train_step(run, ids, inputs, (0, 4), epoch=0)
    assert raised.value.what == poisoned
    assert all(torch.equal(p, w) for p, w in zip(run.model.parameters(), weights, strict=True))
    if poisoned == "outputs":  # nothing was re-assigned from NaN outputs
        assert torch.equal(run.objective.assignment.image_to_target, assignment)


def test_the_supervised_step_never_reassigns(tmp_path):
    run = _run(tmp_path, objective="supervised")
    ids, inputs = _batch(run)
    stats = train_step(run, ids, inputs, (0, 4), epoch=0)
    assert {"loss", "train_accuracy"} <= stats.keys() and not run.objective.reassigns(0)
    assert not {"reassigned", "assign_ms"} & stats.keys()
