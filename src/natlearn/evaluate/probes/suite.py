"""The probe suite: what an evaluation runs (:class:`EvalSettings`) and the protocols on frozen
features, per-layer linear probes (DeepCluster), the paper's fc6-8 MLP on the last conv layer and
weighted k-NN, listed per layer and run together (:func:`probe_all`). Full fine-tuning, which
trains the network itself, is in :mod:`natlearn.evaluate.probes.finetune`; what a source's features
are, in :mod:`natlearn.evaluate.probes.scoring`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import torch

from natlearn.evaluate.probes.knn import knn_classify
from natlearn.evaluate.probes.linear import ProbeResult, linear_probe
from natlearn.evaluate.probes.mlp import mlp_probe
from natlearn.evaluate.uncertainty import with_error
from natlearn.progress import say, steps

__all__ = ["EvalSettings", "probe_all"]


@dataclass
class EvalSettings:
    """What to run. ``layers=None``: every conv layer and the penultimate features (``neck``) for
    the linear probe; k-NN runs on ``knn_layers`` only (default the penultimate features, as DINO's
    k-NN does: on 9k-dim conv features it would cost minutes per layer on a CPU)."""

    layers: list[str] | None = None
    linear: bool = True
    knn: tuple[int, ...] = (20, 200)
    knn_layers: tuple[str, ...] = ("neck",)
    mlp: bool = True
    mlp_hidden: int = 0  # 0: 4096 for AlexNet (the paper's fc6-7), 512 for small networks
    probe_epochs: int = 30
    finetune_epochs: int = 0
    # How the network was trained (its config's crop, crop_scale, flip): features are taken from the
    # matching deterministic view (:func:`natlearn.data.eval_view`), and fine-tuning flips only if
    # training did.
    crop: str = "pad"
    crop_scale: float = 0.25
    flip: bool = True
    progress: bool = True
    workers: int = 2  # DataLoader processes reading a streamed folder (the config's ``workers``)

    def matching(self, config) -> EvalSettings:
        """These settings with the view, flips and stream workers of the training ``config``."""
        return dataclasses.replace(
            self,
            crop=config.crop,
            crop_scale=config.crop_scale,
            flip=config.flip,
            workers=config.workers,
        )


@dataclass(frozen=True)
class _Probe:
    """One probe of one layer's features: what it is, how to run it on ``threads`` CPU threads
    (None: the probe's own choice), and a rough cost (seconds on one core) to start the longest
    first."""

    protocol: str
    layer: str
    features: int
    run: Callable[[int | None], ProbeResult]
    cost: float


MAX_CONCURRENT_PROBES = 4
"""Probes run at once on a CPU at most (each holds a standardised copy of its features)."""


def probe_all(
    train: dict,
    test: dict,
    train_y: torch.Tensor,
    test_y: torch.Tensor,
    settings: EvalSettings,
    knn_layers: list[str],
    device: torch.device,
    mlp: tuple[str, int] | None = None,
) -> dict:
    """Linear probes on ``settings.layers``' features (every key of ``train`` but k-NN-only ones),
    k-NN on ``knn_layers``, and the MLP probe on ``mlp`` = (layer, hidden width) when given, all
    on ``device``.

    On a CPU the probes run at once, one thread each, on as many threads as torch is set to (at
    most :data:`MAX_CONCURRENT_PROBES`; the threads are shared out when fewer probes run): every
    core is busy without OpenMP threads waiting for each other at every small op. Each probe is
    deterministic on its own (only the MLP draws from the global RNG), so the results do not depend
    on the order they finish in. One line per probe reports its result and time."""
    n, classes = len(train_y), int(train_y.max()) + 1
    probes: list[_Probe] = []
    for layer in train:
        x, x_test, dims = train[layer], test[layer], train[layer].shape[1]
        if settings.linear and (
            settings.layers is None or layer in settings.layers or layer == "pixels"
        ):
            run = functools.partial(
                _linear,
                x,
                train_y,
                x_test,
                test_y,
                settings.probe_epochs,
                settings.progress,
                device,
            )
            probes.append(_Probe("linear", layer, dims, run, _linear_cost(n, dims, classes)))
        for k in settings.knn if layer in knn_layers else ():
            run = functools.partial(_knn, x, train_y, x_test, test_y, k, device)
            probes.append(_Probe(f"knn{k}", layer, dims, run, 1e-9 * n * len(x_test) * dims))
    if mlp is not None:
        layer, hidden = mlp
        x, dims = train[layer], train[layer].shape[1]
        run = functools.partial(
            _mlp,
            x,
            train_y,
            test[layer],
            test_y,
            hidden,
            settings.probe_epochs,
            settings.progress,
            device,
        )
        probes.append(_Probe("mlp", layer, dims, run, _mlp_cost(n, dims, hidden, classes)))
    found = {}
    done = steps(
        _run_probes(probes, device),
        "probes",
        len(probes),
        settings.progress,
        every=math.inf,
        unit="probes",
    )
    for count, (probe, result, seconds) in enumerate(done, start=1):
        found[probe.protocol, probe.layer] = result
        say(
            f"[{count}/{len(probes)}] {probe.protocol} {probe.layer} ({probe.features:,} "
            f"features): {_describe(result, len(test_y))}, {seconds:.1f} s",
            settings.progress,
        )
    results: dict[str, dict[str, dict]] = {}
    for probe in probes:  # the order they were listed in, whichever finished first
        results.setdefault(probe.protocol, {})[probe.layer] = found[
            probe.protocol, probe.layer
        ].as_dict()
    return results


def _linear(x, y, x_test, y_test, epochs, progress, device, threads) -> ProbeResult:
    return linear_probe(
        x, y, x_test, y_test, epochs=epochs, progress=progress, threads=threads, device=device
    )


def _knn(x, y, x_test, y_test, k, device, threads) -> ProbeResult:
    return knn_classify(x, y, x_test, y_test, k=k, device=device)


def _mlp(x, y, x_test, y_test, hidden, epochs, progress, device, threads) -> ProbeResult:
    return mlp_probe(x, y, x_test, y_test, hidden, epochs, progress=progress, device=device)


def _linear_cost(n: int, dims: int, classes: int) -> float:
    if n * dims <= 5e7:  # L-BFGS: about ten fits of 100 iterations
        return 2.5e-7 * n * dims * classes
    steps = max(1000, 30 * math.ceil(0.9 * n / 256))  # Adam: five heads at once
    return 2e-10 * steps * 256 * dims * classes * 5


def _mlp_cost(n: int, dims: int, hidden: int, classes: int) -> float:
    steps = max(500, 30 * n // 256)
    return 1e-10 * steps * 256 * (dims * hidden + hidden * hidden + hidden * classes)


def _describe(result: ProbeResult, test_images: int) -> str:
    text = f"top-1 {with_error(result.top1, test_images)}" + (
        f", top-5 {result.top5:.4f}" if result.top5 else ""
    )
    if result.weight_decay is not None:
        decay, held_out = result.weight_decay, result.held_out_top1
        text += f" (weight decay {decay:g}, held-out train {held_out:.4f})"
    if result.k is not None:
        text += f" (k={result.k})"
    return text


def _run_probes(
    probes: list[_Probe], device: torch.device
) -> Iterator[tuple[_Probe, ProbeResult, float]]:
    """(probe, result, seconds) of every probe, as they finish. Several at once on a CPU, the
    costliest first (the longest-processing-time rule: the last to finish is a short one)."""
    cores = torch.get_num_threads()
    workers = min(cores, len(probes), MAX_CONCURRENT_PROBES) if device.type == "cpu" else 1
    if workers <= 1:  # one at a time, each on the threads it chooses (a GPU runs them in turn)
        for probe in probes:
            started = time.perf_counter()
            yield probe, probe.run(None), time.perf_counter() - started
        return
    threads = max(1, cores // workers)

    def run(probe: _Probe) -> tuple[_Probe, ProbeResult, float]:
        started = time.perf_counter()
        torch.set_num_threads(threads)  # this worker thread's own setting
        return probe, probe.run(threads), time.perf_counter() - started

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe")
    try:
        futures = [pool.submit(run, probe) for probe in sorted(probes, key=lambda p: -p.cost)]
        for future in as_completed(futures):
            yield future.result()
    finally:  # all done, or an error or interrupt: start no more probes, report it now
        pool.shutdown(wait=False, cancel_futures=True)
        torch.set_num_threads(cores)
