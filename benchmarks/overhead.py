"""What NAT costs on top of supervised training of the same network, data and batch.

    python benchmarks/overhead.py            # ~3 minutes on 2 CPU cores
    python benchmarks/overhead.py --quick    # smoke run, prints only

Measures (1) epoch time of NAT with re-assignment, NAT without, and supervised cross-entropy, on the
same small conv net, data and batch size; (2) milliseconds of one batch re-assignment (target generation
+ Hungarian) at b = 256 and 1024; (3) bytes of NAT state per image. Writes
benchmarks/results/overhead.json and its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import torch

from _report import ROOT, hardware, today, write_json, write_section  # benchmarks/ is on sys.path when run as a script
from natlearn.assignment import Assignment
from natlearn.config import Config
from natlearn.targets import NoiseTargets
from natlearn.train import train

OFFICIAL = "nat, official schedule (1 re-assignment epoch in 3)"
CIFAR_TEST = ROOT.parent / "shared" / "data" / "cifar10" / "test"


def epoch_seconds(config: Config, epochs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        history = train(dataclasses.replace(config, out=out, epochs=epochs)).history
    return [row["seconds"] for row in history[1:]]  # the first epoch pays one-off warm-up costs


def reassign_ms(n: int, b: int, d: int, repeats: int) -> dict:
    targets = NoiseTargets(k=n, d=d, seed=0)
    assignment = Assignment(n, seed=0)
    generator = torch.Generator().manual_seed(0)
    total, generate = [], []
    for _ in range(repeats):
        ids = torch.randperm(n, generator=generator)[:b]
        outputs = torch.nn.functional.normalize(torch.randn(b, d, generator=generator), dim=1)
        start = time.perf_counter()
        targets[assignment[ids]]
        generate.append(time.perf_counter() - start)
        start = time.perf_counter()
        assignment.reassign(ids, outputs, targets)
        total.append(time.perf_counter() - start)
    return {"b": b, "d": d, "reassign_ms": 1000 * statistics.median(total), "target_generation_ms": 1000 * statistics.median(generate)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run on digits; writes nothing")
    args = parser.parse_args()

    if args.quick or not CIFAR_TEST.is_dir():
        data, epochs, batch = "digits", 3, 128
    else:
        data, epochs, batch = str(CIFAR_TEST), 4, 256
    base = Config(data=data, widths=(32, 64, 128, 128), dim=128, batch_size=batch, progress=False, lr_schedule="constant")
    runs = {
        "nat, re-assign every batch": dataclasses.replace(base, reassign_every=1),
        "nat, no re-assignment epoch": dataclasses.replace(base, reassign_every=0),
        "supervised cross-entropy": dataclasses.replace(base, objective="supervised"),
    }
    seconds = {name: statistics.median(epoch_seconds(config, epochs)) for name, config in runs.items()}
    supervised = seconds["supervised cross-entropy"]
    # Official schedule: one re-assignment epoch in three.
    official = (seconds["nat, re-assign every batch"] + 2 * seconds["nat, no re-assignment epoch"]) / 3
    ratios = {name: value / supervised for name, value in seconds.items()}
    ratios[OFFICIAL] = official / supervised

    repeats = 5 if args.quick else 30
    assignment = [reassign_ms(50_000, b, d, repeats) for b in (256, 1024) for d in (128, 2048)]
    state = Assignment(1_281_167, seed=0)
    state_bytes = {
        "n": 1_281_167,
        "assignment_bytes_per_image": state.nbytes() / state.n,
        "target_table_bytes_per_image_avoided": 2048 * 4,
    }
    payload = {
        "date": today(), "hardware": hardware(), "data": data, "batch_size": batch,
        "network": "small conv net 32-64-128-128, sobel input, d=128",
        "epoch_seconds": seconds, "ratio_to_supervised": ratios, "assignment": assignment, "state": state_bytes,
    }  # fmt: skip
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.3f} x supervised epoch time")
    for row in assignment:
        print(f"b={row['b']} d={row['d']}: re-assign {row['reassign_ms']:.1f} ms (targets {row['target_generation_ms']:.1f} ms)")
    if args.quick:
        return
    write_json("overhead", payload)
    images = "CIFAR-10 (JPEG q75 copy) test split, 10,000 images" if data != "digits" else "digits"
    lines = [
        "## NAT overhead vs supervised training (`python benchmarks/overhead.py`)",
        "",
        f"{today()}, {hardware()}. Data: {images}, batch {batch}, {payload['network']}; median epoch time over "
        f"{epochs - 1} epochs after a warm-up epoch. JSON: `benchmarks/results/overhead.json`.",
        "",
        "| run | epoch seconds | / supervised |",
        "|---|---|---|",
        *(f"| {name} | {seconds[name]:.2f} | {ratios[name]:.3f} |" for name in seconds),
        f"| {OFFICIAL} | {official:.2f} | {ratios[OFFICIAL]:.3f} |",
        "",
        "One batch re-assignment (n = 50,000; target generation for the batch + scipy `linear_sum_assignment`):",
        "",
        "| b | d | re-assign ms | of which target generation ms |",
        "|---|---|---|---|",
        *(f"| {r['b']} | {r['d']} | {r['reassign_ms']:.1f} | {r['target_generation_ms']:.1f} |" for r in assignment),
        "",
        f"NAT state for n = 1,281,167 (ImageNet): {state_bytes['assignment_bytes_per_image']:.0f} bytes per image (the int64 "
        f"permutation; targets are regenerated from their index), instead of {state_bytes['target_table_bytes_per_image_avoided']:,} "
        "bytes per image for an n x d float32 target table at d = 2048 (10.5 GB).",
    ]
    write_section("overhead", "\n".join(lines))


if __name__ == "__main__":
    main()
