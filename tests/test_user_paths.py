"""What evaluation and embedding read on the paths a user takes (issue #22): labels keyed by class
name across train/ and test/, a streamed folder, the held-out split a run pre-trained around,
``device=``, and the image size the network was trained at."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natlearn.cli import main
from natlearn.config import Config
from natlearn.data import datasets as datasets_module
from natlearn.data import load_dataset
from natlearn.data.folder import decode_folder, scan_folder
from natlearn.data.splits import listing_digest
from natlearn.errors import NatlearnError
from natlearn.evaluate import EvalSettings, evaluate, extract_features
from natlearn.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from natlearn.training.trainer import train

# Each class one colour (plus noise): any honest probe of raw pixels separates them perfectly.
COLOURS = {
    "aardvark": (200, 200, 30),
    "ant": (200, 30, 30),
    "bee": (30, 200, 30),
    "cow": (30, 30, 200),
}
QUICK = EvalSettings(knn=(), mlp=False, progress=False)
TINY = {"widths": (8, 16), "dim": 8, "epochs": 1, "batch_size": 8, "workers": 0}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NATLEARN_CACHE", str(tmp_path / "cache"))


def _colours(folder: Path, classes, count: int, size: int = 8, seed: int = 0, start: int = 0):
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + count):
            pixels = np.array(COLOURS[name]) + rng.integers(-30, 30, (size, size, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(folder / name / f"{name}{i:03d}.png")
    return folder


def _train(folder: Path, out: Path, **changes) -> Path:
    train(Config(data=str(folder), out=str(out), progress=False, **{**TINY, **changes}))
    return out


def _one_line_error(capsys, argv: list[str], *expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("natlearn: error:") and "Traceback" not in err
    for text in expected:
        assert text in line, line
    return line


# A. train/ and test/ with different class folders


def test_a_test_folder_lacking_a_train_class_keeps_each_label_on_its_class(tmp_path):
    folder = tmp_path / "zoo"
    _colours(folder / "train", ["ant", "bee", "cow"], 10)
    _colours(folder / "test", ["ant", "cow"], 5, seed=1)
    test = load_dataset(str(folder), "test")
    assert test.classes == ["ant", "bee", "cow"]
    assert test.labels.tolist() == [0] * 5 + [2] * 5  # cow is 2 in both splits, not 1 (bee)
    results = evaluate("raw-pixels", [f"data={folder}"], QUICK, base=Config())
    # Scanned on its own, test/ called cow 1 (bee): 0.50 on trivially separable colours.
    assert results["protocols"]["linear"]["pixels"]["top1"] == 1.0


def test_a_test_class_that_train_lacks_is_one_clear_error(tmp_path, capsys):
    folder = tmp_path / "zoo"
    _colours(folder / "train", ["ant", "bee", "cow"], 4)
    _colours(folder / "test", ["aardvark", "ant"], 2)
    with pytest.raises(NatlearnError, match="aardvark"):
        load_dataset(str(folder), "test")
    _one_line_error(
        capsys,
        ["eval", "raw-pixels", f"data={folder}", "progress=false"],
        "class folder(s) that",
        "lacks: aardvark;",
    )


# B. a streamed run: eval, compare, evolution, neighbors and embed read it a batch at a time


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """A run trained on a folder over the streaming threshold (lowered to 0 bytes: data_mode=auto
    streams every folder, as ImageNet-scale ones do), one decoded copy's numbers to compare."""
    root = tmp_path_factory.mktemp("streamed")
    folder = _colours(root / "zoo", ["ant", "bee", "cow"], 10)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NATLEARN_CACHE", str(root / "cache"))
        patch.setattr(datasets_module, "MEMORY_LIMIT_BYTES", 0)
        run = _train(folder, root / "run")
    return folder, run


@pytest.fixture
def stream_only(monkeypatch):
    """Every folder streams; decoding one whole into memory fails the test."""

    def whole(*args, **kwargs):
        raise AssertionError("a streamed folder was decoded whole into memory")

    monkeypatch.setattr(datasets_module, "MEMORY_LIMIT_BYTES", 0)
    monkeypatch.setattr(datasets_module, "decode_folder", whole)


def test_a_streamed_run_is_evaluated_as_its_decoded_folder_is(streamed, stream_only):
    folder, run = streamed
    settings = EvalSettings(knn=(5,), mlp=True, mlp_hidden=16, probe_epochs=2, progress=False)
    base = Config(data=str(folder), **TINY)
    for source in (str(run), "random-init", "raw-pixels", "hand-crafted"):
        streamed_results = evaluate(source, [], settings, base=base)
        with pytest.MonkeyPatch.context() as patch:  # decoded whole, as a small folder is
            patch.setattr(datasets_module, "decode_folder", decode_folder)
            decoded = evaluate(source, ["data_mode=memory"], settings, base=base)
        assert streamed_results["protocols"] == decoded["protocols"], source


