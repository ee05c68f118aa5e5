"""The frozen input layer: normalisation, then raw channels, grayscale, or Sobel gradients."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from natlearn.choices import InputMode

__all__ = ["InputLayer"]

# Official NAT / DeepCluster kernels: horizontal and vertical gradients of the gray image.
_SOBEL = torch.tensor(
    [
        [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
        [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]],
    ]
).unsqueeze(1)


class InputLayer(nn.Module):
    """Maps images in [0, 1] to the network's input; nothing in it is trainable (buffers only).

    Modes: ``rgb`` keeps the (normalised) channels, ``gray`` averages them (official: x 1/3 each),
    ``sobel`` takes the gray image's two Sobel gradients (the paper's input: colour would let the
    network cluster trivially by colour).

    Args:
        mode: ``rgb``, ``gray`` or ``sobel``.
        in_channels: channels of the images (1 or 3).
        mean: per-channel mean subtracted first.
        std: per-channel standard deviation the centred images are divided by.
    Shapes:
        (b, in_channels, H, W) float -> (b, out_channels, H, W); out_channels = in_channels, 1, 2.
    """

    def __init__(
        self,
        mode: InputMode = "sobel",
        in_channels: int = 3,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.25,),
    ):
        super().__init__()
        if len(mean) == 1:
            mean, std = tuple(mean) * in_channels, tuple(std) * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)}/{len(std)}")
        self.mode, self.in_channels = mode, in_channels
        self.out_channels = {"rgb": in_channels, "gray": 1, "sobel": 2}[mode]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("sobel", _SOBEL.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.mode == "rgb":
            return x
        gray = x.mean(dim=1, keepdim=True)
        if self.mode == "gray":
            return gray
        return F.conv2d(gray, self.sobel.to(gray.dtype), padding=1)

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, in_channels={self.in_channels}, out_channels={self.out_channels}"
        )
