"""The Hugging Face Hub layout (`natlearn export RUN --format hf`): what huggingface_hub's
PyTorchModelHubMixin reads and writes for natlearn.Backbone, loaded offline from a local folder,
with the features of the run's checkpoint; a timm backbone also under timm's own keys."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

import natlearn
from natlearn.cli import main
from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.export import timm_state_dict
from natlearn.models import build_model
from natlearn.training.checkpoint import load_model


def exported(run, tmp_path, name="hub"):
    out = tmp_path / name
    assert main(["export", str(run.run_dir), "--format", "hf", "--out", str(out)]) == 0
    return out


def test_a_hub_export_loads_as_the_runs_backbone_by_load_backbone_and_from_pretrained(
    tiny_run, tmp_path
):
    pytest.importorskip("huggingface_hub")
    folder = exported(tiny_run, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    described = json.loads((folder / "config.json").read_text())
    assert described["image_size"] == 8 and described["input"]["mode"] == "sobel"
    assert described["run_config"]["widths"] == [8, 16]
    original = load_model(tiny_run.run_dir)
    images = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        want = original.backbone(images)
        for backbone in (natlearn.load_backbone(folder), natlearn.Backbone.from_pretrained(folder)):
            assert not backbone.training
            torch.testing.assert_close(backbone(images), want, atol=1e-6, rtol=0)
            conv2 = backbone.features(images, ["conv2"])["conv2"]
            torch.testing.assert_close(conv2, original.features(images, ["conv2"])["conv2"])
    weights = load_file(str(folder / "model.safetensors"))
    assert not any(key.startswith("head.") for key in weights)  # the NAT head is not exported


def test_the_hub_export_is_the_layout_the_mixin_itself_writes(tiny_run, tmp_path):
    pytest.importorskip("huggingface_hub")
    folder = exported(tiny_run, tmp_path)
    natlearn.Backbone.from_pretrained(folder).save_pretrained(tmp_path / "again")
    again = tmp_path / "again"
    assert json.loads((again / "config.json").read_text()) == json.loads(
        (folder / "config.json").read_text()
    )
    ours, theirs = (
        load_file(str(folder / "model.safetensors")),
        load_file(str(again / "model.safetensors")),
    )
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert "library_name: natlearn" in (again / "README.md").read_text()


def test_an_export_replaces_its_own_folder_and_refuses_any_other(tiny_run, tmp_path, capsys):
    folder = exported(tiny_run, tmp_path)
    exported(tiny_run, tmp_path)  # again: replaced, not refused
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["export", str(tiny_run.run_dir), "--format", "hf", "--out", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"natlearn: error: cannot export to {other}: it exists and is not a natlearn Hub export; "
        "give a new folder with --out"
    ]
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "mine"]  # no temporary left
    with pytest.raises(NatlearnError, match="is not a natlearn Hub export"):
        natlearn.load_backbone(other)
    (folder / "model.safetensors").unlink()
    with pytest.raises(NatlearnError, match="is not a natlearn Hub export"):
        natlearn.load_backbone(folder)


def test_backbone_without_huggingface_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.delitem(sys.modules, "natlearn.hub", raising=False)
    monkeypatch.delattr(natlearn, "Backbone", raising=False)  # natlearn keeps what it imported
    with pytest.raises(NatlearnError, match=r"pip install 'natlearn\[hub\]'"):
        natlearn.Backbone  # noqa: B018


def test_a_timm_backbone_also_loads_into_timms_own_model(timm_run, tmp_path):
    import timm

    out = tmp_path / "hub"
    assert main(["export", str(timm_run), "--format", "hf", "--out", str(out)]) == 0
    original = load_model(timm_run)
    theirs = timm.create_model(
        "resnet18",
        pretrained=True,
        num_classes=0,
        in_chans=2,  # the Sobel input layer's channels
        pretrained_cfg_overlay={"file": str(out / "timm" / "model.safetensors")},
    ).eval()
    images = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            theirs(original.input(images)), original.backbone(images), atol=1e-6, rtol=0
        )


def test_timm_keys_undo_features_onlys_renaming_for_the_features_only_model():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    config = Config(arch="timm:convnext_atto", input="rgb")
    spec = {
        "channels": 3,
        "image_size": 32,
        "num_classes": 10,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    model = build_model(config, spec).eval()
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    renamed = timm_state_dict(backbone, config.arch, spec)
    assert any(key.startswith("stages.0.") for key in renamed)  # features_only says stages_0
    theirs = timm.create_model(
        "convnext_atto",
        pretrained=True,
        features_only=True,
        pretrained_cfg_overlay={"state_dict": renamed},
    ).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ours = dict(model.features(images, model.conv_names))
        for got, name in zip(theirs(model.input(images)), model.conv_names, strict=True):
            torch.testing.assert_close(got, ours[name], atol=1e-6, rtol=0)
