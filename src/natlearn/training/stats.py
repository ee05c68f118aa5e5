"""The step statistics of an epoch, summed on the device and read back only when shown or
logged."""

from __future__ import annotations

import torch

from natlearn.training.distributed import Ranks

__all__ = ["StepSums"]


class StepSums:
    """Step statistics summed on the device (float64), so a step never waits for the device to
    report them; they are read back for the progress bar and a per-step logger (every _SHOW_EVERY
    steps), a mid-epoch checkpoint and the epoch's log row only.

    Args:
        names: the statistics the objective logs (a step that lacks one adds 0).
        carried: sums a mid-epoch checkpoint saved (rank 0 continues them; the others start at 0).
        steps: the steps of the epoch those sums cover (skipped batches left out).
    """

    def __init__(
        self,
        names: tuple[str, ...],
        device: torch.device,
        carried: dict[str, float],
        steps: int = 0,
    ):
        self.names = sorted(names)
        self.totals = torch.tensor(
            [carried.get(name, 0.0) for name in self.names], dtype=torch.float64, device=device
        )
        self._zero = torch.zeros((), device=device)
        self._last = ({name: carried.get(name, 0.0) for name in self.names}, steps)  # last read

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        # Each value is rounded to float32 before it is summed, as the log has always done.
        values = [stats[name].float() if name in stats else self._zero for name in self.names]
        self.totals += torch.stack(values).double()

    def read(self, steps: int) -> tuple[dict[str, float], dict[str, float]]:
        """One read-back (a wait for the device): this rank's running means over the epoch's
        ``steps`` trained steps, and its means over the steps since the last read-back ({} if
        none)."""
        totals = dict(zip(self.names, self.totals.tolist(), strict=True))
        before, since = self._last
        self._last = (totals, steps)
        means = {name: total / max(1, steps) for name, total in totals.items()}
        if steps == since:
            return means, {}
        return means, {
            name: (total - before[name]) / (steps - since) for name, total in totals.items()
        }

    def over_ranks(self, ranks: Ranks) -> dict[str, float]:
        """The sums over every rank (a collective: every rank calls it)."""
        return dict(zip(self.names, ranks.sum(self.totals.cpu()).tolist(), strict=True))
