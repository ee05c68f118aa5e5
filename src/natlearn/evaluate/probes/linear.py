"""The linear probe on frozen features, and what every probe reports: its result and top-k
accuracy (the MLP probe is in :mod:`natlearn.evaluate.probes.mlp`, the k-NN in
:mod:`natlearn.evaluate.probes.knn`; the fits they share in :mod:`natlearn.evaluate.fit`).

Probes see training features and labels only; the test set is scored once, after every choice is
made.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from natlearn.config import resolve_device
from natlearn.evaluate.fit import (
    WEIGHT_DECAYS,
    best_index,
    cpu_threads,
    decay_walk,
    fit_lbfgs,
    fit_minibatches,
    standardiser,
)
from natlearn.evaluate.probes.protocols import Inputs, Probe
from natlearn.evaluate.probes.settings import ProbeResult

if TYPE_CHECKING:
    from natlearn.evaluate.probes.settings import EvalSettings
    from natlearn.models import Network


__all__ = ["linear_probe", "topk_accuracy"]


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float | None]:
    """(top-1, top-5) of (n, classes) scores; top-5 is None with 10 classes or fewer."""
    top1 = float((scores.argmax(dim=1) == labels).double().mean())
    if scores.shape[1] <= 10:
        return top1, None
    top5 = float((scores.topk(5, dim=1).indices == labels[:, None]).any(dim=1).double().mean())
    return top1, top5


def _held_out_split(n: int, fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    cut = max(1, int(n * fraction))
    return order[cut:], order[:cut]


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    solver: str = "auto",
    progress: bool = False,
    threads: int | None = None,
    device: torch.device | None = None,
) -> ProbeResult:
    """Multinomial logistic regression on standardised frozen features.

    The weight decay is chosen on training data only, then the classifier is scored once on the test
    set. Solvers: ``lbfgs`` (full batch, to convergence; decay by 3-fold cross-validation, then a
    refit on every training image; ``auto`` picks it while the features hold at most 5e7 numbers) or
    ``adam`` (mini-batches, ``epochs`` with cosine decay; every decay trained at once as one wide
    layer on 90% of the training set, the best on the other 10% kept; for 50,000 x 9,000 features).

    The L-BFGS search walks the decays from the largest down (the quickest fits first) and stops
    once two decays in a row score below the best so far
    (:data:`~natlearn.evaluate.fit.PATIENCE`): the decays it skips are the slowest fits, and they
    could only win if held-out accuracy rose again after falling twice. Otherwise its choice, and
    every number, is what trying every decay gives.

    Args:
        train_x: (n_train, f) features; train_y: (n_train,) int64 labels in [0, classes).
        test_x: (n_test, f) features; test_y: (n_test,) labels, used only for the final score.
        threads: CPU threads for the fit on features of more than 5e7 numbers (None: as set);
            smaller ones always fit on one (see :func:`~natlearn.evaluate.fit.cpu_threads`).
            Callers that run several probes at once pass their share.
        device: where it is fit (None: the GPU when one is visible).
    """
    device = device or resolve_device()
    standardise = standardiser(train_x)
    x = standardise(train_x).to(device)
    y = train_y.to(device)
    classes = int(train_y.max()) + 1
    if solver == "auto":
        solver = "lbfgs" if x.numel() <= 5e7 else "adam"
    single = x.numel() <= 5e7 and x.device.type == "cpu"
    with cpu_threads(1 if single else threads):
        final, best, scores = _choose_and_fit(
            x, y, classes, weight_decays, solver, epochs, batch_size, lr, progress
        )
    with torch.no_grad():
        test_scores = torch.cat(
            [final(standardise(chunk).to(device)).cpu() for chunk in test_x.split(4096)]
        )
    top1, top5 = topk_accuracy(test_scores, test_y)
    return ProbeResult(
        top1,
        top5,
        weight_decay=float(weight_decays[best]),
        held_out_top1=float(scores[best]),
        solver=solver,
    )


def _choose_and_fit(
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    weight_decays: Sequence[float],
    solver: str,
    epochs: int,
    batch_size: int,
    lr: float,
    progress: bool,
) -> tuple[nn.Linear, int, list[float]]:
    """The classifier of the weight decay chosen on training data, its index, and every decay's
    score."""
    device = x.device
    if solver == "lbfgs":
        # Small data: 3-fold cross-validation picks the decay (one held-out split is too noisy),
        # then refit on all. It runs for a single decay too: its score is what a layer is chosen by.
        folds = (
            torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device).chunk(3)
        )
        scores: list[float | None] = [None] * len(weight_decays)
        for i in decay_walk(weight_decays, scores):
            correct = 0
            for k, held in enumerate(folds):
                fit = torch.cat([f for j, f in enumerate(folds) if j != k])
                params = fit_lbfgs(x[fit], y[fit], classes, weight_decays[i])
                with torch.no_grad():
                    correct += int((_logits(x[held], params).argmax(dim=1) == y[held]).sum())
            scores[i] = correct / len(x)
        best = best_index(scores)
        # From zero, as every fit: most stop at max_iter short of the optimum, so a warm start would
        # end elsewhere (1 digit in 599 moved either way when it was tried).
        final = _linear(*fit_lbfgs(x, y, classes, weight_decays[best]))
    else:
        # Large data: every decay at once as one wide layer on 90%, the best on the other 10% is
        # kept.
        fit_idx, val_idx = _held_out_split(len(x))
        heads = len(weight_decays)
        layer = _fit_adam(x, y, fit_idx, classes, weight_decays, epochs, batch_size, lr, progress)
        with torch.no_grad():
            val_scores = layer(x[val_idx.to(device)]).view(len(val_idx), heads, classes)
            scores = (
                (val_scores.argmax(dim=2) == y[val_idx.to(device), None])
                .double()
                .mean(dim=0)
                .tolist()
            )
            best = best_index(scores)
            final = nn.utils.skip_init(nn.Linear, x.shape[1], classes, device=device)
            final.weight.copy_(layer.weight.view(heads, classes, -1)[best])
            final.bias.copy_(layer.bias.view(heads, classes)[best])
    return final, best, scores


def _logits(x: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    weight, bias = params
    return x @ weight.T + bias


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], device=weight.device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _fit_adam(
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    classes: int,
    weight_decays: Sequence[float],
    epochs: int,
    batch_size: int,
    lr: float,
    progress: bool,
    min_steps: int = 1000,
) -> nn.Linear:
    """All weight decays at once: a (heads * classes)-wide linear layer, each block with its own
    decay."""
    heads, device = len(weight_decays), x.device
    # nn.Linear's initialisation from seed 0, drawn from a generator of its own: probes run
    # concurrently, and only the MLP probe may use the global one.
    generator = torch.Generator().manual_seed(0)
    layer = nn.utils.skip_init(nn.Linear, x.shape[1], classes * heads)
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(x.shape[1])
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    layer = layer.to(device)
    decay = torch.tensor(weight_decays, device=device).repeat_interleave(classes)[:, None]

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device)
        logits = layer(x[batch]).view(len(batch), heads, classes)
        # Mean cross-entropy per head, summed over heads: each head is its own independent problem.
        targets = y[batch].repeat_interleave(heads)
        loss = F.cross_entropy(logits.reshape(-1, classes), targets) * heads
        return loss + 0.5 * (decay * layer.weight.pow(2)).sum()

    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    fit_minibatches(
        optimizer,
        batch_loss,
        rows,
        batch_size,
        epochs,
        torch.Generator().manual_seed(0),
        min_steps=min_steps,
        label="linear probe",
        progress=progress,
    )
    return layer


# The protocol (natlearn.evaluate.probes.protocols): a linear probe per layer.


def layers(settings: EvalSettings, network: Network) -> list[str]:
    """``settings.layers``, default every conv layer and the penultimate features (extracted with
    the probe off too: the other protocols' layers are taken from the same pass)."""
    return settings.layers or [*network.conv_names, "neck"]


def probes(inputs: Inputs) -> list[Probe]:
    settings = inputs.settings
    if not settings.linear:
        return []
    n, classes = len(inputs.train_y), inputs.classes()
    listed = []
    for layer, x in inputs.train.items():
        if inputs.network is None or settings.layers is None or layer in settings.layers:
            x_test = inputs.test[layer]
            run = functools.partial(
                _probe, x, inputs.train_y, x_test, inputs.test_y, settings, inputs.device
            )
            listed.append(Probe("linear", layer, x.shape[1], run, _cost(n, x.shape[1], classes)))
    return listed


def describe(settings: EvalSettings, network: Network | None) -> str | None:
    if not settings.linear:
        return None
    on = ["features"] if network is None else layers(settings, network)
    return f"linear on {', '.join(on)}"


def _probe(x, y, x_test, y_test, settings, device, threads) -> ProbeResult:
    return linear_probe(
        x,
        y,
        x_test,
        y_test,
        epochs=settings.probe_epochs,
        progress=settings.progress,
        threads=threads,
        device=device,
    )


def _cost(n: int, dims: int, classes: int) -> float:
    if n * dims <= 5e7:  # L-BFGS: about ten fits of 100 iterations
        return 2.5e-7 * n * dims * classes
    steps = max(1000, 30 * math.ceil(0.9 * n / 256))  # Adam: five heads at once
    return 2e-10 * steps * 256 * dims * classes * 5
