"""The detector of the detection transfer: torchvision's Faster R-CNN on a natlearn network's trunk
(:class:`NetworkBackbone`), and the settings it is built, fine-tuned and scored with. The paper
transfers NAT to Pascal VOC2007 detection with Fast R-CNN; Faster R-CNN is the same detector with a
learnt region proposal network instead of selective search, and is what torchvision maintains."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from natlearn.errors import NatlearnError
from natlearn.models import Network
from natlearn.models.registry import arch_spec

__all__ = [
    "DetectionSettings",
    "NetworkBackbone",
    "detection_layer",
    "detection_model",
    "model_device",
]


@dataclass
class DetectionSettings:
    """How the detector is built, fine-tuned and scored.

    ``image_size``: the short side images are resized to (Fast R-CNN: 600), ``max_size`` the cap on
    the long side (0: 5/3 of ``image_size``, Fast R-CNN's 600/1000). ``layer``: the trunk block
    whose map the detector uses (None: the last conv block or stage, before the neck; the paper's
    conv5). ``anchor_sizes``: anchor sides in pixels of the resized image (empty: ``image_size``
    times 1/8, 1/4, 1/2 and 1, objects from a few percent of the image to all of it).
    ``box_head_width``, ``rois_per_image``, ``roi_sampling`` and the proposal counts default to
    torchvision's; smaller ones make a CPU run affordable (small images need fewer proposals).
    ``threads``: torch CPU threads while it runs (0: as set).
    """

    image_size: int = 600
    max_size: int = 0
    layer: str | None = None
    anchor_sizes: tuple[int, ...] = ()
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 4
    flip: bool = True
    box_head_width: int = 1024
    rois_per_image: int = 512
    roi_sampling: int = 2  # RoIAlign samples per bin side (its CPU backward dominates a step)
    proposals_train: int = 2000  # RPN boxes kept before and after NMS (torchvision's defaults)
    proposals_test: int = 1000
    score_threshold: float = 0.05  # torchvision's: detections below it are not scored
    detections_per_image: int = 100
    iou_threshold: float = 0.5
    seed: int = 0
    threads: int = 0

    def resolved(self) -> DetectionSettings:
        """These settings with ``max_size`` and ``anchor_sizes`` filled in; raises NatlearnError
        for values no detector can use."""
        positive = ("image_size", "epochs", "batch_size", "box_head_width", "rois_per_image")
        for name in (*positive, "roi_sampling", "proposals_train", "proposals_test"):
            if getattr(self, name) < 1:
                raise NatlearnError(f"detection {name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise NatlearnError(f"detection lr={self.lr} must be a positive number")
        if not 0 < self.iou_threshold < 1:
            raise NatlearnError(f"detection iou_threshold={self.iou_threshold} must be in (0, 1)")
        max_size = self.max_size or round(self.image_size * 5 / 3)
        if max_size < self.image_size:
            raise NatlearnError(
                f"detection max_size={max_size} is below image_size={self.image_size}; "
                "give max_size >= image_size (0: 5/3 of it)"
            )
        sizes = self.anchor_sizes or tuple(
            max(4, round(self.image_size * f)) for f in (1 / 8, 1 / 4, 1 / 2, 1)
        )
        return dataclasses.replace(self, max_size=max_size, anchor_sizes=tuple(sizes))


def detection_layer(arch: str, trunk: Sequence[str], layer: str | None) -> str:
    """The trunk block the detector reads on a network of ``arch`` whose trunk blocks are
    ``trunk`` (in order): ``layer``, or the last block (the paper's conv5).

    Checked from the config alone, so ``natlearn transfer`` refuses before any work (one line,
    NatlearnError): a layer that is no trunk block (``neck`` and ``head`` hold no feature map), and
    a network that takes one input size only (a timm ViT or Swin): the detector resizes each image
    with its aspect kept, so sizes vary from image to image.
    """
    if arch_spec(arch).fixed_input_size(arch):
        raise NatlearnError(
            f"arch={arch} takes images of one fixed size only, but the detector feeds it images "
            "of varying size (resized with their aspect kept); detect with a convolutional "
            "network (e.g. arch=resnet18, timm:resnet18, timm:convnext_atto), or --task classify"
        )
    chosen = layer or trunk[-1]
    if chosen not in trunk:
        raise NatlearnError(
            f"detection layer {chosen!r} (--detect-layer) is not a trunk block of arch={arch}: "
            f"the detector needs a feature map; give one of {', '.join(trunk)}"
        )
    return chosen


class NetworkBackbone(nn.Module):
    """A natlearn network's input layer and trunk up to ``layer``, as a torchvision detection
    backbone: the input layer (normalisation, gray or Sobel) runs here, so the trunk sees what it
    saw in pre-training; the detector's own transform only resizes.

    Shapes: (b, 3, H, W) in [0, 1] -> (b, out_channels, H / s, W / s), s the layer's stride.
    """

    def __init__(self, network: Network, layer: str | None = None, probe_size: int = 64):
        super().__init__()
        self.layer = detection_layer(network.arch, network.conv_names, layer)
        # Only the input layer and trunk: the neck and head are neither trained nor saved.
        self.input, self.convs = network.input, network.convs
        with torch.no_grad():
            was_training = self.training
            self.eval()  # BatchNorm on one probe image in train mode would update its statistics
            probe = torch.zeros(1, 3, probe_size, probe_size, device=model_device(network))
            self.out_channels = int(self(probe).shape[1])
            self.train(was_training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input.in_channels == 1 and images.shape[1] == 3:  # a gray-trained network
            images = images.mean(dim=1, keepdim=True)
        # Network's own walk of its trunk (pools included), on this module's input layer and trunk.
        for name, output in Network._trunk_outputs(self, self.input(images)):  # type: ignore[arg-type]
            if name == self.layer:
                return output
        raise AssertionError(f"trunk never produced {self.layer}")  # checked in __init__


def model_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def detection_model(network: Network, num_classes: int, settings: DetectionSettings) -> nn.Module:
    """Faster R-CNN on a copy of ``network``'s trunk (``settings`` resolved): one feature map, the
    anchors and box head of ``settings``, ``num_classes`` object classes plus background. Its
    transform resizes to ``image_size`` and leaves the pixel values alone (mean 0, std 1): the
    network's input layer normalises them as in pre-training. New layers are drawn from the global
    torch CPU RNG (the same draw on every device), then the model is moved to ``network``'s
    device."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = NetworkBackbone(copy.deepcopy(network), settings.layer, settings.image_size)
    pool = 7  # torchvision's RoIAlign output (Fast R-CNN's RoI pooling to AlexNet's 6x6, near)
    detector = FasterRCNN(
        backbone,
        min_size=settings.image_size,
        max_size=settings.max_size,
        image_mean=[0.0],
        image_std=[1.0],
        rpn_anchor_generator=AnchorGenerator(
            sizes=(settings.anchor_sizes,), aspect_ratios=(settings.aspect_ratios,)
        ),
        box_roi_pool=MultiScaleRoIAlign(
            ["0"], output_size=pool, sampling_ratio=settings.roi_sampling
        ),
        box_head=TwoMLPHead(backbone.out_channels * pool * pool, settings.box_head_width),
        box_predictor=FastRCNNPredictor(settings.box_head_width, num_classes + 1),
        box_batch_size_per_image=settings.rois_per_image,
        rpn_pre_nms_top_n_train=settings.proposals_train,
        rpn_post_nms_top_n_train=settings.proposals_train,
        rpn_pre_nms_top_n_test=settings.proposals_test,
        rpn_post_nms_top_n_test=settings.proposals_test,
        box_score_thresh=settings.score_threshold,
        box_detections_per_img=settings.detections_per_image,
    )
    return detector.to(model_device(network))
