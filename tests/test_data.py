import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natlearn.config import Config
from natlearn.data import (
    Augmentation,
    ImageData,
    ImageDataset,
    StreamingFolder,
    center_crop,
    load_dataset,
    load_split,
)
from natlearn.data import folder as folder_module
from natlearn.errors import NatlearnError

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NATLEARN_CACHE", str(tmp_path / "cache"))


def _write_folder(root: Path, per_class: int = 8) -> None:
    """A labelled folder mixing PNG/JPEG with gray, RGBA, palette and 16-bit images of odd sizes."""
    rng = np.random.default_rng(0)

    def noise(shape: tuple[int, ...], high: int = 255, dtype: type = np.uint8) -> np.ndarray:
        return rng.integers(0, high, shape, dtype=dtype)

    for name in ("cat", "dog", "eel"):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            kind = i % 5
            if kind == 0:
                Image.fromarray(noise((12, 12, 3))).save(folder / f"{i}.png")
            elif kind == 1:
                Image.fromarray(noise((12, 15))).save(folder / f"{i}.jpg", quality=90)
            elif kind == 2:
                Image.fromarray(noise((16, 12, 4)), "RGBA").save(folder / f"{i}.png")
            elif kind == 3:
                Image.fromarray(noise((12, 12, 3))).convert("P").save(folder / f"{i}.gif")
            else:
                Image.fromarray(noise((12, 12), 65535, np.uint16)).save(folder / f"{i}.png")


