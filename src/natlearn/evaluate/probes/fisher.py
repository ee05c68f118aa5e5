"""The paper's own kind of hand-crafted pipeline: dense local descriptors -> PCA -> a diagonal
Gaussian mixture -> Fisher vectors with the power and L2 normalisations (Perronnin, Sánchez &
Mensink, "Improving the Fisher Kernel for Large-Scale Image Classification", ECCV 2010), the
encoding of the dense SIFT + Fisher vector baseline that Bojanowski & Joulin compare NAT with.

SIFT's 16x16 cells do not fit a 32x32 image densely, so the descriptors are Coates & Ng's
(:mod:`natlearn.evaluate.probes.handcrafted`): every 6x6 window at stride 1, brightness/contrast
normalised and ZCA-whitened. Fit on ``patches`` windows of **training** images only: the whitening,
then a PCA to ``dims`` dimensions, then scikit-learn's ``GaussianMixture`` (``gaussians``
components, diagonal covariances, seeded). An image's descriptors x_1..x_N (N windows) with
posteriors g_nk under the mixture (weights w_k, means m_k, standard deviations s_k) give

    u_k = sum_n g_nk (x_n - m_k) / s_k / (N sqrt(w_k)),
    v_k = sum_n g_nk ((x_n - m_k)^2 / s_k^2 - 1) / (N sqrt(2 w_k)),

concatenated (2 x ``gaussians`` x ``dims`` features), then sign(f) sqrt(|f|) and the L2 norm; with
``quadrants``, one such vector for each quadrant of the window grid (the k-means features' sum
pooling regions; Sánchez et al.'s spatial layout), concatenated (4 x as many). The
encoding is batched torch (:func:`~natlearn.evaluate.probes.handcrafted.encode` takes a
:class:`FisherEncoder`: a batch of images at once, on ``device``); only the mixture's fit is
scikit-learn's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from natlearn.data import ImageData
from natlearn.evaluate.probes import handcrafted
from natlearn.evaluate.probes.handcrafted import Whitening, fit_whitening_on

__all__ = ["SETTINGS", "FisherEncoder", "fit_fisher"]

# The descriptors are the k-means features' patches: their sampling and whitening constants are
# handcrafted.SETTINGS's, so the two pipelines cannot drift apart.
SETTINGS = {
    "gaussians": 64,
    "dims": 64,
    "quadrants": True,
    "iterations": 100,
    **{
        key: handcrafted.SETTINGS[key]
        for key in ("patch", "patches", "normalise_eps", "zca_eps", "seed")
    },
}


@dataclass(frozen=True)
class FisherEncoder:
    """A fitted Fisher vector encoder: the descriptors' whitening, the PCA (mean, (D, dims)
    projection), the diagonal mixture (weights (K,), means and variances (K, dims)) and whether a
    vector is made per quadrant."""

    whitening: Whitening
    pca_mean: torch.Tensor
    projection: torch.Tensor
    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    quadrants: bool

    def to(self, device: torch.device) -> FisherEncoder:
        w = self.whitening
        return FisherEncoder(
            Whitening(w.mean.to(device), w.whiten.to(device), w.patch, w.normalise_eps),
            *(t.to(device) for t in (self.pca_mean, self.projection)),
            *(t.to(device) for t in (self.weights, self.means, self.variances)),
            self.quadrants,
        )

    @property
    def patch(self) -> int:
        return self.whitening.patch

    def descriptors(self, views: torch.Tensor) -> torch.Tensor:
        """(b, N, dims): the PCA-projected whitened windows of (b, C, H, W) float views."""
        whitened = self.whitening.whitened(views)
        b, dims = whitened.shape[:2]
        x = whitened.permute(0, 2, 3, 1).reshape(b, -1, dims)
        return (x - self.pca_mean) @ self.projection

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        """(b, 2 K dims) normalised Fisher vectors of (b, C, H, W) float views; with ``quadrants``
        one per quadrant of the window grid, concatenated: (b, 8 K dims)."""
        x = self.descriptors(views)
        inverse = 1 / self.variances
        # log w_k + log N(x | m_k, s_k^2) up to a constant: a quadratic form, as matrix products.
        log_p = (
            -0.5 * (x.square() @ inverse.T - 2 * x @ (self.means * inverse).T)
            - 0.5 * (self.means.square() * inverse).sum(1)
            - 0.5 * self.variances.log().sum(1)
            + self.weights.log()
        )
        g = log_p.softmax(dim=2)  # (b, N, K) posteriors
        if not self.quadrants:
            return self._normalised(x, g)
        b, side = len(x), views.shape[-1] - self.patch + 1
        rows = x.shape[1] // side
        grid_x, grid_g = x.view(b, rows, side, -1), g.view(b, rows, side, -1)
        top, left = math.ceil(rows / 2), math.ceil(side / 2)  # as the k-means features' quadrants
        parts = [(slice(None, top), slice(None, left)), (slice(None, top), slice(left, None))]
        parts += [(slice(top, None), slice(None, left)), (slice(top, None), slice(left, None))]
        return torch.cat(
            [
                self._normalised(grid_x[:, r, c].flatten(1, 2), grid_g[:, r, c].flatten(1, 2))
                for r, c in parts
            ],
            dim=1,
        )

    def _normalised(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The power- and L2-normalised Fisher vectors of descriptors (b, n, dims) with posteriors
        (b, n, K)."""
        s0 = g.sum(1)[..., None]  # (b, K, 1)
        s1 = g.transpose(1, 2) @ x  # (b, K, dims)
        s2 = g.transpose(1, 2) @ x.square()
        n = x.shape[1]
        u = (s1 - self.means * s0) / self.variances.sqrt()
        v = (s2 - 2 * self.means * s1 + self.means.square() * s0) / self.variances - s0
        u = u / (n * self.weights.sqrt()[:, None])
        v = v / (n * (2 * self.weights).sqrt()[:, None])
        f = torch.cat([u.flatten(1), v.flatten(1)], dim=1)
        return F.normalize(f.sign() * f.abs().sqrt(), dim=1)


