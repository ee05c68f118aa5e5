"""What every fitted protocol shares: the mini-batch loop (the linear probe's Adam heads, the MLP
probe, fine-tuning and detection differ only in their model, optimizer, loss and how an epoch is cut
into batches), the L-BFGS linear fit, standardisation by training features, the CPU thread setting,
fine-tuning a copy of a network, and how a setting (weight decay, learning rate) is chosen on
held-out data. The probes (:mod:`natlearn.evaluate.probes`) and the VOC transfer
(:mod:`natlearn.evaluate.voc`) both take them from here."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from natlearn.data import Augmentation
from natlearn.models import Head, Network
from natlearn.progress import steps

__all__ = [
    "Batching",
    "WEIGHT_DECAYS",
    "best_index",
    "choose_on_val",
    "cpu_threads",
    "decay_walk",
    "fit_lbfgs",
    "fit_minibatches",
    "standardiser",
    "tuned_copy",
]

Batching = Literal["keep_last", "drop_last", "even"]
"""How a shuffled epoch is cut: batches of ``batch_size`` and a shorter last one (``keep_last``);
full batches only (``drop_last``: BatchNorm never sees a 1-row batch); or ceil(n / batch_size)
batches whose sizes differ by at most one (``even``)."""


def fit_minibatches(
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    batching: Batching = "keep_last",
    min_steps: int = 0,
    label: str | None = None,
    progress: bool = False,
) -> int:
    """Train with ``optimizer`` on ``batch_loss(batch)`` under a cosine schedule over every step.

    Each epoch shuffles ``rows`` (indices into the training data) with ``generator`` and cuts them
    by ``batching``; ``batch_loss`` moves a batch to where it is needed. Small data sets run more
    epochs, so that at least ``min_steps`` steps are taken.

    Returns:
        the number of optimizer steps taken.
    """
    per_epoch = len(rows) // batch_size if batching == "drop_last" else -(-len(rows) // batch_size)
    epochs = max(epochs, -(-min_steps // per_epoch))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * per_epoch)
    for _ in steps(range(epochs), label or "fit", enabled=progress, every=10.0, unit="epochs"):
        order = rows[torch.randperm(len(rows), generator=generator)]
        for batch in _cut(order, batching, per_epoch, batch_size):
            loss = batch_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return epochs * per_epoch


def _cut(order: torch.Tensor, how: Batching, count: int, size: int) -> tuple[torch.Tensor, ...]:
    if how == "even":
        return torch.tensor_split(order, count)
    return order[: count * size].split(size)


WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def standardiser(train_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-feature standardisation with the *training* features' mean and std (test features never
    inform it)."""
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    return lambda features: (features - mean) / std


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Run the block on ``count`` CPU threads (None: as set). Probes on up to 5e7 numbers run on
    one: their ops are small, so OpenMP threads gain little, and threads that wait for each other at
    every op are 3-10x slower when another process shares the cores (measured on 2 shared cores:
    the Adam probe on 6,000 x 9,216 features, 24 s on one thread and 82 s on two). To use every
    core, evaluation runs several single-threaded probes at once instead
    (:func:`natlearn.evaluate.probes.suite.probe_all`). The setting is per thread in torch's OpenMP
    backend, so concurrent probes do not disturb each other's."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


PATIENCE = 2
"""The L-BFGS decay search stops after this many decays in a row below the best so far."""


def decay_walk(weight_decays: Sequence[float], scores: list[float | None]) -> Iterator[int]:
    """Indices of ``weight_decays`` to try, largest decay first; the caller fills ``scores[i]``
    (held-out accuracy) before asking for the next. Stops after :data:`PATIENCE` decays in a row
    score below the best so far: held-out accuracy rises to one peak as the decay falls, and the
    smaller decays, skipped, are the slowest fits (L-BFGS runs to its iteration cap on them)."""
    below = 0
    for i in sorted(range(len(weight_decays)), key=lambda i: -weight_decays[i]):
        yield i
        best = max(score for score in scores if score is not None)
        below = below + 1 if scores[i] < best else 0
        if below >= PATIENCE:
            return


def best_index(scores: Sequence[float | None]) -> int:
    """The index of the best held-out score (None: not tried); ties go to the earlier choice (as
    listed): a weight decay here, a learning rate in the VOC transfer."""
    tried = [i for i, score in enumerate(scores) if score is not None]
    return max(tried, key=lambda i: (scores[i], -i))


def fit_lbfgs(
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    weight_decay: float,
    max_iter: int = 100,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the L2-regularised linear model minimising ``loss(logits, y)`` (default
    the softmax regression; ``classes``: the outputs), from zero. Draws no random numbers (probes
    run concurrently)."""
    weight = torch.zeros(classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(classes, device=x.device, requires_grad=True)
    # Tolerances far below what changes a prediction; separable data with a tiny decay would run to
    # max_iter.
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-5,
        tolerance_change=1e-7,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(x @ weight.T + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def tuned_copy(
    model: Network,
    outputs: int,
    images: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    augmentation: Augmentation,
    epochs: int,
    lr: float,
    progress: bool = False,
    batch_size: int = 128,
) -> Network:
    """A copy of ``model`` with a fresh linear head of ``outputs`` logits, every layer trained on
    augmented batches of uint8 ``images`` (n, C, H, W) to minimise ``loss(logits, ids)`` (``ids``:
    the batch's rows of ``images``) by SGD (momentum 0.9, weight decay 5e-4, cosine); returned in
    eval mode. The head and the batches are seeded: the result does not depend on what ran
    before."""
    device = next(model.parameters()).device
    tuned = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tuned.head = Head(tuned.head.in_features, outputs, normalize=False).to(device)
    optimizer = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    # One generator orders the batches and draws their crops and flips.
    generator = torch.Generator().manual_seed(0)

    def batch_loss(ids: torch.Tensor) -> torch.Tensor:
        return loss(tuned(augmentation(images[ids].to(device), generator)), ids)

    fit_minibatches(
        optimizer,
        batch_loss,
        rows=torch.arange(len(images)),
        batch_size=batch_size,
        epochs=epochs,
        generator=generator,
        batching="even",
        label="finetune",
        progress=progress,
    )
    return tuned.eval()


def choose_on_val(
    options: Sequence[float], val_score: Callable[[float], float | None]
) -> tuple[float, dict[str, float | None]]:
    """The setting (a learning rate) a protocol refits on trainval with, and each option's val score
    keyed ``f"{option:g}"``: the one given when there is one (nothing scored: ``{}``), else the
    option of best ``val_score(option)`` (fit on train, scored on val), ties to the earlier. A score
    of None (no class scored) ranks with 0, below every positive one."""
    if len(options) == 1:
        return options[0], {}
    scores = {f"{option:g}": val_score(option) for option in options}
    return options[best_index([scores[f"{option:g}"] or -1.0 for option in options])], scores
