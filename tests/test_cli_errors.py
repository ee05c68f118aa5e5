"""The evaluation commands (eval, compare, neighbors, evolution, report, filters) on bad input: one
line, exit 2, no traceback, nothing written; and the commands that had no end-to-end test from the
CLI."""

import pytest
import torch

from natlearn.cli import main
from natlearn.training.checkpoint import checkpoint_paths, load_checkpoint

TINY = [
    "digits",
    "epochs=1",
    "widths=[8,8]",
    "dim=8",
    "subset=300",
    "batch_size=100",
    "progress=false",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch NAT run on 300 digits: conv1, conv2, neck, head."""
    out = tmp_path_factory.mktemp("cli_errors") / "run"
    assert main(["train", *TINY, f"out={out}"]) == 0
    return out


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _bad_command_lines(run, tmp):
    checkpoint = str(checkpoint_paths(run)[0])
    out = str(tmp / "out")
    png = str(tmp / "out.png")
    valid = "valid layers: conv1, conv2, neck, head"
    return [
        (["eval", checkpoint, "--layers", "conv9", "--out", out], valid),
        (["eval", checkpoint, "--layers", "conv1,fc7", "--out", out], "--layers fc7"),
        (["eval", checkpoint, "--knn-layers", "conv9", "--out", out], "--knn-layers conv9"),
        (["eval", checkpoint, "--knn", "0", "--out", out], "positive integers"),
        (["eval", checkpoint, "--knn", "20,many", "--out", out], "positive integers"),
        (["eval", checkpoint, "--probe-epochs", "0", "--out", out], "--probe-epochs 0"),
        (["eval", checkpoint, "--finetune", "-1", "--out", out], "--finetune -1"),
        (["eval", str(tmp), "--out", out], "folder without epoch checkpoints"),
        (["eval", str(tmp / "missing.pt"), "--out", out], "raw-pixels or hand-crafted"),
        (
            ["eval", "random-init", "digits", "--layers", "conv9", "--out", out],
            "valid layers: conv1, conv2, conv3, neck",
        ),
        (["eval", checkpoint, "dim", "--out", out], "expected key=value"),
        (["compare", checkpoint, "random-init", "--layers", "conv9", "--out", out], valid),
        (
            ["compare", "raw-pixels", checkpoint, str(tmp / "missing.pt"), "--out", out],
            "missing.pt' does not exist",
        ),
        (["compare", "data=digits", "--out", out], "at least one source"),
        (["compare", checkpoint, "--knn", "-5", "--out", out], "positive integers"),
        (["neighbors", checkpoint, "--layer", "conv9", "--out", png], valid),
        (["neighbors", checkpoint, "--queries", "0", "--out", png], "--queries 0"),
        (["neighbors", checkpoint, "--k", "0", "--out", png], "--k 0"),
        (
            ["neighbors", checkpoint, "--k", "5000", "--out", png],
            "more than the 1198 training images",
        ),
        (["neighbors", checkpoint, "--out", str(tmp / "out.jpg")], "ending in .png"),
        (["neighbors", str(tmp / "missing.pt"), "--out", png], "does not exist"),
        (["evolution", str(tmp), "--out", out], "not a natlearn run folder"),
        (["evolution", str(run), "--layers", "conv9", "--out", out], valid),
        (["evolution", str(run), "--knn", "x", "--out", out], "positive integers"),
        (["report", str(tmp)], "not a natlearn run folder"),
        (["report", checkpoint], "not a natlearn run folder"),
        (["filters", checkpoint, "--out", str(tmp / "out.jpg")], "ending in .png"),
        (["filters", str(tmp), "--out", png], "folder without epoch checkpoints"),
    ]


def test_evaluation_commands_refuse_bad_input_with_one_line(run, capsys, tmp_path):
    for argv, message in _bad_command_lines(run, tmp_path):
        code, stdout, stderr = _run(capsys, argv)
        assert code == 2, (argv, stderr)
        assert stderr.startswith("natlearn: error: ") and stderr.count("\n") == 1, (argv, stderr)
        assert message in stderr, (argv, stderr)
        assert "Traceback" not in stdout + stderr
        assert list(tmp_path.iterdir()) == [], argv  # nothing written


def test_neighbors_writes_a_png(run, capsys, tmp_path):
    out = tmp_path / "figures" / "neighbours.png"
    # flags and settings interleave
    code, stdout, _ = _run(
        capsys,
        [
            "neighbors",
            str(checkpoint_paths(run)[0]),
            "--queries",
            "3",
            "data=digits",
            "--k",
            "4",
            "--out",
            str(out),
        ],
    )
    assert code == 0 and str(out) in stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_supervised_training_from_the_command_line(capsys, tmp_path):
    out = tmp_path / "supervised"
    code, stdout, stderr = _run(capsys, ["train", *TINY, f"out={out}", "--supervised"])
    assert code == 0, stderr
    assert "train_accuracy" in stdout
    state = load_checkpoint(checkpoint_paths(out)[-1])
    assert state["config"]["objective"] == "supervised"
    assert state["model"]["head.linear.weight"].shape == (
        10,
        8,
    )  # class logits (softmax loss), not dim outputs
    assert torch.isfinite(state["model"]["head.linear.weight"]).all()
