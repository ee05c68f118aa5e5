"""The hand-crafted baseline: dense HOG descriptors of the evaluation view, encoded against a
k-means codebook of training descriptors (a bag of visual words) with a 1x1 + 2x2 spatial pyramid.

The paper sets NAT against a hand-crafted pipeline (dense SIFT + Fisher vectors). This is the same
kind of pipeline at a scale that runs on two CPU cores for CIFAR-10 in minutes; the published
shallow anchor is Coates & Ng's k-means features (Coates, Lee & Ng, AISTATS 2011; Coates & Ng,
ICML 2011): 79.6% on CIFAR-10 with 4,000 words on whitened pixel patches, triangle encoding and
quadrant pooling. Choices and why:

- Descriptors: HOG blocks (Dalal & Triggs, 2005), dense over the view: 9 unsigned orientation bins,
  square cells of ``cell_size(crop)`` pixels (an even side near an eighth of the crop: 4 px on
  CIFAR's 32x32, 2 on digits' 8x8, 12 on STL-10's 96x96, so every view has about 8x8 cells), blocks
  of 2x2 cells at a stride of one cell, L2-Hys normalised: a 36-dim descriptor built like SIFT's
  (SIFT is 4x4 cells x 8 orientations of the same gradient histograms), 49 of them per 32x32 view.
  They are computed for a whole batch at once with torch (gradients, the strongest channel per
  pixel, orientation bins, cell sums by one bincount), in float64, equal to
  ``skimage.feature.hog(..., cells_per_block=(2, 2), channel_axis=-1)`` up to float32 rounding
  (the tests check it), with no scikit-image needed at run time, and 2-3x faster than calling it
  per image (about 2,000 32x32 images/s on 2 shared CPU cores). No dense SIFT with a maintained
  Python package was found (OpenCV's SIFT detects keypoints; vlfeat's dsift is unmaintained), and
  HOG is the same gradient-histogram idea.
- Encoding: a codebook of ``words`` k-means centres (scikit-learn's MiniBatchKMeans, seeded) fit on
  every descriptor of up to ``codebook_images`` training images drawn with a seeded generator, and
  Coates & Ng's "triangle" soft assignment, max(0, mean_k d_k - d_k) for the distances d_k to the
  centres, which they found better than hard assignment at the same codebook size. A Fisher vector
  (what the paper used) of K diagonal Gaussians has 2 K D numbers per region: with K=64 and D=36,
  23,040 over the 5 pyramid regions, 4.6 GB for CIFAR-10's 50,000 training images in float32, too
  big for the probes on a CPU; the codebook gives 5 x ``words`` (1,280 with 256 words).
- Pooling: the mean activation of each word over the whole grid and over its four quadrants
  (a 1x1 + 2x2 spatial pyramid, Lazebnik et al., 2006), then a square root (power normalisation)
  and L2 normalisation of each image's vector. Both are per image: nothing is estimated from data.

The only fitted thing, the codebook, sees training images only; test images are encoded with it
afterwards. The probes (linear with weight decay chosen on held-out training images, k-NN) then
standardise with training statistics as they do for every other source.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from natlearn.data import ImageData, eval_view
from natlearn.errors import NatlearnError
from natlearn.evaluate.features import image_features

__all__ = [
    "BAG_OF_WORDS",
    "ORIENTATIONS",
    "bag_of_words",
    "cell_size",
    "dense_hog",
    "encode",
    "fit_codebook",
    "hand_crafted",
]

ORIENTATIONS = 9
_BLOCK = 2  # cells per block side, as SIFT's 4 and HOG's 2-3
_CHUNK = 1024  # images per batch: bounds memory (a 32x32 chunk holds ~100 MB of float64 gradients)


# The bag of words natlearn's ``hand-crafted`` source uses; part of its evaluations' reuse key,
# so a stored evaluation made with other values is never taken for this one.
BAG_OF_WORDS = {"words": 256, "codebook_images": 4000, "seed": 0}


def cell_size(crop_size: int) -> int:
    """An even cell side near an eighth of the crop (at least 2): about 8x8 cells on any view."""
    return max(2, 2 * round(crop_size / 16))


def dense_hog(images: torch.Tensor, cell: int, orientations: int = ORIENTATIONS) -> torch.Tensor:
    """HOG block descriptors on a dense grid, as ``skimage.feature.hog(image, orientations,
    (cell, cell), (2, 2), "L2-Hys", channel_axis=-1, feature_vector=False)`` per image.

    Centred differences (zero on the border); per pixel, the channel with the largest gradient
    magnitude; unsigned orientations in ``orientations`` equal bins of [0, 180) degrees; magnitudes
    summed over ``cell`` x ``cell`` cells; every 2x2 block of cells L2-Hys normalised.

    Args:
        images: (n, C, H, W) float in [0, 1] (any C), H and W at least 2 * ``cell``.
    Returns:
        (n, H // cell - 1, W // cell - 1, 4 * orientations) float32: a grid of block descriptors,
        each ordered (block row, block column, orientation) like skimage's.
    """
    n, _, height, width = images.shape
    rows, cols = height // cell, width // cell
    if rows < _BLOCK or cols < _BLOCK:
        raise NatlearnError(
            f"hand-crafted features need views of at least {_BLOCK * cell}x{_BLOCK * cell} pixels "
            f"(2x2 cells of {cell}); got {height}x{width}"
        )
    x = images.double()
    g_row = F.pad(x[..., 2:, :] - x[..., :-2, :], (0, 0, 1, 1))  # zero on the border
    g_col = F.pad(x[..., :, 2:] - x[..., :, :-2], (1, 1))
    magnitude = torch.hypot(g_row, g_col)
    # Per pixel the channel of the largest magnitude, the first of equals (numpy's argmax).
    strongest, row, col = magnitude[:, 0], g_row[:, 0], g_col[:, 0]
    for channel in range(1, x.shape[1]):
        stronger = magnitude[:, channel] > strongest
        strongest = torch.where(stronger, magnitude[:, channel], strongest)
        row = torch.where(stronger, g_row[:, channel], row)
        col = torch.where(stronger, g_col[:, channel], col)
    height, width = rows * cell, cols * cell  # pixels past the last whole cell are left out
    strongest, row, col = (t[:, :height, :width] for t in (strongest, row, col))
    angle = torch.remainder(torch.atan2(row, col) * (180 / math.pi), 180)
    # skimage's bin i holds start_i <= angle < start_(i+1) with float32 bounds; an angle that the
    # remainder rounds to 180 falls in no bin there, and here in an extra one dropped below.
    bounds = torch.tensor([180 / orientations * i for i in range(1, orientations + 1)])
    bins = torch.bucketize(angle, bounds.float().double(), right=True)
    # Each pixel's magnitude is summed into (image, cell row, cell column, bin).
    cell_of = (torch.arange(height) // cell)[:, None] * cols + torch.arange(width) // cell
    slot = (torch.arange(n)[:, None, None] * (rows * cols) + cell_of) * (orientations + 1) + bins
    size = n * rows * cols * (orientations + 1)
    cells = torch.bincount(slot.flatten(), strongest.flatten(), minlength=size)
    cells = cells.view(n, rows, cols, orientations + 1)[..., :orientations]
    blocks = cells.unfold(1, _BLOCK, 1).unfold(2, _BLOCK, 1)  # (n, r, c, orient, brow, bcol)
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).reshape(n, rows - 1, cols - 1, -1)
    eps = 1e-5  # skimage's
    blocks = blocks / (blocks.square().sum(-1, keepdim=True) + eps**2).sqrt()
    blocks = blocks.clamp(max=0.2)
    blocks = blocks / (blocks.square().sum(-1, keepdim=True) + eps**2).sqrt()
    return blocks.float()


def _descriptors(
    images: torch.Tensor, crop_size: int, crop: str, scale: float, cell: int
) -> torch.Tensor:
    """Dense HOG of the evaluation view of uint8 (n, C, H, W) images: (n, rows, cols, D)."""
    return dense_hog(eval_view(images, crop_size, crop, scale), cell)


def fit_codebook(descriptors: torch.Tensor, words: int, seed: int = 0) -> torch.Tensor:
    """k-means centres of (m, D) descriptors (MiniBatchKMeans, seeded; at most m words):
    (words, D) float32. One OpenMP thread: scikit-learn's threads made the fit 6x slower (100x on
    a few thousand descriptors) on two CPU cores shared with other work."""
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    data = descriptors.reshape(-1, descriptors.shape[-1]).numpy().astype(np.float64)
    with threadpool_limits(1):
        kmeans = MiniBatchKMeans(
            n_clusters=min(words, len(data)), random_state=seed, n_init=3, batch_size=4096
        ).fit(data)
    return torch.from_numpy(kmeans.cluster_centers_).float()


def encode(descriptors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Triangle-encoded words pooled over a 1x1 + 2x2 pyramid, square-rooted, L2-normalised.

    Args:
        descriptors: (n, rows, cols, D) from :func:`dense_hog`; codebook: (words, D).
    Returns:
        (n, 5 * words) float32: the whole grid's mean activations, then each quadrant's (top-left,
        top-right, bottom-left, bottom-right), word-major within each region.
    """
    n, rows, cols, dim = descriptors.shape
    distance = torch.cdist(descriptors.reshape(-1, dim).float(), codebook.float())
    active = (distance.mean(dim=1, keepdim=True) - distance).clamp_min(0)
    grid = active.reshape(n, rows, cols, -1).permute(0, 3, 1, 2)  # (n, words, rows, cols)
    pooled = torch.cat(
        [grid.mean(dim=(2, 3)), F.adaptive_avg_pool2d(grid, 2).permute(0, 2, 3, 1).flatten(1)],
        dim=1,
    )
    return F.normalize(pooled.sqrt(), dim=1)


