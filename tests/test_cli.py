import dataclasses
import errno
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from natlearn.cli import _parser, main
from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.files import atomic_write
from natlearn.presets import PRESETS_DIR, preset_descriptions
from natlearn.training import checkpoint
from natlearn.training.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _files_under(path):
    return sorted(p for p in path.rglob("*")) if path.exists() else []


BAD_COMMAND_LINES = [
    (["train", "k=5"], "k=5 is smaller than the number of images"),
    (["train", "dim=0"], "dim=0 is too small"),
    (["train", "dim=-3"], "dim=-3 is too small"),
    (["train", "epoch=3"], "did you mean 'epochs'"),
    (["train", "batch_size=1"], "batch_size=1"),
    (["train", "lr=0"], "lr=0"),
    (["train", "lr=abc"], "not a valid float"),
    (["train", "input=hsv"], "choose one of"),
    (["train", "digits", "epochs"], "expected key=value"),
    (["train", "epochs"], "config 'epochs' not found"),
    (["train", "no-such-preset"], "presets: "),
    (["train", "data=/no/such/folder"], "unknown data set"),
    (["train", "spare_targets=3"], "spare_targets=3"),
    (["train", "--resume"], "nothing to resume"),
    (["train", "--bogus"], "unrecognized arguments"),
    (["export", "/no/such/checkpoint.pt", "--out", "x.pt"], "does not exist"),
    (["frobnicate"], "invalid choice"),
    (["train", "momentum=1.5"], "momentum=1.5 must lie in [0, 1)"),
    (["train", "crop=square"], "crop='square' is not valid"),
    (["train", "crop_scale=0"], "crop_scale=0.0 must lie in (0, 1]"),
    (["train", "on_nonfinite=ignore"], "stop, skip"),
    (["train", "targets=discrete", "num_clusters=999"], "cannot exceed dim"),
    (["train", "workers=-1"], "workers=-1 is too small"),
    (["train", "batch_size=5000"], "larger than the data set"),
    (["train", "loss=hinge"], "auto, square, softmax"),
    (["train", "device=tpu"], "device="),
    (["train", "widths=[]"], "non-empty list"),
    (["train", "data=mnist", "data_root=/no/such/root"], "download=true"),
    (["demo", "epochs=0"], "epochs=0 is too small"),
    (["train", "subset=5000"], "subset=5000 is larger than the data set (n=1198)"),
    (["train", "assign_block=-1"], "assign_block=-1 is too small"),
    (["train", "precision=fp16"], "auto, fp32, bf16"),
    (
        ["train", "arch=alexnet"],
        (
            "arch=alexnet needs images (or crop_size) of at least 63x63 pixels, "
            "got 8x8; use arch=small"
        ),
    ),
    (["train", "epochs=2", "--resume", "progress=false"], "nothing to resume"),
    (
        ["export", "/no/such/checkpoint.pt", "--out", "x.onnx"],
        "'.onnx'; end the name in .pt or .pth (torch.save state_dict) or .safetensors",
    ),
    (
        ["export", "/no/such/checkpoint.pt", "--out", "/no/such/dir/b.pt"],
        "folder /no/such/dir does not exist",
    ),
]


