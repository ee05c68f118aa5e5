"""The probe suite: every protocol of the table (:mod:`natlearn.evaluate.probes.protocols`:
per-layer linear probes as DeepCluster, weighted k-NN, the paper's fc6-8 MLP on the last conv
layer, full fine-tuning) on one source's features, the probes run together (:func:`probe_all`).
What a source's features are is in :mod:`natlearn.evaluate.probes.scoring`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import torch

from natlearn.evaluate.probes.protocols import PROTOCOLS, Inputs, Probe
from natlearn.evaluate.probes.settings import ProbeResult
from natlearn.evaluate.uncertainty import with_error
from natlearn.progress import say, steps

__all__ = ["probe_all"]


MAX_CONCURRENT_PROBES = 4
"""Probes run at once on a CPU at most (each holds a standardised copy of its features)."""


def probe_all(inputs: Inputs) -> dict:
    """Every protocol of :data:`~natlearn.evaluate.probes.protocols.PROTOCOLS` on ``inputs``:
    the probes of frozen features first, listed protocol by protocol, then the protocols that train
    the network, one at a time. Results: protocol -> layer -> :meth:`ProbeResult.as_dict`.

    On a CPU the probes run at once, one thread each, on as many threads as torch is set to (at
    most :data:`MAX_CONCURRENT_PROBES`; the threads are shared out when fewer probes run): every
    core is busy without OpenMP threads waiting for each other at every small op. Each probe is
    deterministic on its own (only the MLP draws from the global RNG), so the results do not depend
    on the order they finish in. One line per probe reports its result and time."""
    settings = inputs.settings
    probes = [probe for protocol in PROTOCOLS for probe in protocol.probes(inputs)]
    found = {}
    done = steps(
        _run_probes(probes, inputs.device),
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
            f"features): {_describe(result, len(inputs.test_y))}, {seconds:.1f} s",
            settings.progress,
        )
    results: dict[str, dict[str, dict]] = {}
    for probe in probes:  # the order they were listed in, whichever finished first
        results.setdefault(probe.protocol, {})[probe.layer] = found[
            probe.protocol, probe.layer
        ].as_dict()
    for protocol in PROTOCOLS:
        trained = protocol.train(inputs)
        if trained:
            results[protocol.name] = {row: result.as_dict() for row, result in trained.items()}
    return results


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
    probes: list[Probe], device: torch.device
) -> Iterator[tuple[Probe, ProbeResult, float]]:
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

    def run(probe: Probe) -> tuple[Probe, ProbeResult, float]:
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
