"""torchvision ResNets as the NAT network: shapes for every input layer and image size, and a whole
run (train, evaluate every stage, filters, export) on digits; a backbone rebuilt from its export
alone."""

import pytest
import torch

from natlearn import load_backbone
from natlearn.checkpoint import load_model
from natlearn.cli import main
from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.evaluate.figures import filters_figure
from natlearn.export import export_backbone
from natlearn.models import build_model, feature_layers

SPEC = {"num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3, "channels": 3}


@pytest.mark.parametrize("arch,neck", [("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("input_mode", ["rgb", "gray", "sobel"])
def test_a_resnet_takes_the_input_layer_channels_and_maps_its_pooled_features_to_d(
    arch, neck, input_mode
):
    model = build_model(Config(arch=arch, input=input_mode, dim=16), {**SPEC, "image_size": 32})
    assert model.convs.conv1[0].in_channels == {"rgb": 3, "gray": 1, "sobel": 2}[input_mode]
    assert model.conv_names == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert feature_layers(arch) == [*model.conv_names, "neck", "head"]
    model.eval()
    features = model.features(torch.rand(2, 3, 32, 32), ["layer4", "neck", "head"])
    assert features["neck"].shape == (2, neck) and features["head"].shape == (2, 16)
    assert torch.allclose(features["head"].norm(dim=1), torch.ones(2))


def test_small_images_get_the_cifar_stem_and_large_ones_the_imagenet_stem():
    small = build_model(Config(arch="resnet18"), {**SPEC, "image_size": 32})
    large = build_model(Config(arch="resnet18"), {**SPEC, "image_size": 96})
    assert small.convs.conv1[0].kernel_size == (3, 3) and small.convs.conv1[0].stride == (1, 1)
    assert "pool1" not in small.convs._modules
    assert large.convs.conv1[0].kernel_size == (7, 7) and large.convs.conv1[0].stride == (2, 2)
    assert "pool1" in large.convs._modules
    small.eval()
    assert small.features(torch.rand(1, 3, 32, 32), ["layer4"])["layer4"].shape[-1] == 4  # 32 / 8


def test_a_resnet18_run_trains_evaluates_every_stage_and_exports(tmp_path, capsys):
    out = tmp_path / "run"
    settings = ["arch=resnet18", "dim=16", "subset=256", "batch_size=64", "epochs=1"]
    assert main(["train", "digits", *settings, "progress=false", f"out={out}"]) == 0
    checkpoint = out / "checkpoints" / "epoch_0001.pt"
    assert main(["eval", str(checkpoint), "--out", str(tmp_path / "eval"), "--no-mlp"]) == 0
    table = (tmp_path / "eval" / "eval.md").read_text()
    for stage in ("conv1", "layer1", "layer2", "layer3", "layer4", "neck"):
        assert f"| {stage} |" in table
    assert filters_figure(load_model(checkpoint), tmp_path / "filters.png").stat().st_size > 1000
    backbone = torch.load(export_backbone(checkpoint, tmp_path / "b.pt"), weights_only=True)
    assert "convs.layer4.1.conv2.weight" in backbone and not any(
        k.startswith("head.") for k in backbone
    )


@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_a_safetensors_export_rebuilds_the_backbone_from_the_file_alone(arch, tmp_path):
    """natlearn.load_backbone needs nothing but the exported file: same architecture, input layer
    and weights, so the same features as the checkpoint's network."""
    out = tmp_path / "run"
    settings = [f"arch={arch}", "dim=16", "subset=128", "batch_size=64", "epochs=1", "input=gray"]
    settings.append("widths=[8,16]")  # not the defaults: the file must carry them
    assert main(["train", "digits", *settings, "progress=false", f"out={out}"]) == 0
    checkpoint = out / "checkpoints" / "epoch_0001.pt"
    exported = export_backbone(checkpoint, tmp_path / "backbone.safetensors")
    (out / "checkpoints").rename(tmp_path / "moved")  # the export must not need the run
    rebuilt = load_backbone(exported)
    original = load_model(tmp_path / "moved" / "epoch_0001.pt")
    images = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), original.backbone(images))
        conv1 = rebuilt.features(images, ["conv1"])["conv1"]
        assert torch.equal(conv1, original.features(images, ["conv1"])["conv1"])


def test_load_backbone_refuses_what_it_cannot_rebuild(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(NatlearnError, match="give a .safetensors file written by natlearn export"):
        load_backbone(tmp_path / "backbone.pt")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(NatlearnError, match="not a natlearn backbone export"):
        load_backbone(tmp_path / "foreign.safetensors")


def test_a_torchvision_export_loads_into_torchvision_resnet18_and_gives_the_same_features(tmp_path):
    """--format torchvision: torchvision's keys, strict load once conv1/maxpool/fc match natlearn's
    (CIFAR stem, Sobel input); with the README's three input lines in front, the same features."""
    import json

    import torch.nn.functional as F
    import torchvision
    from safetensors import safe_open

    out = tmp_path / "run"
    settings = ["arch=resnet18", "dim=16", "subset=128", "batch_size=64", "epochs=1"]
    assert main(["train", "digits", *settings, "progress=false", f"out={out}"]) == 0
    checkpoint = out / "checkpoints" / "epoch_0001.pt"
    exported = tmp_path / "resnet18.safetensors"
    assert main(["export", str(checkpoint), "--out", str(exported), "--format", "torchvision"]) == 0

    with safe_open(str(exported), "pt") as file:
        state = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
        spec = json.loads(file.metadata()["input"])
    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(2, 64, 3, 1, 1, bias=False)  # Sobel's 2 channels, CIFAR stem
    model.maxpool, model.fc = torch.nn.Identity(), torch.nn.Identity()
    model.load_state_dict(state)  # strict
    images = torch.rand(4, 3, 8, 8)
    mean, std = (torch.tensor(spec[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
    sobel = torch.tensor(
        [[[1.0, 0, -1], [2, 0, -2], [1, 0, -1]], [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]]
    )
    x = F.conv2d(((images - mean) / std).mean(1, keepdim=True), sobel.unsqueeze(1), padding=1)
    with torch.no_grad():
        expected = load_model(checkpoint).backbone(images)
        assert torch.allclose(model.eval()(x), expected, atol=1e-5)
    with pytest.raises(NatlearnError, match="not a natlearn backbone export"):
        load_backbone(exported)  # torchvision keys: not natlearn's network


def test_a_torchvision_export_of_a_non_torchvision_network_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    settings = ["widths=[8,8]", "dim=8", "subset=128", "batch_size=64", "epochs=1"]
    assert main(["train", "digits", *settings, "progress=false", f"out={out}"]) == 0
    checkpoint = str(out / "checkpoints" / "epoch_0001.pt")
    assert (
        main(["export", checkpoint, "--out", str(tmp_path / "b.pt"), "--format", "torchvision"])
        == 2
    )
    assert "needs a torchvision architecture" in capsys.readouterr().err
    assert not (tmp_path / "b.pt").exists()