@pytest.mark.parametrize(
    "argv,message", BAD_COMMAND_LINES, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_command_lines_fail_with_one_line_and_write_nothing(
    argv, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    if argv[0] == "train" and "--bogus" not in argv:
        argv = [*argv, f"out={out}"]
    elif argv[0] == "demo":
        argv = [*argv, "--out", str(out)]
    code, stdout, stderr = _run(capsys, argv)
    assert code == 2
    assert stderr.startswith("natlearn: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert "Traceback" not in stderr + stdout
    assert _files_under(tmp_path) == []


def test_foreign_and_damaged_checkpoints_are_refused(capsys, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    for path, message in ((foreign, "not a natlearn checkpoint"), (damaged, "cannot be read")):
        code, _, stderr = _run(
            capsys, ["export", str(path), "--out", str(tmp_path / "backbone.pt")]
        )
        assert code == 2 and message in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "backbone.pt").exists()


def test_train_resume_and_export_end_to_end(capsys, tmp_path):
    out = tmp_path / "run"
    common = ["widths=[8,16]", "dim=16", "batch_size=128", f"out={out}", "progress=false"]
    assert _run(capsys, ["train", "digits", "epochs=2", *common])[0] == 0
    code, _, stderr = _run(capsys, ["train", "digits", "epochs=2", *common])
    assert code == 2 and "--resume" in stderr
    code, stdout, _ = _run(capsys, ["train", "epochs=3", *common, "--resume"])
    assert code == 0 and "3 epochs" in stdout
    code, _, stderr = _run(capsys, ["train", *common, "dim=8", "--resume"])
    assert code == 2 and "dim (checkpoint 16, now 8)" in stderr
    backbone = tmp_path / "backbone.pt"
    assert (
        _run(
            capsys, ["export", str(out / "checkpoints" / "epoch_0003.pt"), "--out", str(backbone)]
        )[0]
        == 0
    )
    state = torch.load(backbone, weights_only=True)
    assert "convs.conv1.0.weight" in state and not any(key.startswith("head.") for key in state)


def test_damaged_newest_checkpoint_falls_back_with_a_warning(capsys, tmp_path):
    out = tmp_path / "run"
    common = [
        "widths=[8]",
        "dim=8",
        "batch_size=256",
        f"out={out}",
        "progress=false",
        "keep_last=3",
    ]
    assert _run(capsys, ["train", "epochs=2", *common])[0] == 0
    (out / "checkpoints" / "epoch_0002.pt").write_bytes(b"truncated")
    with pytest.warns(
        UserWarning, match="epoch_0002.pt fails its checksum.*using the previous one"
    ) as caught:
        code, stdout, _ = _run(capsys, ["train", "epochs=3", *common, "--resume"])
    assert code == 0 and "3 epochs" in stdout
    assert len(caught) == 1  # said once, not once per lookup
    assert len(checkpoint_paths(out)) == 3


def test_console_entry_point_reports_errors_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "natlearn", "train", "dim=0", f"out={tmp_path / 'r'}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == "natlearn: error: dim=0 is too small; it must be >= 1\n"
    assert not (tmp_path / "r").exists()


TINY = ["epochs=1", "widths=[8]", "dim=8", "subset=300", "batch_size=100", "progress=false"]


def test_resume_accepts_the_same_command_and_refuses_real_changes(capsys, tmp_path):
    out = tmp_path / "run"
    command = ["train", "digits", *TINY, f"out={out}"]
    assert _run(capsys, command)[0] == 0
    code, stdout, stderr = _run(
        capsys, [*command, "--resume"]
    )  # the same command, --resume appended
    assert code == 0 and "1 epochs" in stdout, stderr
    code, stdout, stderr = _run(
        capsys, [*command, "epochs=2", "lr=0.01", "--resume"]
    )  # not locked: may change
    assert code == 0 and "2 epochs" in stdout, stderr
    code, _, stderr = _run(capsys, [*command, "dim=16", "--resume"])
    assert code == 2 and stderr.count("\n") == 1
    assert (
        "cannot resume: the config differs from the checkpoint's in dim (checkpoint 8, now 16)"
        in stderr
    )
    code, _, stderr = _run(
        capsys, ["train", *TINY, "dim=8", "k=310", "spare_targets=2", f"out={out}", "--resume"]
    )
    assert (
        code == 2 and "k (checkpoint None, now 310); spare_targets (checkpoint 0, now 2)" in stderr
    )
    code, _, stderr = _run(
        capsys, ["train", "digits", *TINY, f"out={out}", "--resume", "widths=[8,8]"]
    )
    assert code == 2 and "widths (checkpoint (8,), now (8, 8))" in stderr
    assert len(checkpoint_paths(out)) == 2


@pytest.mark.parametrize(
    "argv,expected",
    [
        (
            ["train", "epochs=8", "out=R", "--resume", "progress=false"],
            {"settings": ["epochs=8", "out=R", "progress=false"], "resume": True},
        ),
        (
            ["train", "--overwrite", "digits", "--supervised", "epochs=2"],
            {"settings": ["digits", "epochs=2"], "supervised": True},
        ),
        (
            ["eval", "a.pt", "--layers", "conv1", "data=digits", "--knn", "5"],
            {"source": "a.pt", "settings": ["data=digits"], "knn": "5"},
        ),
        (
            ["compare", "a.pt", "--out", "o", "random-init", "data=digits"],
            {"sources": ["a.pt", "random-init", "data=digits"], "out": "o"},
        ),
        (
            ["neighbors", "a.pt", "--out", "n.png", "data=digits", "--k", "3"],
            {"settings": ["data=digits"], "k": 3},
        ),
        (
            ["evolution", "run", "--no-mlp", "data=digits"],
            {"run_dir": "run", "settings": ["data=digits"], "no_mlp": True},
        ),
        (
            ["demo", "seed=3", "--out", "o", "epochs=2"],
            {"settings": ["seed=3", "epochs=2"], "out": "o"},
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_flags_and_settings_interleave(argv, expected):
    args = vars(_parser().parse_args(argv))
    assert {key: args[key] for key in expected} == expected


# Each command's line in `natlearn --help` (cli.py), in order.
SUMMARIES = {
    "train": "train a network with NAT (or the supervised baseline)",
    "export": "a checkpoint's backbone as a state_dict (a .safetensors file rebuilds it alone)",
    "eval": "transfer of frozen features: linear probe per layer, the paper's MLP, weighted k-NN",
    "compare": "several checkpoints and baselines side by side, with the gap NAT recovers",
    "neighbors": "test queries and their nearest training images in a layer's feature space",
    "embed": "a layer's features of every image of a folder or data set, as .npy plus a .csv index",
    "filters": "the conv1 filters of a checkpoint as a PNG grid",
    "evolution": "transfer accuracy of the checkpoints kept along a run (train with keep_every=N)",
    "transfer": "Pascal VOC 2007 transfer: classification mAP (linear, fine-tuned), Faster R-CNN "
    "detection",
    "report": "one markdown page of a run: config, curves, evaluations, figures",
    "demo": "NAT vs random init vs raw pixels vs supervised on the bundled digits (~1 minute)",
}


def test_help_lists_every_command_with_its_summary(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert f"{{{','.join(SUMMARIES)}}}" in listing  # every command, in this order
    for command, summary in SUMMARIES.items():
        assert f" {command} {summary}" in listing


def _help(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_train_help_documents_every_config_key(capsys):
    """Each field: ``  name=default: its docstring``; a field without a docstring fails here."""
    listing = _help(capsys, ["train", "--help"])
    undocumented = [
        field.name
        for field in dataclasses.fields(Config)
        if not re.search(rf"^  {field.name}=[^\n]*?: \S", listing, re.MULTILINE)
    ]
    assert undocumented == [], f"Config fields without a docstring in train --help: {undocumented}"


@pytest.mark.parametrize("command", ["train", "eval"])
def test_help_lists_every_preset_with_its_description(capsys, command):
    listing = " ".join(_help(capsys, [command, "--help"]).split())  # the lines are wrapped
    descriptions = preset_descriptions()
    assert sorted(descriptions) == sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))
    for name, description in descriptions.items():
        assert description, name
        # the description is the headline of the comment the preset's YAML opens with
        comment = " ".join(
            line.lstrip("#").strip()
            for line in (PRESETS_DIR / f"{name}.yaml").read_text().splitlines()
            if line.startswith("#")
        )
        assert comment.startswith(description), name
        assert f" {name}: {description}" in listing, name


HEAVY = ("torch", "torchvision", "scipy", "sklearn", "numpy")


def test_help_imports_neither_torch_nor_scipy():
    """``natlearn --help`` and ``natlearn train --help`` answer at once: no torch import."""
    script = f"""
import sys
import natlearn.cli
assert "torch" not in sys.modules, "import natlearn.cli imports torch"
for argv in (["--help"], ["train", "--help"], ["eval", "--help"]):
    try:
        natlearn.cli.main(argv)
    except SystemExit:
        pass
heavy = sorted(set({HEAVY!r}) & set(sys.modules))
assert not heavy, f"natlearn --help imports {{heavy}}"
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_public_name_imports_from_the_package():
    """``from natlearn import X`` for every X in __all__ (loaded on first use), also after the
    training loop's module natlearn.training.trainer was imported (natlearn.train stays the
    function)."""
    script = """
import importlib
import sys
import types

import natlearn

assert "torch" not in sys.modules, "import natlearn imports torch"
importlib.import_module("natlearn.training.trainer")
namespace = {}
exec(f"from natlearn import {', '.join(natlearn.__all__)}", namespace)
star = {}
exec("from natlearn import *", star)
for name in natlearn.__all__:
    value = namespace[name]
    assert not isinstance(value, types.ModuleType), (name, value)
    assert value.__name__ == name, (name, value)
    assert star[name] is value is getattr(natlearn, name), name
assert set(natlearn.__all__) <= set(dir(natlearn))
try:
    natlearn.no_such_name
except AttributeError as error:
    assert "no_such_name" in str(error)
else:
    raise AssertionError("natlearn.no_such_name did not raise AttributeError")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_folder_left_by_a_failed_start_is_not_a_run(capsys, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text("arch: alexnet\n")
    code, _, stderr = _run(capsys, ["train", *TINY, f"out={out}", "--resume"])
    assert code == 2 and "nothing to resume" in stderr
    code, stdout, stderr = _run(capsys, ["train", *TINY, f"out={out}"])  # a plain re-run works
    assert code == 0 and "1 epochs" in stdout, stderr
    assert "arch: small" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "notes.txt", lambda tmp: tmp.write_text("x"))
        save_checkpoint(tmp_path / "epoch_0001.pt", {"epoch": 1})
    finally:
        os.umask(previous)
    for name in ("notes.txt", "epoch_0001.pt", "epoch_0001.pt.sha256"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def _disk_full_on(monkeypatch, name):
    """Writes of the file ``name`` fail half-way with ENOSPC; the others go through."""
    real = checkpoint.atomic_write

    def half_then_full(tmp):
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        checkpoint,
        "atomic_write",
        lambda path, write: real(path, half_then_full if Path(path).name == name else write),
    )


@pytest.mark.parametrize("failing", ["epoch_0002.pt", "epoch_0002.pt.sha256"])
def test_a_failed_checkpoint_write_leaves_no_orphan_digest(tmp_path, monkeypatch, failing):
    save_checkpoint(tmp_path / "epoch_0001.pt", {"epoch": 1})
    _disk_full_on(monkeypatch, failing)
    with pytest.raises(
        NatlearnError, match="cannot write checkpoint .*epoch_0002.pt: No space left on device"
    ):
        save_checkpoint(tmp_path / "epoch_0002.pt", {"epoch": 2})
    names = sorted(p.name for p in tmp_path.iterdir())
    if failing == "epoch_0002.pt":
        assert names == ["epoch_0001.pt", "epoch_0001.pt.sha256"]
    else:
        # the checkpoint was complete before its digest failed: it stays, loadable, without a digest
        assert names == ["epoch_0001.pt", "epoch_0001.pt.sha256", "epoch_0002.pt"]
        assert load_checkpoint(tmp_path / "epoch_0002.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "epoch_0001.pt")["epoch"] == 1


def test_a_failed_overwrite_keeps_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "partial.pt"
    save_checkpoint(path, {"epoch": 1, "progress": {"step": 4}})
    _disk_full_on(monkeypatch, "partial.pt")
    with pytest.raises(NatlearnError, match="No space left"):
        save_checkpoint(path, {"epoch": 1, "progress": {"step": 8}})
    assert load_checkpoint(path)["progress"] == {
        "step": 4
    }  # no digest of the new bytes beside the old ones


def test_a_run_folder_stands_for_its_newest_checkpoint(capsys, tmp_path):
    """eval, compare, filters and export take the run folder (out=) wherever a checkpoint goes."""
    run = tmp_path / "tiny"
    settings = ["widths=[8,8]", "dim=8", "subset=256", "batch_size=64", "epochs=2", "keep_last=2"]
    assert _run(capsys, ["train", "digits", *settings, "progress=false", f"out={run}"])[0] == 0
    newest = run / "checkpoints" / "epoch_0002.pt"
    flags = ["--no-mlp", "--no-linear", "--knn", "5"]
    assert _run(capsys, ["eval", str(run), *flags])[0] == 0  # default output: RUN/eval
    by_folder = (run / "eval" / "eval.json").read_text()
    assert _run(capsys, ["eval", str(newest), *flags, "--out", str(tmp_path / "file")])[0] == 0
    by_file = (tmp_path / "file" / "eval.json").read_text()
    assert _same_protocols(by_folder, by_file)
    code, out, _ = _run(
        capsys, ["compare", str(run), "random-init", *flags, "--out", str(tmp_path / "c")]
    )
    assert code == 0 and (tmp_path / "c" / "0-tiny" / "eval.json").is_file()
    assert _run(capsys, ["filters", str(run), "--out", str(tmp_path / "f.png")])[0] == 0
    assert _run(capsys, ["export", str(run), "--out", str(tmp_path / "b.pt")])[0] == 0
    exported = torch.load(tmp_path / "b.pt", weights_only=True)
    assert torch.equal(
        exported["convs.conv1.0.weight"], load_checkpoint(newest)["model"]["convs.conv1.0.weight"]
    )


def _same_protocols(a: str, b: str) -> bool:
    import json

    return json.loads(a)["protocols"] == json.loads(b)["protocols"]


def test_train_starts_with_a_summary_of_what_it_found_and_ends_naming_the_next_command(
    tmp_path, capsys
):
    out = tmp_path / "run"
    settings = ["digits", "widths=[8,8]", "dim=8", "subset=200", "epochs=1", f"out={out}"]
    assert main(["train", *settings]) == 0
    captured = capsys.readouterr()
    data, network, run = captured.err.splitlines()[:3]
    assert data.startswith("data: digits: 200 images (") and "10 classes; 8 px, sobel input" in data
    assert re.fullmatch(
        r"network: small, [\d,]+ parameters; NAT, 200 sphere targets in R\^8, square loss, "
        r"re-assigned every 3 epochs",
        network,
    )
    assert run.startswith(f"run: {out} (new): 1 epochs of ") and "cpu, fp32" in run
    assert f"next: natlearn eval {out}" in captured.out
    assert main(["train", *settings[:-2], "epochs=2", f"out={out}", "--resume"]) == 0
    assert f"run: {out} (resumed at epoch 2)" in capsys.readouterr().err


def test_eval_and_compare_start_with_a_summary_and_end_naming_the_next_command(tmp_path, capsys):
    run = tmp_path / "run"
    settings = ["digits", "widths=[8,8]", "dim=8", "subset=200", "epochs=1", "progress=false"]
    assert main(["train", *settings, f"out={run}"]) == 0
    capsys.readouterr()
    flags = ["--no-mlp", "--knn", "5", "--layers", "neck"]
    assert main(["eval", str(run), *flags]) == 0
    captured = capsys.readouterr()
    data, network, protocols = captured.err.splitlines()[:3]
    assert re.fullmatch(
        r"data: digits: 1,198 train images \(.*\), 599 test images \(.*\), 10 classes; 8 px "
        r"\(the size the run trained at\), centre 8x8 crops",
        data,
    )
    trained = r"network: small, [\d,]+ parameters, trained with nat; sobel input"
    assert re.fullmatch(trained, network)
    assert re.fullmatch(r"protocols: linear on neck; 5-NN on neck; cpu, \d+ threads", protocols)
    assert f"next: natlearn report {run} " in captured.out

    out = tmp_path / "compare"
    assert main(["compare", str(run), "random-init", "raw-pixels", *flags, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{run}: reusing {run / 'eval' / 'eval.json'}" in captured.err  # no summary: not run
    assert re.search(r"^network: small, [\d,]+ parameters, untrained; sobel", captured.err, re.M)
    assert "features: raw-pixels (the view)\nprotocols: linear on features; 5-NN on features" in (
        captured.err
    )
    assert f"wrote {out / 'compare.md'}, compare.json" in captured.out

    assert main(["eval", "raw-pixels", "data=digits", *flags, "--out", str(tmp_path / "p")]) == 0
    assert "next: natlearn compare RUN/checkpoints/last.pt raw-pixels data=digits" in (
        capsys.readouterr().out
    )
    assert main(["eval", str(run), *flags, "progress=false", "--out", str(tmp_path / "q")]) == 0
    assert "data: " not in capsys.readouterr().err
