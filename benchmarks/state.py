"""NAT state at ImageNet size without ImageNet: memory of the assignment and milliseconds per step.

    python benchmarks/state.py                  # n = 1,281,167, d = 2048, 300 batches per row;
                                                # ~2 min on 2 CPU cores
    python benchmarks/state.py --device cuda    # target generation and cost matrices on the GPU
    python benchmarks/state.py --quick          # smoke run, prints only

Builds the NAT objective exactly as training does (the paper's n and d, k = n), then feeds it
synthetic batches of L2-normalised outputs: per step, the re-assignment (target generation, cost
matrix, scipy's Hungarian solver, the permutation update) in a re-assignment epoch, and the target
lookup of the other epochs. Reports the resident memory the state adds and the per-epoch invariant
check. Writes benchmarks/results/state[_cuda].json and its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

# benchmarks/ is on sys.path when run as a script
from _report import hardware, today, write_json, write_section
from natlearn.config import Config
from natlearn.markdown import table
from natlearn.nat.objective import NoiseAsTargets

IMAGENET = 1_281_167


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed_ms(action, sync: bool) -> float:
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    action()
    if sync:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def step_rows(n: int, d: int, steps: int, device: torch.device) -> list[dict]:
    rows = []
    sync = device.type == "cuda"
    for batch, block in ((256, 0), (1024, 256), (1024, 0)):
        objective = NoiseAsTargets.from_config(
            Config(dim=d, batch_size=batch, assign_block=block), n
        )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(1)
        reassign, lookup = [], []
        for step in range(steps):
            ids = order[step * batch : (step + 1) * batch]
            outputs = torch.nn.functional.normalize(
                torch.randn(batch, d, generator=generator), dim=1
            ).to(device)
            reassign.append(
                timed_ms(
                    lambda ids=ids, out=outputs, objective=objective: objective.reassign(ids, out),
                    sync,
                )
            )
            lookup.append(
                timed_ms(
                    lambda ids=ids, objective=objective: objective.targets[
                        objective.assignment[ids.to(device)]
                    ],
                    sync,
                )
            )
        rows.append(
            {
                "batch": batch,
                "block": block or batch,
                "reassign_ms": statistics.median(reassign[3:]),
                "lookup_ms": statistics.median(lookup[3:]),
                "steps": steps,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda (where targets are generated and cost matrices built)",
    )
    parser.add_argument("--steps", type=int, default=300, help="synthetic batches per row")
    parser.add_argument("--quick", action="store_true", help="n = 20,000, 10 steps; writes nothing")
    args = parser.parse_args()
    device = torch.device(args.device)
    n, d, steps = (20_000, 2048, 10) if args.quick else (IMAGENET, 2048, args.steps)

    before = resident_bytes()
    objective = NoiseAsTargets.from_config(Config(dim=d, batch_size=256), n)
    added = resident_bytes() - before
    state = objective.assignment.nbytes()
    check_ms = timed_ms(objective.check, False)
    rows = step_rows(n, d, steps, device)
    table_gb = n * d * 4 / 1e9
    for row in rows:
        print(
            f"batch {row['batch']}, blocks of {row['block']}: "
            f"re-assign {row['reassign_ms']:.1f} ms, lookup {row['lookup_ms']:.2f} ms"
        )
    print(
        f"state {state / n:.1f} bytes/image ({state / 2**20:.1f} MiB); resident memory added "
        f"{added / 2**20:.1f} MiB; check {check_ms:.0f} ms"
    )
    if args.quick:
        return
    suffix = "" if device.type == "cpu" else "_cuda"
    payload = {
        "date": today(),
        "hardware": hardware(),
        "device": str(device),
        "n": n,
        "d": d,
        "state_bytes": state,
        "state_bytes_per_image": state / n,
        "resident_bytes_added": added,
        "check_ms": check_ms,
        "table_gb_avoided": table_gb,
        "rows": rows,
    }
    write_json(f"state{suffix}", payload)
    lines = [
        f"## ImageNet-size NAT state on {device.type.upper()} "
        f"(`python benchmarks/state.py{' --device cuda' if suffix else ''}`)",
        "",
        f"{today()}, {hardware()}. n = {n:,} images, d = {d}, k = n (the paper's ImageNet "
        f"setting), synthetic L2-normalised outputs, median of {steps} batches per row "
        f"(first 3 dropped). JSON: `benchmarks/results/state{suffix}.json`.",
        "",
        f"- NAT state: **{state / n:.0f} bytes per image** ({state / 2**20:.1f} MiB: the int64 "
        "image -> target permutation; targets are regenerated from their index, never stored); "
        f"resident memory measured added by building it: {added / 2**20:.1f} MiB. An n x d float32 "
        f"target table would take {table_gb:.1f} GB ({d * 4:,} bytes per image).",
        "- Per-epoch invariant check (every target id held exactly once, O(k)): "
        f"{check_ms:.0f} ms.",
        "",
        table(
            [
                "global batch",
                "Hungarian blocks",
                "re-assignment step ms (targets + cost matrix + solve + update)",
                "lookup step ms (other epochs)",
            ],
            [
                [r["batch"], r["block"], f"{r['reassign_ms']:.1f}", f"{r['lookup_ms']:.2f}"]
                for r in rows
            ],
        ),
    ]
    write_section(f"state{suffix}", "\n".join(lines))


if __name__ == "__main__":
    main()
