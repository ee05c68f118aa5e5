import dataclasses
import json

import pytest
import torch

from natlearn.checkpoint import checkpoint_paths, load_checkpoint, load_model
from natlearn.errors import NatlearnError
from natlearn.train import train


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
    never = train(dataclasses.replace(tiny_config, reassign_every=0, out=tiny_config.out + "-fixed")).history
    assert all(row["reassigned"] == 0 for row in never)


def _final_state(result):
    state = load_checkpoint(checkpoint_paths(result.run_dir)[-1])
    return state["model"], state["optimizer"], state["objective"]["assignment"]


def _assert_equal_states(a, b):
    for key in a[0]:
        assert torch.equal(a[0][key], b[0][key]), key
    assert torch.equal(a[2]["image_to_target"], b[2]["image_to_target"])
    assert torch.equal(a[2]["spare"], b[2]["spare"])
    for index, state in a[1]["state"].items():
        assert torch.equal(state["momentum_buffer"], b[1]["state"][index]["momentum_buffer"])


def test_resume_from_a_mid_run_checkpoint_matches_an_uninterrupted_run(tiny_config, tmp_path):
    # k > n with spare targets, so the assignment's own generator must be restored too.
    config = dataclasses.replace(tiny_config, epochs=5, reassign_every=3, k=1250, spare_targets=8, keep_last=10)
    uninterrupted = train(config)
    expected = _final_state(uninterrupted)

    interrupted = dataclasses.replace(config, out=str(tmp_path / "interrupted"))
    train(dataclasses.replace(interrupted, epochs=5))
    # Simulate a crash after epoch 2 that had already logged epoch 3.
    for path in checkpoint_paths(tmp_path / "interrupted")[2:]:
        path.unlink()
    log = tmp_path / "interrupted" / "log.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:3]))
    resumed = train(interrupted, resume=True)
    _assert_equal_states(_final_state(resumed), expected)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4, 5]
    assert [row["loss"] for row in resumed.history] == [row["loss"] for row in uninterrupted.history]


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
    assert [p.name for p in checkpoint_paths(result.run_dir)] == ["epoch_0002.pt", "epoch_0004.pt", "epoch_0005.pt"]
    model = load_model(checkpoint_paths(result.run_dir)[-1])
    images = torch.rand(3, 1, 8, 8)
    result.model.eval()
    assert torch.allclose(model(images), result.model(images))


def test_supervised_baseline_learns_the_labels(tiny_config):
    for loss in ("softmax", "square"):
        config = dataclasses.replace(tiny_config, objective="supervised", loss=loss, epochs=12, lr=0.2, out=f"{tiny_config.out}-{loss}")
        history = train(config).history
        assert history[-1]["train_accuracy"] > 0.6, loss  # chance is 0.1


def test_discrete_targets_and_softmax_loss_train(tiny_config):
    discrete = train(dataclasses.replace(tiny_config, targets="discrete", num_clusters=10, epochs=2))
    assert discrete.history[-1]["cosine"] > 0
    softmax = train(dataclasses.replace(tiny_config, loss="softmax", epochs=2, out=tiny_config.out + "-softmax"))
    assert softmax.history[-1]["loss"] < softmax.history[0]["loss"] + 1.0


def test_a_diverging_run_stops_with_a_clear_error(tiny_config):
    with pytest.raises(NatlearnError, match="epoch 1, step"):
        train(dataclasses.replace(tiny_config, lr=1e38, momentum=0.0, weight_decay=0.0, loss_reduction="sum", epochs=2))
