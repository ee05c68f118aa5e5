"""Loggers (``logger=tensorboard``, ``csv``, ``wandb``): what they write agrees with log.jsonl,
per-step scalars come only from the loop's read-backs, and a resume (after a crash too) continues
the global step without a duplicated step."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import natlearn.training.trainer as training
from natlearn.config import RESUME_LOCKED, Config, apply_overrides
from natlearn.errors import NatlearnError
from natlearn.training.trainer import train

STEPS = 10  # digits' 1198 training images in batches of 128
SHOW_EVERY = 4  # read-backs at steps 4, 8 and 10 of each epoch


@pytest.fixture
def config(tiny_config, monkeypatch):
    monkeypatch.setattr(training, "_SHOW_EVERY", SHOW_EVERY)
    return dataclasses.replace(tiny_config, epochs=2, reassign_every=2, logger="tensorboard")


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's TensorBoard events as TensorBoard shows it (purges applied):
    tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def _f32(value: float) -> float:
    return float(np.float32(value))  # what a TensorBoard scalar holds


def _assert_epochs_match_the_log(scalars: dict, log: list[dict], steps: int = STEPS) -> None:
    """One scalar per numeric field of each epoch's row, at the epoch's last step."""
    for key in log[0]:
        assert scalars[f"epoch/{key}"] == [(row["epoch"] * steps, _f32(row[key])) for row in log]
    for tag, points in scalars.items():
        at = [step for step, _ in points]
        assert at == sorted(set(at)), f"{tag}: steps repeat or go back: {at}"


def test_tensorboard_logs_every_epoch_row_and_step_means_and_a_resume_continues(config):
    first = train(config)
    scalars = _scalars(first.run_dir)
    log = _log(first.run_dir)
    _assert_epochs_match_the_log(scalars, log)
    # Per-step scalars at the read-backs only; re-assignment ones in the epoch that re-assigns.
    read_backs = [4, 8, 10, 14, 18, 20]
    for name in ("loss", "cosine", "lr"):
        assert [step for step, _ in scalars[f"step/{name}"]] == read_backs, name
    for name in ("reassigned", "assign_ms"):
        assert [step for step, _ in scalars[f"step/{name}"]] == [4, 8, 10], name
    # Each is the mean over the steps since the previous read-back: weighted, they give the epoch.
    for epoch, row in enumerate(log):
        of_epoch = {
            tag: [v for s, v in points if epoch * STEPS < s <= (epoch + 1) * STEPS]
            for tag, points in scalars.items()
        }
        for name in ("loss", "cosine", "reassigned")[: 3 - epoch]:
            weighted = np.dot(of_epoch[f"step/{name}"], [4, 4, 2]) / STEPS
            assert weighted == pytest.approx(row[name], rel=1e-6), (epoch, name)
        assert of_epoch["step/lr"] == [_f32(row["lr"])] * 3

    resumed = train(dataclasses.replace(config, epochs=3), resume=True)
    scalars = _scalars(resumed.run_dir)
    _assert_epochs_match_the_log(scalars, _log(resumed.run_dir))
    assert [step for step, _ in scalars["step/loss"]] == [*read_backs, 24, 28, 30]


def test_a_crash_mid_epoch_leaves_no_duplicated_step_after_the_resume(config, monkeypatch):
    """The crashed run logged step 18 (epoch 2, step 8) past its checkpoint (epoch 2, step 6);
    the resume hides it and logs step 18 again, as the mean over steps 7-8."""
    crashing = dataclasses.replace(config, checkpoint_every_steps=3)

    class Crash(Exception):
        pass

    def crash(name):
        if name == "after-step:2:9":
            raise Crash

    monkeypatch.setattr(training, "fault_point", crash)
    with pytest.raises(Crash):
        train(crashing)
    before = _scalars(Path(crashing.out))
    assert [step for step, _ in before["step/loss"]] == [4, 8, 10, 14, 18]

    monkeypatch.setattr(training, "fault_point", lambda name: None)
    train(crashing, resume=True)
    after = _scalars(Path(crashing.out))
    _assert_epochs_match_the_log(after, _log(Path(crashing.out)))
    assert [step for step, _ in after["step/loss"]] == [4, 8, 10, 14, 18, 20]
    assert after["step/loss"][:4] == before["step/loss"][:4]
    assert after["step/loss"][4] != before["step/loss"][4]  # steps 7-8 now, not 5-8


def test_csv_rows_are_the_log_rows_and_the_logger_may_change_on_resume(config, monkeypatch):
    assert "logger" not in RESUME_LOCKED

    def no_read_back(self, steps):
        raise AssertionError("statistics read back per step without a per-step logger")

    monkeypatch.setattr(training.StepSums, "read", no_read_back)
    run_dir = train(dataclasses.replace(config, epochs=1, logger="none")).run_dir
    assert not (run_dir / "metrics.csv").exists() and not (run_dir / "tensorboard").exists()

    train(dataclasses.replace(config, logger="csv"), resume=True)
    log = _log(run_dir)
    with open(run_dir / "metrics.csv", newline="") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == list(log[0])
        rows = [{key: json.loads(value) for key, value in row.items()} for row in reader]
    assert rows == log and len(rows) == 2  # the epoch trained without it too


def test_an_unknown_logger_is_refused():
    with pytest.raises(
        NatlearnError, match="logger='nope' is not valid; choose one of: none, tensorboard, csv"
    ):
        apply_overrides(Config(), ["logger=nope"]).validate()


@pytest.mark.parametrize(
    "logger,blocked,message",
    [
        ("wandb", ["wandb"], "logger=wandb needs `pip install wandb`"),
        (
            "tensorboard",
            ["tensorboard", "torch.utils.tensorboard"],
            "logger=tensorboard needs `pip install tensorboard`",
        ),
    ],
)
def test_a_missing_logger_package_is_one_line_before_any_work(
    tiny_config, monkeypatch, logger, blocked, message
):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(NatlearnError) as error:
        train(dataclasses.replace(tiny_config, logger=logger))
    assert str(error.value) == message
    assert not Path(tiny_config.out).exists()


@pytest.mark.slow
def test_sigkill_while_checkpointing_an_epoch_leaves_one_value_per_step(tmp_path):
    """SIGKILL while epoch 2's checkpoint is written: its scalars are on disk, its checkpoint is
    not; the resume from epoch 1 retrains epoch 2 and TensorBoard shows its steps once."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "natlearn", "train", "data=digits", "widths=[8,16]", "dim=16"]
    args += ["subset=256", "batch_size=128", "epochs=2", "progress=false", "logger=tensorboard"]
    args.append(f"out={out}")  # 2 steps an epoch
    env = {**os.environ, "NATLEARN_FAULT": "in-checkpoint:epoch_0002.pt"}
    killed = subprocess.run(args, capture_output=True, text=True, env=env)
    assert killed.returncode == -9, killed.stderr
    assert [step for step, _ in _scalars(out)["epoch/loss"]] == [2, 4]
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    _assert_epochs_match_the_log(_scalars(out), _log(out), steps=2)
    assert [step for step, _ in _scalars(out)["step/loss"]] == [2, 4]
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_a_resumed_writer_sorts_after_the_last_one_even_in_the_same_second(tmp_path):
    """TensorBoard reads event files in name order; with the per-process counter at 9 -> 10 a
    second writer of the same second would sort first (".10" < ".9") and its steps be dropped."""
    from torch.utils.tensorboard import SummaryWriter

    from natlearn.training.loggers import TensorBoardLogger

    def counter(folder: Path) -> str:
        (path,) = folder.glob("events.out.tfevents.*")
        return path.name.rsplit(".", 1)[1]

    for spare in range(10):  # push the counter of the next writer to ...9
        SummaryWriter(str(tmp_path / f"spare{spare}")).close()
        if counter(tmp_path / f"spare{spare}").endswith("8"):
            break
    folder = tmp_path / "tensorboard"
    first = TensorBoardLogger(folder, steps_done=0)  # the crashed run's last epoch, later redone
    first.log_epoch(10, {"epoch": 1})
    first.close()
    second = TensorBoardLogger(folder, steps_done=5)
    second.log_epoch(10, {"epoch": 2})
    second.close()
    files = sorted(path.name for path in folder.glob("events.out.tfevents.*"))
    assert files[0].endswith("9") and files[-1].endswith("0")  # written in this order
    assert _scalars(tmp_path)["epoch/epoch"] == [(10, 2.0)]