def hand_crafted(
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    crop_size: int,
    crop: str = "pad",
    scale: float = 0.25,
    words: int = BAG_OF_WORDS["words"],
    codebook_images: int = BAG_OF_WORDS["codebook_images"],
    seed: int = BAG_OF_WORDS["seed"],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bag-of-visual-words features of the train and test images' evaluation views
    (:func:`natlearn.data.eval_view` with ``crop``/``scale``), the codebook fit on training
    descriptors only.

    Args:
        train_images: (n_train, C, H, W) uint8; test_images: (n_test, C, H, W) uint8.
        crop_size: the evaluation view's side; its cells are ``cell_size(crop_size)`` pixels.
        words: codebook size (fewer if the sampled training images have fewer descriptors).
        codebook_images: how many training images (drawn with ``seed``) give the descriptors
            k-means is fit on: all of each one's descriptors.
    Returns:
        (n_train, 5 * words) and (n_test, 5 * words) float32, deterministic for a given ``seed``.
    """
    (train, _), (test, _) = bag_of_words(
        train_images, test_images, crop_size, crop, scale, words, codebook_images, seed
    )
    return train, test


def bag_of_words(
    train: torch.Tensor | ImageData,
    test: torch.Tensor | ImageData,
    crop_size: int,
    crop: str = "pad",
    scale: float = 0.25,
    words: int = BAG_OF_WORDS["words"],
    codebook_images: int = BAG_OF_WORDS["codebook_images"],
    seed: int = BAG_OF_WORDS["seed"],
    workers: int = 0,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """:func:`hand_crafted` of images in memory or of a streamed folder (read a chunk at a time by
    ``workers`` DataLoader processes, never whole): (features, the ids of their rows) of train and
    of test (the ids: see :func:`~natlearn.evaluate.features.image_features`)."""
    cpu = torch.device("cpu")
    cell = cell_size(crop_size)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    sample = order[: min(codebook_images, len(train))].sort().values
    sampled = train[sample] if isinstance(train, torch.Tensor) else train.subset(sample)

    def descriptors(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"hog": _descriptors(images, crop_size, crop, scale, cell)}

    found, _ = image_features(sampled, descriptors, cpu, _CHUNK, workers)
    codebook = fit_codebook(found["hog"], words, seed)

    def features(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"words": encode(_descriptors(images, crop_size, crop, scale, cell), codebook)}

    def encoded(data: torch.Tensor | ImageData) -> tuple[torch.Tensor, torch.Tensor]:
        found, rows = image_features(data, features, cpu, _CHUNK, workers)
        return found["words"], rows

    return encoded(train), encoded(test)
