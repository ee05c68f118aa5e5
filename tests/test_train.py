"""Training: the NAT objective step by step, schedules, resumes, and whole (tiny) runs on digits and
folders."""

import dataclasses
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import assert_same_run
from natlearn.config import Config
from natlearn.data import load_dataset, pretraining_data
from natlearn.errors import NatlearnError
from natlearn.nat.loss import softmax_loss, square_loss
from natlearn.nat.objective import NoiseAsTargets
from natlearn.training.checkpoint import checkpoint_paths, load_checkpoint, load_model
from natlearn.training.schedule import learning_rate
from natlearn.training.trainer import train


def test_nat_on_digits_lowers_the_loss_and_raises_the_cosine(tiny_config):
    result = train(dataclasses.replace(tiny_config, epochs=6))
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"] - 0.1
    assert last["cosine"] > first["cosine"] + 0.05
    assert all(0 < row["reassigned"] <= 1 for row in result.history)
    logged = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in logged] == list(range(1, 7))
    assert {"loss", "cosine", "reassigned", "lr", "seconds", "images_per_s"} <= logged[0].keys()


def test_reassign_every_follows_the_official_schedule(tiny_config):
    history = train(dataclasses.replace(tiny_config, reassign_every=3)).history
    assert [row["reassigned"] > 0 for row in history] == [True, False, False, True]
    never = train(
        dataclasses.replace(tiny_config, reassign_every=0, out=tiny_config.out + "-fixed")
    ).history
    assert all(row["reassigned"] == 0 for row in never)


def test_resume_from_a_mid_run_checkpoint_matches_an_uninterrupted_run(tiny_config, tmp_path):
    # k > n with spare targets, so the assignment's own generator must be restored too.
    config = dataclasses.replace(
        tiny_config, epochs=5, reassign_every=3, k=1250, spare_targets=8, keep_last=10
    )
    uninterrupted = train(config)

    interrupted = dataclasses.replace(config, out=str(tmp_path / "interrupted"))
    train(dataclasses.replace(interrupted, epochs=5))
    # Simulate a crash after epoch 2 that had already logged epoch 3.
    for path in checkpoint_paths(tmp_path / "interrupted")[2:]:
        path.unlink()
    log = tmp_path / "interrupted" / "log.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:3]))
    resumed = train(interrupted, resume=True)
    assert_same_run(resumed.run_dir, uninterrupted.run_dir)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4, 5]
    assert [row["loss"] for row in resumed.history] == [
        row["loss"] for row in uninterrupted.history
    ]


def test_resume_refuses_a_different_config(tiny_config):
    train(dataclasses.replace(tiny_config, epochs=1))
    with pytest.raises(NatlearnError, match="dim"):
        train(dataclasses.replace(tiny_config, dim=8), resume=True)


def test_an_existing_run_is_not_overwritten_by_accident(tiny_config):
    train(dataclasses.replace(tiny_config, epochs=1))
    with pytest.raises(NatlearnError, match="--resume"):
        train(dataclasses.replace(tiny_config, epochs=1))
    assert len(train(dataclasses.replace(tiny_config, epochs=1), overwrite=True).history) == 1


def test_checkpoints_are_pruned_and_loadable(tiny_config):
    result = train(dataclasses.replace(tiny_config, epochs=5, keep_last=2, keep_every=2))
    assert [p.name for p in checkpoint_paths(result.run_dir)] == [
        "epoch_0002.pt",
        "epoch_0004.pt",
        "epoch_0005.pt",
    ]
    model = load_model(checkpoint_paths(result.run_dir)[-1])
    images = torch.rand(3, 1, 8, 8)
    result.model.eval()
    assert torch.allclose(model(images), result.model(images))


def test_supervised_baseline_learns_the_labels(tiny_config):
    for loss in ("softmax", "square"):
        config = dataclasses.replace(
            tiny_config,
            objective="supervised",
            loss=loss,
            epochs=12,
            lr=0.2,
            out=f"{tiny_config.out}-{loss}",
        )
        history = train(config).history
        assert history[-1]["train_accuracy"] > 0.6, loss  # chance is 0.1