def test_compare_evolution_neighbors_and_embed_read_a_streamed_run(
    streamed, stream_only, tmp_path, capsys
):
    folder, run = streamed
    quick = ["--knn", "5", "--no-mlp", "--probe-epochs", "2"]
    argv = ["compare", str(run), "random-init", "raw-pixels", "progress=false"]
    assert main([*argv, *quick, "--out", str(tmp_path / "compare")]) == 0
    evolution = ["evolution", str(run), "progress=false", "--out", str(tmp_path / "evolution")]
    assert main([*evolution, *quick]) == 0
    figure = tmp_path / "neighbours.png"
    assert main(["neighbors", str(run), "--k", "3", "--queries", "2", "--out", str(figure)]) == 0
    assert figure.is_file()
    out = tmp_path / "feats.npy"
    assert main(["embed", str(run), "progress=false", "--out", str(out)]) == 0
    assert np.load(out).shape == (30, 16)
    capsys.readouterr()


def test_a_streamed_folder_that_skips_an_unreadable_file_keeps_labels_on_their_images(
    stream_only, tmp_path
):
    folder = _colours(tmp_path / "zoo", ["ant", "bee", "cow"], 10)
    (folder / "ant" / "ant005.png").write_bytes(b"not a png")  # in the train split
    (folder / "cow" / "cow009.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped unreadable"):
        results = evaluate(
            "raw-pixels", ["on_bad_image=skip"], QUICK, base=Config(data=str(folder), **TINY)
        )
    assert results["protocols"]["linear"]["pixels"]["top1"] == 1.0


def test_fine_tuning_a_streamed_folder_is_refused_in_one_line(streamed, stream_only, capsys):
    _, run = streamed
    _one_line_error(
        capsys,
        ["eval", str(run), "progress=false", "--finetune", "1"],
        "fine-tuning trains on images in memory",
        "drop --finetune",
    )


def test_a_streamed_evaluation_is_reused_only_while_its_files_and_image_size_stay(
    stream_only, tmp_path
):
    from natlearn.evaluate.reuse import data_digest

    folder = _colours(tmp_path / "zoo", ["ant", "bee"], 5)

    def digest(size: int) -> str:
        return data_digest(load_dataset(str(folder), "train", image_size=size))

    before = digest(8)
    assert digest(8) == before
    assert digest(4) != before, "read at another size: other features"
    changed = folder / "ant" / "ant000.png"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten since
    assert digest(8) != before


# C. the held-out split a run pre-trained around


def test_a_run_stores_its_split_and_eval_refuses_any_other(tmp_path, capsys):
    folder = _colours(tmp_path / "zoo", ["ant", "bee", "cow"], 10)
    run = _train(folder, tmp_path / "run")
    stored = load_checkpoint(run)["data"]
    assert stored["image_size"] == 8
    assert stored["split"] == {
        "folder": str(folder.resolve()),
        "layout": "held-out",
        "split": "train",
        "listing": listing_digest(scan_folder(folder)),
        "images": 30,
        "classes": 3,
        "split_seed": 0,
        "test_fraction": 0.2,
    }
    assert evaluate(str(run), [], QUICK)["test_images"] == 6  # the folder as trained: scored

    for setting, was in (("split_seed=5", "0"), ("test_fraction=0.3", "0.2")):
        refused = re.escape(f"{setting} (the run's: {was}) would draw another held-out test split")
        with pytest.raises(NatlearnError, match=refused):
            evaluate(str(run), [setting], QUICK)
    out = tmp_path / "eval"
    _one_line_error(
        capsys,
        ["eval", str(run), "split_seed=5", "--out", str(out)],
        "split_seed=5 (the run's: 0)",
        "drop the setting",
    )
    assert not out.exists()

    # another folder holds no image pre-training saw: nothing to check
    other = _colours(tmp_path / "other", ["ant", "bee"], 5, seed=3)
    assert evaluate(str(run), [f"data={other}", "split_seed=5"], QUICK)["test_images"] == 2

    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    _colours(folder, ["ant", "bee", "cow"], 2, seed=9, start=100)  # 2 more images per class
    with pytest.raises(NatlearnError, match=r"changed since .* \(30 images in 3 class folders "):
        evaluate(str(run), [], QUICK)
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    _colours(folder, ["aardvark"], 10)  # sorts first: every label moves
    with pytest.raises(NatlearnError, match="40 in 4 now"):
        evaluate(str(run), [], QUICK)
    shutil.rmtree(folder / "aardvark")
    assert evaluate(str(run), [], QUICK)["test_images"] == 6  # as it was: scored again


