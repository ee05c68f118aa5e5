"""Behaviours a plausible one-line bug would break while every other quick test still passed, each
pinned against a hand-computed case or a reference run (benchmarks/mutants.py applies those bugs
and names these tests as the ones that must catch them)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import natlearn.evaluate.probes.finetune as finetune
import natlearn.evaluate.voc.classification as voc_classification
import natlearn.nat.objective as objectives
import natlearn.training.trainer as training
from natlearn.config import Config
from natlearn.data import load_dataset
from natlearn.evaluate import EvalSettings, knn_classify, linear_probe, mlp_probe
from natlearn.evaluate.reports.evolution import evolution
from natlearn.evaluate.reuse import eval_key, file_sha256, find_reusable
from natlearn.models import initial_model
from natlearn.training.trainer import train

# --- training ------------------------------------------------------------------------------------


def test_spare_targets_set_in_the_config_take_part_in_the_runs_reassignments(
    tiny_config, monkeypatch
):
    """spare_targets=m offers m unassigned targets to every batch problem, so after one
    re-assigning epoch some images hold targets no image held at the start. Without spares a
    re-assignment only permutes the held targets: the held set never changes."""
    initial: list[set[int]] = []

    class Recorded(objectives.Assignment):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            initial.append(set(self.image_to_target.tolist()))

    monkeypatch.setattr(objectives, "Assignment", Recorded)
    n = 512
    config = dataclasses.replace(tiny_config, epochs=1, subset=n, k=n + 64, spare_targets=16)
    assignment = train(config).objective.assignment
    assert len(initial) == 1 and assignment.spare_targets == 16
    held = set(assignment.image_to_target.tolist())
    assert len(held) == n and held - initial[0], "no image took a spare target"


def test_a_mid_epoch_resume_trains_the_uninterrupted_batches_and_crops(tiny_config, monkeypatch):
    """A run stopped after step 4 of its 5 and resumed from its step-2 checkpoint trains steps 3-5
    on the images, in the order, and with the crops and flips the uninterrupted run used."""
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []
    step = training.train_step

    def recorded(run, ids, inputs, rows, epoch):
        steps.append((ids.clone(), inputs.clone()))
        return step(run, ids, inputs, rows, epoch)

    monkeypatch.setattr(training, "train_step", recorded)
    config = dataclasses.replace(
        tiny_config, epochs=1, subset=640, checkpoint_every_steps=2, flip=True
    )
    train(config)
    uninterrupted = steps[:]
    assert len(uninterrupted) == 5

    class Crash(Exception):
        pass

    def crash(name):
        if name == "after-step:1:4":
            raise Crash

    crashing = dataclasses.replace(config, out=config.out + "-crashed")
    monkeypatch.setattr(training, "fault_point", crash)
    with pytest.raises(Crash):
        train(crashing)
    monkeypatch.setattr(training, "fault_point", lambda name: None)
    steps.clear()
    train(crashing, resume=True)
    for i, ((ids, inputs), (want_ids, want_inputs)) in enumerate(
        zip(steps, uninterrupted[2:], strict=True), start=3
    ):
        assert torch.equal(ids, want_ids), f"step {i} trained other images"
        assert torch.equal(inputs, want_inputs), f"step {i} drew other crops or flips"


# --- probes --------------------------------------------------------------------------------------


def test_knn_votes_weigh_each_neighbour_by_exp_of_similarity_over_temperature():
    """Three training points: (1, 0) of class 0 and (0, 1) twice of class 1; k = 3, so all vote.
    A query at angle a has cosine cos(a) to the first and sin(a) to the others: class 0 wins iff
    exp(cos a / T) > 2 exp(sin a / T), i.e. cos a - sin a > T ln 2. By hand, with T = 0.07
    (T ln 2 = 0.0485): a = 42.8 deg gives 0.0543 (class 0), a = 43.3 deg gives 0.0420 (class 1);
    with T = 0.5 (0.3466): a = 29 deg gives 0.3898 (class 0), a = 32.5 deg gives 0.3059 (class 1).
    Equal votes would give class 1 every time; a temperature off by 15% flips a pair."""
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    for temperature, angles in ((0.07, (42.8, 43.3)), (0.5, (29, 32.5))):
        for degrees, want in zip(angles, (0, 1), strict=True):
            a = math.radians(degrees)
            votes = (math.exp(math.cos(a) / temperature), 2 * math.exp(math.sin(a) / temperature))
            assert votes.index(max(votes)) == want  # the hand computation above
            query = torch.tensor([[math.cos(a), math.sin(a)]])
            result = knn_classify(
                bank, labels, query, torch.tensor([want]), k=3, temperature=temperature
            )
            assert result.top1 == 1.0, f"T={temperature}, {degrees} deg: not class {want}"


def _outlier_split(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by feature 0 (-1 or +1, noise 0.2); feature 1 is noise."""
    labels = torch.arange(n) % 2
    signal = (2 * labels - 1).float() + 0.2 * torch.randn(n, generator=generator)
    return torch.stack([signal, torch.randn(n, generator=generator)], dim=1), labels


