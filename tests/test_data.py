import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natlearn.data import StreamingFolder, augment, center_crop, load_dataset
from natlearn.data import folder as folder_module
from natlearn.errors import NatlearnError

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NATLEARN_CACHE", str(tmp_path / "cache"))


def _write_folder(root: Path, per_class: int = 8) -> None:
    """A labelled folder mixing PNG/JPEG with gray, RGBA, palette and 16-bit images of odd sizes."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog", "eel"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            kind = i % 5
            if kind == 0:
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
            elif kind == 1:
                Image.fromarray(rng.integers(0, 255, (12, 15), dtype=np.uint8)).save(root / name / f"{i}.jpg", quality=90)
            elif kind == 2:
                Image.fromarray(rng.integers(0, 255, (16, 12, 4), dtype=np.uint8), "RGBA").save(root / name / f"{i}.png")
            elif kind == 3:
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).convert("P").save(root / name / f"{i}.gif")
            else:
                Image.fromarray(rng.integers(0, 65535, (12, 12), dtype=np.uint16)).save(root / name / f"{i}.png")


def test_digits_split_is_fixed_and_disjoint():
    train, test, everything = load_dataset("digits", "train"), load_dataset("digits", "test"), load_dataset("digits", "all")
    assert len(train) + len(test) == len(everything) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255
    assert torch.equal(load_dataset("digits", "train").images, train.images)
    image, index = train[17]
    assert index == 17 and torch.equal(image, train.images[17])
    assert torch.bincount(test.labels).min() >= 55  # stratified


@pytest.mark.parametrize("crop", ["pad", "resized", "none"])
def test_augmentation_is_seeded_shaped_and_in_range(crop):
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    a = augment(images, 28, torch.Generator().manual_seed(0), crop, 4, 0.3)
    b = augment(images, 28, torch.Generator().manual_seed(0), crop, 4, 0.3)
    c = augment(images, 28, torch.Generator().manual_seed(1), crop, 4, 0.3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (64, 3, 28, 28) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_pad_crop_and_flip_move_exact_pixels():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    out = augment(image, 4, torch.Generator().manual_seed(0), "pad", 1) * 255
    padded = torch.nn.functional.pad(image[0, 0], (1, 1, 1, 1)).float()
    windows = [padded[t : t + 4, left : left + 4] for t in range(3) for left in range(3)]
    allowed = windows + [w.flip(1) for w in windows]
    for crop in out[:, 0]:
        assert any(torch.equal(crop.round(), w) for w in allowed)
    assert len({tuple(c.flatten().tolist()) for c in out[:, 0]}) > 9  # both crops and flips happen


def test_resized_crop_of_the_whole_image_is_the_image():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = augment(images, 16, torch.Generator().manual_seed(0), "resized", scale=1.0, flip=False)
    # scale=1 and aspect 1 would be exact; aspect jitter clips to the full image on one side at most.
    assert (out - images.float() / 255).abs().mean() < 0.15


def test_crop_larger_than_the_image_is_a_clear_error():
    with pytest.raises(NatlearnError, match="lower image_size"):
        augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 12, torch.Generator(), "pad", 1)


def test_eval_transform_is_deterministic():
    images = torch.randint(0, 256, (4, 3, 10, 10), dtype=torch.uint8)
    assert torch.equal(center_crop(images, 8), center_crop(images, 8))
    assert torch.equal(center_crop(images, 8), images[..., 1:9, 1:9].float() / 255)


def test_folder_with_odd_formats_is_converted(tmp_path):
    _write_folder(tmp_path / "images")
    data = load_dataset(str(tmp_path / "images"), image_size=12)
    assert data.images.shape == (24, 3, 12, 12)
    assert data.classes == ["cat", "dog", "eel"] and data.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert all(torch.equal(data[i][0], data.images[i]) and data[i][1] == i for i in range(24))
    sixteen_bit = np.array(Image.open(tmp_path / "images" / "cat" / "4.png"), dtype=np.uint32) >> 8
    assert torch.equal(data.images[4, 0], torch.from_numpy(sixteen_bit.astype(np.uint8)))  # not saturated at 255
    palette = np.array(Image.open(tmp_path / "images" / "cat" / "3.gif").convert("RGB"))
    assert torch.equal(data.images[3], torch.from_numpy(palette).permute(2, 0, 1))


def test_small_images_are_upscaled_to_image_size(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.full((5, 7, 3), 200, dtype=np.uint8)).save(tmp_path / "flat" / "tiny.png")
    data = load_dataset(str(tmp_path / "flat"), image_size=12)
    assert data.images.shape == (1, 3, 12, 12) and data.labels is None
    assert int(data.images.min()) == 200


def test_cache_is_reused_and_invalidated_when_the_folder_changes(tmp_path, monkeypatch):
    _write_folder(tmp_path / "images", per_class=3)
    first = load_dataset(str(tmp_path / "images"), image_size=12)
    caches = list((tmp_path / "cache").glob("folder-*.pt"))
    assert len(caches) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "try_decode", no_decoding)
        again = load_dataset(str(tmp_path / "images"), image_size=12)
    assert torch.equal(again.images, first.images)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(tmp_path / "images" / "dog" / "new.png")
    changed = load_dataset(str(tmp_path / "images"), image_size=12)
    assert len(changed) == len(first) + 1
    assert len(list((tmp_path / "cache").glob("folder-*.pt"))) == 2
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_bad_files_stop_with_the_first_name_or_are_skipped_with_one_warning(tmp_path):
    _write_folder(tmp_path / "images", per_class=2)
    good = tmp_path / "images" / "cat" / "0.png"
    (tmp_path / "images" / "cat" / "truncated.jpg").write_bytes(good.read_bytes()[:40])
    (tmp_path / "images" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(NatlearnError, match=r"truncated\.jpg is not a readable image \(2 bad"):
        load_dataset(str(tmp_path / "images"), image_size=12)
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(tmp_path / "images"), image_size=12, on_bad_image="skip")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "truncated.jpg" in messages[0] and "notes.txt" in messages[0]
    assert len(data) == 6


def test_streaming_folder_gives_the_same_images_through_workers(tmp_path):
    _write_folder(tmp_path / "images", per_class=4)
    memory = load_dataset(str(tmp_path / "images"), image_size=12, mode="memory")
    stream = load_dataset(str(tmp_path / "images"), image_size=12, mode="stream")
    assert isinstance(stream, StreamingFolder) and len(stream) == len(memory)
    batches = [torch.tensor([5, 0, 11]), torch.tensor([3, 7])]
    for (ids, images), expected in zip(stream.batches(batches, torch.device("cpu"), workers=2), batches, strict=True):
        assert torch.equal(ids, expected) and torch.equal(images, memory.images[expected])
    assert stream.mean == pytest.approx(memory.mean, abs=1e-6)


def test_streaming_folder_handles_a_bad_file(tmp_path):
    _write_folder(tmp_path / "images", per_class=2)
    (tmp_path / "images" / "eel" / "zz-broken.png").write_bytes(b"garbage")
    stream = load_dataset(str(tmp_path / "images"), image_size=12, mode="stream")
    everything = [torch.arange(len(stream))]
    with pytest.raises(NatlearnError, match="zz-broken.png"):
        list(stream.batches(everything, torch.device("cpu"), workers=0))
    stream.on_bad_image = "skip"
    with pytest.warns(UserWarning, match="zz-broken.png"):
        ((ids, images),) = list(stream.batches(everything, torch.device("cpu"), workers=0))
    assert len(ids) == len(stream) - 1 and images.shape[0] == len(ids)


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2049 if array.ndim == 1 else 2051
    with open(path, "wb") as handle:
        handle.write(struct.pack(">" + "I" * (array.ndim + 1), magic, *array.shape))
        handle.write(array.astype(np.uint8).tobytes())


def test_torchvision_mnist_root_is_read_without_download(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images, train_labels = rng.integers(0, 255, (20, 28, 28)), rng.integers(0, 10, 20)
    _write_idx(raw / "train-images-idx3-ubyte", train_images)
    _write_idx(raw / "train-labels-idx1-ubyte", train_labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 255, (7, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 7))
    data = load_dataset("mnist", "train", root=str(tmp_path))
    assert data.images.shape == (20, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(train_images.astype(np.uint8)))
    assert data.labels.tolist() == train_labels.tolist() and len(data.classes) == 10
    assert len(load_dataset("mnist", "test", root=str(tmp_path))) == 7


def test_missing_torchvision_root_says_how_to_download(tmp_path):
    with pytest.raises(NatlearnError, match="download=true"):
        load_dataset("cifar10", "train", root=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_unknown_names_and_splits_list_the_valid_ones(tmp_path):
    with pytest.raises(NatlearnError, match="cifar10, cifar100, mnist"):
        load_dataset("imagenet-tiny")
    with pytest.raises(NatlearnError, match="train, test"):
        load_dataset("cifar10", "unlabeled", root=str(tmp_path))


def test_hundred_images_of_the_shared_cifar10_copy(tmp_path):
    root = SHARED_CIFAR / "test"
    if not root.is_dir():
        pytest.skip("../shared/data/cifar10 is not present")
    for class_dir in sorted(root.iterdir()):
        (tmp_path / "c" / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:10]:
            (tmp_path / "c" / class_dir.name / image.name).symlink_to(image)
    data = load_dataset(str(tmp_path / "c"))
    assert data.images.shape == (100, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes[:3] == ["airplane", "automobile", "bird"]
    assert torch.equal(torch.bincount(data.labels), torch.full((10,), 10))
    first = sorted((root / "airplane").iterdir())[0]
    assert torch.equal(data.images[0], torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1))


def test_missing_and_empty_folders_give_clear_errors(tmp_path):
    with pytest.raises(NatlearnError, match="unknown data set"):
        load_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NatlearnError, match="no files"):
        load_dataset(str(tmp_path / "empty"))


@pytest.mark.parametrize("crop", ["pad", "resized"])
def test_a_rank_share_is_cropped_exactly_as_its_rows_of_the_global_batch(crop):
    images = torch.randint(0, 256, (10, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = augment(images, 10, torch.Generator().manual_seed(5), crop, padding=2)
    share = augment(images[4:7], 10, torch.Generator().manual_seed(5), crop, padding=2, rows=(4, 10))
    assert torch.equal(share, whole[4:7])


def test_subset_is_a_seeded_sample_of_the_training_split():
    from natlearn.config import Config
    from natlearn.train import pretraining_data

    full = Config(data="digits").load_data("train")
    picked = pretraining_data(Config(data="digits", subset=300, batch_size=64))
    assert len(picked) == 300 and picked.mean == full.mean
    rows = [int((full.images == image).flatten(1).all(dim=1).nonzero()[0]) for image in picked.images[:20]]
    assert torch.equal(picked.labels[:20], full.labels[rows])
    assert torch.equal(pretraining_data(Config(data="digits", subset=300, batch_size=64)).images, picked.images)
    assert not torch.equal(pretraining_data(Config(data="digits", subset=300, batch_size=64, seed=2)).images, picked.images)


def test_synthetic_data_is_deterministic_and_labelled():
    a, b = load_dataset("synthetic", "train", image_size=8), load_dataset("synthetic", "test", image_size=8)
    assert a.images.shape == (10_000, 3, 8, 8) and torch.equal(a.images, b.images)
    assert len(a.classes) == 1000 and int(a.labels.max()) < 1000


def test_a_streaming_subset_reads_the_chosen_files(tmp_path):
    _write_folder(tmp_path / "images")
    memory = load_dataset(str(tmp_path / "images"), image_size=12, mode="memory")
    stream = load_dataset(str(tmp_path / "images"), image_size=12, mode="stream")
    picked = torch.tensor([1, 5, 9, 20])
    part_stream, part_memory = stream.subset(picked), memory.subset(picked)
    assert len(part_stream) == 4 and torch.equal(part_stream.labels, part_memory.labels)
    (ids, images), *_ = part_stream.batches([torch.arange(4)], torch.device("cpu"), workers=0)
    assert torch.equal(images, part_memory.images) and len(stream) == len(memory)
