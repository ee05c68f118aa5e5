from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natlearn.data import augment, center_crop, load_dataset
from natlearn.errors import NatlearnError


def test_digits_split_is_fixed_and_disjoint():
    train, test, everything = load_dataset("digits", "train"), load_dataset("digits", "test"), load_dataset("digits", "all")
    assert len(train) + len(test) == len(everything) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255
    assert torch.equal(load_dataset("digits", "train").images, train.images)
    image, index = train[17]
    assert index == 17 and torch.equal(image, train.images[17])
    assert torch.bincount(test.labels).min() >= 55  # stratified


def test_augmentation_is_seeded_and_stays_in_range():
    images = load_dataset("digits", "train").images[:64]
    a = augment(images, 8, 1, True, torch.Generator().manual_seed(0))
    b = augment(images, 8, 1, True, torch.Generator().manual_seed(0))
    c = augment(images, 8, 1, True, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (64, 1, 8, 8) and float(a.min()) >= 0 and float(a.max()) <= 1


def test_augmentation_crops_and_flips_the_right_pixels():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    out = augment(image, 4, 1, True, torch.Generator().manual_seed(0)) * 255
    padded = torch.nn.functional.pad(image[0, 0], (1, 1, 1, 1)).float()
    windows = {padded[t : t + 4, left : left + 4] for t in range(3) for left in range(3)}
    allowed = [w for w in windows] + [w.flip(1) for w in windows]
    for crop in out[:, 0]:
        assert any(torch.equal(crop.round(), w) for w in allowed)
    assert len({tuple(c.flatten().tolist()) for c in out[:, 0]}) > 9  # both crops and flips happen


def test_eval_transform_is_deterministic():
    images = torch.randint(0, 256, (4, 3, 10, 10), dtype=torch.uint8)
    assert torch.equal(center_crop(images, 8), center_crop(images, 8))
    assert torch.equal(center_crop(images, 8), images[..., 1:9, 1:9].float() / 255)


def test_image_folder_with_classes_and_odd_formats(tmp_path):
    rng = np.random.default_rng(0)
    for name in ["cat", "dog"]:
        (tmp_path / name).mkdir()
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / name / "rgb.png")
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(tmp_path / name / "gray.jpg")
        Image.fromarray(rng.integers(0, 255, (16, 20, 4), dtype=np.uint8), "RGBA").save(tmp_path / name / "rgba.png")
    data = load_dataset(str(tmp_path), image_size=12)
    assert data.images.shape == (6, 3, 12, 12)
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_hundred_images_of_the_shared_cifar10_copy(tmp_path):
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "test"
    if not root.is_dir():
        pytest.skip("../shared/data/cifar10 is not present")
    for class_dir in sorted(root.iterdir()):
        (tmp_path / class_dir.name).mkdir()
        for image in sorted(class_dir.iterdir())[:10]:
            (tmp_path / class_dir.name / image.name).symlink_to(image)
    data = load_dataset(str(tmp_path))
    assert data.images.shape == (100, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes[:3] == ["airplane", "automobile", "bird"]
    assert torch.equal(torch.bincount(data.labels), torch.full((10,), 10))
    first = sorted((root / "airplane").iterdir())[0]
    assert torch.equal(data.images[0], torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1))


def test_missing_and_empty_folders_give_clear_errors(tmp_path):
    with pytest.raises(NatlearnError, match="unknown data set"):
        load_dataset(str(tmp_path / "missing"))
    with pytest.raises(NatlearnError, match="no images"):
        load_dataset(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(NatlearnError, match="broken.png"):
        load_dataset(str(tmp_path))
