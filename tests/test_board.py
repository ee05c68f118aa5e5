"""A run logged to TensorBoard shows its evaluations, figures and a projector there, read back with
TensorBoard's own event reader."""

import json
from pathlib import Path

import pytest

from natlearn.cli import main

pytest.importorskip("tensorboard")

SETTINGS = ["widths=[8,8]", "dim=8", "subset=300", "batch_size=100", "epochs=2", "keep_every=1"]
FLAGS = ["--no-mlp", "--knn", "5", "--layers", "conv2,neck"]


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0}).Reload()


@pytest.fixture(scope="module")
def board_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("board") / "run"
    common = ["digits", *SETTINGS, "logger=tensorboard", "progress=false", f"out={run}"]
    assert main(["train", *common]) == 0
    return run


def test_evaluations_land_at_the_step_of_the_epoch_they_measured_once_each(board_run, capsys):
    run = board_run
    assert main(["evolution", str(run), *FLAGS, "progress=false"]) == 0
    assert main(["eval", str(run), *FLAGS, "progress=false"]) == 0
    assert main(["eval", str(run), *FLAGS, "progress=false"]) == 0  # again: no duplicate point
    assert f"TensorBoard: evaluations and figures in {run / 'tensorboard' / 'eval'}" in (
        capsys.readouterr().out
    )
    training = _events(run / "tensorboard")
    step_of = {round(e.value): e.step for e in training.Scalars("epoch/epoch")}
    assert step_of == {1: 3, 2: 6}  # 300 images in batches of 100
    shown = _events(run / "tensorboard" / "eval")
    evolution = json.loads((run / "evolution" / "evolution.json").read_text())
    for layer in ("conv2", "neck"):
        points = [(e.step, e.value) for e in shown.Scalars(f"eval/linear/{layer}")]
        expected = [
            ({0: 0, **step_of}[row["epoch"]], row["protocols"]["linear"][layer]["top1"])
            for row in evolution
        ]
        assert [step for step, _ in points] == [step for step, _ in expected] == [0, 3, 6]
        assert [value for _, value in points] == pytest.approx([v for _, v in expected], abs=1e-6)
    evaluated = json.loads((run / "eval" / "eval.json").read_text())
    assert evaluated["epoch"] == 2
    knn = [(e.step, e.value) for e in shown.Scalars("eval/knn5/neck")]
    assert knn[-1][0] == 6
    assert knn[-1][1] == pytest.approx(evaluated["protocols"]["knn5"]["neck"]["top1"], abs=1e-6)


def test_figures_and_a_projector_of_test_images_with_their_classes(board_run, capsys):
    run = board_run
    assert main(["neighbors", str(run), "--out", str(run / "neighbours.png")]) == 0
    assert main(["report", str(run)]) == 0
    images = _events(run / "tensorboard" / "eval")
    tags = images.Tags()["images"]
    assert {"figures/neighbours", "figures/training_curves"} <= set(tags)
    from PIL import Image

    with Image.open(run / "neighbours.png") as figure:
        width, height = figure.size
    (shown,) = images.Images("figures/neighbours")
    assert (shown.width, shown.height, shown.step) == (width, height, 6)

    projector = run / "tensorboard" / "projector"
    config = (projector / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "neck, epoch 2' in config and "sprite" in config
    (tensors,) = projector.rglob("tensors.tsv")
    rows = tensors.read_text().splitlines()
    names = (tensors.parent / "metadata.tsv").read_text().splitlines()
    assert len(rows) == len(names) == 599  # digits' test split, under the sample size
    assert len(rows[0].split("\t")) == 8  # the neck's 8 features
    assert set(names) == {str(d) for d in range(10)}


def test_a_run_without_tensorboard_gets_no_board(tmp_path, capsys):
    run = tmp_path / "plain"
    assert main(["train", "digits", *SETTINGS, "progress=false", f"out={run}"]) == 0
    assert main(["eval", str(run), *FLAGS, "progress=false"]) == 0
    assert main(["report", str(run)]) == 0
    assert not (run / "tensorboard").exists() and "TensorBoard" not in capsys.readouterr().out
