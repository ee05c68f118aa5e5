import re

import numpy as np
import pytest
import scipy.ndimage
import torch

from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.models import InputLayer, build_model, feature_layers


def _spec(image_size: int) -> dict:
    """A 10-class RGB data set's network spec at ``image_size``."""
    return dict(channels=3, image_size=image_size, num_classes=10, mean=[0.5] * 3, std=[0.25] * 3)


def _network(arch="small", input="sobel", image_size=16, dim=8, widths=(32, 64, 128, 128)):
    return build_model(Config(arch=arch, input=input, widths=widths, dim=dim), _spec(image_size))


def test_sobel_equals_scipy_on_the_gray_image():
    rng = np.random.default_rng(0)
    gray = rng.random((12, 15))
    rgb = torch.tensor(np.stack([gray] * 3), dtype=torch.float32)[None]
    layer = InputLayer("sobel", in_channels=3, mean=(0.0,), std=(1.0,))
    out = layer(rgb)[0].double().numpy()
    # Official kernels are scipy's with the opposite sign (gradient right to left / bottom to top).
    assert np.allclose(out[0], -scipy.ndimage.sobel(gray, axis=1, mode="constant"), atol=1e-5)
    assert np.allclose(out[1], -scipy.ndimage.sobel(gray, axis=0, mode="constant"), atol=1e-5)


