"""Evaluate frozen features with the standard protocols: per-layer linear probes (DeepCluster), the
paper's fc6-8 MLP on the last conv layer, weighted k-NN, and optional full fine-tuning.

One function scores one representation (a network, or raw pixels); features are extracted once and
shared by every probe. Baselines (random init, supervised, raw pixels) go through the same code.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from natlearn.config import resolve_device
from natlearn.data import Augmentation, ImageData, ImageDataset, center_crop, eval_view
from natlearn.errors import NatlearnError
from natlearn.evaluate.features import image_features, network_features
from natlearn.evaluate.fit import fit_minibatches
from natlearn.evaluate.knn import knn_classify
from natlearn.evaluate.mlp import mlp_probe
from natlearn.evaluate.probes import ProbeResult, linear_probe, topk_accuracy
from natlearn.evaluate.uncertainty import with_error
from natlearn.files import atomic_write
from natlearn.markdown import table
from natlearn.models import Head, Network
from natlearn.progress import say, steps

__all__ = [
    "EvalSettings",
    "evaluate_network",
    "evaluate_handcrafted",
    "evaluate_pixels",
    "finetune",
    "tuned_copy",
    "write_eval",
    "format_eval",
]


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


def _probe_all(
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


def evaluate_network(
    model: Network,
    train_set: ImageData,
    test_set: ImageData,
    crop_size: int,
    settings: EvalSettings,
) -> dict:
    """Every protocol of ``settings`` on ``model``'s frozen features (train split fits, test split
    scores), on the model's device. A streamed folder is read a batch at a time, never whole."""
    if settings.finetune_epochs and not all(
        isinstance(data, ImageDataset) for data in (train_set, test_set)
    ):
        raise NatlearnError(
            "fine-tuning trains on images in memory, but the data is streamed from disk "
            "(data_mode=stream, or a folder over 4 GiB decoded); drop --finetune, or set "
            "data_mode=memory if the decoded folder fits in memory"
        )
    started = time.perf_counter()
    device = next(model.parameters()).device
    layers = list(
        dict.fromkeys([*(settings.layers or [*model.conv_names, "neck"]), *settings.knn_layers])
    )  # k-NN layers too
    wanted = list(dict.fromkeys([*layers, model.conv_names[-1]] if settings.mlp else layers))
    view = {"crop": settings.crop, "scale": settings.crop_scale, "progress": settings.progress}
    extracting = time.perf_counter()
    # Extracted once: every probe below shares these features. The labels follow the rows: a
    # stream with on_bad_image=skip leaves unreadable files out.
    (train, train_rows), (test, test_rows) = (
        network_features(
            model, data, wanted, crop_size, **view, desc=split, workers=settings.workers
        )
        for data, split in ((train_set, "train"), (test_set, "test"))
    )
    train_y, test_y = train_set.labels[train_rows], test_set.labels[test_rows]
    say(
        f"features of {len(train_y):,} train + {len(test_y):,} test images, "
        f"{len(wanted)} layer{'s' * (len(wanted) != 1)}: {time.perf_counter() - extracting:.1f} s",
        settings.progress,
    )
    last = model.conv_names[-1]
    hidden = settings.mlp_hidden or (4096 if model.arch == "alexnet" else 512)
    results = _probe_all(
        {k: train[k] for k in wanted},
        {k: test[k] for k in wanted},
        train_y,
        test_y,
        settings,
        list(settings.knn_layers),
        device,
        mlp=(last, hidden) if settings.mlp else None,
    )
    if settings.finetune_epochs:
        tuned = finetune(
            model,
            train_set,
            test_set,
            crop_size,
            settings.finetune_epochs,
            settings.progress,
            flip=settings.flip,
        )
        results["finetune"] = {"all": tuned.as_dict()}
    return {"protocols": results, "seconds": time.perf_counter() - started}


def evaluate_pixels(
    train_set: ImageData,
    test_set: ImageData,
    crop_size: int,
    settings: EvalSettings,
    device: torch.device | None = None,
) -> dict:
    """Raw pixels of the centre crop as features: the floor any representation should clear.
    ``device``: where the views are cut and the probes run (None: the GPU when one is visible)."""
    started = time.perf_counter()
    device = device or resolve_device()

    def pixels(images: torch.Tensor) -> dict[str, torch.Tensor]:
        view = eval_view(images, crop_size, settings.crop, settings.crop_scale)
        return {"pixels": view.flatten(1).cpu()}

    (train_x, train_rows), (test_x, test_rows) = (
        image_features(data, pixels, device, workers=settings.workers)
        for data in (train_set, test_set)
    )
    train_y, test_y = train_set.labels[train_rows], test_set.labels[test_rows]
    return _evaluate_fixed(
        "pixels", train_x["pixels"], test_x["pixels"], train_y, test_y, settings, device, started
    )


