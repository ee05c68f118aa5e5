"""The hand-crafted baseline (Coates & Ng's k-means features): its convolution is the paper's
pipeline on explicitly extracted patches, its whitening whitens, its fits see training images only,
and ``natlearn eval`` / ``compare`` take it as a source like raw-pixels, reusing a stored evaluation
only when every setting matches."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from natlearn.cli import main
from natlearn.data import ImageDataset
from natlearn.evaluate import EvalSettings, evaluate_handcrafted
from natlearn.evaluate.probes import handcrafted
from natlearn.evaluate.probes.handcrafted import coates_ng, fit_encoder, normalise

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"centroids": 8, "patches": 400, "iterations": 5}  # a fit of a fraction of a second


def _noise(n: int, seed: int, size: int = 12) -> torch.Tensor:
    """(n, 3, size, size) uint8 noise, smoothed so patches have structure."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 3, size, size, generator=generator)
    return (F.avg_pool2d(noise, 3, 1, 1) * 255).to(torch.uint8)


def _stripes(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 vertical, class 1 horizontal stripes; random period, phase and two random colours."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    period = 4 + 6 * torch.rand(n, 1, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=generator)
    coordinate = torch.arange(size, dtype=torch.float32)
    across = torch.where(
        labels[:, None, None] == 0, coordinate[None, None, :], coordinate[None, :, None]
    )  # column index for vertical stripes, row index for horizontal ones
    on = (torch.sin(2 * math.pi * across / period + phase) > 0).float()[:, None]
    colours = torch.rand(n, 2, 3, 1, 1, generator=generator)
    images = colours[:, 0] + (colours[:, 1] - colours[:, 0]) * on
    return (images * 255).to(torch.uint8), labels


def _dataset(images: torch.Tensor, labels: torch.Tensor) -> ImageDataset:
    return ImageDataset(images, labels, ["a", "b"], (0.5,) * 3, (0.25,) * 3, "generated")


def _windows(images: torch.Tensor, patch: int = 6) -> torch.Tensor:
    """Every patch x patch window of uint8 images, as (windows, D) float64 rows."""
    views = images.double() / 255
    return F.unfold(views, patch).transpose(1, 2).reshape(-1, views.shape[1] * patch**2)


def test_the_convolution_is_the_pipeline_on_explicit_patches():
    train, test = _noise(20, seed=1), _noise(3, seed=2, size=11)
    encoder = fit_encoder(train, 12, **SMALL)
    ours = encoder(test.float() / 255)
    # The paper's steps on explicitly extracted windows, in float64.
    x = normalise(_windows(test), encoder.normalise_eps)
    w = (x - encoder.mean.double()) @ encoder.whiten.double()
    z = torch.cdist(w, encoder.centres.double())
    active = (z.mean(1, keepdim=True) - z).clamp_min(0).reshape(3, 6, 6, -1)  # 11 - 6 + 1 = 6
    rows = [active[:, :3, :3], active[:, :3, 3:], active[:, 3:, :3], active[:, 3:, 3:]]
    expected = torch.cat([q.sum((1, 2)) for q in rows], dim=1)
    assert ours.shape == (3, 4 * SMALL["centroids"])
    assert expected.abs().max() > 1  # quadrant sums of several windows, not all zero
    torch.testing.assert_close(ours.double(), expected, atol=1e-5, rtol=1e-5)


def _spy_on_fits(monkeypatch) -> dict[str, torch.Tensor]:
    """What the whitening and k-means fits are given, once a fit has run."""
    seen: dict[str, torch.Tensor] = {}
    fit_whitening, kmeans = handcrafted.fit_whitening, handcrafted.kmeans

    def whitening_spy(patches, eps):
        seen["whitening"] = patches
        return fit_whitening(patches, eps)

    def kmeans_spy(x, k, iterations, seed):
        seen["kmeans"] = x
        return kmeans(x, k, iterations, seed)

    monkeypatch.setattr(handcrafted, "fit_whitening", whitening_spy)
    monkeypatch.setattr(handcrafted, "kmeans", kmeans_spy)
    return seen


def test_the_whitening_whitens_the_patches_k_means_is_fit_on(monkeypatch):
    seen = _spy_on_fits(monkeypatch)
    encoder = fit_encoder(_noise(40, seed=3), 12, **SMALL)
    patches = seen["whitening"].double()
    covariance = torch.cov(patches.T)
    whiten = encoder.whiten.double()
    torch.testing.assert_close(whiten, whiten.T, atol=1e-6, rtol=0)  # ZCA: symmetric
    # W C W = C (C + eps I)^-1: unit variance along every direction whose variance is well above
    # eps, none across directions.
    eps = handcrafted.SETTINGS["zca_eps"]
    expected = covariance @ torch.linalg.inv(covariance + eps * torch.eye(len(covariance)))
    torch.testing.assert_close(whiten @ covariance @ whiten, expected, atol=1e-4, rtol=0)
    assert (covariance - expected).abs().max() > 0.5  # unwhitened patches are far from it
    whitened = (patches - encoder.mean.double()) @ whiten
    torch.testing.assert_close(seen["kmeans"].double(), whitened, atol=1e-4, rtol=0)


def test_normalisation_whitening_and_centres_see_train_images_only(monkeypatch):
    train, test = _noise(10, seed=4), _noise(6, seed=5)
    seen = _spy_on_fits(monkeypatch)
    (train_x, _), (test_x, _) = coates_ng(train, test, 12, **SMALL)
    eps = handcrafted.SETTINGS["normalise_eps"]
    train_windows = normalise(_windows(train), eps).float()
    test_windows = normalise(_windows(test), eps).float()
    fitted = seen["whitening"]
    assert len(fitted) == 400 and len(seen["kmeans"]) == 400
    exact = "donot_use_mm_for_euclid_dist"
    to_train = torch.cdist(fitted, train_windows, compute_mode=exact).min(1).values
    assert to_train.max() < 1e-4  # each one a train window
    assert torch.cdist(fitted, test_windows, compute_mode=exact).min() > 0.5  # none a test window
    # Other test images: the same fits, so the same train features.
    (again, _), _ = coates_ng(train, _noise(6, seed=6), 12, **SMALL)
    assert torch.equal(again, train_x) and test_x.shape == (6, 4 * SMALL["centroids"])


def test_stripes_orientation_is_separated_while_noise_stays_at_chance(monkeypatch):
    for key, value in {**SMALL, "centroids": 32, "patches": 2000}.items():
        monkeypatch.setitem(handcrafted.SETTINGS, key, value)
    settings = EvalSettings(knn=(20,), mlp=False, progress=False)
    stripes, labels = _stripes(240, seed=5)
    stripes_score = evaluate_handcrafted(
        _dataset(stripes[:160], labels[:160]), _dataset(stripes[160:], labels[160:]), 16, settings
    )["protocols"]
    noise = _noise(240, seed=6, size=16)
    noise_score = evaluate_handcrafted(
        _dataset(noise[:160], labels[:160]), _dataset(noise[160:], labels[160:]), 16, settings
    )["protocols"]
    for protocol in ("linear", "knn20"):
        assert stripes_score[protocol]["kmeans"]["top1"] >= 0.95, stripes_score
        assert noise_score[protocol]["kmeans"]["top1"] <= 0.8, noise_score


def test_eval_takes_hand_crafted_like_raw_pixels(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(handcrafted.SETTINGS, "centroids", 50)
    out = tmp_path / "eval"
    assert (
        main(["eval", "hand-crafted", "digits", "--knn", "20", "--no-linear", "--out", str(out)])
        == 0
    )
    stored = json.loads((out / "eval.json").read_text())
    assert stored["model"] == "hand-crafted" and stored["objective"] == "none"
    assert stored["data"] == "digits" and "kmeans" in stored["protocols"]["knn20"]
    assert "train images only" in stored["features"] and "200 features" in stored["features"]
    assert stored["key"]["network"]["centroids"] == 50
    assert "kmeans" in capsys.readouterr().out


def test_compare_reuses_a_stored_evaluation_only_with_every_setting_equal(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(handcrafted.SETTINGS, "centroids", 50)
    flags = ["--knn", "20", "--no-linear", "--out", str(tmp_path / "compare")]
    assert main(["compare", "raw-pixels", "hand-crafted", *flags]) == 0
    compared = json.loads((tmp_path / "compare" / "compare.json").read_text())["results"]
    assert [result["model"] for result in compared.values()] == ["raw-pixels", "hand-crafted"]
    assert "kmeans" in compared["1-hand-crafted"]["protocols"]["knn20"]
    capsys.readouterr()
    assert main(["compare", "hand-crafted", *flags]) == 0
    assert "hand-crafted: reusing" in capsys.readouterr().err
    for key, value in (("centroids", 40), ("zca_eps", 0.01)):
        monkeypatch.setitem(handcrafted.SETTINGS, key, value)
        assert main(["compare", "hand-crafted", *flags]) == 0
        assert "reusing" not in capsys.readouterr().err


@pytest.mark.slow  # a benchmark script in a subprocess
def test_the_benchmark_quick_run_measures_digits_without_touching_docs():
    docs = (ROOT / "docs" / "results.md").read_text()
    record = ROOT / "benchmarks" / "results" / "handcrafted.json"
    before = record.read_text() if record.exists() else None
    script = ROOT / "benchmarks" / "handcrafted.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.splitlines()[-1])
    assert row["data"] == "digits" and row["features"] == 4 * 50
    assert row["top1"] > 0.9 and row["held_out_top1"] > 0.9  # raw pixels reach 97%
    assert row["fit_minutes"] > 0 and row["encode_minutes"] > 0 and row["peak_memory_gb"] > 0
    assert (ROOT / "docs" / "results.md").read_text() == docs
    assert (record.read_text() if record.exists() else None) == before
