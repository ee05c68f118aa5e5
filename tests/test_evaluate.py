"""Evaluation: the probes on features with known answers, frozen-feature extraction, and every
protocol on a tiny run."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from natlearn.cli import main
from natlearn.config import Config
from natlearn.data import load_dataset
from natlearn.evaluate import (
    EvalSettings,
    evaluate,
    extract_features,
    finetune,
    knn_classify,
    linear_probe,
    mlp_probe,
    pool_conv_map,
)
from natlearn.evaluate.reports.compare import gap_recovered
from natlearn.evaluate.reports.evolution import evolution
from natlearn.evaluate.reports.figures import filters_figure, neighbours_figure, training_curves
from natlearn.evaluate.reports.report import write_report
from natlearn.models import initial_model
from natlearn.training.trainer import train


def _blobs(n: int, classes: int = 5, dims: int = 40, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = 6 * torch.randn(classes, dims, generator=generator)
    labels = torch.arange(n) % classes
    return centres[labels] + torch.randn(n, dims, generator=generator), labels


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_linear_probe_separates_separable_features(solver):
    x, y = _blobs(1500)
    result = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], solver=solver, epochs=10)
    assert result.top1 > 0.98


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_linear_probe_stays_near_chance_on_shuffled_labels(solver):
    x, y = _blobs(1500)
    shuffled = y[:1000][torch.randperm(1000, generator=torch.Generator().manual_seed(1))]
    result = linear_probe(x[:1000], shuffled, x[1000:], y[1000:], solver=solver, epochs=10)
    assert result.top1 < 0.3  # chance is 0.2


def test_probe_choices_never_depend_on_test_labels():
    x, y = _blobs(900, classes=4)
    honest = linear_probe(x[:600], y[:600], x[600:], y[600:])
    garbage = linear_probe(x[:600], y[:600], x[600:], torch.zeros(300, dtype=torch.long))
    assert (honest.weight_decay, honest.held_out_top1) == (
        garbage.weight_decay,
        garbage.held_out_top1,
    )
    assert garbage.top1 == pytest.approx(float((y[600:] == 0).double().mean()), abs=0.05)


def test_top5_is_reported_with_more_than_ten_classes():
    x, y = _blobs(1200, classes=12)
    assert linear_probe(x[:800], y[:800], x[800:], y[800:]).top5 >= 0.98
    assert linear_probe(x[:800], y[:800] % 10, x[800:], y[800:] % 10).top5 is None


def test_knn_on_exact_duplicates_is_perfect_and_mlp_learns():
    x, y = _blobs(600)
    assert knn_classify(x, y, x, y, k=20).top1 == 1.0
    assert knn_classify(x[:400], y[:400], x[400:], y[400:], k=200).top1 > 0.95
    assert mlp_probe(x[:400], y[:400], x[400:], y[400:], hidden=64, epochs=10).top1 > 0.95


def test_deepcluster_pooling_sizes_for_alexnet():
    maps = {
        "conv1": (96, 55),
        "conv2": (256, 27),
        "conv3": (384, 13),
        "conv4": (384, 13),
        "conv5": (256, 13),
    }
    dims = {
        name: pool_conv_map(torch.zeros(1, c, s, s), name, "alexnet").shape[1]
        for name, (c, s) in maps.items()
    }
    assert dims == {"conv1": 9600, "conv2": 9216, "conv3": 9600, "conv4": 9600, "conv5": 9216}
    assert pool_conv_map(torch.zeros(1, 32, 32, 32), "conv1", "small").shape[1] == 32 * 16 * 16


def test_feature_extraction_has_no_randomness():
    data = load_dataset("digits", "test")
    model = initial_model(Config(widths=(8, 16), dim=8), data)
    a = extract_features(model, data.images[:100], ["conv1", "neck"], 8)
    b = extract_features(model, data.images[:100], ["conv1", "neck"], 8)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_images_features_do_not_depend_on_its_batch_and_extraction_leaves_batchnorm_alone():
    """Training leaves the network in train mode; extraction must switch to eval mode, or BatchNorm
    would normalise each image by the statistics of whatever batch it landed in (and move its
    running statistics)."""
    data = load_dataset("digits", "test")
    model = initial_model(Config(widths=(8, 16), dim=8), data)
    generator = torch.Generator().manual_seed(0)
    for module in (
        model.modules()
    ):  # running statistics like a trained network's, not the 0 / 1 of a fresh one
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    layers = ["conv1", "conv2", "neck"]
    images = data.images[:96]
    model.train()
    whole = extract_features(model, images, layers, 8, batch_size=96)
    model.train()
    in_threes = extract_features(model, images, layers, 8, batch_size=3)
    model.train()
    alone = extract_features(model, images[5:6], layers, 8, batch_size=1)
    for layer in layers:
        assert torch.allclose(whole[layer], in_threes[layer], atol=1e-5), layer
        assert torch.allclose(whole[layer][5:6], alone[layer], atol=1e-5), layer
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items()), (
        "extraction changed the BatchNorm statistics"
    )


FAST = EvalSettings(knn=(20,), mlp=True, mlp_hidden=32, probe_epochs=3, progress=False)


def test_evaluate_a_checkpoint_writes_every_protocol(tiny_run, tmp_path):
    checkpoint = tiny_run.run_dir / "checkpoints" / "epoch_0002.pt"
    results = evaluate(str(checkpoint), [], FAST, tmp_path / "eval")
    assert (results["train_images"], results["test_images"]) == (
        1198,
        599,
    )  # fit on train, score on test
    assert set(results["protocols"]) == {"linear", "knn20", "mlp"}
    assert set(results["protocols"]["linear"]) == {"conv1", "conv2", "neck"}
    assert list(results["protocols"]["mlp"]) == ["conv2"]
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["protocols"]["linear"]["conv1"]["top1"] > 0.5
    assert "| conv1 |" in (tmp_path / "eval" / "eval.md").read_text()


def test_evolution_reads_the_checkpoints_of_a_run(tiny_run, tmp_path):
    rows = evolution(
        tiny_run.run_dir,
        EvalSettings(layers=["neck"], knn=(), mlp=False, progress=False),
        out=tmp_path,
    )
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert (tmp_path / "evolution.png").stat().st_size > 1000 and "| 2 |" in (
        tmp_path / "evolution.md"
    ).read_text()


def test_figures_are_written_with_the_expected_size(tiny_run, tmp_path):
    data = load_dataset("digits", "test")
    features = torch.randn(len(data), 8)
    path = neighbours_figure(
        {"a": (features, features)}, data.images, data.images, tmp_path / "n.png", queries=4, k=5
    )
    with Image.open(path) as image:
        assert image.size == (480, 340)  # figsize (6 x 0.8, 4 x 0.85) inches at 100 dpi
    with Image.open(filters_figure(tiny_run.model, tmp_path / "f.png")) as image:
        assert image.width > 400 and image.height > 40 and len(np.unique(np.asarray(image))) > 10
    with Image.open(training_curves({"nat": tiny_run.history}, tmp_path / "c.png")) as image:
        assert image.size == (900, 340)


def test_report_gathers_the_run(tiny_run):
    text = write_report(tiny_run.run_dir).read_text()
    assert "# Run report" in text and "training_curves.png" in text and "| dim | 16 |" in text


def test_cli_baselines_and_comparison(tiny_run, tmp_path, capsys):
    checkpoint = str(tiny_run.run_dir / "checkpoints" / "epoch_0002.pt")
    flags = ["--knn", "20", "--probe-epochs", "2", "--no-mlp", "--layers", "conv1,neck"]
    assert (
        main(
            ["eval", "random-init", "widths=[8,16]", "dim=16", "--out", str(tmp_path / "r"), *flags]
        )
        == 0
    )
    assert main(["eval", "raw-pixels", "--out", str(tmp_path / "p"), "--knn", "20"]) == 0
    supervised = train(
        Config(
            widths=(8, 16),
            epochs=3,
            objective="supervised",
            out=str(tmp_path / "sup"),
            progress=False,
        )
    )
    sup_checkpoint = str(supervised.run_dir / "checkpoints" / "epoch_0003.pt")
    code = main(
        [
            "compare",
            checkpoint,
            "random-init",
            sup_checkpoint,
            "raw-pixels",
            "--out",
            str(tmp_path / "c"),
            *flags,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "best linear" in out
    compared = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert len(compared["results"]) == 4 and "0-run" in compared["gap_recovered"]


def test_finetune_trains_a_copy_and_the_cli_reports_a_finetune_row(tiny_run, tmp_path):
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    before = {key: value.clone() for key, value in tiny_run.model.state_dict().items()}
    assert (
        finetune(tiny_run.model, train_set, test_set, 8, epochs=4, lr=0.1).top1 > 0.3
    )  # chance is 0.1
    assert all(
        torch.equal(tiny_run.model.state_dict()[key], value) for key, value in before.items()
    ), "the pre-trained network was changed"
    checkpoint = str(tiny_run.run_dir / "checkpoints" / "epoch_0002.pt")
    flags = ["--finetune", "1", "--layers", "neck", "--knn", "", "--no-mlp", "--probe-epochs", "1"]
    assert main(["eval", checkpoint, "--out", str(tmp_path / "e"), *flags]) == 0
    protocols = json.loads((tmp_path / "e" / "eval.json").read_text())["protocols"]
    assert set(protocols) == {"linear", "finetune"}
    assert 0 <= protocols["finetune"]["all"]["top1"] <= 1


def test_finetune_does_not_depend_on_the_global_rng(tiny_run):
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    scores = []
    for seed in (0, 1):
        torch.manual_seed(
            seed
        )  # whatever ran before (another evaluation, a model build) moved the global RNG
        scores.append(finetune(tiny_run.model, train_set, test_set, 8, epochs=1).top1)
    assert scores[0] == scores[1]


def test_gap_recovered_arithmetic():
    def res(model, objective, top1, **layers):
        return {
            "model": model,
            "objective": objective,
            "test_images": 10_000,  # differences of 10 points are far beyond noise here
            "protocols": {"linear": {"conv1": {"top1": top1, "held_out_top1": top1}, **layers}},
        }

    # NAT's conv2 has the best test score but the worse held-out one: the layer is chosen on
    # held-out training images.
    nat = res("a.pt", "nat", 0.6, conv2={"top1": 0.8, "held_out_top1": 0.4})
    results = {
        "nat": nat,
        "rand": res("random-init", "nat", 0.5),
        "sup": res("b.pt", "supervised", 0.9),
    }
    assert gap_recovered(results) == {"nat": pytest.approx(0.25)}