@pytest.mark.parametrize("probe", ["linear", "mlp"])
def test_a_probe_standardises_by_the_training_features_alone(probe):
    """One test image with feature 0 at 1e5 moves the test split's mean and std by thousands: a
    probe standardised by the training features still classifies every ordinary test image, one
    whose statistics include the test features squashes them together (half are then wrong)."""
    generator = torch.Generator().manual_seed(0)
    x, y = _outlier_split(200, generator)
    test_x, test_y = _outlier_split(100, generator)
    test_x = torch.cat([test_x, torch.tensor([[1e5, 0.0]])])
    test_y = torch.cat([test_y, torch.tensor([1])])
    if probe == "linear":
        result = linear_probe(x, y, test_x, test_y, weight_decays=(1e-3,))
    else:
        result = mlp_probe(x, y, test_x, test_y, hidden=32, epochs=5, min_steps=100)
    assert result.top1 >= 100 / 101


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_the_linear_probes_held_out_score_is_on_images_its_fit_never_saw(solver):
    """Random labels on more dimensions than images: a linear fit memorises what it trains on
    (near 1.0 there) and is at chance (0.25) on images it never saw. The held-out score the decay
    and the layer are chosen by must be the second."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 400, generator=generator)
    y = torch.randint(0, 4, (200,), generator=generator)
    result = linear_probe(x, y, x, y, weight_decays=(1e-5,), solver=solver, epochs=1)
    assert result.top1 > 0.9, "the fit does memorise its training images (the test can tell)"
    assert result.held_out_top1 < 0.45, f"held-out {result.held_out_top1} on random labels"


def test_a_finetuned_network_scores_each_test_image_independently_of_its_batch(monkeypatch):
    """Fine-tuning scores the test split in chunks: every image's logits must be the ones it gets
    alone (BatchNorm on its running statistics), whatever else is in its chunk."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    tuned: list[tuple[torch.nn.Module, torch.utils.hooks.RemovableHandle]] = []
    tune = finetune.tuned_copy

    def recorded(*args, **kwargs):
        network = tune(*args, **kwargs)
        hook = network.register_forward_hook(
            lambda module, inputs, output: calls.append((inputs[0].clone(), output.clone()))
        )
        tuned.append((network, hook))
        return network

    monkeypatch.setattr(finetune, "tuned_copy", recorded)
    train_set = load_dataset("digits", "train").subset(torch.arange(128))
    test_set = load_dataset("digits", "test").subset(torch.arange(64))
    model = initial_model(Config(widths=(8, 16), dim=8), train_set)
    result = finetune.finetune(model, train_set, test_set, 8, epochs=1, lr=0.1)
    assert len(tuned) == 1 and len(calls) == 1 and len(calls[0][0]) == 64
    network, hook = tuned[0]
    hook.remove()
    network.eval()
    with torch.no_grad():
        for inputs, logits in calls:
            alone = torch.cat([network(image[None]) for image in inputs])
            torch.testing.assert_close(logits, alone, rtol=1e-4, atol=1e-5)
    predicted = calls[0][1].argmax(dim=1)
    assert result.top1 == float((predicted == test_set.labels).double().mean())


