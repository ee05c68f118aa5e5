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


def epoch_seconds(config: Config) -> float:
    """Seconds of the second epoch of a fresh run (the first pays one-off warm-up costs)."""
    with tempfile.TemporaryDirectory() as out:
        return train(dataclasses.replace(config, out=out, epochs=2)).history[-1]["seconds"]


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
        data, rounds, batch, images = "digits", 1, 128, 1198
    else:
        data, rounds, batch, images = str(CIFAR_TEST), 3, 256, 10_000
    base = Config(data=data, widths=(32, 64, 128, 128), dim=128, batch_size=batch, progress=False, lr_schedule="constant")
    runs = {
        "nat, re-assign every batch": dataclasses.replace(base, reassign_every=1),
        "nat, no re-assignment epoch": dataclasses.replace(base, reassign_every=0),
        "supervised cross-entropy": dataclasses.replace(base, objective="supervised"),
    }
    # Round-robin repeats, so drift in the machine's speed hits every run alike.
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, config in runs.items():
            samples[name].append(epoch_seconds(config))
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    # Official schedule: one re-assignment epoch in three.
    seconds[OFFICIAL] = (seconds["nat, re-assign every batch"] + 2 * seconds["nat, no re-assignment epoch"]) / 3
    supervised = seconds["supervised cross-entropy"]
    ratios = {name: value / supervised for name, value in seconds.items()}

    repeats = 5 if args.quick else 30
    assignment = [reassign_ms(50_000, b, d, repeats) for b in (256, 1024) for d in (128, 2048)]
    # The same overhead from its parts: NAT's own work per step over the supervised step time.
    step_ms = 1000 * supervised / -(-images // batch)
    own = next(row for row in assignment if row["b"] == 256 and row["d"] == 128)
    estimate = {
        "supervised_step_ms": step_ms,
        "reassign_epoch_ratio": 1 + own["reassign_ms"] / step_ms,
        "plain_epoch_ratio": 1 + own["target_generation_ms"] / step_ms,
    }
    estimate["official_schedule_ratio"] = (estimate["reassign_epoch_ratio"] + 2 * estimate["plain_epoch_ratio"]) / 3
    state = Assignment(1_281_167, seed=0)
    state_bytes = {"n": state.n, "assignment_bytes_per_image": state.nbytes() / state.n, "target_table_bytes_per_image_avoided": 2048 * 4}
    for name, ratio in ratios.items():
        print(f"{name}: {seconds[name]:.2f} s/epoch, {ratio:.3f} x supervised (samples {samples.get(name)})")
    official_estimate = estimate["official_schedule_ratio"]
    print(f"from parts: step {step_ms:.0f} ms; re-assign epochs {estimate['reassign_epoch_ratio']:.3f}, official {official_estimate:.3f}")
    for row in assignment:
        print(f"b={row['b']} d={row['d']}: re-assign {row['reassign_ms']:.1f} ms (targets {row['target_generation_ms']:.1f} ms)")
    if args.quick:
        return
    network = "small conv net 32-64-128-128, sobel input, d=128"
    payload = {
        "date": today(), "hardware": hardware(), "data": data, "batch_size": batch, "network": network, "rounds": rounds,
        "epoch_seconds": seconds, "epoch_seconds_samples": samples, "ratio_to_supervised": ratios,
        "ratio_from_parts": estimate, "assignment": assignment, "state": state_bytes,
    }  # fmt: skip
    write_json("overhead", payload)
    spread = {name: f"{min(v):.2f}-{max(v):.2f}" for name, v in samples.items()}
    lines = [
        "## NAT overhead vs supervised training (`python benchmarks/overhead.py`)",
        "",
        f"{today()}, {hardware()}. Data: CIFAR-10 (JPEG q75 copy) test split, {images:,} images, batch {batch}, {network}. "
        f"Each run: the second epoch of a fresh 2-epoch run; {rounds} round-robin repeats, median (range). "
        "JSON: `benchmarks/results/overhead.json`.",
        "",
        "| run | epoch seconds | / supervised |",
        "|---|---|---|",
        *(f"| {name} | {seconds[name]:.2f} ({spread[name]}) | {ratios[name]:.3f} |" for name in samples),
        f"| {OFFICIAL} | {seconds[OFFICIAL]:.2f} | {ratios[OFFICIAL]:.3f} |",
        "",
        "Epoch times on this shared 2-core machine vary by about 10% from run to run, more than NAT's own cost, so the "
        "same ratio is also computed from its parts: NAT's work per step (below) over the supervised step time "
        f"({step_ms:.0f} ms): **{estimate['reassign_epoch_ratio']:.3f}** on re-assignment epochs, "
        f"**{estimate['plain_epoch_ratio']:.3f}** on the others, **{estimate['official_schedule_ratio']:.3f}** "
        "with the official schedule (goal <= 1.03).",
        "",
        f"One batch re-assignment (n = 50,000; generating the batch's targets + scipy `linear_sum_assignment`), median of {repeats}:",
        "",
        "| b | d | re-assign ms | target generation alone ms |",
        "|---|---|---|---|",
        *(f"| {r['b']} | {r['d']} | {r['reassign_ms']:.1f} | {r['target_generation_ms']:.1f} |" for r in assignment),
        "",
        f"NAT state for n = 1,281,167 (ImageNet): {state_bytes['assignment_bytes_per_image']:.0f} bytes per image (the int64 "
        f"permutation; targets are regenerated from their index), instead of {state_bytes['target_table_bytes_per_image_avoided']:,} "
        "bytes per image for an n x d float32 target table at d = 2048 (10.5 GB).",
        "",
        "GPU: this task had no GPU lent (`device` status: not drawn), so there is no GPU row yet.",
    ]
    write_section("overhead", "\n".join(lines))


if __name__ == "__main__":
    main()
