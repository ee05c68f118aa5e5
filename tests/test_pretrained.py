"""The backbone natlearn ships (natlearn.pretrained, ``natlearn eval pretrained:NAME``): it loads as
the float32 backbone its Hub folder describes, evaluates like a run on a user's folder, and on
CIFAR-10 still scores what its model card says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import natlearn
from natlearn.cli import main
from natlearn.errors import NatlearnError
from natlearn.evaluate.features import network_features
from natlearn.evaluate.probes.knn import knn_classify
from natlearn.evaluate.probes.sample import CHECK_EVERY, check_sample_knn
from natlearn.export import load_backbone
from natlearn.zoo import available, pretrained_folder

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"
NAME = "cifar10-small"


def card_check_number() -> float:
    """The check-sample 20-NN the model card states."""
    card = (pretrained_folder(NAME) / "README.md").read_text()
    found = re.search(r"\*\*Check sample\*\*.*?\*\*(0\.\d{4})\*\*", card, re.S)
    assert found, "the model card states no check-sample number"
    return float(found.group(1))


def test_the_shipped_backbone_loads_as_float32_in_eval_mode():
    assert NAME in available()
    backbone = natlearn.pretrained(NAME)
    assert not backbone.training
    assert {p.dtype for p in backbone.parameters()} == {torch.float32}
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = backbone(images)
        conv3 = backbone.features(images, ["conv3"])["conv3"]
    assert features.shape == (2, 128) and conv3.shape == (2, 128, 8, 8)
    # Stored in float16 (half the bytes), its weights are the float16 values exactly.
    from safetensors.torch import load_file

    stored = load_file(str(pretrained_folder(NAME) / "model.safetensors"))
    assert stored["convs.conv1.0.weight"].dtype == torch.float16
    assert stored["input.mean"].dtype == torch.float32  # normalisation kept exact
    state = backbone.state_dict()
    assert all(torch.equal(state[key], value.float()) for key, value in stored.items())


def test_the_shipped_folder_loads_alike_by_load_backbone_and_from_pretrained():
    pytest.importorskip("huggingface_hub")
    images = torch.rand(3, 3, 32, 32)
    hub = natlearn.Backbone.from_pretrained(str(pretrained_folder(NAME)))
    with torch.no_grad():
        want = natlearn.pretrained(NAME)(images)
        assert torch.allclose(hub(images), want, atol=1e-6)
        assert torch.allclose(load_backbone(pretrained_folder(NAME))(images), want, atol=1e-6)


def test_an_unknown_name_lists_what_ships():
    with pytest.raises(NatlearnError, match=f"no pretrained backbone named 'cifar100'.*{NAME}"):
        natlearn.pretrained("cifar100")


def test_the_card_and_the_record_agree():
    record = json.loads((ROOT / "experiments" / "results" / "pretrained_cifar10.json").read_text())
    assert record["check_knn20"] == pytest.approx(card_check_number(), abs=5e-5)
    card = (pretrained_folder(NAME) / "README.md").read_text()
    half = record["float16"]
    assert f"{half['knn20']:.4f}" in card and f"{half['best_linear']:.4f}" in card
    assert json.loads((pretrained_folder(NAME) / "config.json").read_text())["epoch"] == 40


def own_folder(root: Path) -> Path:
    """A user's labelled folder (train/ and test/, two classes told apart by brightness, images of
    several sizes and an odd file beside them)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for label, (low, high) in (("dark", (0, 90)), ("bright", (160, 255))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                side = (32, 40, 24)[i % 3]
                pixels = rng.integers(low, high, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "train" / "notes.txt").write_text("not an image")
    return root


def test_eval_pretrained_on_a_users_folder_scores_the_shipped_weights(tmp_path, capsys):
    data = own_folder(tmp_path / "mine")
    out = tmp_path / "eval"
    argv = ["eval", f"pretrained:{NAME}", f"data={data}", "--no-mlp", "--probe-epochs", "2"]
    assert main([*argv, "--knn", "3", "progress=false", "--out", str(out)]) == 0
    results = json.loads((out / "eval.json").read_text())
    assert results["model"] == f"pretrained:{NAME}"
    assert Path(results["checkpoint"]) == pretrained_folder(NAME) / "model.safetensors"
    assert results["epoch"] == 40
    assert set(results["protocols"]["linear"]) == {"conv1", "conv2", "conv3", "conv4", "neck"}
    # The k-NN it reports is the shipped weights' (read at 32 px, the size they trained at).
    from natlearn.config import Config
    from natlearn.data import load_split

    config = Config(data=str(data), image_size=32)
    train, test = load_split(config, "train"), load_split(config, "test")
    backbone = natlearn.pretrained(NAME)
    (bank, bank_rows), (queries, query_rows) = (
        network_features(backbone, split, ["neck"], 32) for split in (train, test)
    )
    want = knn_classify(
        bank["neck"],
        train.labels[bank_rows],
        queries["neck"],
        test.labels[query_rows],
        k=3,
        device=torch.device("cpu"),
    ).top1
    assert results["protocols"]["knn3"]["neck"]["top1"] == pytest.approx(want)
    assert "pretrained:" in capsys.readouterr().out  # the next command names the source


@pytest.mark.skipif(not (CIFAR10 / "test").is_dir(), reason="../shared/data/cifar10 is not present")
def test_the_shipped_backbone_scores_its_cards_check_number_on_cifar10():
    """20-NN on the fixed sample (every 5th train image the bank, every 5th test image scored)
    within 1 point of the model card: a changed network, input layer, view or weight file shows."""
    assert CHECK_EVERY == 5
    got = check_sample_knn(f"pretrained:{NAME}", CIFAR10)
    assert got == pytest.approx(card_check_number(), abs=0.01)
