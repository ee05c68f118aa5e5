"""AlexNet-BN with NAT vs supervised on one GPU (and two, if present), on synthetic 224x224 data.

    bash benchmarks/gpu.sh               # the prepared GPU run (< 5 minutes); writes docs + JSON
    python benchmarks/gpu.py --quick     # CPU smoke run of the same code path, tiny; writes nothing

Each row is a real `natlearn train` run (`torchrun` for 2 GPUs) of the imagenet_alexnet preset
(Sobel input, d = 2048, batch 256 per GPU, random 224 crops of 256 images + flips on the GPU) on
`data=synthetic` (random images held on the GPU, so the loader is not what is measured), with
re-assignment every 2nd epoch: epoch 3 re-assigns, epoch 4 does not (epochs 1-2 are warm-up). From
the run's log: images/s of each kind of epoch, the official schedule's mix (1 re-assignment epoch
in 3), and the share of a re-assignment step spent in the assignment (`assign_ms` / `step_ms`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# benchmarks/ is on sys.path when run as a script
from _report import CPU_SMOKE, ROOT, hardware, today, write_json, write_section
from natlearn.markdown import table


def run(name: str, settings: list[str], gpus: int, out: Path, timeout: int) -> dict | None:
    """One `natlearn train` run; its last two epochs as a row (None if it failed or timed out)."""
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"]
        if gpus > 1
        else [sys.executable]
    )
    folder = out / "".join(c if c.isalnum() else "-" for c in name)
    flags = [s for s in settings if s.startswith("--")]
    command = [
        *launcher,
        "-m",
        "natlearn",
        "train",
        *[s for s in settings if s not in flags],
        f"out={folder}",
        "--overwrite",
        *flags,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {timeout} s", flush=True)
        return None
    if done.returncode:
        print(f"{name}: failed\n{done.stderr[-2000:]}", flush=True)
        return None
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    reassign, plain = log[-2], log[-1]
    official_s = (reassign["seconds"] + 2 * plain["seconds"]) / 3
    row = {
        "name": name,
        "gpus": gpus,
        "settings": settings,
        "images_per_s_reassign_epoch": reassign["images_per_s"],
        "images_per_s_plain_epoch": plain["images_per_s"],
        "images_per_s_official": plain["images_per_s"] * plain["seconds"] / official_s,
        "step_ms_reassign": reassign["step_ms"],
        "step_ms_plain": plain["step_ms"],
        "assign_ms": reassign.get("assign_ms"),
        "log": log,
    }
    row["assign_share"] = (
        row["assign_ms"] / row["step_ms_reassign"] if row["assign_ms"] is not None else None
    )
    print(
        f"{name}: {row['images_per_s_official']:.0f} img/s (official schedule), assignment "
        f"{row['assign_ms'] or 0:.1f} ms of {row['step_ms_reassign']:.1f} ms",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="CPU, tiny images and network steps; writes nothing"
    )
    parser.add_argument(
        "--images", type=int, default=7680, help="synthetic images per epoch (30 steps of 256)"
    )
    parser.add_argument(
        "--timeout", type=int, default=150, help="seconds per run before it is skipped"
    )
    args = parser.parse_args()
    if not args.quick and not torch.cuda.is_available():
        raise SystemExit(
            "error: no CUDA GPU visible; "
            "run this on a GPU machine, or use --quick for the CPU smoke run"
        )
    base = [
        "imagenet_alexnet",
        "data=synthetic",
        "data_mode=memory",
        "epochs=4",
        "reassign_every=2",
        "progress=false",
        "keep_last=1",
        "on_nonfinite=skip",
    ]
    if args.quick:
        base += CPU_SMOKE
    else:
        base += [f"subset={args.images}"]
    gpus = torch.cuda.device_count() if not args.quick else 1
    kinds = {
        "nat, bf16, channels_last": [],
        "supervised cross-entropy, bf16, channels_last": ["--supervised"],
        "nat, fp32": ["precision=fp32", "channels_last=false"],
        "nat, bf16, channels_last, compile": ["compile=true"],
    }
    if gpus >= 2:
        kinds["nat, bf16, 2 GPUs (global batch 512)"] = ["batch_size=512"]
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for name, extra in kinds.items():
            if args.quick and "compile" in name:
                continue
            row = run(name, [*base, *extra], 2 if "2 GPUs" in name else 1, Path(out), args.timeout)
            if row:
                rows.append(row)
    if args.quick:
        return
    write_json(
        "gpu", {"date": today(), "hardware": hardware(), "gpus": gpus, "base": base, "rows": rows}
    )
    supervised = next((r for r in rows if r["name"].startswith("supervised")), None)
    lines = [
        "## AlexNet-BN on a GPU (`bash benchmarks/gpu.sh`)",
        "",
        f"{today()}, {hardware()}, {gpus} GPU(s). `natlearn train imagenet_alexnet data=synthetic` "
        "(random 256x256 images held on the GPU; random 224 crops + flips on the GPU), Sobel "
        "input, d = 2048, batch 256 per GPU, SGD; images/s from the run's own log (epoch 3 "
        "re-assigns, epoch 4 does not; epochs 1-2 warm up). JSON: `benchmarks/results/gpu.json`.",
        "",
    ]
    header = [
        "run",
        "img/s, re-assignment epoch",
        "img/s, other epochs",
        "img/s, official schedule (1 in 3)",
        "/ supervised",
        "assignment ms / step ms (re-assignment epoch)",
    ]
    cells = []
    for r in rows:
        ratio = (
            f"{r['images_per_s_official'] / supervised['images_per_s_plain_epoch']:.3f}"
            if supervised and r is not supervised
            else ""
        )
        share = (
            f"{r['assign_ms']:.1f} / {r['step_ms_reassign']:.1f} = **{r['assign_share']:.1%}**"
            if r["assign_ms"]
            else ""
        )
        reassign, plain = r["images_per_s_reassign_epoch"], r["images_per_s_plain_epoch"]
        official = r["images_per_s_official"]
        cells.append(
            [r["name"], f"{reassign:.0f}", f"{plain:.0f}", f"{official:.0f}", ratio, share]
        )
    lines.append(table(header, cells))
    if gpus < 2:
        lines += ["", "One GPU only on this machine: no 2-GPU scaling row."]
    write_section("gpu", "\n".join(lines))


if __name__ == "__main__":
    main()
