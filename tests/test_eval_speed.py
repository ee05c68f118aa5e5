"""Evaluation made fast enough to use often: probes run at once without changing a result, the
weight-decay search skips what cannot win and still reads training data only, every long step says
how far it is, and compare / evolution reuse an evaluation already on disk."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import natlearn.evaluate.fit as fit
import natlearn.evaluate.probes.linear as probes
import natlearn.evaluate.probes.scoring as scoring
import natlearn.evaluate.probes.suite as suite
from natlearn import progress
from natlearn.cli import main
from natlearn.config import Config
from natlearn.data import load_dataset
from natlearn.data.folder import decode_folder, scan_folder
from natlearn.evaluate import EvalSettings, evaluate_network, knn_classify, linear_probe
from natlearn.evaluate.reports.evolution import evolution
from natlearn.models import initial_model


def _overlapping(n: int, seed: int, dims: int = 40, classes: int = 4):
    """Gaussian classes that overlap: each weight decay scores differently."""
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dims, generator=torch.Generator().manual_seed(99)) * 0.6
    return centres[labels] + torch.randn(n, dims, generator=torch.Generator().manual_seed(seed)), (
        labels
    )


# --- the weight-decay search ----------------------------------------------------------------------

DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 30.0)


def test_the_decay_walk_chooses_what_trying_every_decay_chooses(monkeypatch):
    """The walk from the largest decay stops after PATIENCE decays below the best: on these data it
    skips decays, and chooses the decay (and held-out score) trying all of them chooses."""
    x, y = _overlapping(300, 0)
    test_x, test_y = _overlapping(200, 1)
    fits = []
    real = probes.fit_lbfgs
    monkeypatch.setattr(probes, "fit_lbfgs", lambda *a, **k: fits.append(a[3]) or real(*a, **k))
    walked = linear_probe(x, y, test_x, test_y, weight_decays=DECAYS, solver="lbfgs")
    tried = sorted(set(fits))
    monkeypatch.setattr(fit, "PATIENCE", len(DECAYS))
    fits.clear()
    every = linear_probe(x, y, test_x, test_y, weight_decays=DECAYS, solver="lbfgs")
    assert sorted(set(fits)) == sorted(DECAYS)
    assert len(tried) < len(DECAYS), f"the walk tried every decay: {tried}"
    assert (walked.weight_decay, walked.held_out_top1) == (every.weight_decay, every.held_out_top1)
    assert walked.top1 == pytest.approx(every.top1, abs=0.01)


def test_the_decay_search_never_sees_the_test_split():
    """Test features of NaN and shuffled test labels leave every choice as it was: the search (the
    walk, its folds, the warm-started refit) reads training data only; the test split is scored
    once at the end."""
    x, y = _overlapping(300, 0)
    test_x, test_y = _overlapping(200, 1)
    shuffled = test_y[torch.randperm(len(test_y), generator=torch.Generator().manual_seed(5))]
    for solver in ("lbfgs", "adam"):
        kwargs = {"weight_decays": DECAYS, "solver": solver, "epochs": 2}
        honest = linear_probe(x, y, test_x, test_y, **kwargs)
        blind = linear_probe(x, y, torch.full_like(test_x, float("nan")), shuffled, **kwargs)
        assert (honest.weight_decay, honest.held_out_top1) == (
            blind.weight_decay,
            blind.held_out_top1,
        ), solver
        assert honest.top1 > 0.5 and blind.top1 < 0.5, solver  # the test split did change


def test_linear_probes_and_knn_leave_the_global_rng_alone():
    """Probes run concurrently; only the MLP may draw from the global RNG, or their results would
    depend on which finished first."""
    x, y = _overlapping(300, 0)
    before = torch.get_rng_state()
    linear_probe(x, y, x, y, weight_decays=(1e-2, 1.0), solver="lbfgs")
    linear_probe(x, y, x, y, weight_decays=(1e-2, 1.0), solver="adam", epochs=1)
    knn_classify(x, y, x, y, k=5)
    assert torch.equal(before, torch.get_rng_state())


# --- probes at once -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_subsets():
    return (
        load_dataset("digits", "train").subset(torch.arange(500)),
        load_dataset("digits", "test").subset(torch.arange(300)),
    )


def test_concurrent_probes_give_the_results_of_probes_in_turn(digits_subsets, monkeypatch):
    train_set, test_set = digits_subsets
    model = initial_model(Config(widths=(8, 16), dim=8), train_set)
    settings = EvalSettings(knn=(5,), mlp=True, mlp_hidden=16, probe_epochs=2, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    workers = []
    real_run = suite._run_probes
    try:
        monkeypatch.setattr(suite, "MAX_CONCURRENT_PROBES", 1)
        in_turn = evaluate_network(model, train_set, test_set, 8, settings)["protocols"]
        monkeypatch.setattr(suite, "MAX_CONCURRENT_PROBES", 4)

        def spy(probes_, device):
            for item in real_run(probes_, device):
                workers.append(torch.get_num_threads())
                yield item

        monkeypatch.setattr(suite, "_run_probes", spy)
        at_once = evaluate_network(model, train_set, test_set, 8, settings)["protocols"]
    finally:
        torch.set_num_threads(threads)
    assert at_once == in_turn
    assert list(at_once) == ["linear", "knn5", "mlp"] and list(at_once["linear"]) == list(
        in_turn["linear"]
    )
    assert workers and set(workers) == {2}, "the main thread's setting is restored between probes"


# --- progress -------------------------------------------------------------------------------------


def test_progress_is_plain_lines_on_stderr_when_not_a_terminal(capsys):
    assert list(progress.steps(range(3), "things", enabled=True, unit="things")) == [0, 1, 2]
    progress.say("a line", enabled=True)
    list(progress.steps(range(3), "quick", enabled=True, every=60.0))  # quicker than a line
    list(progress.steps(range(3), "off", enabled=False))
    with progress.progress_enabled(False):
        progress.say("not shown")
        list(progress.steps(range(3), "off too"))
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "things: 1/3 things",
        "things: 2/3 things",
        "things: 3/3 things",
        "a line",
    ]


def test_slow_folder_decoding_reports_progress(tmp_path, capsys, monkeypatch):
    """Decoding a folder says how far it is every few seconds (a clock that jumps 6 s per reading
    makes every image a slow one), and nothing under progress_enabled(False)."""
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 50 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    clock = iter(range(0, 6000, 6))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    listing = scan_folder(tmp_path / "images")
    decode_folder(listing, 8)
    with progress.progress_enabled(False):
        decode_folder(listing, 8)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert [line.split(" (")[0] for line in captured.err.splitlines()] == [
        *(f"decoding {tmp_path / 'images'}: {i}/3 images" for i in (1, 2, 3)),
        f"{tmp_path / 'images'}: decoded 3 images at 8 px; not cached",
    ]


def test_an_evaluation_reports_each_probe_with_its_time_and_result(digits_subsets, capsys):
    train_set, test_set = digits_subsets
    model = initial_model(Config(widths=(8, 16), dim=8), train_set)
    settings = EvalSettings(knn=(5,), mlp=False, probe_epochs=1, progress=True)
    protocols = evaluate_network(model, train_set, test_set, 8, settings)["protocols"]
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert "features of 500 train + 300 test images, 3 layers" in err
    for name in ("conv1", "conv2", "neck"):
        top1 = protocols["linear"][name]["top1"]
        assert f"linear {name} (" in err and f"top-1 {top1:.4f}" in err
    assert "/4] knn5 neck" in err and err.count(" s\n") >= 5


# --- reuse ----------------------------------------------------------------------------------------


FLAGS = ["--knn", "20", "--probe-epochs", "1", "--no-mlp", "--layers", "neck"]


@pytest.fixture
def evaluations(monkeypatch):
    """How many evaluations actually ran (each probes its features once)."""
    count = []
    real = scoring.probe_all
    monkeypatch.setattr(scoring, "probe_all", lambda *a, **k: count.append(1) or real(*a, **k))
    return count


def test_compare_reuses_an_evaluation_with_the_same_checkpoint_settings_and_data(
    tiny_run, tmp_path, capsys, evaluations
):
    checkpoint = tmp_path / "ckpt" / "a.pt"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_run.run_dir / "checkpoints" / "epoch_0002.pt", checkpoint)
    sources = [str(checkpoint), "random-init", "raw-pixels"]
    out = ["--out", str(tmp_path / "c")]
    assert main(["compare", *sources, *out, *FLAGS]) == 0
    first = capsys.readouterr()
    assert len(evaluations) == 3 and "reusing" not in first.err
    assert "compare [3/3]: raw-pixels" in first.err

    evaluations.clear()
    assert main(["compare", *sources, *out, *FLAGS]) == 0
    again = capsys.readouterr()
    assert evaluations == [] and again.err.count("reusing") == 3
    assert again.out == first.out, "the reused table is the computed one"

    # Another setting: everything is measured again.
    assert main(["compare", *sources, *out, *FLAGS[:-1], "conv1,neck"]) == 0
    assert len(evaluations) == 3
    capsys.readouterr()

    # Another checkpoint under the same path: that source alone is measured again.
    evaluations.clear()
    shutil.copy(tiny_run.run_dir / "checkpoints" / "epoch_0001.pt", checkpoint)
    assert main(["compare", *sources, *out, *FLAGS[:-1], "conv1,neck"]) == 0
    err = capsys.readouterr().err
    assert (
        len(evaluations) == 1 and err.count("reusing") == 2 and f"{checkpoint}: reusing" not in err
    )
    stored = json.loads((tmp_path / "c" / "0-a.pt" / "eval.json").read_text())
    assert (
        stored["checkpoint"] == str(checkpoint) and "checkpoint_sha256" in stored["key"]["network"]
    )


def test_compare_reuses_the_runs_own_eval_and_other_data_recomputes(
    tiny_run, tmp_path, capsys, evaluations
):
    run = str(tiny_run.run_dir)
    assert main(["eval", run, *FLAGS]) == 0  # writes RUN/eval/eval.json
    assert main(["compare", run, "--out", str(tmp_path / "c"), *FLAGS]) == 0
    err = capsys.readouterr().err
    assert len(evaluations) == 1 and f"reusing {tiny_run.run_dir / 'eval' / 'eval.json'}" in err
    assert (tmp_path / "c" / "0-run" / "eval.json").is_file()
    # Other data (a held-out split of another seed is other train and test images): recomputed.
    folder = tmp_path / "folder"
    for label in range(2):
        (folder / str(label)).mkdir(parents=True)
        for i in range(10):
            pixels = np.full((8, 8, 3), 10 * i + 100 * label, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / str(label) / f"{i}.png")
    evaluations.clear()
    assert main(["compare", run, f"data={folder}", "--out", str(tmp_path / "c"), *FLAGS]) == 0
    assert len(evaluations) == 1


def test_evolution_reuses_its_earlier_rows_and_recomputes_for_other_settings(
    tiny_run, tmp_path, capsys, evaluations
):
    settings = EvalSettings(layers=["neck"], knn=(), mlp=False, probe_epochs=1, progress=True)
    rows = evolution(tiny_run.run_dir, settings, out=tmp_path)
    assert len(evaluations) == 3 and "evolution [3/3]: epoch 2" in capsys.readouterr().err
    evaluations.clear()
    again = evolution(tiny_run.run_dir, settings, out=tmp_path)
    assert evaluations == [] and capsys.readouterr().err.count("reusing") == 3
    assert [row["protocols"] for row in again] == [row["protocols"] for row in rows]
    other = EvalSettings(layers=["neck"], knn=(5,), mlp=False, probe_epochs=1, progress=False)
    evolution(tiny_run.run_dir, other, out=tmp_path)
    assert len(evaluations) == 3
