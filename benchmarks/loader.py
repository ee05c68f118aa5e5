"""Does the input pipeline keep up with training? Loader images/s alone vs training-step images/s.

    python benchmarks/loader.py            # CIFAR-10 train (../shared/data/cifar10), batch 256,
                                           # ~3 minutes on 2 cores
    python benchmarks/loader.py --quick    # digits, prints only

Measures: decoding the folder into memory (cold, into an empty cache) and loading it again (warm,
from the cache); the loader alone (gather a batch + random crop + flip, both crop modes) over a full
epoch; and NAT training steps (forward, re-assignment, loss, backward, SGD) on the same batches.
Writes benchmarks/results/loader.json and its section of docs/benchmarks.md.
Goal: loader >= 5x the step.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import time

import torch

# benchmarks/ is on sys.path when run as a script
from _report import cifar10_folder, cifar10_option, hardware, today, write_json, write_section
from natlearn.config import Config
from natlearn.data import Augmentation, load_split
from natlearn.markdown import table
from natlearn.training.run import build_run
from natlearn.training.trainer import train_step


def timed_load(config: Config, cache_dir: str) -> tuple[object, float]:
    os.environ["NATLEARN_CACHE"] = cache_dir
    start = time.perf_counter()
    dataset = load_split(config, "pretrain")
    return dataset, time.perf_counter() - start


def loader_images_per_s(dataset, config: Config, crop: str, epochs: int = 2) -> float:
    device = torch.device("cpu")
    count, start = 0, time.perf_counter()
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(epoch)
        order = torch.randperm(len(dataset), generator=generator)
        batch_ids = torch.tensor_split(order, math.ceil(len(dataset) / config.batch_size))
        augment = Augmentation.from_config(
            dataclasses.replace(config, crop=crop), dataset.image_size
        )
        for _, images in dataset.batches(batch_ids, device):
            augment(images, generator)
            count += len(images)
    return count / (time.perf_counter() - start)


def step_images_per_s(dataset, config: Config, steps: int) -> float:
    run = build_run(dataclasses.replace(config, crop="pad"), dataset)
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randperm(len(dataset), generator=generator)[: config.batch_size]
        for _ in range(steps + 2)
    ]
    inputs = [run.augment(dataset.images[ids], generator) for ids in batches]
    run.model.train()
    for index, (ids, x) in enumerate(zip(batches, inputs, strict=True)):
        if index == 2:  # two warm-up steps
            start = time.perf_counter()
        train_step(run, ids, x, (0, len(ids)), epoch=0)
    return steps * config.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="digits, a few steps; writes nothing")
    cifar10_option(parser)
    args = parser.parse_args()
    cifar = cifar10_folder(args.cifar10, args.quick)
    if cifar is None:
        config, steps, name = (
            Config(data="digits", batch_size=128, widths=(16, 32, 64), dim=32),
            5,
            "digits",
        )
    else:
        config = Config(
            data=str(cifar), crop_padding=4, widths=(32, 64, 128, 128), dim=128, batch_size=256
        )
        steps, name = 20, "CIFAR-10 (JPEG q75 copy) train, 50,000 images"
    config = dataclasses.replace(config, progress=False)
    with tempfile.TemporaryDirectory() as cache:
        dataset, cold = timed_load(config, cache)
        _, warm = timed_load(config, cache)
    loader = {crop: loader_images_per_s(dataset, config, crop) for crop in ("pad", "resized")}
    step = step_images_per_s(dataset, config, steps)
    ratios = {crop: value / step for crop, value in loader.items()}
    print(f"load: cold {cold:.1f} s, warm {warm:.2f} s; step {step:.0f} img/s")
    for crop in loader:
        print(
            f"loader ({crop} crop): {loader[crop]:.0f} img/s = "
            f"{ratios[crop]:.0f} x the training step"
        )
    if args.quick:
        return
    payload = {
        "date": today(),
        "hardware": hardware(),
        "data": name,
        "batch_size": config.batch_size,
        "network": "small conv net 32-64-128-128, sobel input, d=128",
        "load_seconds": {"cold": cold, "warm": warm},
        "loader_images_per_s": loader,
        "step_images_per_s": step,
        "loader_over_step": ratios,
    }
    write_json("loader", payload)
    lines = [
        "## Input pipeline vs training step (`python benchmarks/loader.py`)",
        "",
        f"{today()}, {hardware()}. Data: {name}; batch {config.batch_size}; {payload['network']}; "
        f"training step = forward, NAT re-assignment, square loss, backward, SGD ({steps} steps "
        "after 2 warm-up steps). JSON: `benchmarks/results/loader.json`.",
        "",
        table(
            ["what", "images/s", "/ training step"],
            [
                *(
                    [
                        f"loader: gather batch + {crop} crop + flip (whole batch, 2 epochs)",
                        f"{loader[crop]:,.0f}",
                        f"{ratios[crop]:.0f}x",
                    ]
                    for crop in loader
                ),
                ["training step", f"{step:,.0f}", "1x"],
            ],
        ),
        "",
        f"Decoding the 50,000 JPEGs into memory: {cold:.1f} s the first time (2 threads), "
        f"{warm:.2f} s from the cache afterwards (a uint8 tensor file keyed by the folder's "
        "content). Goal: loader >= 5x the step.",
    ]
    write_section("loader", "\n".join(lines))


if __name__ == "__main__":
    main()