def test_digits_split_is_fixed_and_disjoint():
    train, test, everything = (
        load_dataset("digits", "train"),
        load_dataset("digits", "test"),
        load_dataset("digits", "all"),
    )
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
    augmentation = Augmentation(28, crop, 4, 0.3)
    a = augmentation(images, torch.Generator().manual_seed(0))
    b = augmentation(images, torch.Generator().manual_seed(0))
    c = augmentation(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (64, 3, 28, 28) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_augmentation_is_built_from_the_config():
    config = Config(crop="resized", crop_padding=3, crop_scale=0.5, flip=False)
    assert Augmentation.from_config(config, 28) == Augmentation(28, "resized", 3, 0.5, False)


def test_simclr_colour_jitter_changes_most_crops_and_grayscale_the_asked_fraction():
    images = torch.randint(
        0, 256, (2000, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    plain = Augmentation(8, "none", flip=False)(images, torch.Generator())
    jittered = Augmentation(8, "none", flip=False, jitter=0.5)(images, torch.Generator())
    changed = ((jittered - plain).abs().flatten(1).amax(1) > 1e-4).float().mean()
    assert 0.75 < float(changed) < 0.85  # SimCLR jitters 80% of the crops
    assert float(jittered.min()) >= 0 and float(jittered.max()) <= 1
    # Brightness by up to +-40%: the mean of a jittered crop moves by up to ~40% of its own.
    ratio = jittered.mean((1, 2, 3)) / plain.mean((1, 2, 3))
    assert 0.5 < float(ratio.min()) < 0.75 and 1.2 < float(ratio.max()) < 1.5
    grayed = Augmentation(8, "none", flip=False, grayscale=0.2)(images, torch.Generator())
    gray = (grayed[:, 0] == grayed[:, 1]).flatten(1).all(1) & (
        grayed[:, 1] == grayed[:, 2]
    ).flatten(1).all(1)
    assert 0.17 < float(gray.float().mean()) < 0.23
    luma = (plain * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert torch.allclose(grayed[gray][:, 0], luma[gray], atol=1e-6)
    untouched = ~gray
    assert torch.equal(grayed[untouched], plain[untouched])


@pytest.mark.parametrize("channels", [1, 3])
def test_colour_factors_match_torchvision_and_a_hue_turn_is_a_rotation(channels):
    import torchvision.transforms.v2.functional as TF

    from natlearn.data.augment import adjust_colours

    images = torch.rand(6, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    factors = torch.tensor([0.6, 0.9, 1.0, 1.0, 1.3, 1.4])
    ones, none = torch.ones(6), torch.zeros(6)
    for which in range(3 if channels == 3 else 2):
        chosen = [factors if i == which else ones for i in range(3)]
        ours = adjust_colours(images, *chosen, none)
        adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation][which]
        theirs = torch.stack(
            [adjust(image, float(f)) for image, f in zip(images, factors, strict=True)]
        )
        assert torch.allclose(ours, theirs, atol=1e-4), which  # its luma weighs red 0.2989
    if channels == 3:
        whole_turn = adjust_colours(images, ones, ones, ones, torch.ones(6))
        assert torch.allclose(whole_turn, images, atol=1e-5)
        small_turn = adjust_colours(images, ones, ones, ones, torch.full((6,), 0.05))
        hsv_turn = torch.stack([TF.adjust_hue(image, 0.05) for image in images])
        back_turn = adjust_colours(images, ones, ones, ones, torch.full((6,), -0.05))
        moved = (small_turn - images).abs().mean()
        assert 0.5 < moved / (hsv_turn - images).abs().mean() < 2  # about as far as HSV's turn ...
        assert (small_turn - hsv_turn).abs().mean() < (back_turn - hsv_turn).abs().mean() / 2
        # ... and the same way round


def test_pad_crop_and_flip_move_exact_pixels():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    out = Augmentation(4, "pad", 1)(image, torch.Generator().manual_seed(0)) * 255
    padded = torch.nn.functional.pad(image[0, 0], (1, 1, 1, 1)).float()
    windows = [padded[t : t + 4, left : left + 4] for t in range(3) for left in range(3)]
    allowed = windows + [w.flip(1) for w in windows]
    for crop in out[:, 0]:
        assert any(torch.equal(crop.round(), w) for w in allowed)
    assert len({tuple(c.flatten().tolist()) for c in out[:, 0]}) > 9  # both crops and flips happen


def test_resized_crop_of_the_whole_image_is_the_image():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = Augmentation(16, "resized", scale=1.0, flip=False)(
        images, torch.Generator().manual_seed(0)
    )
    # scale=1, aspect 1 would be exact; aspect jitter clips to the full image on one side at most.
    assert (out - images.float() / 255).abs().mean() < 0.15


def test_crop_larger_than_the_image_is_a_clear_error():
    with pytest.raises(NatlearnError, match="lower image_size"):
        Augmentation(12, "pad", 1)(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.Generator())


def test_eval_transform_is_deterministic():
    images = torch.randint(0, 256, (4, 3, 10, 10), dtype=torch.uint8)
    assert torch.equal(center_crop(images, 8), center_crop(images, 8))
    assert torch.equal(center_crop(images, 8), images[..., 1:9, 1:9].float() / 255)


def test_folder_with_odd_formats_is_converted(tmp_path):
    _write_folder(tmp_path / "images")
    data = load_dataset(str(tmp_path / "images"), "all", image_size=12)
    assert data.images.shape == (24, 3, 12, 12)
    assert (
        data.classes == ["cat", "dog", "eel"]
        and data.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    )
    assert all(torch.equal(data[i][0], data.images[i]) and data[i][1] == i for i in range(24))
    sixteen_bit = np.array(Image.open(tmp_path / "images" / "cat" / "4.png"), dtype=np.uint32) >> 8
    sixteen_bit = torch.from_numpy(sixteen_bit.astype(np.uint8))
    assert torch.equal(data.images[4, 0], sixteen_bit)  # not saturated at 255
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
    first = load_dataset(str(tmp_path / "images"), "all", image_size=12)
    caches = list((tmp_path / "cache").glob("folder-*.pt"))
    assert len(caches) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "try_decode", no_decoding)
        again = load_dataset(str(tmp_path / "images"), "all", image_size=12)
    assert torch.equal(again.images, first.images)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(
        tmp_path / "images" / "dog" / "new.png"
    )
    changed = load_dataset(str(tmp_path / "images"), "all", image_size=12)
    assert len(changed) == len(first) + 1
    assert len(list((tmp_path / "cache").glob("folder-*.pt"))) == 2
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_bad_files_stop_with_the_first_name_or_are_skipped_with_one_warning(tmp_path):
    _write_folder(tmp_path / "images", per_class=2)
    good = tmp_path / "images" / "cat" / "0.png"
    (tmp_path / "images" / "cat" / "truncated.jpg").write_bytes(good.read_bytes()[:40])
    (tmp_path / "images" / "dog" / "zz-broken.PNG").write_bytes(b"garbage")
    with pytest.raises(NatlearnError, match=r"truncated\.jpg is not a readable image \(2 bad"):
        load_dataset(str(tmp_path / "images"), "all", image_size=12)
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(tmp_path / "images"), "all", image_size=12, on_bad_image="skip")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "truncated.jpg" in messages[0] and "zz-broken.PNG" in messages[0]
    assert len(data) == 6


def test_streaming_folder_gives_the_same_images_through_workers(tmp_path):
    _write_folder(tmp_path / "images", per_class=4)
    memory = load_dataset(str(tmp_path / "images"), "all", image_size=12, mode="memory")
    stream = load_dataset(str(tmp_path / "images"), "all", image_size=12, mode="stream")
    assert isinstance(stream, StreamingFolder) and len(stream) == len(memory)
    batches = [torch.tensor([5, 0, 11]), torch.tensor([3, 7])]
    for (ids, images), expected in zip(
        stream.batches(batches, torch.device("cpu"), workers=2), batches, strict=True
    ):
        assert torch.equal(ids, expected) and torch.equal(images, memory.images[expected])
    assert stream.mean == pytest.approx(memory.mean, abs=1e-6)


def test_in_memory_and_streamed_data_sets_are_both_image_data(tmp_path):
    _write_folder(tmp_path / "images", per_class=2)
    memory = load_dataset(str(tmp_path / "images"), "all", image_size=12, mode="memory")
    stream = load_dataset(str(tmp_path / "images"), "all", image_size=12, mode="stream")
    assert isinstance(memory, ImageDataset) and isinstance(stream, StreamingFolder)
    assert isinstance(memory, ImageData) and isinstance(stream, ImageData)
    assert not isinstance(memory.images, ImageData)


def test_streaming_folder_handles_a_bad_file(tmp_path):
    _write_folder(tmp_path / "images", per_class=2)
    (tmp_path / "images" / "eel" / "zz-broken.png").write_bytes(b"garbage")
    stream = load_dataset(str(tmp_path / "images"), "all", image_size=12, mode="stream")
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
    data = load_dataset(str(tmp_path / "c"), "all")
    assert data.images.shape == (100, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes[:3] == ["airplane", "automobile", "bird"]
    assert torch.equal(torch.bincount(data.labels), torch.full((10,), 10))
    first = sorted((root / "airplane").iterdir())[0]
    assert torch.equal(
        data.images[0],
        torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1),
    )


def test_missing_and_empty_folders_give_clear_errors(tmp_path):
    with pytest.raises(NatlearnError, match="unknown data set"):
        load_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NatlearnError, match="no files"):
        load_dataset(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "crop,jitter,grayscale", [("pad", 0, 0), ("resized", 0, 0), ("pad", 0.5, 0.2)]
)
def test_a_rank_share_is_cropped_exactly_as_its_rows_of_the_global_batch(crop, jitter, grayscale):
    images = torch.randint(
        0, 256, (10, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    augmentation = Augmentation(10, crop, padding=2, jitter=jitter, grayscale=grayscale)
    whole = augmentation(images, torch.Generator().manual_seed(5))
    share = augmentation(images[4:7], torch.Generator().manual_seed(5), rows=(4, 10))
    assert torch.equal(share, whole[4:7])


def test_subset_is_a_seeded_sample_of_the_training_split():
    from natlearn.data import pretraining_data

    full = load_split(Config(data="digits"), "train")
    picked = pretraining_data(Config(data="digits", subset=300, batch_size=64))
    assert len(picked) == 300 and picked.mean == full.mean
    rows = [
        int((full.images == image).flatten(1).all(dim=1).nonzero()[0])
        for image in picked.images[:20]
    ]
    assert torch.equal(picked.labels[:20], full.labels[rows])
    assert torch.equal(
        pretraining_data(Config(data="digits", subset=300, batch_size=64)).images, picked.images
    )
    assert not torch.equal(
        pretraining_data(Config(data="digits", subset=300, batch_size=64, seed=2)).images,
        picked.images,
    )


def test_synthetic_data_is_deterministic_labelled_and_tests_on_other_images():
    a, b = (
        load_dataset("synthetic", "train", image_size=8),
        load_dataset("synthetic", "test", image_size=8),
    )
    assert a.images.shape == (10_000, 3, 8, 8) and b.images.shape == (2_000, 3, 8, 8)
    assert torch.equal(load_dataset("synthetic", "train", image_size=8).images, a.images)
    train_images = {row.tobytes() for row in a.images.flatten(1).numpy()}
    assert not any(row.tobytes() in train_images for row in b.images.flatten(1).numpy())  # disjoint
    assert len(a.classes) == 1000 and int(a.labels.max()) < 1000 and int(b.labels.max()) < 1000


def test_a_streaming_subset_reads_the_chosen_files(tmp_path):
    _write_folder(tmp_path / "images")
    memory = load_dataset(str(tmp_path / "images"), "all", image_size=12, mode="memory")
    stream = load_dataset(str(tmp_path / "images"), "all", image_size=12, mode="stream")
    picked = torch.tensor([1, 5, 9, 20])
    part_stream, part_memory = stream.subset(picked), memory.subset(picked)
    assert len(part_stream) == 4 and torch.equal(part_stream.labels, part_memory.labels)
    (ids, images), *_ = part_stream.batches([torch.arange(4)], torch.device("cpu"), workers=0)
    assert torch.equal(images, part_memory.images) and len(stream) == len(memory)


def _write_noise(folder: Path, count: int, start: int = 0, size: int = 8) -> None:
    """``count`` pure-noise PNGs (every one distinct) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([start, count, len(str(folder))])
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"{start + i:03d}.png"
        )


def _image_keys(data) -> list[bytes]:
    return [row.tobytes() for row in data.images.flatten(1).numpy()]


def test_a_class_folder_holds_out_a_seeded_stratified_test_split(tmp_path):
    counts = {"ant": 10, "bee": 7, "cow": 1, "dog": 2}
    for name, count in counts.items():
        _write_noise(tmp_path / "data" / name, count, start=100 * len(name) + ord(name[0]))
    root = str(tmp_path / "data")
    train, test, everything = (
        load_dataset(root, split, image_size=8, seed=1111) for split in ("train", "test", "all")
    )
    assert len(list((tmp_path / "cache").glob("folder-*.pt"))) == 1  # the splits share one decode
    assert set(_image_keys(train)).isdisjoint(_image_keys(test))
    assert (
        sorted(_image_keys(train) + _image_keys(test)) == sorted(_image_keys(everything))
        and len(everything) == 20
    )
    # round(0.2 * count) of each class, at least 1 of a class of 2 or more, none of a class of 1
    assert torch.bincount(test.labels, minlength=4).tolist() == [2, 1, 0, 1]
    assert torch.bincount(train.labels, minlength=4).tolist() == [8, 6, 1, 1]
    assert test.classes == train.classes == ["ant", "bee", "cow", "dog"]
    assert test.split_note == (
        f"held-out test split: 20% of each class of {root} (split_seed 1111, stratified), "
        "4 of 20 images"
    )
    assert train.split_note == (
        f"train split: the other 16 of 20 images of {root} (20% of each class held out for "
        "testing, split_seed 1111)"
    )
    same_seed = load_dataset(root, "test", image_size=8, seed=1111)
    assert _image_keys(same_seed) == _image_keys(test)
    assert _image_keys(load_dataset(root, "test", image_size=8, seed=7)) != _image_keys(test)
    stream = load_dataset(root, "test", image_size=8, seed=1111, mode="stream")
    assert isinstance(stream, StreamingFolder) and stream.split_note == test.split_note
    ((_, streamed),) = stream.batches([torch.arange(len(stream))], torch.device("cpu"), workers=0)
    assert torch.equal(streamed, test.images) and torch.equal(stream.labels, test.labels)


def test_pre_training_leaves_the_held_out_images_out(tmp_path):
    for name in ("a", "b"):
        _write_noise(tmp_path / "data" / name, 10, start=ord(name))
    config = Config(data=str(tmp_path / "data"), image_size=8, test_fraction=0.3)
    pretrain, test = load_split(config, "pretrain"), load_split(config, "test")
    assert (
        len(pretrain) == 14
        and len(test) == 6
        and set(_image_keys(pretrain)).isdisjoint(_image_keys(test))
    )
    assert (
        len(
            load_split(
                Config(data=str(tmp_path / "data"), image_size=8, train_split="all"), "pretrain"
            )
        )
        == 20
    )
    with pytest.raises(NatlearnError, match="test_fraction=1.0 must lie in"):
        Config(test_fraction=1.0).validate()


def test_a_flat_folder_trains_on_everything_and_has_no_test_split(tmp_path):
    _write_noise(tmp_path / "flat", 5)
    assert (
        len(load_dataset(str(tmp_path / "flat"), "train", image_size=8))
        == len(load_dataset(str(tmp_path / "flat"), "all", image_size=8))
        == 5
    )
    with pytest.raises(NatlearnError) as error:
        load_dataset(str(tmp_path / "flat"), "test", image_size=8)
    assert str(error.value) == (
        f"{tmp_path / 'flat'} is an unlabelled flat folder (no class sub-folders): evaluation "
        "needs labels; put the images in one sub-folder per class"
    )


def test_train_and_test_sub_folders_are_the_splits(tmp_path):
    for split, count in (("train", 5), ("test", 3)):
        for name in ("a", "b"):
            _write_noise(tmp_path / "data" / split / name, count, start=ord(name) + count)
    test = load_dataset(str(tmp_path / "data"), "test", image_size=8)
    assert len(load_dataset(str(tmp_path / "data"), "train", image_size=8)) == 10 and len(test) == 6
    assert test.split_note == str(tmp_path / "data" / "test")
    with pytest.raises(NatlearnError, match="must be train or test"):
        load_dataset(str(tmp_path / "data"), "all", image_size=8)


def test_every_data_set_says_where_its_images_came_from():
    assert load_dataset("digits", "test").split_note == "digits: fixed stratified 1/3 test split"
    assert "2,000 random test images" in load_dataset("synthetic", "test", image_size=4).split_note
    assert (
        load_dataset("digits", "train")
        .subset(torch.arange(5))
        .split_note.endswith("a subset of 5 of them")
    )


def test_an_added_empty_class_folder_relabels_instead_of_reusing_the_cache(tmp_path):
    for name in ("b", "c"):
        _write_noise(tmp_path / "data" / name, 2, start=ord(name))
    before = load_dataset(str(tmp_path / "data"), "all", image_size=8)
    assert before.labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "data" / "a").mkdir()
    after = load_dataset(str(tmp_path / "data"), "all", image_size=8)
    assert after.classes == ["a", "b", "c"] and after.labels.tolist() == [1, 1, 2, 2]
    assert torch.equal(after.images, before.images)


def test_16_bit_images_keep_their_high_byte(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (16, 16)).astype(np.uint16)
    expected = float((values >> 8).mean())
    Image.fromarray(values).save(tmp_path / "gray16.png")
    Image.fromarray(values).save(tmp_path / "gray16.tif")
    Image.fromarray(values.astype(np.int32), "I").save(tmp_path / "mode_i.tif")  # I: 0..65535
    with Image.open(tmp_path / "mode_i.tif") as image:
        assert image.mode == "I"
    for name in ("gray16.png", "gray16.tif", "mode_i.tif"):
        decoded = folder_module.decode_image(tmp_path / name, 16)
        assert abs(float(decoded.mean()) - expected) < 0.5, name
    wide = values.astype(np.int64) * 30_000  # genuinely 32-bit: scaled by its maximum
    Image.fromarray(wide.astype(np.int32), "I").save(tmp_path / "wide.tif")
    expected_wide = float(np.rint(wide * (255 / wide.max())).mean())
    assert (
        abs(float(folder_module.decode_image(tmp_path / "wide.tif", 16).mean()) - expected_wide)
        < 0.5
    )


def test_non_image_files_are_skipped_with_one_warning(tmp_path):
    _write_noise(tmp_path / "data" / "cat", 3)
    _write_noise(tmp_path / "data" / "dog", 3)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(
        tmp_path / "data" / "dog" / "UPPER.JPG", format="JPEG"
    )
    (tmp_path / "data" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "dog" / "labels.csv").write_text("a,b")
    (tmp_path / "data" / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: ignored
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(tmp_path / "data"), "all", image_size=8)
    assert len(data) == 7
    (message,) = [str(w.message) for w in caught]
    assert (
        "skipped 2 non-image file(s)" in message and "notes.txt" in message and "\n" not in message
    )
    (tmp_path / "only_notes").mkdir()
    (tmp_path / "only_notes" / "readme.md").write_text("#")
    with pytest.raises(NatlearnError, match=r"no image files in .*readme\.md"):
        load_dataset(str(tmp_path / "only_notes"))


def test_a_folder_of_only_unreadable_images_names_the_first(tmp_path):
    (tmp_path / "bad").mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        (tmp_path / "bad" / name).write_bytes(b"garbage")
    pattern = (
        r"no readable image in .*bad: all 3 image file\(s\) are unreadable, the first .*a\.png"
    )
    with pytest.raises(NatlearnError, match=pattern):
        load_dataset(str(tmp_path / "bad"))  # image_size=0: the first readable image's size
    for policy in ("error", "skip"):
        with pytest.raises(NatlearnError, match=pattern):
            load_dataset(str(tmp_path / "bad"), image_size=8, on_bad_image=policy)
    with pytest.raises(NatlearnError, match=pattern):
        load_dataset(str(tmp_path / "bad"), image_size=8, mode="stream")


def test_stl10_supervised_trains_on_its_labelled_split():
    from natlearn.data import require_labels

    def pretrained_on(**fields) -> str:
        return Config(data="stl10", **fields).resolve(image_size=96).train_split

    assert pretrained_on() == "train+unlabeled"
    assert pretrained_on(objective="supervised") == "train"
    assert pretrained_on(objective="supervised", train_split="unlabeled") == "unlabeled"
    mixed = ImageDataset(
        torch.zeros(3, 3, 4, 4, dtype=torch.uint8),
        torch.tensor([0, -1, -1]),
        ["a"],
        (0.5,) * 3,
        (0.2,) * 3,
        "stl10 mix",
    )
    message = r"supervised training needs labels, but 2 of the 3 images of stl10 mix "
    with pytest.raises(NatlearnError, match=message + r".*train_split=train"):
        require_labels(mixed, "supervised training")
    assert require_labels(load_dataset("digits", "test"), "evaluation").shape == (599,)


def test_eval_view_shows_resized_crops_at_their_mean_training_scale():
    from natlearn.data import eval_view

    ramp = (torch.arange(96) * 2).to(torch.uint8).expand(1, 1, 96, 96)  # 2 x column: slope = scale

    def slope(view: torch.Tensor) -> float:  # source pixels per output pixel, batch average
        return float((view[:, 0, :, -1] - view[:, 0, :, 0]).mean()) * 255 / 2 / (view.shape[-1] - 1)

    resized = Augmentation(64, "resized", scale=0.25, flip=False)
    trained = resized(ramp.expand(4000, 1, 96, 96), torch.Generator().manual_seed(0))
    assert slope(eval_view(ramp, 64, "resized", 0.25)) == pytest.approx(slope(trained), rel=0.03)
    old_view = slope(center_crop(ramp, 64))  # shows objects larger than training did on average
    assert old_view == pytest.approx(1.0) and slope(trained) > 1.1
    assert torch.equal(eval_view(ramp, 64, "pad"), center_crop(ramp, 64))
    full = eval_view(ramp, 64, "resized", 1.0)  # scale=1: the whole image, resized
    assert slope(full) == pytest.approx(1.5, rel=0.02)


def test_files_beside_the_class_folders_are_named_as_unused(tmp_path):
    _write_noise(tmp_path / "data" / "cat", 2)
    _write_noise(tmp_path / "data" / "dog", 2)
    (tmp_path / "data" / "notes.txt").write_text("labels came from ...")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "data" / "loose.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(tmp_path / "data"), "all", image_size=8)
    assert len(data) == 4
    (message,) = [str(w.message) for w in caught]
    assert "ignored 2 file(s) beside the class folders" in message and "loose.png" in message


def test_decoding_says_whether_the_cache_was_hit_unless_progress_is_off(tmp_path, capsys):
    from natlearn.progress import progress_enabled

    _write_folder(tmp_path / "images", per_class=3)
    load_dataset(str(tmp_path / "images"), "all", image_size=12)
    decoded = capsys.readouterr().err
    assert "decoded 9 images at 12 px; cached in" in decoded and "skips decoding" in decoded
    load_dataset(str(tmp_path / "images"), "all", image_size=12)
    assert "9 images at 12 px from the decode cache" in capsys.readouterr().err
    with progress_enabled(False):
        load_dataset(str(tmp_path / "images"), "all", image_size=12)
    assert capsys.readouterr().err == ""
