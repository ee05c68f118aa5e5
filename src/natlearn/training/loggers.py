"""Where a training run's metrics go besides ``log.jsonl`` (``logger=``): ``tensorboard``
(``RUN/tensorboard/``), ``csv`` (``RUN/metrics.csv``), ``wandb``, or ``none``. Rank 0 alone logs.

The x-axis is the global step (optimizer steps since the run began, skipped batches included), so
a resumed run continues it. Per-step scalars are this rank's means over the steps since the loop
last read its statistics back (every ``natlearn.training.trainer._SHOW_EVERY`` steps and at an
epoch's end: a logger never makes a step wait for the device); an epoch's row is logged at its last
step.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Protocol

from natlearn.choices import LoggerKind
from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.files import atomic_write

__all__ = ["Logger", "NoLogger", "check_logger", "open_logger"]

_INSTALL = {"tensorboard": "pip install tensorboard", "wandb": "pip install wandb"}


class Logger(Protocol):
    steps: bool
    """Whether it writes per-step scalars (only then does the loop hand them over)."""

    def log_step(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_epoch(self, step: int, row: dict) -> None:
        """An epoch's log.jsonl row, ``step`` being the epoch's last global step."""

    def close(self) -> None: ...


class NoLogger:
    """``logger=none``, and every rank but 0."""

    steps = False

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        pass

    def log_epoch(self, step: int, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def check_logger(kind: LoggerKind) -> None:
    """Refuse (one line) a logger whose package is not installed."""
    try:
        if kind == "tensorboard":
            import torch.utils.tensorboard  # noqa: F401  (imports tensorboard)
        elif kind == "wandb":
            import wandb  # noqa: F401
    except ImportError:
        raise NatlearnError(f"logger={kind} needs `{_INSTALL[kind]}`") from None


def open_logger(config: Config, run_dir: Path, history: list[dict], steps_done: int) -> Logger:
    """The logger ``config.logger`` names for the run in ``run_dir``, which has trained
    ``steps_done`` global steps and logged the epoch rows ``history`` (a resume's)."""
    check_logger(config.logger)
    if config.logger == "tensorboard":
        return TensorBoardLogger(run_dir / "tensorboard", steps_done)
    if config.logger == "csv":
        return CsvLogger(run_dir / "metrics.csv", history)
    if config.logger == "wandb":
        return WandbLogger(config, run_dir)
    return NoLogger()


def _numeric(row: dict) -> dict[str, float]:
    return {
        key: value
        for key, value in row.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class TensorBoardLogger:
    """Scalars ``step/NAME`` (per-step) and ``epoch/NAME`` (each numeric field of an epoch row)."""

    steps = True

    def __init__(self, folder: Path, steps_done: int):
        from torch.utils.tensorboard import SummaryWriter

        if steps_done == 0:  # a new run: events left here belong to one --overwrite discarded
            for stale in folder.glob("events.out.tfevents.*"):
                stale.unlink()
        _after_last_events_file(folder)
        # Events a killed run wrote past the checkpoint resumed from are hidden by TensorBoard
        # (purge_step); the steps retrained here log them again, once.
        self.writer = SummaryWriter(str(folder), purge_step=steps_done + 1)

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"step/{name}", value, step)

    def log_epoch(self, step: int, row: dict) -> None:
        for name, value in _numeric(row).items():
            self.writer.add_scalar(f"epoch/{name}", value, step)
        self.writer.flush()  # an epoch's scalars are on disk when its checkpoint is

    def close(self) -> None:
        self.writer.close()


def _after_last_events_file(folder: Path) -> None:
    """Wait, if need be, until a new events file's name sorts after those in ``folder``.

    TensorBoard reads a folder's files in name order, ``events.out.tfevents.SECOND.HOST.PID.N``,
    and drops what a later file's steps overwrite. A writer opened in the same second as the
    last one (a resume in the same process) would be ordered by its counter ``N`` as text, so
    ``.10`` before ``.9``: the resumed run's events would be read first and overwritten by the
    crashed run's."""
    seconds = [int(path.name.split(".")[3]) for path in folder.glob("events.out.tfevents.*")]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)


class CsvLogger:
    """``metrics.csv``: a header, then the numeric fields of each epoch's row, rewritten atomically
    every epoch from the rows logged so far (a resume's too), so it always matches log.jsonl."""

    steps = False

    def __init__(self, path: Path, history: list[dict]):
        self.path, self.rows = path, [_numeric(row) for row in history]
        self._write()

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        pass

    def log_epoch(self, step: int, row: dict) -> None:
        self.rows.append(_numeric(row))
        self._write()

    def close(self) -> None:
        pass

    def _write(self) -> None:
        if not self.rows:
            self.path.unlink(missing_ok=True)
            return
        text = io.StringIO()
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, lambda tmp: tmp.write_text(text.getvalue()))


class WandbLogger:
    """A Weights & Biases run in project ``natlearn`` (files under the run folder), with the same
    scalars as TensorBoard; a resumed training run starts a new one."""

    steps = True

    def __init__(self, config: Config, run_dir: Path):
        import wandb

        self.run = wandb.init(
            project="natlearn", config=config.to_dict(), dir=str(run_dir), name=run_dir.name
        )

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log({f"step/{name}": value for name, value in scalars.items()}, step=step)

    def log_epoch(self, step: int, row: dict) -> None:
        self.run.log({f"epoch/{k}": v for k, v in _numeric(row).items()}, step=step)

    def close(self) -> None:
        self.run.finish()