def test_gray_is_the_channel_mean_after_normalisation():
    images = torch.rand(2, 3, 5, 5)
    layer = InputLayer("gray", in_channels=3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    expected = ((images - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5).mean(
        dim=1, keepdim=True
    )
    assert torch.allclose(layer(images), expected)


@pytest.mark.parametrize("mode,channels", [("rgb", 3), ("gray", 1), ("sobel", 2)])
def test_input_layer_has_nothing_to_train(mode, channels):
    layer = InputLayer(mode, in_channels=3)
    assert list(layer.parameters()) == []
    assert layer.out_channels == channels
    network = _network(input=mode)
    trainable = {name for name, p in network.named_parameters() if p.requires_grad}
    assert not any(name.startswith("input.") for name in trainable)


@pytest.mark.parametrize("size", [8, 32])
def test_small_convnet_shapes_and_unit_outputs(size):
    network = _network(image_size=size, dim=16, widths=(8, 16, 32)).eval()
    images = torch.rand(4, 3, size, size)
    assert network.conv_names == ["conv1", "conv2", "conv3"]
    feats = network.features(images, ["conv1", "conv3", "neck", "head"])
    assert feats["conv1"].shape == (4, 8, size, size)  # before its max-pool (DeepCluster's)
    assert feats["conv3"].shape[-1] == (2 if size == 8 else 8)
    assert feats["neck"].shape == (4, 32)
    assert torch.allclose(network(images).norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(feats["head"], network(images))


def test_alexnet_bn_matches_the_paper_shapes():
    network = _network("alexnet", image_size=224, dim=2048).eval()
    images = torch.rand(2, 3, 224, 224)
    feats = network.features(images, ["conv1", "conv2", "conv5", "neck"])
    assert feats["conv1"].shape == (2, 96, 55, 55)  # before pooling (DeepCluster's)
    assert feats["conv2"].shape == (2, 256, 27, 27)
    assert feats["conv5"].shape == (2, 256, 13, 13)
    assert feats["neck"].shape == (2, 4096)
    assert network(images).shape == (2, 2048)
    assert network.convs.conv1[0].weight.shape == (96, 2, 11, 11)


def test_unknown_layer_name_is_rejected():
    network = _network(input="rgb", image_size=8, dim=4, widths=(4,))
    with pytest.raises(ValueError, match="conv1"):
        network.features(torch.rand(1, 3, 8, 8), ["conv9"])


def test_alexnet_refuses_images_it_cannot_process():
    with pytest.raises(
        NatlearnError,
        match="arch=alexnet needs images .* at least 63x63 pixels, got 62x62; use arch=small",
    ):
        _network("alexnet", image_size=62)
    network = _network("alexnet", image_size=63).eval()  # the smallest that works
    assert network(torch.rand(1, 3, 63, 63)).shape == (1, 8)
    assert feature_layers("alexnet") == [*network.conv_names, "neck", "head"]


@pytest.mark.parametrize("widths", [(4,), (4, 8, 8, 16, 16)])
def test_feature_layers_name_what_features_accepts(widths):
    network = _network(input="rgb", image_size=8, dim=4, widths=widths).eval()
    names = feature_layers("small", widths)
    assert names == [*network.conv_names, "neck", "head"]
    assert set(network.features(torch.rand(2, 3, 8, 8), names)) == set(names)


def test_the_supervised_baseline_has_a_class_logit_head():
    nat = _network(dim=8)
    supervised = build_model(Config(objective="supervised", dim=8), _spec(16))
    assert (nat.head.linear.out_features, nat.head.normalize) == (8, True)
    assert (supervised.head.linear.out_features, supervised.head.normalize) == (10, False)
    square = build_model(Config(objective="supervised", loss="square", dim=8), _spec(16))
    assert (square.head.linear.out_features, square.head.normalize) == (8, True)


@pytest.mark.parametrize("arch,neck", [("small", 16), ("resnet18", 512), ("alexnet", 4096)])
@pytest.mark.parametrize("input_mode", ["rgb", "gray", "sobel"])
def test_the_mlp_head_maps_the_unchanged_neck_through_fc_bn_relu_blocks_to_unit_outputs(
    arch, neck, input_mode
):
    """head=mlp: the official fc-BN-ReLU layers of head_widths, then a map to d, then L2
    normalisation; the probed neck is the backbone's pooled output, the same weights as with the
    linear head at one seed."""
    size = 64 if arch == "alexnet" else 16
    config = Config(arch=arch, input=input_mode, widths=(8, 16), dim=8, head_widths=(24, 12))
    torch.manual_seed(0)
    linear = build_model(config, _spec(size))
    torch.manual_seed(0)
    mlp = build_model(Config(**{**config.to_dict(), "head": "mlp"}), _spec(size))
    kinds = [type(layer).__name__ for layer in mlp.head.hidden]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2
    assert [mlp.head.hidden[i].out_features for i in (0, 3)] == [24, 12]
    assert (mlp.head.in_features, mlp.head.linear.in_features, mlp.head.linear.out_features) == (
        neck,
        12,
        8,
    )
    assert len(linear.head.hidden) == 0 and linear.head.linear.in_features == neck
    images = torch.rand(3, 3, size, size)
    with torch.no_grad():
        got = mlp.eval().features(images, ["neck", "head"])
        assert torch.equal(got["neck"], linear.eval().backbone(images))
    assert got["head"].shape == (3, 8)
    assert torch.allclose(got["head"].norm(dim=1), torch.ones(3))


def test_the_mlp_head_drops_out_after_its_first_layer_only_and_gives_logits_when_supervised():
    nat = build_model(Config(head="mlp", head_widths=(8, 8, 8), head_dropout=0.5), _spec(16))
    dropouts = [i for i, layer in enumerate(nat.head.hidden) if isinstance(layer, torch.nn.Dropout)]
    assert dropouts == [3] and nat.head.hidden[3].p == 0.5
    supervised = build_model(Config(head="mlp", objective="supervised"), _spec(16))
    assert not supervised.head.normalize and supervised.head.linear.out_features == 10


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"head": "deep"}, "head='deep' is not valid; choose one of: linear, mlp"),
        ({"head_widths": ()}, "head_widths=() must be a non-empty list"),
        ({"head_widths": (8, 0)}, "head_widths=(8, 0) must be a non-empty list"),
        ({"head_dropout": 1.0}, "head_dropout=1.0 must lie in [0, 1)"),
    ],
)
def test_a_head_setting_that_cannot_work_is_refused_in_one_line(setting, message):
    with pytest.raises(NatlearnError, match=re.escape(message)):
        Config(**setting).validate()
