"""The Fisher vector variant of the hand-crafted baseline: its batched encoding is the textbook
formula on explicitly extracted descriptors, and every fit (whitening, PCA, mixture) sees
training windows only."""

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from natlearn.evaluate.probes import handcrafted
from natlearn.evaluate.probes.fisher import fit_fisher
from natlearn.evaluate.probes.handcrafted import encode, normalise

SMALL = {"gaussians": 4, "dims": 10, "patches": 400, "iterations": 100}


def _noise(n: int, seed: int, size: int = 12) -> torch.Tensor:
    """(n, 3, size, size) uint8 noise, smoothed so patches have structure."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 3, size, size, generator=generator)
    return (F.avg_pool2d(noise, 3, 1, 1) * 255).to(torch.uint8)


def _windows(images: torch.Tensor, patch: int = 6) -> torch.Tensor:
    """(n, windows, D) float64: every patch x patch window of uint8 images."""
    views = images.double() / 255
    return F.unfold(views, patch).transpose(1, 2)


def _reference(x: torch.Tensor, encoder) -> torch.Tensor:
    """The normalised Fisher vector of descriptors (n, dims), from the definition, in float64."""
    weights, means = encoder.weights.double(), encoder.means.double()
    sigma = encoder.variances.double().sqrt()
    # posteriors from each Gaussian's density, written out
    log_density = torch.distributions.Normal(means, sigma).log_prob(x[:, None]).sum(2)
    g = (log_density + weights.log()).softmax(1)  # (n, K)
    z = (x[:, None] - means) / sigma  # (n, K, dims)
    n = len(x)
    u = (g[..., None] * z).sum(0) / (n * weights.sqrt()[:, None])
    v = (g[..., None] * (z.square() - 1)).sum(0) / (n * (2 * weights).sqrt()[:, None])
    f = torch.cat([u.flatten(), v.flatten()])
    f = f.sign() * f.abs().sqrt()
    return f / f.norm()


@pytest.mark.parametrize("quadrants", [False, True])
def test_the_encoding_is_the_fisher_vector_of_the_explicit_descriptors(quadrants):
    train, test = _noise(30, seed=1), _noise(3, seed=2, size=11)
    encoder = fit_fisher(train, 12, **SMALL, quadrants=quadrants)
    ours, rows = encode(test, encoder, 11)
    assert rows.tolist() == [0, 1, 2] and ours.shape == (3, (4 if quadrants else 1) * 2 * 4 * 10)
    w = encoder.whitening
    expected = []
    for windows in _windows(test):  # (36, D) per image: 11 - 6 + 1 = 6, 6 x 6 windows
        x = (normalise(windows, w.normalise_eps) - w.mean.double()) @ w.whiten.double()
        x = (x - encoder.pca_mean.double()) @ encoder.projection.double()
        if not quadrants:
            expected.append(_reference(x, encoder))
            continue
        grid = x.view(6, 6, -1)  # quadrants of 3 x 3 windows, row-major
        quarters = [grid[:3, :3], grid[:3, 3:], grid[3:, :3], grid[3:, 3:]]
        expected.append(torch.cat([_reference(q.reshape(9, -1), encoder) for q in quarters]))
    # float32 against float64; the signed square root magnifies errors near zero
    torch.testing.assert_close(ours.double(), torch.stack(expected), atol=1e-4, rtol=1e-3)
    assert torch.stack(expected).abs().max() > 0.05  # not a vector of zeros


def test_whitening_pca_and_mixture_are_fit_on_train_windows_only(monkeypatch):
    train, test = _noise(10, seed=4), _noise(6, seed=5)
    seen: dict[str, torch.Tensor] = {}
    fit_whitening, fit_mixture = handcrafted.fit_whitening, GaussianMixture.fit

    def whitening_spy(patches, eps):
        seen["whitening"] = patches
        return fit_whitening(patches, eps)

    def mixture_spy(self, x, y=None):
        seen["mixture"] = torch.from_numpy(x)
        return fit_mixture(self, x)

    monkeypatch.setattr(handcrafted, "fit_whitening", whitening_spy)
    monkeypatch.setattr(GaussianMixture, "fit", mixture_spy)
    encoder = fit_fisher(train, 12, **SMALL)
    eps = handcrafted.SETTINGS["normalise_eps"]
    train_windows = normalise(_windows(train).flatten(0, 1), eps).float()
    test_windows = normalise(_windows(test).flatten(0, 1), eps).float()
    fitted = seen["whitening"]
    exact = "donot_use_mm_for_euclid_dist"
    assert len(fitted) == SMALL["patches"]
    assert torch.cdist(fitted, train_windows, compute_mode=exact).min(1).values.max() < 1e-4
    assert torch.cdist(fitted, test_windows, compute_mode=exact).min() > 0.5
    # The mixture is fit on exactly those windows, whitened and projected.
    w = encoder.whitening
    projected = ((fitted - w.mean) @ w.whiten - encoder.pca_mean) @ encoder.projection
    torch.testing.assert_close(seen["mixture"].float(), projected, atol=1e-4, rtol=0)
    # PCA keeps the directions of largest variance, in order.
    variances = projected.var(0)
    assert bool((variances[:-1] >= variances[1:] - 1e-4).all())
    assert math.isclose(float(encoder.weights.sum()), 1, abs_tol=1e-5)
