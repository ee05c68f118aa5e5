"""The paper's augmentation (random crop + horizontal flip; optionally SimCLR's colour jitter and
random grayscale) of whole batches of uint8 tensors.

Working on a batch at once, on whatever device holds it, keeps augmentation far cheaper than the
training step; no per-image Python and no DataLoader workers are involved. :func:`eval_view` is the
matching deterministic view for evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from natlearn.choices import Crop
from natlearn.errors import NatlearnError

if TYPE_CHECKING:
    from natlearn.config import Config

__all__ = ["Augmentation", "center_crop", "eval_view", "mean_box_side"]


@dataclass(frozen=True)
class Augmentation:
    """Random crop, horizontal flip and (off by default) colour jitter and random grayscale of a
    batch: set once (:meth:`from_config`), called per batch.

    Crops: ``pad`` zero-pads each side by ``padding`` then takes a random ``size`` crop (exact
    pixels, the usual CIFAR recipe); ``resized`` takes a random box of ``scale``..1 of the area with
    aspect ratio 3/4..4/3 and resizes it to ``size`` (bilinear; the 224-pixel ImageNet recipe scaled
    down); ``none`` takes the centre ``size`` crop. Evaluation shows :func:`eval_view` instead.

    Colour, SimCLR's set (Chen et al. 2020, on CIFAR-10 ``jitter=0.5``, ``grayscale=0.2``): 80% of
    the crops get brightness, contrast and saturation factors uniform in 1 +- 0.8 ``jitter`` and a
    hue rotation uniform in +- 0.2 ``jitter`` of a turn, in that fixed order (the hue turns the
    chroma plane of YIQ, a linear stand-in for torchvision's HSV round trip); then a ``grayscale``
    fraction is turned gray. One-channel images get brightness and contrast only.
    """

    size: int
    crop: Crop = "pad"
    padding: int = 4
    scale: float = 0.25
    flip: bool = True
    jitter: float = 0.0
    grayscale: float = 0.0

    @classmethod
    def from_config(cls, config: Config, size: int) -> Augmentation:
        """The augmentation ``config`` trains with, to crops of side ``size``."""
        return cls(
            size,
            config.crop,
            config.crop_padding,
            config.crop_scale,
            config.flip,
            config.color_jitter,
            config.grayscale,
        )

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator, rows: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """The augmented batch.

        Args:
            images: (b, C, H, W) uint8 on any device.
            generator: CPU generator; the same seed gives the same batch on any device.
            rows: ``(first, total)``: the images are rows first..first+b of a global batch of
                ``total``; the random crops of the whole global batch are drawn and these rows kept,
                so the ranks of a torchrun job together crop exactly as one process would.
        Returns:
            (b, C, size, size) float32 in [0, 1] on the images' device.
        """
        b = images.shape[0]
        first, total = rows or (0, b)
        mine = slice(first, first + b)
        crops = self._crop(images, generator, total, mine)
        if self.jitter:
            crops = _jitter(crops, self.jitter, generator, total, mine)
        if self.grayscale and crops.shape[1] == 3:
            gray = (torch.rand(total, generator=generator)[mine] < self.grayscale).to(crops.device)
            crops = torch.where(gray[:, None, None, None], _gray(crops).expand_as(crops), crops)
        return crops

    def _crop(
        self, images: torch.Tensor, generator: torch.Generator, total: int, mine: slice
    ) -> torch.Tensor:
        size, b = self.size, images.shape[0]
        flips = (
            torch.rand(total, generator=generator)[mine] < 0.5
            if self.flip
            else torch.zeros(b, dtype=torch.bool)
        )
        if self.crop == "resized":
            return _resized_crop(images, size, self.scale, flips, generator, total, mine)
        x = F.pad(images, (self.padding,) * 4) if self.crop == "pad" and self.padding else images
        height, width = x.shape[-2:]
        if size > min(height, width):
            raise NatlearnError(
                f"crop size {size} is larger than the images ({height}x{width} after padding); "
                "lower image_size"
            )
        if self.crop == "pad":
            top = torch.randint(0, height - size + 1, (total, 1), generator=generator)[mine]
            left = torch.randint(0, width - size + 1, (total, 1), generator=generator)[mine]
        else:
            top = torch.full((b, 1), (height - size) // 2)
            left = torch.full((b, 1), (width - size) // 2)
        span = torch.arange(size)
        ys, xs = top + span, left + span  # pixel indices of each crop
        xs = torch.where(flips[:, None], xs.flip(1), xs)
        device = images.device
        batch = torch.arange(b, device=device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=device)[None, :, None, None]
        out = x[batch, channel, ys.to(device)[:, None, :, None], xs.to(device)[:, None, None, :]]
        return out.float().div_(255)


# RGB -> YIQ (NTSC): Y is luma, I and Q span the chroma plane a hue shift turns.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _gray(images: torch.Tensor) -> torch.Tensor:
    """(b, 3, H, W) -> (b, 1, H, W) ITU-R 601 luma (as torchvision's rgb_to_grayscale)."""
    weights = _YIQ[0].to(images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _jitter(
    images: torch.Tensor, strength: float, generator: torch.Generator, total: int, mine: slice
) -> torch.Tensor:
    """SimCLR's colour jitter of (b, C, H, W) floats in [0, 1] (see :class:`Augmentation`)."""
    device = images.device

    def factor(spread: float) -> torch.Tensor:
        draw = torch.rand(total, generator=generator)[mine]
        return (1 + spread * (2 * draw - 1)).to(device)

    applied = (torch.rand(total, generator=generator)[mine] < 0.8).to(device).view(-1, 1, 1, 1)
    brightness, contrast = factor(0.8 * strength), factor(0.8 * strength)
    saturation, turn = factor(0.8 * strength), factor(0.2 * strength) - 1
    jittered = adjust_colours(images, brightness, contrast, saturation, turn)
    return torch.where(applied, jittered, images)


def adjust_colours(
    images: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    turn: torch.Tensor,
) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors (1 = unchanged; as torchvision's
    ``adjust_*``) and a hue rotation by ``turn`` of a full turn, applied in that order.

    Shapes: images (b, C, H, W) floats in [0, 1]; every factor (b,). One-channel images get
    brightness and contrast only.
    """

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.view(-1, 1, 1, 1)

    x = (images * per_image(brightness)).clamp(0, 1)
    colour = x.shape[1] == 3
    mean = (_gray(x) if colour else x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * per_image(contrast) + mean).clamp(0, 1)
    if not colour:
        return x
    luma = _gray(x)
    x = (luma + (x - luma) * per_image(saturation)).clamp(0, 1)
    yiq = torch.einsum("ij,bjhw->bihw", _YIQ.to(x.device), x)
    angle = -2 * math.pi * turn  # this sign turns the way torchvision's adjust_hue does
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_YIQ).to(x.device), yiq).clamp(0, 1)


def _resized_crop(
    images: torch.Tensor,
    size: int,
    scale: float,
    flips: torch.Tensor,
    generator: torch.Generator,
    total: int,
    mine: slice,
) -> torch.Tensor:
    b = images.shape[0]

    def uniform() -> torch.Tensor:
        return torch.rand(total, generator=generator, dtype=torch.float64)[mine]

    area = scale + (1 - scale) * uniform()
    log_ratio = math.log(3 / 4) + math.log(16 / 9) * uniform()
    ratio = log_ratio.exp()
    # Box sides as fractions of the image, clipped to fit; then a random position inside.
    box_w = (area * ratio).sqrt().clamp(max=1.0)
    box_h = (area / ratio).sqrt().clamp(max=1.0)
    center_x = (1 - box_w) * (2 * uniform() - 1)
    center_y = (1 - box_h) * (2 * uniform() - 1)
    sign = 1.0 - 2.0 * flips.double()
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = box_w * sign, center_x
    theta[:, 1, 1], theta[:, 1, 2] = box_h, center_y
    grid = F.affine_grid(
        theta.float().to(images.device), [b, images.shape[1], size, size], align_corners=False
    )
    out = F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.div_(255).clamp_(0, 1)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """A deterministic centre ``size`` crop at the images' own scale, as float32 in [0, 1] (the
    evaluation view of crop=pad and crop=none; see :func:`eval_view`)."""
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size].float().div_(255)


def mean_box_side(scale: float) -> float:
    """Mean side, as a fraction of the image's side, of a crop=resized box whose area is uniform in
    [scale, 1]: E[sqrt(area)] = 2/3 (1 - scale^1.5) / (1 - scale) (0.78 for scale 0.25)."""
    return 1.0 if scale >= 1 else 2 / 3 * (1 - scale**1.5) / (1 - scale)


def eval_view(
    images: torch.Tensor, size: int, crop: Crop = "pad", scale: float = 0.25
) -> torch.Tensor:
    """The deterministic evaluation view of images trained with ``Augmentation(size, crop,
    scale=scale)``: what training showed, at the scale training showed it, as float32 in [0, 1].

    crop=pad and crop=none train on ``size`` crops at the images' own scale: the view is the centre
    crop. crop=resized trains on random boxes of ``scale``..1 of the area resized to ``size``, so
    objects appear at ``size / (box side)`` of their size; the view is the centred square box of the
    mean training side (:func:`mean_box_side`), resized to ``size`` by the same bilinear sampling,
    so objects appear at the mean training scale (an unresized centre crop would show them larger
    than training ever did on average, and the whole image resized would show them smaller than the
    average crop).

    Args:
        images: (b, C, H, W) uint8 on any device.
    Returns:
        (b, C, size, size) float32 in [0, 1] on the images' device.
    """
    if crop != "resized":
        return center_crop(images, size)
    side = mean_box_side(scale)
    theta = torch.tensor([[side, 0.0, 0.0], [0.0, side, 0.0]], dtype=torch.float32).expand(
        images.shape[0], 2, 3
    )
    grid = F.affine_grid(
        theta.to(images.device), [images.shape[0], images.shape[1], size, size], align_corners=False
    )
    out = F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.div_(255).clamp_(0, 1)