def test_a_run_trained_before_the_split_was_stored_is_evaluated_with_one_warning(tmp_path):
    folder = _colours(tmp_path / "zoo", ["ant", "bee", "cow"], 10)
    state = load_checkpoint(_train(folder, tmp_path / "run"))
    del state["data"]
    old = tmp_path / "old.pt"
    save_checkpoint(old, state)
    with pytest.warns(UserWarning, match="holds no record of the split") as warned:
        results = evaluate(str(old), [], QUICK)
    assert len([w for w in warned if "no record" in str(w.message)]) == 1
    assert results["test_images"] == 6


# D. device=


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("device")
    folder = _colours(root / "zoo", ["ant", "bee", "cow"], 10)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NATLEARN_CACHE", str(root / "cache"))
        run = _train(folder, root / "run", keep_every=1)
    return folder, run


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "RUN"],
        ["compare", "RUN", "raw-pixels", "--out", "OUT"],
        ["evolution", "RUN", "--out", "OUT"],
        ["neighbors", "RUN", "--out", "OUT/n.png"],
        ["embed", "RUN", "--out", "OUT/f.npy"],
    ],
    ids=lambda command: command[0],
)
def test_device_cuda_without_a_gpu_is_one_clear_error(
    command, folder_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, run = folder_run
    argv = [item.replace("RUN", str(run)).replace("OUT", str(tmp_path)) for item in command]
    _one_line_error(capsys, [*argv, "device=cuda"], "device=cuda asked for, but no CUDA GPU")


def test_device_cpu_is_honoured_where_a_gpu_would_be_chosen(folder_run, tmp_path, monkeypatch):
    """A GPU that is "visible" but unusable: anything left on auto would reach for it and fail."""
    folder, run = folder_run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    settings = EvalSettings(knn=(5,), mlp=True, mlp_hidden=16, probe_epochs=2, progress=False)
    base = Config(data=str(folder), **TINY)
    for source in (str(run), "random-init", "raw-pixels", "hand-crafted"):
        assert evaluate(source, ["device=cpu"], settings, base=base)["protocols"]["linear"]
    from natlearn.evaluate.reports.evolution import evolution

    assert len(evolution(run, settings, ["device=cpu"], tmp_path / "evolution")) == 2


def test_the_start_up_summary_names_the_device(folder_run, capsys):
    _, run = folder_run
    evaluate(str(run), ["device=cpu"], EvalSettings(knn=(), mlp=False, progress=True))
    assert "; cpu, " in capsys.readouterr().err


# E. the image size the network was trained at


def test_another_folder_is_read_at_the_size_the_run_trained_at(folder_run, tmp_path, capsys):
    folder, run = folder_run
    big = tmp_path / "big"  # the same images at 32 px
    for path in folder.rglob("*.png"):
        target = big / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).resize((32, 32), Image.NEAREST).save(target)
    out = tmp_path / "feats.npy"
    assert main(["embed", str(run), f"data={big}", "progress=false", "--out", str(out)]) == 0
    assert "read at 8 px (the size the run trained at)" in capsys.readouterr().out
    at_8 = load_dataset(str(big), "all", image_size=8)
    expected = extract_features(load_model(run), at_8.images, ["neck"], 8)["neck"]
    assert torch.allclose(torch.from_numpy(np.load(out)), expected, atol=1e-5)

    given = tmp_path / "given.npy"
    argv = ["embed", str(run), f"data={big}", "image_size=32", "progress=false", "--out"]
    assert main([*argv, str(given)]) == 0
    assert "read at 32 px (image_size= given)" in capsys.readouterr().out
    assert np.load(given).shape == np.load(out).shape

    evaluate(str(run), [f"data={big}"], EvalSettings(knn=(), mlp=False, progress=True))
    assert "classes; 8 px (the size the run trained at), centre 8x8 crops" in (
        capsys.readouterr().err
    )

    state = load_checkpoint(run)  # a checkpoint from before the size was recorded
    del state["data"]
    old = tmp_path / "old.pt"
    save_checkpoint(old, state)
    older = tmp_path / "older.npy"
    assert main(["embed", str(old), f"data={big}", "progress=false", "--out", str(older)]) == 0
    assert np.array_equal(np.load(older), np.load(out))  # its crop was the whole 8 px image
