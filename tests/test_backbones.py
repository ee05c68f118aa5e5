"""torchvision ResNets as the NAT network: shapes for every input layer and image size, and a whole
run (train, evaluate every stage, filters, export) on digits; a backbone rebuilt from its export
alone. Any timm network (arch=timm:NAME) likewise, its feature levels probed as stages."""

import json
import sys

import pytest
import torch

from natlearn import load_backbone
from natlearn.cli import main
from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.evaluate.reports.figures import filters_figure, first_conv
from natlearn.export import export_backbone
from natlearn.models import build_model, feature_layers
from natlearn.training.checkpoint import load_model

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
    neighbours = tmp_path / "neighbours.png"
    queries = ["--layer", "layer3", "--queries", "2", "--k", "3", "--out", str(neighbours)]
    assert main(["neighbors", str(checkpoint), *queries]) == 0 and neighbours.stat().st_size > 1000
    layers = ["--layers", "layer4,neck", "--no-mlp", "--knn", ""]
    assert main(["evolution", str(out), *layers, "--out", str(tmp_path / "evolution")]) == 0
    evolution = json.loads((tmp_path / "evolution" / "evolution.json").read_text())
    assert [row["epoch"] for row in evolution] == [0, 1]
    assert set(evolution[1]["protocols"]["linear"]) == {"layer4", "neck"}
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

    with pytest.raises(
        NatlearnError, match="give a .safetensors file or a folder written by natlearn export"
    ):
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


# arch=timm:NAME: any timm network's feature levels as the stages (the tests need timm installed,
# the one for its absence does not).

TIMM_STAGE_SHAPES = [
    # arch, image side, per stage (channels, side): timm's feature_info of each
    ("timm:resnet18", 8, [(64, 4), (64, 2), (128, 1), (256, 1), (512, 1)]),
    ("timm:convnext_atto", 32, [(40, 8), (80, 4), (160, 2), (320, 1)]),
]