def evaluate_handcrafted(
    train_set: ImageData,
    test_set: ImageData,
    crop_size: int,
    settings: EvalSettings,
    device: torch.device | None = None,
) -> dict:
    """The paper's hand-crafted comparison in its strong, published form: Coates & Ng's k-means
    features (:mod:`natlearn.evaluate.handcrafted`, with its ``SETTINGS``), normalisation,
    whitening and centres fit on training images only. ``device``: where the features are
    computed and the probes run (None: the GPU when one is visible)."""
    from natlearn.evaluate import handcrafted

    started = time.perf_counter()
    device = device or resolve_device()
    options = handcrafted.SETTINGS
    (train_x, train_rows), (test_x, test_rows) = handcrafted.coates_ng(
        train_set,
        test_set,
        crop_size,
        settings.crop,
        settings.crop_scale,
        device,
        settings.workers,
        **options,
    )
    train_y, test_y = train_set.labels[train_rows], test_set.labels[test_rows]
    say(
        f"hand-crafted: {len(train_x) + len(test_x):,} images -> {train_x.shape[1]:,} features, "
        f"{time.perf_counter() - started:.1f} s",
        settings.progress,
    )
    results = _evaluate_fixed("kmeans", train_x, test_x, train_y, test_y, settings, device, started)
    results["features"] = (
        f"Coates & Ng k-means features: {options['patch']}x{options['patch']} patches at stride "
        f"1, brightness/contrast normalised, ZCA-whitened, {options['centroids']:,} k-means "
        f"centres fit on {options['patches']:,} patches of train images only, triangle "
        f"encoding, sum-pooled over 4 quadrants: {train_x.shape[1]:,} features"
    )
    return results


def _evaluate_fixed(
    name: str,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    train_y: torch.Tensor,
    test_y: torch.Tensor,
    settings: EvalSettings,
    device: torch.device,
    started: float,
) -> dict:
    """Fixed (n, f) features of no network (raw pixels, hand-crafted) probed alike: the linear
    probe and k-NN on ``name``; no MLP (it probes a conv map) and nothing to fine-tune."""
    settings = dataclasses.replace(settings, layers=[name])
    results = _probe_all({name: train_x}, {name: test_x}, train_y, test_y, settings, [name], device)
    return {"protocols": results, "seconds": time.perf_counter() - started}


def finetune(
    model: Network,
    train_set: ImageDataset,
    test_set: ImageDataset,
    crop_size: int,
    epochs: int,
    progress: bool = False,
    lr: float = 0.01,
    flip: bool = True,
) -> ProbeResult:
    """Full fine-tuning: a copy of the network with a fresh linear classifier, every layer trained
    on the labels with random crops (and flips when ``flip``; data whose orientation carries meaning
    turns them off) (SGD, momentum 0.9, cosine), scored on centre crops."""
    device = next(model.parameters()).device
    augmentation = Augmentation(crop_size, "pad", max(1, crop_size // 8), flip=flip)

    def loss(outputs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, train_set.labels[ids].to(device))

    tuned = tuned_copy(
        model, len(train_set.classes), train_set.images, loss, augmentation, epochs, lr, progress
    )
    with torch.inference_mode():
        scores = torch.cat(
            [
                tuned(center_crop(chunk.to(device), crop_size)).cpu()
                for chunk in test_set.images.split(512)
            ]
        )
    top1, top5 = topk_accuracy(scores, test_set.labels)
    return ProbeResult(top1, top5)


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


def format_eval(results: dict) -> str:
    """Markdown: one row per layer, one column per protocol (top-1 ± its standard error, and top-5
    where measured)."""
    protocols = results["protocols"]
    layers = list(dict.fromkeys(layer for scores in protocols.values() for layer in scores))

    def cells(layer: str) -> list[str]:
        return [
            layer,
            *(
                _cell(name, scores.get(layer), results["test_images"])
                for name, scores in protocols.items()
            ),
        ]

    return (
        table(["layer", *protocols], [cells(layer) for layer in layers])
        + "\n\n(top-1 ± its binomial standard error over the "
        + f"{results['test_images']:,} test images)"
    )


def _cell(protocol: str, row: dict | None, test_images: int) -> str:
    if row is None:
        return ""
    top5 = f" / {row['top5']:.4f}" if "top5" in row else ""
    # A k-NN with fewer training images than its k says how many voted.
    used_k = f" (k={row['k']})" if "k" in row and protocol != f"knn{row['k']}" else ""
    return f"{with_error(row['top1'], test_images)}{top5}{used_k}"


def write_eval(out: Path, results: dict) -> None:
    """``out/eval.json`` and ``out/eval.md``, written atomically."""
    out = Path(out)
    atomic_write(
        out / "eval.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n")
    )
    title = f"# Evaluation of {results.get('model', 'a model')}\n\n{results.get('setup', '')}\n\n"
    atomic_write(out / "eval.md", lambda tmp: tmp.write_text(title + format_eval(results) + "\n"))
