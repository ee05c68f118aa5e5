"""Where a training step's time goes: torch.profiler over re-assignment steps, plain NAT steps and
supervised steps of the imagenet_alexnet preset (AlexNet-BN, Sobel, d = 2048, batch 256) on
synthetic images held on the device, each step being natlearn's own ``train_step``.

    python benchmarks/profile_step.py            # a GPU machine (bash benchmarks/gpu.sh runs it);
                                                 # writes docs + JSON
    python benchmarks/profile_step.py --quick    # CPU smoke run of the same code path, tiny;
                                                 # writes nothing

Per kind of step: median wall-clock ms (device synchronised around each step), the host syncs per
step (calls of ``aten::_local_scalar_dense``: every ``.item()``, ``float()`` or ``bool()`` of a
device tensor waits for the device), and the CPU time inside labelled parts: the re-assignment
(``objective.reassign``), scipy's Hungarian solver, target generation, and the loss.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import natlearn.nat.assignment

# benchmarks/ is on sys.path when run as a script
from _report import CPU_SMOKE, hardware, today, write_json, write_section
from natlearn.config import apply_overrides
from natlearn.data import pretraining_data
from natlearn.markdown import table
from natlearn.nat.objective import NoiseAsTargets, Supervised
from natlearn.nat.targets import NoiseTargets
from natlearn.presets import load_preset
from natlearn.training.run import Run, build_run
from natlearn.training.trainer import train_step

PARTS = {
    "re-assignment": "nat.reassign",
    "Hungarian solver (scipy)": "scipy.linear_sum_assignment",
    "target generation": "targets.generate",
    "loss": "objective.loss",
}


def _label(owner: object, name: str, label: str) -> None:
    """Wrap ``owner.name`` in a profiler range called ``label``."""
    original = getattr(owner, name)

    def labelled(*args, **kwargs):
        with record_function(label):
            return original(*args, **kwargs)

    setattr(owner, name, labelled)


def label_parts() -> None:
    _label(NoiseAsTargets, "reassign", PARTS["re-assignment"])
    _label(natlearn.nat.assignment, "linear_sum_assignment", PARTS["Hungarian solver (scipy)"])
    _label(NoiseTargets, "__getitem__", PARTS["target generation"])
    _label(NoiseAsTargets, "loss", PARTS["loss"])
    _label(Supervised, "loss", PARTS["loss"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(run: Run, images: torch.Tensor, epoch: int, steps: int) -> dict:
    """Median ms of ``steps`` steps, then a profile of 5 more:
    host syncs and labelled parts per step."""
    device, batch = run.resolved.device, run.config.batch_size
    generator = torch.Generator().manual_seed(0)
    run.step_model.train()

    def step() -> None:
        ids = torch.randperm(len(images), generator=generator)[:batch]
        train_step(run, ids, run.augment(images[ids.to(device)], generator), (0, batch), epoch)

    for _ in range(5):  # warm-up: cuDNN autotuning, allocator
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        started = time.perf_counter()
        step()
        _sync(device)
        times.append(1000 * (time.perf_counter() - started))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiled = 5
    with profile(activities=activities) as prof:
        for _ in range(profiled):
            step()
        _sync(device)
    events: dict = {}
    # a labelled range that launches kernels also has a GPU-side copy (no CPU time)
    for event in prof.key_averages():
        if event.key not in events or event.cpu_time_total > events[event.key].cpu_time_total:
            events[event.key] = event

    def per_step_ms(key: str) -> float:
        return events[key].cpu_time_total / 1000 / profiled if key in events else 0.0

    syncs = (
        events["aten::_local_scalar_dense"].count / profiled
        if "aten::_local_scalar_dense" in events
        else 0.0
    )
    return {
        "step_ms": statistics.median(times),
        "host_syncs_per_step": syncs,
        **{name: per_step_ms(key) for name, key in PARTS.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="CPU, tiny images and network; writes nothing"
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps per kind")
    args = parser.parse_args()
    if not args.quick and not torch.cuda.is_available():
        raise SystemExit(
            "error: no CUDA GPU visible; "
            "run this on a GPU machine, or use --quick for the CPU smoke run"
        )
    settings = ["data=synthetic", "data_mode=memory", "subset=2048", "progress=false"]
    if args.quick:
        settings += CPU_SMOKE
    label_parts()
    rows = {}
    with tempfile.TemporaryDirectory() as out:
        nat = apply_overrides(load_preset("imagenet_alexnet"), [*settings, f"out={out}"])
        data = pretraining_data(nat)
        for name, config, epoch in (
            ("nat, re-assignment step", nat, 0),
            ("nat, step without re-assignment", nat, 1),
            ("supervised cross-entropy step", apply_overrides(nat, ["objective=supervised"]), 0),
        ):
            run = build_run(config, data)
            rows[name] = measure(
                run, data.images.to(run.resolved.device), epoch, 3 if args.quick else args.steps
            )
            print(f"{name}: {rows[name]}", flush=True)
    if args.quick:
        return
    write_json(
        "profile_step",
        {"date": today(), "hardware": hardware(), "settings": settings, "rows": rows},
    )
    cells: Callable[[dict], list[str]] = lambda r: [
        f"{r['step_ms']:.2f}",
        f"{r['host_syncs_per_step']:.0f}",
        *(f"{r[p]:.2f}" for p in PARTS),
    ]
    body = table(
        ["step", "ms (median)", "host syncs", *(f"{p} ms (CPU)" for p in PARTS)],
        [[name, *cells(r)] for name, r in rows.items()],
    )
    write_section(
        "profile_step",
        "## Where a step's time goes (`python benchmarks/profile_step.py`)\n\n"
        f"{today()}, {hardware()}. imagenet_alexnet preset on 2,048 synthetic 256x256 images held "
        "on the GPU, batch 256, bf16, channels-last; natlearn's `train_step` (forward, "
        "re-assignment in its epochs, loss, backward, SGD step, non-finite checks). CPU ms inside "
        "each labelled part per step, from torch.profiler over 5 steps; host syncs = calls of "
        "`aten::_local_scalar_dense` per step. JSON: `benchmarks/results/profile_step.json`.\n\n"
        + body,
    )


if __name__ == "__main__":
    main()