# --- reuse, recipes, indexes ---------------------------------------------------------------------


def test_the_reuse_key_changes_when_only_the_test_split_changes(tmp_path):
    """An evaluation stored for one test split is never reused for another: the same train split
    with a test split one image shorter, or relabelled, has another key."""
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    settings = EvalSettings(progress=False)
    network = {"features": "pixels"}

    def key(test):
        return eval_key(network, settings, train_set, test, 8)

    same = test_set.subset(torch.arange(len(test_set)))
    shorter = test_set.subset(torch.arange(len(test_set) - 1))
    relabelled = test_set.subset(torch.arange(len(test_set)))
    relabelled.labels = test_set.labels.roll(1)
    assert key(same) == key(test_set)
    assert len({json.dumps(key(t), sort_keys=True) for t in (test_set, shorter, relabelled)}) == 3
    stored = tmp_path / "eval.json"
    stored.write_text(json.dumps({"key": key(shorter), "protocols": {}}))
    assert find_reusable(key(test_set), [stored]) is None
    assert find_reusable(key(shorter), [stored]) is not None


def test_the_voc_linear_probe_refits_on_trainval_with_the_decay_val_chose(monkeypatch):
    """The VOC07 linear recipe: each decay fit on train and scored on val, then one refit on
    train + val with the decay of the best val mAP (the one reported), not the last one tried."""
    fits: list[tuple[int, float]] = []
    fit = voc_classification._fit_linear

    def recorded(x, targets, decay):
        fits.append((len(x), decay))
        return fit(x, targets, decay)

    monkeypatch.setattr(voc_classification, "_fit_linear", recorded)
    generator = torch.Generator().manual_seed(0)
    sizes = {"train": 40, "val": 40, "test": 40}
    # 30 features, two of them (one per class) weakly informative: small decays overfit.
    targets = {
        name: torch.where(torch.rand(n, 2, generator=generator) < 0.5, 1, -1).to(torch.int8)
        for name, n in sizes.items()
    }
    features = {
        name: torch.cat([targets[name].float() * 0.5, torch.zeros(n, 28)], dim=1)
        + torch.randn(n, 30, generator=generator)
        for name, n in sizes.items()
    }
    decays = (1e-4, 1e-2, 1.0, 100.0)
    settings = voc_classification.ClassifySettings(weight_decays=decays, progress=False)
    result = voc_classification._linear_probe(features, targets, settings, ("a", "b"))
    by_decay = {float(d): score for d, score in result["val_map11_by_decay"].items()}
    chosen = max(by_decay, key=lambda d: (by_decay[d], -decays.index(d)))
    *searched, final = fits
    assert all(rows == sizes["train"] for rows, _ in searched)
    assert searched[-1][1] != chosen, "the last decay tried is the chosen one: nothing to tell"
    assert final == (sizes["train"] + sizes["val"], chosen) and result["weight_decay"] == chosen


def test_each_evolution_row_evaluates_the_checkpoint_of_its_epoch(tiny_config, tmp_path):
    """keep_every=2 and keep_last=1 over 3 epochs keep epochs 2 and 3: evolution's rows are
    epochs 0 (random init), 2 and 3, each the evaluation of that epoch's checkpoint file."""
    config = dataclasses.replace(tiny_config, epochs=3, subset=256, keep_every=2, keep_last=1)
    run_dir = train(config).run_dir
    settings = EvalSettings(layers=["neck"], knn=(), mlp=False, probe_epochs=1, progress=False)
    rows = evolution(run_dir, settings, out=tmp_path / "evolution")
    assert [row["epoch"] for row in rows] == [0, 2, 3]
    assert "random_init" in rows[0]["key"]["network"]
    for row in rows[1:]:
        checkpoint = run_dir / "checkpoints" / f"epoch_{row['epoch']:04d}.pt"
        assert row["key"]["network"]["checkpoint_sha256"] == file_sha256(checkpoint)
    table = (tmp_path / "evolution" / "evolution.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[-3:]] == ["0", "2", "3"]
