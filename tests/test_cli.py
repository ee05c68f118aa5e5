import subprocess
import sys

import pytest
import torch

from natlearn.checkpoint import checkpoint_paths
from natlearn.cli import main


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
]


@pytest.mark.parametrize("argv,message", BAD_COMMAND_LINES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_command_lines_fail_with_one_line_and_write_nothing(argv, message, capsys, tmp_path, monkeypatch):
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
        code, _, stderr = _run(capsys, ["export", str(path), "--out", str(tmp_path / "backbone.pt")])
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
    assert _run(capsys, ["export", str(out / "checkpoints" / "epoch_0003.pt"), "--out", str(backbone)])[0] == 0
    state = torch.load(backbone, weights_only=True)
    assert "convs.conv1.0.weight" in state and not any(key.startswith("head.") for key in state)


def test_damaged_newest_checkpoint_falls_back_with_a_warning(capsys, tmp_path):
    out = tmp_path / "run"
    common = ["widths=[8]", "dim=8", "batch_size=256", f"out={out}", "progress=false", "keep_last=3"]
    assert _run(capsys, ["train", "epochs=2", *common])[0] == 0
    (out / "checkpoints" / "epoch_0002.pt").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="epoch_0002.pt fails its checksum.*using the previous one") as caught:
        code, stdout, _ = _run(capsys, ["train", "epochs=3", *common, "--resume"])
    assert code == 0 and "3 epochs" in stdout
    assert len(caught) == 1  # said once, not once per lookup
    assert len(checkpoint_paths(out)) == 3


def test_console_entry_point_reports_errors_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "natlearn", "train", "dim=0", f"out={tmp_path / 'r'}"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "natlearn: error: dim=0 is too small; it must be >= 1\n"
    assert not (tmp_path / "r").exists()
