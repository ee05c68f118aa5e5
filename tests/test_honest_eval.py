"""Every number evaluation prints means what it says: a user's folder is scored on held-out images,
no choice reads the test labels, and the probes train properly at any size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from natlearn.config import Config
from natlearn.data import load_dataset
from natlearn.evaluate import (
    EvalSettings,
    evaluate,
    evaluate_network,
    knn_classify,
    linear_probe,
    mlp_probe,
)
from natlearn.evaluate.reports.compare import best_linear
from natlearn.models import initial_model

SMALL = ["widths=[8,16]", "dim=8"]


def _noise_folder(root, per_class: int = 40, size: int = 12):
    """Two class folders of pure noise: nothing to learn, so any honest score is near chance
    (0.5)."""
    generator = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / name / f"{i:03d}.png"
            )
    return root


def test_a_plain_class_folder_is_scored_on_held_out_images_near_chance(tmp_path, monkeypatch):
    monkeypatch.setenv("NATLEARN_CACHE", str(tmp_path / "cache"))
    folder = _noise_folder(tmp_path / "noise")
    settings = EvalSettings(knn=(5, 200), mlp=True, mlp_hidden=32, progress=False)
    results = evaluate(
        "random-init",
        [f"data={folder}"],
        settings,
        tmp_path / "eval",
        base=Config(data=str(folder), widths=(8, 16), dim=8),
    )
    assert (results["train_images"], results["test_images"]) == (64, 16), (
        "a fifth of each class held out"
    )
    assert "held-out" in results["test_split"] and "split_seed 0" in results["test_split"]
    for protocol, table in results["protocols"].items():
        for layer, row in table.items():
            # Scored on its own training images this was 1.000 (k-NN finds each query itself).
            assert row["top1"] <= 0.8, f"{protocol} {layer}: {row['top1']} on pure noise"
    assert results["protocols"]["knn200"]["neck"]["k"] == 64, (
        "k-NN says it used the 64 training images, not 200"
    )
    markdown = (tmp_path / "eval" / "eval.md").read_text()
    assert "(k=64)" in markdown and "held-out" in markdown
    train = load_dataset(str(folder), "train", image_size=12)
    test = load_dataset(str(folder), "test", image_size=12)
    train_pixels = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in train_pixels for image in test.images), (
        "an image is in both splits"
    )


def test_an_unlabelled_flat_folder_asked_for_a_probe_gets_one_clear_error(
    tmp_path, capsys, monkeypatch
):
    from natlearn.cli import main

    monkeypatch.setenv("NATLEARN_CACHE", str(tmp_path / "cache"))
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(flat / f"{i}.png")
    assert main(["eval", "random-init", f"data={flat}", "widths=[8,16]"]) == 2
    *progress, error = capsys.readouterr().err.splitlines()
    assert error.startswith("natlearn: error:")
    assert "unlabelled flat folder" in error and "one sub-folder per class" in error
    assert all(f"{flat}: decoded 6 images" in line for line in progress)  # what it read, then why


def _overlapping_classes(
    n: int, seed: int, dims: int = 40, classes: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian classes that overlap: weight decays and layers score differently (separable data
    ties)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dims, generator=torch.Generator().manual_seed(99)) * 0.6
    return centres[labels] + torch.randn(n, dims, generator=generator), labels


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_permuting_the_test_labels_changes_no_choice_of_the_linear_probe(solver):
    x, y = _overlapping_classes(300, 0)
    test_x, test_y = _overlapping_classes(200, 1)
    shuffled = test_y[torch.randperm(len(test_y), generator=torch.Generator().manual_seed(5))]
    decays = (1e-4, 1e-2, 1.0, 30.0)
    honest = linear_probe(x, y, test_x, test_y, epochs=3, weight_decays=decays, solver=solver)
    blind = linear_probe(x, y, test_x, shuffled, epochs=3, weight_decays=decays, solver=solver)
    assert (honest.weight_decay, honest.held_out_top1) == (blind.weight_decay, blind.held_out_top1)
    assert honest.top1 > blind.top1 + 0.2, (
        "the permuted labels do reach the score (the test can tell them apart)"
    )


def test_permuting_the_test_labels_changes_no_choice_of_layer_k_or_mlp_steps():
    train_set, test_set = (
        load_dataset("digits", "train").subset(torch.arange(400)),
        load_dataset("digits", "test"),
    )
    model = initial_model(Config(widths=(8, 16), dim=8), train_set)
    shuffled = test_set.subset(torch.arange(len(test_set)))
    shuffled.labels = test_set.labels[
        torch.randperm(len(test_set), generator=torch.Generator().manual_seed(3))
    ]
    settings = EvalSettings(
        layers=["conv2", "neck"], knn=(20, 5000), mlp=True, mlp_hidden=32, progress=False
    )
    honest = evaluate_network(model, train_set, test_set, 8, settings)["protocols"]
    blind = evaluate_network(model, train_set, shuffled, 8, settings)["protocols"]
    assert best_linear({"protocols": honest})[0] == best_linear({"protocols": blind})[0]
    for protocol, table in honest.items():
        for layer, row in table.items():
            chosen = {key: value for key, value in row.items() if key != "top1"}
            assert chosen == {
                key: value for key, value in blind[protocol][layer].items() if key != "top1"
            }, (protocol, layer)
    assert honest["linear"]["neck"]["top1"] > blind["linear"]["neck"]["top1"] + 0.3


def test_best_linear_picks_the_held_out_best_layer_not_the_test_best():
    results = {
        "protocols": {
            "linear": {
                "conv1": {"top1": 0.70, "held_out_top1": 0.60},
                "conv2": {"top1": 0.65, "held_out_top1": 0.68},
            }
        }
    }
    assert best_linear(results) == ("conv2", 0.65)


def test_the_demo_picks_its_best_layer_on_held_out_train_images():
    from natlearn.demo import _score
    from natlearn.evaluate import extract_features

    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = initial_model(Config(widths=(8, 16), dim=8), train_set)
    layers = [*model.conv_names, "neck"]
    features = (
        extract_features(model, train_set.images, layers, 8),
        extract_features(model, test_set.images, layers, 8),
    )
    row = _score(*features, train_set, test_set)
    assert row["best_layer"] == max(
        row["per_layer_held_out_top1"], key=row["per_layer_held_out_top1"].get
    )
    assert row["best_layer_top1"] == row["per_layer_top1"][row["best_layer"]]


def test_the_mlp_probe_learns_an_easy_task_with_fewer_images_than_its_batch():
    x, y = _overlapping_classes(150, 0, dims=20, classes=3)
    x = (
        x * 3
    )  # well separated: a trained probe is near perfect, an untrained one is at chance (1/3)
    test_x, test_y = _overlapping_classes(300, 1, dims=20, classes=3)
    result = mlp_probe(x, y, test_x * 3, test_y, hidden=32, epochs=30, batch_size=256)
    assert result.steps >= 500
    assert result.top1 >= 0.85


def test_knn_reports_the_k_it_used():
    x, y = _overlapping_classes(30, 0)
    assert knn_classify(x, y, x, y, k=200).k == 30
    assert knn_classify(x, y, x, y, k=5).k == 5


def test_finetuning_follows_the_configs_flip(monkeypatch):
    import natlearn.evaluate.probes.finetune as finetune

    flips = []
    real = finetune.Augmentation

    def spy(*args, **kwargs):
        augmentation = real(*args, **kwargs)
        flips.append(augmentation.flip)
        return augmentation

    monkeypatch.setattr(finetune, "Augmentation", spy)
    train_set, test_set = (
        load_dataset("digits", "train").subset(torch.arange(64)),
        load_dataset("digits", "test").subset(torch.arange(32)),
    )
    model = initial_model(Config(widths=(8, 16), dim=8), train_set)
    finetune.finetune(model, train_set, test_set, 8, epochs=1, flip=False)
    assert flips and not any(flips)
    settings = EvalSettings(
        finetune_epochs=1, linear=False, knn=(), mlp=False, progress=False
    ).matching(Config(flip=False))
    flips.clear()
    evaluate_network(model, train_set, test_set, 8, settings)
    assert flips and not any(flips)


def test_eval_json_states_the_split(tmp_path):
    results = evaluate(
        "raw-pixels", [], EvalSettings(knn=(), mlp=False, progress=False), tmp_path, base=Config()
    )
    stored = json.loads((tmp_path / "eval.json").read_text())
    assert (
        stored["train_split"]
        and stored["test_split"]
        and stored["test_split"] != stored["train_split"]
    )
    assert results["train_images"] + results["test_images"] == 1797


def test_evaluation_views_images_as_the_network_was_trained(tmp_path, monkeypatch):
    """A network trained on resized crops (STL-10's preset) is evaluated on the matching resized
    view, not on an unresized centre crop at another scale."""
    import natlearn.evaluate.features as features

    views = []
    real = features.eval_view

    def spy(images, size, crop="pad", scale=0.25):
        views.append((crop, scale))
        return real(images, size, crop, scale)

    monkeypatch.setattr(features, "eval_view", spy)
    settings = EvalSettings(knn=(), mlp=False, progress=False)
    base = Config(widths=(8, 16), dim=8, crop="resized", crop_scale=0.5)
    evaluate("random-init", [], settings, tmp_path, base=base)
    assert views and set(views) == {("resized", 0.5)}


def test_knn_runs_on_its_layers_even_outside_the_linear_layers():
    """--layers conv2 --knn-layers neck: the k-NN row was silently missing (neck features were never
    extracted)."""
    train_set, test_set = (
        load_dataset("digits", "train").subset(torch.arange(200)),
        load_dataset("digits", "test").subset(torch.arange(100)),
    )
    model = initial_model(Config(widths=(8, 16), dim=8), train_set)
    settings = EvalSettings(
        layers=["conv2"], knn=(5,), knn_layers=("neck",), mlp=False, progress=False
    )
    protocols = evaluate_network(model, train_set, test_set, 8, settings)["protocols"]
    assert list(protocols["linear"]) == ["conv2"] and list(protocols["knn5"]) == ["neck"]


def test_compare_warns_when_sources_were_scored_on_different_test_splits():
    from natlearn.evaluate.reports.compare import compare_table

    def scored(split):
        result = {
            "model": "x.pt",
            "objective": "nat",
            "protocols": {"linear": {"neck": {"top1": 0.5, "held_out_top1": 0.5}}},
        }
        return result if split is None else {**result, "test_split": split}

    warning = "scored on different test splits"
    assert warning in compare_table({"a": scored("seed 0"), "b": scored("seed 1")})
    assert warning not in compare_table({"a": scored("seed 0"), "b": scored("seed 0")})
    # a result stored before evaluations recorded their split is not evidence of another one
    assert warning not in compare_table({"a": scored(None), "b": scored("seed 0")})
