"""Faults injected into real training runs, and what survives them.

Each test's docstring says the fault and the expected outcome; `python benchmarks/reliability.py`
runs this file and writes docs/reliability.md from those docstrings and the results.
"""

import errno
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import assert_same_run, final_state
from natlearn.config import Config, apply_overrides
from natlearn.data import Augmentation
from natlearn.errors import NatlearnError
from natlearn.training.checkpoint import checkpoint_paths, load_checkpoint
from natlearn.training.trainer import train

pytestmark = pytest.mark.slow  # whole runs in subprocesses: not in the quick subset

RUN = [
    "data=digits",
    "widths=[8,16]",
    "dim=16",
    "batch_size=128",
    "epochs=4",
    "reassign_every=3",
    "k=1250",
    "spare_targets=8",
    "checkpoint_every_steps=4",
    "keep_last=10",
    "flip=true",
    "progress=false",
]


def _natlearn(args, fault=None):
    env = {**os.environ, "NATLEARN_FAULT": fault or ""}
    return subprocess.run(
        [sys.executable, "-m", "natlearn", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = _natlearn(["train", *RUN, f"out={out}"])
    assert result.returncode == 0, result.stderr
    return out


def _assert_identical(out: Path, reference: Path) -> None:
    assert final_state(reference).epoch == 4
    assert_same_run(out, reference)


def _kill_then_resume(tmp_path: Path, fault: str) -> Path:
    out = tmp_path / "run"
    killed = _natlearn(["train", *RUN, f"out={out}"], fault=fault)
    assert killed.returncode == -9, (fault, killed.returncode, killed.stderr)
    resumed = _natlearn(["train", *RUN, f"out={out}", "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert not list((out / "checkpoints").glob(".*.tmp")), "a temporary file survived the resume"
    return out


def test_sigkill_mid_epoch_resumes_from_the_step_checkpoint(tmp_path, reference):
    """Fault: SIGKILL after step 6 of epoch 2 (a mid-epoch checkpoint exists at step 4).
    Expected: --resume continues epoch 2 at step 5 with the same batch order and crops; the final
    weights, momentum, assignment and RNG state are bit-identical to an uninterrupted run; 2 steps
    are recomputed."""
    _assert_identical(_kill_then_resume(tmp_path, "after-step:2:6"), reference)


def test_sigkill_during_a_reassignment_epoch(tmp_path, reference):
    """Fault: SIGKILL after step 3 of epoch 4, an epoch that re-assigns targets (no step checkpoint
    yet in it).
    Expected: --resume restarts epoch 4 from the epoch-3 checkpoint; the result is bit-identical."""
    _assert_identical(_kill_then_resume(tmp_path, "after-step:4:3"), reference)


def test_sigkill_while_an_epoch_checkpoint_is_written(tmp_path, reference):
    """Fault: SIGKILL after the bytes of epoch_0002.pt went to its temporary file, before the
    rename.
    Expected: epoch_0002.pt does not exist half-written; --resume uses the newest complete
    checkpoint, removes the temporary file, and ends bit-identical."""
    _assert_identical(_kill_then_resume(tmp_path, "in-checkpoint:epoch_0002.pt"), reference)


def test_sigkill_while_a_step_checkpoint_is_written(tmp_path, reference):
    """Fault: SIGKILL during the 6th mid-epoch checkpoint write (epoch 3, step 8), before its
    rename.
    Expected: the previous mid-epoch checkpoint (epoch 3, step 4) is intact and used; the result is
    bit-identical."""
    _assert_identical(_kill_then_resume(tmp_path, "in-checkpoint:partial.pt#6"), reference)


def test_damaged_newest_checkpoint_is_detected_and_the_previous_used(tmp_path, reference):
    """Fault: one byte flipped inside the newest epoch checkpoint (epoch_0004.pt), then --resume
    with epochs=4.
    Expected: the checksum names the damaged file in a warning; epoch_0003.pt is used; epoch 4 is
    trained again and the result is bit-identical."""
    out = tmp_path / "run"
    assert _natlearn(["train", *RUN, f"out={out}"]).returncode == 0
    damaged = out / "checkpoints" / "epoch_0004.pt"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    resumed = _natlearn(["train", *RUN, f"out={out}", "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "epoch_0004.pt fails its checksum" in resumed.stderr
        and "using the previous one" in resumed.stderr
    )
    _assert_identical(out, reference)


# `natlearn train` with a recorder: each process saves the target vectors it trains with (all k of
# them, at construction) and the assignment it last checkpointed (the killed run) or resumed from
# (the resumed run).
_RECORDING_TRAIN = """
import os, sys, torch
from natlearn.nat.objective import NoiseAsTargets
record, cls = os.environ["NATLEARN_RECORD"], NoiseAsTargets
init, state_dict, load_state_dict = cls.__init__, cls.state_dict, cls.load_state_dict
seen = {}
def save(**values):
    seen.update(values)
    torch.save(dict(seen), record + ".tmp")
    os.replace(record + ".tmp", record)
def recording_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    save(targets=self.targets[torch.arange(self.targets.k)], pid=os.getpid())
def recording_state_dict(self):
    state = state_dict(self)
    save(checkpointed=state["assignment"])
    return state
def recording_load_state_dict(self, state):
    load_state_dict(self, state)
    save(resumed=self.state_dict()["assignment"])
cls.__init__, cls.state_dict, cls.load_state_dict = (
    recording_init, recording_state_dict, recording_load_state_dict
)
from natlearn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _recorded_train(args: list[str], record: Path, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "NATLEARN_FAULT": fault, "NATLEARN_RECORD": str(record)}
    return subprocess.run(
        [sys.executable, "-c", _RECORDING_TRAIN, "train", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def test_resumed_targets_equal_the_ones_before_the_kill(tmp_path):
    """Fault: SIGKILL mid-epoch 2 (after step 7; the last step checkpoint is at step 4).
    Expected: the resumed process trains with exactly the target vectors the killed process trained
    with (they are a function of seed and index: nothing to lose, nothing per process), and
    continues from exactly the assignment the killed process checkpointed last (image -> target,
    spare targets, its generator)."""
    out = tmp_path / "run"
    killed = _recorded_train([*RUN, f"out={out}"], tmp_path / "killed.pt", fault="after-step:2:7")
    assert killed.returncode == -9, killed.stderr
    resumed = _recorded_train([*RUN, f"out={out}", "--resume"], tmp_path / "resumed.pt")
    assert resumed.returncode == 0, resumed.stderr
    before, after = (
        torch.load(tmp_path / name, weights_only=True) for name in ("killed.pt", "resumed.pt")
    )
    assert before["pid"] != after["pid"], "the kill and the resume ran in one process"
    assert before["targets"].shape == (1250, 16)
    assert torch.equal(before["targets"], after["targets"])
    assert "resumed" in after, "the resumed run never loaded an assignment"
    for key in ("image_to_target", "spare", "generator"):
        assert torch.equal(before["checkpointed"][key], after["resumed"][key]), key


def test_disk_full_while_writing_a_checkpoint(tmp_path, monkeypatch):
    """Fault: the disk fills up (ENOSPC) half-way through writing epoch_0002.pt.
    Expected: one-line error naming the file and the fix; no temporary or partial file remains;
    epoch_0001.pt stays intact and loadable."""
    real_write = Path.write_bytes

    def full_disk(self, data):
        if self.name.startswith(".epoch_0002.pt"):
            real_write(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    config = apply_overrides(
        Config(), [*RUN, f"out={tmp_path / 'run'}", "checkpoint_every_steps=0"]
    )
    with pytest.raises(
        NatlearnError, match=r"cannot write checkpoint .*epoch_0002.pt: No space left on device"
    ):
        train(config)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "epoch_0002.pt" not in names and not [n for n in names if n.endswith(".tmp")]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0001.pt")["epoch"] == 1


def test_output_folder_that_cannot_be_created(tmp_path, capsys):
    """Fault: out= points below a regular file, so the run folder cannot be created.
    Expected: one-line error, exit status 2, nothing written."""
    from natlearn.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", f"out={blocker / 'run'}", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("natlearn: error: cannot create run folder") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_nonfinite_batch_stops_or_is_skipped(tmp_path, monkeypatch):
    """Fault: the 3rd batch of epoch 1 produces NaN outputs.
    Expected: by default the run stops with one line naming epoch 1, step 3 and that no checkpoint
    exists yet; with on_nonfinite=skip that batch is skipped, counted in the log
    (skipped_batches=1), the BatchNorm running statistics it had already moved are restored
    (evaluation uses them), and the run ends."""
    real_augment, calls = Augmentation.__call__, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real_augment(*args, **kwargs)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(Augmentation, "__call__", poisoned)
    config = apply_overrides(Config(), [*RUN, f"out={tmp_path / 'stop'}", "epochs=2"])
    with pytest.raises(
        NatlearnError, match="non-finite outputs .* epoch 1, step 3; no checkpoint written yet"
    ):
        train(config)
    calls["n"] = 0
    with pytest.warns(UserWarning, match="skipping batch 3 of epoch 1"):
        result = train(
            apply_overrides(config, {"out": str(tmp_path / "skip"), "on_nonfinite": "skip"})
        )
    assert [row["skipped_batches"] for row in result.history] == [1, 0]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    # BatchNorm folded the NaN batch into its running statistics before the outputs could be
    # checked: restored.
    buffers = [b for b in result.model.buffers() if b.is_floating_point()]
    assert buffers and all(torch.isfinite(b).all() for b in buffers)


def test_exported_backbone_loads_without_natlearn(tmp_path):
    """Fault: none; a user loads the exported backbone in code that never imports natlearn.
    Expected: the plain state_dict (.pt) and the safetensors file load into an nn.Module built from
    torch.nn only, with strict=True, and compute the same features."""
    from safetensors.torch import load_file

    from natlearn.export import export_backbone
    from natlearn.training.checkpoint import load_model

    out = tmp_path / "run"
    result = train(apply_overrides(Config(), [*RUN, f"out={out}", "epochs=1"]))
    checkpoint = checkpoint_paths(out)[-1]
    plain = torch.load(export_backbone(checkpoint, tmp_path / "backbone.pt"), weights_only=True)
    safe = load_file(export_backbone(checkpoint, tmp_path / "backbone.safetensors"))
    assert plain.keys() == safe.keys()

    class Input(nn.Module):
        def __init__(self):
            super().__init__()
            for name in ("mean", "std", "sobel"):
                self.register_buffer(name, torch.zeros_like(plain[f"input.{name}"]))

        def forward(self, x):
            gray = ((x - self.mean) / self.std).mean(dim=1, keepdim=True)
            return nn.functional.conv2d(gray, self.sobel, padding=1)

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
        )

    plain_model = nn.Module()
    plain_model.input = Input()
    plain_model.convs = nn.Sequential(
        OrderedDict(conv1=block(2, 8), pool1=nn.MaxPool2d(2), conv2=block(8, 16))
    )
    for state in (plain, safe):
        plain_model.load_state_dict(state, strict=True)
        plain_model.eval()
        images = torch.rand(5, 1, 8, 8)
        ours = load_model(checkpoint).features(images, ["conv2"])["conv2"]
        assert torch.allclose(plain_model.convs(plain_model.input(images)), ours, atol=1e-6)
    assert result.history
