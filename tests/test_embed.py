"""``natlearn embed``: every image once, in index order, with evaluation's features; never a
half-written file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natlearn.cli import main
from natlearn.config import Config
from natlearn.data import eval_view, load_dataset
from natlearn.evaluate import extract_features, pool_conv_map
from natlearn.evaluate.reports import embedding
from natlearn.training.checkpoint import load_checkpoint, load_model

CLASSES = {"cat": [(12, 12), (16, 12)], "dog": [(20, 14), (12, 12)], "eel": [(13, 17)]}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny NAT run on digits (one epoch of 256 images)."""
    out = tmp_path_factory.mktemp("embed") / "run"
    settings = ["dim=16", "widths=[8,16]", "epochs=1", "subset=256", "progress=false"]
    assert main(["train", "digits", *settings, f"out={out}"]) == 0
    return out


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """Three classes of PNGs of different sizes (one in a nested folder), a notes.txt and a
    .DS_Store."""
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for name, sizes in CLASSES.items():
        for i, (height, width) in enumerate(sizes):
            path = root / name / ("deep" if i else "") / f"{name}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\1")
    return root


def _embed(capsys, run: Path, out: Path, *argv: str) -> tuple[np.ndarray, list[dict]]:
    code = main(["embed", str(run), "progress=false", "cache=false", *argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f'np.load("{out}", mmap_mode="r")' in captured.out
    with open(out.with_suffix(".csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = np.load(out, mmap_mode="r")
    assert features.dtype == np.float32 and len(features) == len(rows)
    assert [int(row["row"]) for row in rows] == list(range(len(rows)))
    return features, rows


def test_digits_all_is_every_image_with_evaluations_features(capsys, run, tmp_path):
    features, rows = _embed(capsys, run, tmp_path / "feats.npy")
    digits = load_dataset("digits", "all")
    config = Config.from_checkpoint(load_checkpoint(run)["config"])
    expected = extract_features(
        load_model(run), digits.images, ["neck"], 8, crop=config.crop, scale=config.crop_scale
    )["neck"]
    assert features.shape == (len(digits), 16) == expected.shape
    assert torch.allclose(torch.from_numpy(np.array(features)), expected, atol=1e-5)
    assert [(row["split"], int(row["index"])) for row in rows] == [
        ("all", i) for i in range(len(digits))
    ]
    assert [int(row["label"]) for row in rows] == digits.labels.tolist()
    assert [row["class"] for row in rows] == [str(label) for label in digits.labels.tolist()]


@pytest.mark.filterwarnings("ignore:skipped 1 non-image file")
def test_a_class_folder_gives_each_file_once_with_its_path(capsys, run, class_folder, tmp_path):
    out = tmp_path / "out" / "pets.npy"
    with pytest.warns(UserWarning, match=r"skipped 1 non-image file.*notes\.txt"):
        features, rows = _embed(capsys, run, out, f"data={class_folder}", "--layer", "conv1")
    files = sorted(
        path.relative_to(class_folder).as_posix() for path in class_folder.rglob("*.png")
    )
    assert sorted(row["path"] for row in rows) == files and len(files) == 5
    for row in rows:
        assert (class_folder / row["path"]).is_file()
        assert row["class"] == row["path"].split("/")[0]
        assert int(row["label"]) == sorted(CLASSES).index(row["class"])
    # the features of conv1, pooled as evaluation pools them, in the index's order, of the images
    # read at the 8 px the run trained at (digits), not at the folder's own 12 px
    data = load_dataset(str(class_folder), "all", cache=False, image_size=8)
    assert [path.relative_to(class_folder).as_posix() for path in data.files] == [
        row["path"] for row in rows
    ]
    model = load_model(run)
    conv1 = model.features(eval_view(data.images[:1], data.image_size), ["conv1"])["conv1"]
    assert features.shape == (5, pool_conv_map(conv1, "conv1", model.arch).shape[1])
    expected = extract_features(model, data.images, ["conv1"], data.image_size)["conv1"]
    assert torch.allclose(torch.from_numpy(np.array(features)), expected, atol=1e-5)

    # streamed from disk (through the same batches training reads), the same rows and features
    streamed, stream_rows = _embed(
        capsys, run, tmp_path / "stream.npy", f"data={class_folder}", "data_mode=stream",
        "workers=0", "--layer", "conv1",
    )  # fmt: skip
    assert stream_rows == rows
    assert np.allclose(streamed, features, atol=1e-5)

    # the held-out split machinery: train and test together are every image once
    train = _embed(capsys, run, tmp_path / "train.npy", f"data={class_folder}", "--split", "train")
    test = _embed(capsys, run, tmp_path / "test.npy", f"data={class_folder}", "--split", "test")
    paths = [row["path"] for row in train[1] + test[1]]
    assert sorted(paths) == files and test[1]


@pytest.mark.filterwarnings("ignore:skipped 1 non-image file")
def test_a_streamed_folder_leaves_unreadable_files_out(capsys, run, class_folder, tmp_path):
    (class_folder / "eel" / "broken.png").write_bytes(b"not a png")
    settings = [f"data={class_folder}", "data_mode=stream", "workers=0", "on_bad_image=skip"]
    with pytest.warns(UserWarning, match="broken.png"):
        features, rows = _embed(capsys, run, tmp_path / "feats.npy", *settings)
    assert "eel/broken.png" not in [row["path"] for row in rows]
    assert features.shape == (5, 16)  # the preallocated rows of the bad file cut away
    settings[1] = "data_mode=memory"  # decoded up front: the same rows, the same features
    with pytest.warns(UserWarning, match="broken.png"):
        in_memory = _embed(capsys, run, tmp_path / "memory.npy", *settings)
    assert in_memory[1] == rows and np.allclose(in_memory[0], features, atol=1e-5)


@pytest.mark.parametrize(
    "argv,out,message",
    [
        (["--layer", "fc7"], "feats.npy", "--layer fc7: no such layer in "),
        (["--layer", "fc7"], "feats.npy", "; valid layers: conv1, conv2, neck, head"),
        ([], "feats.txt", "the features are a .npy file; give a name ending in .npy"),
        (["data=FLAT", "--split", "test"], "feats.npy", "it has no test split; use --split all"),
        (["--batch-size", "0"], "feats.npy", "--batch-size 0 must be >= 1"),
    ],
)
def test_mistakes_are_one_line_and_write_nothing(capsys, run, tmp_path, argv, out, message):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(flat / "a.png")
    argv = [item.replace("FLAT", str(flat)) for item in argv]
    code = main(["embed", str(run), *argv, "--out", str(tmp_path / "out" / out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_a_failure_midway_writes_nothing_and_keeps_an_earlier_file(
    capsys, run, tmp_path, monkeypatch
):
    out = tmp_path / "feats.npy"
    calls = []

    def fail_after_one_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("simulated failure after the first batch")
        return real(*args, **kwargs)

    real = embedding.batch_features
    monkeypatch.setattr(embedding, "batch_features", fail_after_one_batch)
    with pytest.raises(RuntimeError, match="simulated"):
        main(["embed", str(run), "progress=false", "--out", str(out)])
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # no feats.npy, no index, no temporary file

    monkeypatch.setattr(embedding, "batch_features", real)
    before, _ = _embed(capsys, run, out, "--layer", "head")
    before = np.array(before)
    monkeypatch.setattr(embedding, "batch_features", fail_after_one_batch)
    calls.clear()
    with pytest.raises(RuntimeError, match="simulated"):
        main(["embed", str(run), "progress=false", "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.csv", "feats.npy"]
    assert np.array_equal(np.load(out), before)  # the earlier pair, untouched