def test_discrete_targets_and_softmax_loss_train(tiny_config):
    discrete = train(
        dataclasses.replace(tiny_config, targets="discrete", num_clusters=10, epochs=2)
    )
    held = discrete.objective.targets[discrete.objective.assignment.image_to_target]
    assert ((held == 1).sum(dim=1) == 1).all() and (
        (held == 0).sum(dim=1) == held.shape[1] - 1
    ).all()  # exactly one 1 per row
    assert held.argmax(dim=1).unique().tolist() == list(
        range(10)
    )  # one-hot rows, 10 distinct ones shared by the images
    assert discrete.history[-1]["loss"] < discrete.history[0]["loss"]
    assert discrete.history[-1]["cosine"] > discrete.history[0]["cosine"]
    softmax = train(
        dataclasses.replace(tiny_config, loss="softmax", epochs=2, out=tiny_config.out + "-softmax")
    )
    assert softmax.history[-1]["loss"] < softmax.history[0]["loss"]
    for row in (
        softmax.history
    ):  # the square loss of unit vectors would be 2 - 2 cos; the cross-entropy is not
        assert abs(row["loss"] - (2 - 2 * row["cosine"])) > 0.5


@pytest.mark.parametrize("loss", ["square", "softmax"])
def test_the_loss_is_taken_to_the_targets_held_after_the_reassignment(tiny_config, loss):
    """Computing the loss on the targets held before the batch's re-assignment is a known porting
    bug: the network would then be pulled towards targets its images no longer hold."""
    objective = NoiseAsTargets.from_config(
        dataclasses.replace(tiny_config, batch_size=4, loss=loss), n=6
    )
    ids = torch.tensor([4, 1, 5, 0])
    before = objective.assignment[ids].clone()
    swapped = before[[1, 0, 3, 2]]
    outputs = objective.targets[
        swapped
    ].requires_grad_()  # each image looks exactly like a neighbour's target
    assert objective.reassigns(epoch=0) and objective.reassign(ids, outputs.detach()) == 1.0
    value, stats = objective.loss(ids, outputs)
    assert torch.equal(objective.assignment[ids], swapped)

    def loss_to(target_ids):
        targets = objective.targets[target_ids]
        if loss == "square":
            return float(square_loss(outputs.detach(), targets))
        return float(
            softmax_loss(outputs.detach(), targets, torch.arange(len(ids)), tiny_config.temperature)
        )

    assert float(value.detach()) == pytest.approx(loss_to(swapped), abs=1e-6)
    assert abs(float(value.detach()) - loss_to(before)) > 0.5
    assert float(stats["cosine"]) == pytest.approx(1.0, abs=1e-6)
    value.backward()
    assert outputs.grad is not None and bool(torch.isfinite(outputs.grad).all())


def test_square_loss_logged_is_two_minus_two_cosine(tiny_config):
    """For unit vectors ||o - t||^2 = 2 - 2 cos(o, t): the logged loss and cosine are of the same
    targets."""
    for row in train(dataclasses.replace(tiny_config, epochs=1)).history:
        assert row["loss"] == pytest.approx(2 - 2 * row["cosine"], abs=1e-5)


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("constant", [0.1] * 10),
        ("cosine", [0.05 * (1 + math.cos(math.pi * epoch / 10)) for epoch in range(10)]),
        (
            "step",
            [0.1] * 5 + [0.01] * 3 + [0.001] * 2,
        ),  # x0.1 from 50% and again from 75% of the epochs
    ],
)
def test_learning_rate_schedules(schedule, expected):
    config = Config(lr=0.1, epochs=10, lr_schedule=schedule)
    assert [learning_rate(config, epoch) for epoch in range(10)] == pytest.approx(
        expected, abs=1e-12
    )