@pytest.mark.parametrize("arch,size,stages", TIMM_STAGE_SHAPES, ids=["resnet18", "convnext"])
@pytest.mark.parametrize("input_mode", ["rgb", "gray", "sobel"])
def test_a_timm_network_takes_the_input_layer_channels_and_probes_its_feature_levels_as_stages(
    arch, size, stages, input_mode
):
    pytest.importorskip("timm")
    model = build_model(Config(arch=arch, input=input_mode, dim=16), {**SPEC, "image_size": size})
    assert first_conv(model)[1].in_channels == {"rgb": 3, "gray": 1, "sobel": 2}[input_mode]
    names = [f"stage{i}" for i in range(1, len(stages) + 1)]
    assert model.conv_names == names and feature_layers(arch) == [*names, "neck", "head"]
    images = torch.rand(2, 3, size, size)
    model.eval()
    with torch.no_grad():
        features = model.features(images, [*names, "neck", "head"])
        levels = model.convs.body(model.input(images))  # timm's own feature levels, in order
        assert torch.equal(features["neck"], model.backbone(images))
    assert [(features[n].shape[1], features[n].shape[-1]) for n in names] == stages
    assert all(torch.equal(features[n], level) for n, level in zip(names, levels, strict=True))
    assert features["neck"].shape == (2, stages[-1][0]) and features["head"].shape == (2, 16)
    assert torch.allclose(features["head"].norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("size", [32, 224])
def test_a_timm_vit_is_built_for_the_crop_size_and_probes_its_last_blocks(size):
    pytest.importorskip("timm")
    arch = "timm:vit_tiny_patch16_224"
    model = build_model(Config(arch=arch, input="gray", dim=16), {**SPEC, "image_size": size})
    assert model.convs.stage_modules == ("blocks.9", "blocks.10", "blocks.11")
    with torch.no_grad():
        features = model.eval().features(torch.rand(2, 3, size, size), ["stage3", "neck"])
    assert features["stage3"].shape == (2, 192, size // 16, size // 16)  # patch-token maps
    assert features["neck"].shape == (2, 192)


def test_a_timm_network_with_channels_last_maps_gives_its_stages_channels_first():
    pytest.importorskip("timm")
    swin = Config(arch="timm:swin_tiny_patch4_window7_224")  # its levels are (b, H, W, C) in timm
    model = build_model(swin, {**SPEC, "image_size": 32})
    with torch.no_grad():
        features = model.eval().features(torch.rand(2, 3, 32, 32), ["stage1", "stage4", "neck"])
    assert features["stage1"].shape == (2, 96, 8, 8) and features["stage4"].shape == (2, 768, 1, 1)
    assert features["neck"].shape == (2, 768)


def test_a_timm_run_evaluates_every_stage_and_draws_its_first_conv_filters(timm_run, tmp_path):
    assert main(["eval", str(timm_run), "--out", str(tmp_path), "--no-mlp", "--knn", ""]) == 0
    table = (tmp_path / "eval.md").read_text()
    for stage in ("stage1", "stage2", "stage3", "stage4", "stage5", "neck"):
        assert f"| {stage} |" in table
    model = load_model(timm_run)
    name, conv = first_conv(model)
    assert name == "conv1" and conv.weight.shape == (64, 2, 7, 7)  # timm's stem, Sobel input
    assert filters_figure(model, tmp_path / "filters.png").stat().st_size > 1000


def test_a_timm_backbone_exports_and_is_rebuilt_from_the_file_alone(timm_run, tmp_path, capsys):
    exported = export_backbone(timm_run, tmp_path / "backbone.safetensors")
    rebuilt, original = load_backbone(exported), load_model(timm_run)
    images = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), original.backbone(images))
        stage = rebuilt.features(images, ["stage2"])["stage2"]
        assert torch.equal(stage, original.features(images, ["stage2"])["stage2"])
    out = tmp_path / "torchvision.pt"
    assert main(["export", str(timm_run), "--out", str(out), "--format", "torchvision"]) == 2
    assert "this checkpoint is arch=timm:resnet18: export it in natlearn's format" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_an_unknown_timm_model_is_refused_in_one_line_naming_the_closest(capsys):
    pytest.importorskip("timm")
    Config(arch="timm:resnet18").validate()
    with pytest.raises(
        NatlearnError, match=r"'resnet19' is not a timm model; did you mean timm:resnet18.*list_m"
    ):
        Config(arch="timm:resnet19").validate()
    assert main(["train", "arch=timm:resnet19", "progress=false"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(NatlearnError, match=r"small, .*, resnet50, or timm:NAME"):
        Config(arch="resnet99").validate()


def test_a_timm_arch_without_timm_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    install = r"needs timm, which is not installed: pip install 'natlearn\[timm\]'"
    with pytest.raises(NatlearnError, match=install):
        Config(arch="timm:resnet18").validate()
    with pytest.raises(NatlearnError, match=install):
        build_model(Config(arch="timm:resnet18"), {**SPEC, "image_size": 8})


def test_a_timm_network_that_cannot_take_the_images_or_has_no_feature_levels_is_refused(
    monkeypatch,
):
    timm = pytest.importorskip("timm")
    with pytest.raises(NatlearnError, match="cannot process 8x8 images .*use larger images"):
        build_model(Config(arch="timm:vit_tiny_patch16_224"), {**SPEC, "image_size": 8})

    # Which catalogue models lack feature levels changes between timm releases (convit_tiny gained
    # them in 1.0.31), so the refusal is tested on a model registered here that refuses the way
    # timm's own models without features_only support do.
    def natlearn_no_feature_levels(pretrained=False, **kwargs):
        if kwargs.get("features_only"):
            raise RuntimeError("features_only not implemented for natlearn_no_feature_levels.")
        return torch.nn.Conv2d(kwargs.get("in_chans", 3), 4, 3)

    name = natlearn_no_feature_levels.__name__
    monkeypatch.setitem(timm.models._registry._model_entrypoints, name, natlearn_no_feature_levels)
    assert timm.is_model(name)
    with pytest.raises(
        NatlearnError,
        match="timm cannot build it with features_only=True .*: features_only not implemented",
    ):
        build_model(Config(arch=f"timm:{name}"), {**SPEC, "image_size": 32})
