"""``natlearn transfer voc07``'s run: each source's network (a checkpoint's, or a random init)
through the classification protocols and, when asked, detection on VOC2007, its results written
after every source so that a crash keeps the finished ones."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from natlearn.choices import RANDOM_INIT
from natlearn.config import Config
from natlearn.data import ImageDataset
from natlearn.data.voc import VOC07, decode_images, read_voc07
from natlearn.errors import NatlearnError
from natlearn.evaluate.sources import run_folder
from natlearn.evaluate.voc.classification import ClassifySettings, classification_transfer
from natlearn.evaluate.voc.detection import voc07_detection
from natlearn.evaluate.voc.detector import DetectionSettings
from natlearn.evaluate.voc.results import write_transfer
from natlearn.models import Network, build_model, initial_model
from natlearn.models.registry import arch_spec
from natlearn.progress import say
from natlearn.training.checkpoint import checkpoint_file, load_checkpoint, network_from_state

__all__ = ["transfer_image_size", "voc07_transfer"]


def transfer_image_size(given: int, config: Config, spec: dict | None, source: str) -> int:
    """image_size= when given; else the architecture's transfer size (224 for AlexNet/ResNets,
    :class:`~natlearn.models.registry.ArchSpec`), else the training crop size."""
    if given:
        return given
    if arch_spec(config.arch).transfer_size:
        return arch_spec(config.arch).transfer_size
    size = spec["image_size"] if spec is not None else config.crop_size or config.image_size
    if not size:
        raise NatlearnError(
            f"{source}: arch={config.arch} has no training crop size to resize VOC images to; "
            "give image_size=N (e.g. 32), or a checkpoint to take it from"
        )
    return size


def _network(state: dict | None, config: Config, spec: dict | None, train_images) -> Network:
    """The network of a transfer source: a checkpoint's (its loaded ``state``), or for random-init
    (``state`` None) a random init of ``config``, shaped as the first checkpoint's (``spec``) when
    one is compared, else for the VOC train images (``train_images()``: (n, 3, S, S) uint8, whose
    statistics its input layer normalises with)."""
    if state is not None:
        return network_from_state(state)
    if spec is not None:
        torch.manual_seed(config.seed)
        return build_model(config, spec).eval()
    images = ImageDataset.from_images(train_images(), None, [], "VOC train images")
    return initial_model(config, images).eval()


def voc07_transfer(
    sources: Sequence[str],
    configs: dict[str, Config],
    spec: dict | None,
    settings: ClassifySettings,
    detect: DetectionSettings | None,
    detect_lrs: Sequence[float],
    *,
    task: str,
    root: str,
    download: bool,
    image_size: int,
    device: torch.device,
    out: Path,
) -> dict:
    """Every source (its config in ``configs``, checked) by the ``task`` (``classify``, ``detect``
    or ``both``) on VOC2007 in ``root``, written to ``out/transfer.json`` and ``transfer.md``.

    Args:
        spec: the network of the first checkpoint among the sources (None: none), which a
            random-init source is shaped as.
        image_size: the side VOC images are resized to (0: :func:`transfer_image_size`'s choice).
        detect: the detection settings (None: no detection); ``detect_lrs`` its learning rates.
    """
    data = read_voc07(root, download)
    results = _header(data, settings, task, root)
    decoded: dict = {}
    for index, source in enumerate(sources):
        started, config = time.perf_counter(), configs[source]
        name = f"{index}-{run_folder(source, Path(source)).name}"
        say(f"transfer [{index + 1}/{len(sources)}]: {source}", settings.progress)
        state = None if source == RANDOM_INIT else load_checkpoint(source)
        own = None if state is None else state["network"]
        size = transfer_image_size(image_size, config, own or spec, source)
        channels = (own or spec or {"channels": 3})["channels"]
        images = decoded.setdefault((size, channels), {})

        def train_images(images=images, size=size, channels=channels):
            if "train" not in images:
                images["train"] = decode_images(
                    data.train, size, channels, settings.progress, "train"
                )
            return images["train"]

        model = _network(state, config, spec, train_images).to(device)
        entry = _entry(source, config, size)
        results["sources"][name] = entry
        if task in ("classify", "both"):
            entry.update(classification_transfer(model, data, size, settings, images))
            write_transfer(out, results)  # now: a failure in detection keeps these
        if detect is not None:
            entry["detection"] = voc07_detection(model, data, detect, detect_lrs, settings.progress)
        entry["seconds_total"] = time.perf_counter() - started
        write_transfer(out, results)  # after each source: a crash keeps the finished ones
        took = f"{entry['seconds_total']:.0f} s"
        say(f"transfer [{index + 1}/{len(sources)}]: {source} done, {took}", settings.progress)
    return results


def _header(data: VOC07, settings: ClassifySettings, task: str, root: str) -> dict:
    """The results before any source: the data as found, the settings and the protocol."""
    counts = {name: len(getattr(data, name)) for name in ("train", "val", "test")}
    return {
        "benchmark": "voc07",
        "task": task,
        "data_root": str(root),
        "classes": list(data.classes),
        "images": counts,
        "settings": {**dataclasses.asdict(settings), "progress": None},
        "setup": (
            f"VOC2007 in {root}: {counts['train']:,} train, {counts['val']:,} val, "
            f"{counts['test']:,} test images, {len(data.classes)} classes. Every choice (weight "
            "decay, learning rate) made on val after fitting on train; the final fit on trainval "
            "(train + val); test scored once. AP11: VOC2007 11-point interpolated AP (the "
            "paper's); AP all: VOC2010+ all-point AP; classes without a test positive are left "
            "out of the mean."
        ),
        "sources": {},
    }


def _entry(source: str, config: Config, size: int) -> dict:
    """What a source's results say about it before its protocols run."""
    entry = {
        "model": source,
        "arch": config.arch,
        "input": config.input,
        "objective": "none (untrained)" if source == RANDOM_INIT else config.objective,
        "image_size": size,
        "setup": f"{source}: {config.arch}, {config.input} input, images resized to {size}x{size}",
    }
    if source != RANDOM_INIT:
        entry["checkpoint"] = str(checkpoint_file(source))
    return entry