def test_warmup_ramps_linearly_then_the_schedule_runs_over_the_remaining_epochs():
    cosine = Config(lr=0.1, epochs=10, warmup_epochs=2, lr_schedule="cosine")
    got = [learning_rate(cosine, epoch) for epoch in range(10)]
    assert got[:3] == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1], abs=1e-12
    )  # (e + 1) / (warmup + 1), then the full lr
    assert got[6] == pytest.approx(0.05, abs=1e-12)  # half-way through the 8 epochs after warm-up
    assert got[9] == pytest.approx(0.05 * (1 + math.cos(math.pi * 7 / 8)), abs=1e-12)
    constant = Config(lr=0.1, epochs=10, warmup_epochs=2, lr_schedule="constant")
    assert [learning_rate(constant, epoch) for epoch in range(4)] == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1, 0.1], abs=1e-12
    )


def test_a_run_sets_and_logs_the_learning_rate_of_every_epoch(tiny_config):
    config = dataclasses.replace(
        tiny_config, epochs=3, warmup_epochs=1, lr=0.2, lr_schedule="step", subset=256
    )
    result = train(config)
    assert [row["lr"] for row in result.history] == pytest.approx([0.1, 0.2, 0.02], abs=1e-12)
    assert load_checkpoint(checkpoint_paths(result.run_dir)[-1])["optimizer"]["param_groups"][0][
        "lr"
    ] == pytest.approx(0.02, abs=1e-12)


def _class_folder(root: Path, per_class: int = 20) -> Path:
    """train/ and test/ folders of three classes of 8x8 digit PNGs; train/1/ also holds a file named
    like a JPEG that is not an image (a copy cut off half-way)."""
    digits = load_dataset("digits", "train")
    for label in range(3):
        images = digits.images[digits.labels == label]
        for split, part in (
            ("train", images[:per_class]),
            ("test", images[per_class : per_class + 5]),
        ):
            folder = root / split / str(label)
            folder.mkdir(parents=True)
            for index, image in enumerate(part):
                Image.fromarray(image[0].numpy(), "L").save(folder / f"{index:02d}.png")
    (root / "train" / "1" / "broken.jpg").write_bytes(
        b"\xff\xd8\xff\xe0 this JPEG was cut off by a failed copy"
    )
    return root


def test_stream_mode_trains_on_a_folder_and_skips_a_corrupt_image_with_one_warning(
    tiny_config, tmp_path
):
    folder = _class_folder(tmp_path / "images")
    config = dataclasses.replace(
        tiny_config,
        data=str(folder),
        data_mode="stream",
        on_bad_image="skip",
        workers=1,
        cache=False,
        widths=(8, 8),
        dim=8,
        batch_size=16,
        epochs=2,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config)
    skipped = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0], skipped  # one warning, for both epochs
    assert len(result.history) == 2 and all(math.isfinite(row["loss"]) for row in result.history)
    files = pretraining_data(config).listing.files
    assert (
        len(result.objective.assignment) == len(files) == 61
    )  # the bad file keeps an id, but is never trained on:
    broken = torch.tensor([i for i, path in enumerate(files) if path.name == "broken.jpg"])
    assert torch.equal(
        result.objective.assignment[broken],
        NoiseAsTargets.from_config(config, 61).assignment[broken],
    )  # its initial target


def test_a_diverging_run_stops_with_a_clear_error(tiny_config):
    with pytest.raises(NatlearnError, match="epoch 1, step"):
        train(
            dataclasses.replace(
                tiny_config, lr=1e38, momentum=0.0, weight_decay=0.0, loss_reduction="sum", epochs=2
            )
        )


def test_a_finished_run_leaves_last_pt_and_its_backbone(tiny_config):
    import natlearn

    result = train(dataclasses.replace(tiny_config, epochs=2))
    last = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    final = load_checkpoint(checkpoint_paths(result.run_dir)[-1])
    assert last["epoch"] == final["epoch"] == 2
    for key, value in final["model"].items():
        assert torch.equal(last["model"][key], value), key
    backbone = natlearn.load_backbone(result.run_dir / "backbone.safetensors")
    images = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(backbone(images), load_model(result.run_dir).backbone(images))