def fit_fisher(
    train: torch.Tensor | ImageData,
    crop_size: int,
    crop: str = "pad",
    scale: float = 0.25,
    device: torch.device | None = None,
    workers: int = 0,
    gaussians: int = SETTINGS["gaussians"],
    dims: int = SETTINGS["dims"],
    quadrants: bool = SETTINGS["quadrants"],
    patch: int = SETTINGS["patch"],
    patches: int = SETTINGS["patches"],
    iterations: int = SETTINGS["iterations"],
    normalise_eps: float = SETTINGS["normalise_eps"],
    zca_eps: float = SETTINGS["zca_eps"],
    seed: int = SETTINGS["seed"],
) -> FisherEncoder:
    """The :class:`FisherEncoder` of ``train`` images (uint8 in memory, or a streamed folder): the
    whitening, PCA and mixture fit on the same ``patches`` training windows
    (:func:`~natlearn.evaluate.probes.handcrafted.fit_whitening_on`)."""
    from sklearn.mixture import GaussianMixture

    device = device or torch.device("cpu")
    view = (crop_size, crop, scale, device, workers)
    whitening, x = fit_whitening_on(train, *view, patch, patches, normalise_eps, zca_eps, seed)
    x = x.double()
    pca_mean = x.mean(0)
    _, vectors = torch.linalg.eigh(torch.cov((x - pca_mean).T))
    projection = vectors[:, -min(dims, x.shape[1]) :].flip(1)  # the largest variances first
    reduced = ((x - pca_mean) @ projection).numpy()
    mixture = GaussianMixture(
        gaussians, covariance_type="diag", max_iter=iterations, random_state=seed
    ).fit(reduced)
    fitted = (mixture.weights_, mixture.means_, mixture.covariances_)
    return FisherEncoder(
        whitening,
        pca_mean.float(),
        projection.float(),
        *(torch.from_numpy(array).float() for array in fitted),
        quadrants,
    ).to(device)
