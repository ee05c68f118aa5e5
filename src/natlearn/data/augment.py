"""The paper's augmentation (random crop + horizontal flip) of whole batches of uint8 tensors.

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

from natlearn.config import Crop
from natlearn.errors import NatlearnError

if TYPE_CHECKING:
    from natlearn.config import Config

__all__ = ["Augmentation", "center_crop", "eval_view", "mean_box_side"]


@dataclass(frozen=True)
class Augmentation:
    """Random crop and horizontal flip of a batch: set once (:meth:`from_config`), called per batch.

    Crops: ``pad`` zero-pads each side by ``padding`` then takes a random ``size`` crop (exact
    pixels, the usual CIFAR recipe); ``resized`` takes a random box of ``scale``..1 of the area with
    aspect ratio 3/4..4/3 and resizes it to ``size`` (bilinear; the 224-pixel ImageNet recipe scaled
    down); ``none`` takes the centre ``size`` crop. Evaluation shows :func:`eval_view` instead.
    """

    size: int
    crop: Crop = "pad"
    padding: int = 4
    scale: float = 0.25
    flip: bool = True

    @classmethod
    def from_config(cls, config: Config, size: int) -> Augmentation:
        """The augmentation ``config`` trains with, to crops of side ``size``."""
        return cls(size, config.crop, config.crop_padding, config.crop_scale, config.flip)

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
        size, b = self.size, images.shape[0]
        first, total = rows or (0, b)
        mine = slice(first, first + b)
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
