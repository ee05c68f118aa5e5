"""The hand-crafted baseline (dense HOG -> k-means bag of words): its descriptors are skimage's HOG,
its codebook sees training images only, it separates what orientation separates and nothing more,
and ``natlearn eval`` / ``compare`` take it as a source like raw-pixels."""

import json
import math

import torch

from natlearn.cli import main
from natlearn.data import ImageDataset
from natlearn.evaluate import EvalSettings, evaluate_handcrafted
from natlearn.evaluate.handcrafted import cell_size, dense_hog, hand_crafted


def _noise(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """(n, 3, size, size) uint8 noise, smoothed so gradients have structure."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 3, size, size, generator=generator)
    return (torch.nn.functional.avg_pool2d(noise, 3, 1, 1) * 255).to(torch.uint8)


def _stripes(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
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


def test_dense_hog_is_skimages_hog():
    from skimage.feature import hog

    images = _noise(3, seed=1, size=20).float() / 255
    images[0, :, 5:9, :] = 1.0  # flat areas and exact 0 / 90 degree edges
    for cell in (2, 4, 6):
        ours = dense_hog(images, cell)
        for image, mine in zip(images, ours, strict=True):
            reference = hog(
                image.permute(1, 2, 0).double().numpy(),
                orientations=9,
                pixels_per_cell=(cell, cell),
                cells_per_block=(2, 2),
                block_norm="L2-Hys",
                channel_axis=-1,
                feature_vector=False,
            )
            expected = torch.from_numpy(reference).reshape(mine.shape).float()
            torch.testing.assert_close(mine, expected, atol=1e-6, rtol=0)
    assert ours.shape == (3, 20 // 6 - 1, 20 // 6 - 1, 36)
    assert [cell_size(side) for side in (8, 32, 96)] == [2, 4, 12]


def test_features_are_deterministic_with_the_codebook_fit_on_train_only():
    train, test, other_test = _noise(24, seed=2), _noise(10, seed=3), _noise(10, seed=4)
    other_test[:5] = test[:5]
    train_x, test_x = hand_crafted(train, test, 16, words=8)
    assert train_x.shape == (24, 5 * 8) and test_x.shape == (10, 5 * 8)
    assert train_x.dtype == torch.float32 and torch.isfinite(train_x).all()
    torch.testing.assert_close(train_x.norm(dim=1), torch.ones(24))  # L2-normalised
    again = hand_crafted(train, test, 16, words=8)
    assert torch.equal(again[0], train_x) and torch.equal(again[1], test_x)
    # Other test images: the same codebook, so the same train features and the same features for
    # the test images the two sets share.
    train_other, test_other = hand_crafted(train, other_test, 16, words=8)
    assert torch.equal(train_other, train_x)
    assert torch.equal(test_other[:5], test_x[:5])
    # ... while other train images give another codebook.
    assert not torch.equal(hand_crafted(_noise(24, seed=7), test, 16, words=8)[1], test_x)


def test_orientation_separates_stripes_while_noise_stays_at_chance():
    settings = EvalSettings(knn=(20,), mlp=False, progress=False)
    stripes, labels = _stripes(240, seed=5)
    stripes_score = evaluate_handcrafted(
        _dataset(stripes[:160], labels[:160]), _dataset(stripes[160:], labels[160:]), 32, settings
    )["protocols"]
    noise = _noise(240, seed=6, size=32)
    noise_score = evaluate_handcrafted(
        _dataset(noise[:160], labels[:160]), _dataset(noise[160:], labels[160:]), 32, settings
    )["protocols"]
    for protocol in ("linear", "knn20"):
        assert stripes_score[protocol]["hog-bow"]["top1"] >= 0.95, stripes_score
        assert noise_score[protocol]["hog-bow"]["top1"] <= 0.8, noise_score


def test_eval_takes_hand_crafted_like_raw_pixels(tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        main(["eval", "hand-crafted", "digits", "--knn", "20", "--no-linear", "--out", str(out)])
        == 0
    )
    stored = json.loads((out / "eval.json").read_text())
    assert stored["model"] == "hand-crafted" and stored["objective"] == "none"
    assert stored["data"] == "digits" and "hog-bow" in stored["protocols"]["knn20"]
    assert "codebook fit on train images" in stored["features"]
    assert "hog-bow" in capsys.readouterr().out


def test_compare_takes_hand_crafted_next_to_raw_pixels(tmp_path):
    out = tmp_path / "compare"
    flags = ["--knn", "20", "--no-linear", "--out", str(out)]
    assert main(["compare", "raw-pixels", "hand-crafted", *flags]) == 0
    compared = json.loads((out / "compare.json").read_text())["results"]
    assert [result["model"] for result in compared.values()] == ["raw-pixels", "hand-crafted"]
    assert "hog-bow" in compared["1-hand-crafted"]["protocols"]["knn20"]


def test_a_stored_evaluation_with_another_bag_of_words_is_not_reused(tmp_path, capsys, monkeypatch):
    from natlearn.evaluate import handcrafted

    flags = ["--knn", "20", "--no-linear", "--out", str(tmp_path / "compare")]
    assert main(["compare", "hand-crafted", *flags]) == 0
    assert main(["compare", "hand-crafted", *flags]) == 0
    assert "hand-crafted: reusing" in capsys.readouterr().err
    monkeypatch.setitem(handcrafted.BAG_OF_WORDS, "words", 128)
    assert main(["compare", "hand-crafted", *flags]) == 0
    assert "reusing" not in capsys.readouterr().err
