"""Issue 23, NAT that learns on a ResNet: head=mlp (the official code's projection head) in whole
runs (listed by --help, trained, resumed, dropped from exports), the per-epoch diagnostics of how
each stage learns, and the recipe study's held-out train images."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from helpers import assert_same_run
from natlearn import load_backbone
from natlearn.cli import main
from natlearn.config import Config
from natlearn.data import ImageDataset, subset_indices
from natlearn.export import export_backbone
from natlearn.models import build_model
from natlearn.training.checkpoint import checkpoint_paths, load_model
from natlearn.training.run import build_run
from natlearn.training.trainer import train, train_step

SPEC = {"num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3, "channels": 3}


def test_train_help_lists_the_head_fields(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    for field in ("head=linear", "head_widths=(2048, 2048)", "head_dropout=0.0"):
        assert field in shown


@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_an_mlp_head_run_exports_its_backbone_without_the_head(arch, tmp_path):
    out = tmp_path / "run"
    settings = [f"arch={arch}", "widths=[8,16]", "dim=8", "subset=128", "batch_size=64"]
    settings += ["epochs=1", "head=mlp", "head_widths=[16,12]", "head_dropout=0.5"]
    assert main(["train", "digits", *settings, "progress=false", f"out={out}"]) == 0
    checkpoint = out / "checkpoints" / "epoch_0001.pt"
    trained = load_model(checkpoint)  # the mlp head is rebuilt from the checkpoint's config
    assert [trained.head.hidden[i].out_features for i in (0, 4)] == [16, 12]
    plain = torch.load(export_backbone(checkpoint, tmp_path / "b.pt"), weights_only=True)
    assert not any(key.startswith("head.") for key in plain)
    rebuilt = load_backbone(export_backbone(checkpoint, tmp_path / "b.safetensors"))
    images = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), trained.eval().backbone(images))


def test_an_mlp_head_run_resumed_mid_run_ends_where_an_uninterrupted_run_ends(
    tiny_config, tmp_path
):
    config = dataclasses.replace(
        tiny_config, epochs=3, head="mlp", head_widths=(16, 16), head_dropout=0.5, keep_last=5
    )
    uninterrupted = train(config)
    interrupted = dataclasses.replace(config, out=str(tmp_path / "interrupted"))
    train(interrupted)
    for path in checkpoint_paths(tmp_path / "interrupted")[1:]:  # a crash after epoch 1
        path.unlink()
    log = tmp_path / "interrupted" / "log.jsonl"
    log.write_text(log.read_text().splitlines(keepends=True)[0])
    assert_same_run(train(interrupted, resume=True).run_dir, uninterrupted.run_dir)


@pytest.mark.parametrize(
    "arch,stages",
    [
        ("small", ["conv1", "conv2", "head"]),
        ("resnet18", ["conv1", "layer1", "layer2", "layer3", "layer4", "head"]),
    ],
)
def test_every_epoch_logs_the_gradient_norm_per_stage_and_the_norm_before_normalising(
    arch, stages, tiny_config, capsys
):
    config = dataclasses.replace(
        tiny_config, arch=arch, epochs=1, subset=128, batch_size=64, progress=True
    )
    train(config)
    # the console's epoch line keeps to the objective: the diagnostics are for the log
    printed = capsys.readouterr()
    lines = (printed.out + printed.err).splitlines()
    (line,) = [x for x in lines if x.startswith("epoch 1/1")]
    assert "loss " in line and "grad_" not in line and "h_norm" not in line
    row = json.loads((Path(config.out) / "log.jsonl").read_text().splitlines()[0])
    assert {f"grad_{stage}" for stage in stages} | {"h_norm"} <= row.keys()
    assert not any(key.startswith("grad_") for key in row.keys() - {f"grad_{s}" for s in stages})
    assert all(row[f"grad_{stage}"] > 0 for stage in stages) and row["h_norm"] > 0


def test_a_steps_diagnostics_are_its_gradients_per_stage_and_its_head_output_norm(tmp_path):
    """What the step logs is measured on the step itself: the norm of the head's output before
    L2 normalisation, and each stage's gradient norm (sqrt of the sum over its tensors)."""
    config = Config(widths=(4, 8), dim=6, batch_size=4, head="mlp", head_widths=(8,))
    images = torch.randint(
        0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    data = ImageDataset(images, torch.arange(8) % 2, ["even", "odd"], (0.5,), (0.25,))
    run = build_run(dataclasses.replace(config, out=str(tmp_path)), data)
    ids = torch.tensor([5, 0, 3, 6])
    inputs = run.augment(run.data.images[ids], torch.Generator().manual_seed(1))
    head = run.model.head
    with torch.no_grad(), torch.random.fork_rng():
        before = run.model.train().backbone(inputs)
        h = head.linear(head.hidden(before))  # BatchNorm in train mode: the batch's own statistics
    stats = train_step(run, ids, inputs, (0, 4), epoch=0)
    assert float(stats["h_norm"]) == pytest.approx(float(h.norm(dim=1).mean()), rel=1e-5)
    assert float(h.norm(dim=1).mean()) != pytest.approx(1.0)  # not the normalised output's
    blocks = {"conv1": run.model.convs.conv1, "conv2": run.model.convs.conv2, "head": head}
    for stage, block in blocks.items():
        want = torch.cat([p.grad.flatten() for p in block.parameters()]).norm()
        assert float(stats[f"grad_{stage}"]) == pytest.approx(float(want), rel=1e-5), stage
    assert "grad_neck" not in stats  # a pooling neck has nothing to train


def test_the_recipe_study_scores_train_images_its_runs_never_saw(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from resnet_recipe import held_out_indices

    config = Config(subset=300, seed=7)
    held_out = held_out_indices(config, 1000, 200)
    assert len(held_out) == len(set(held_out.tolist())) == 200
    assert not set(held_out.tolist()) & set(subset_indices(config, 1000).tolist())
    assert torch.equal(held_out, held_out_indices(config, 1000, 200))  # the same for every row


def test_fine_tuning_an_mlp_head_network_puts_a_linear_classifier_on_its_neck():
    """Fine-tuning replaces the NAT head, MLP or not, by a linear map from the pooled features."""
    from natlearn.data import load_dataset
    from natlearn.evaluate.probes.finetune import finetune

    config = Config(widths=(8, 16), dim=8, head="mlp", head_widths=(32, 24))
    model = build_model(
        config, {**SPEC, "channels": 1, "image_size": 8, "mean": [0.5], "std": [0.25]}
    )
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert 0 < finetune(model, train_set, test_set, 8, epochs=1).top1 <= 1
