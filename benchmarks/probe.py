"""How long a linear probe takes on DeepCluster-sized cached features: 50,000 x 9,216, 10 classes.

    python benchmarks/probe.py            # ~2 minutes on 2 CPU cores
    python benchmarks/probe.py --quick    # 5,000 rows, prints only

The features are synthetic (class means + noise; the timing does not depend on their content), so
the benchmark needs no data set. Also times the weighted k-NN (k = 20 and 200) on 128-dim
penultimate features of 50,000 train / 10,000 test images. Writes benchmarks/results/probe.json and
its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import torch

# benchmarks/ is on sys.path when run as a script
from _report import hardware, today, write_json, write_section
from natlearn.evaluate import knn_classify, linear_probe
from natlearn.markdown import table


def synthetic(
    n: int, dims: int, classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = 0.05 * torch.randn(classes, dims, generator=generator)
    labels = torch.arange(n) % classes
    return centres[labels] + torch.randn(n, dims, generator=generator), labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_train, n_test, dims = (5_000, 1_000, 9_216) if args.quick else (50_000, 10_000, 9_216)
    x, y = synthetic(n_train + n_test, dims)
    start = time.perf_counter()
    result = linear_probe(x[:n_train], y[:n_train], x[n_train:], y[n_train:], epochs=30)
    linear_s = time.perf_counter() - start
    small, labels = synthetic(n_train + n_test, 128, seed=1)
    start = time.perf_counter()
    for k in (20, 200):
        knn_classify(small[:n_train], labels[:n_train], small[n_train:], labels[n_train:], k=k)
    knn_s = time.perf_counter() - start
    print(
        f"linear probe {n_train}x{dims}: {linear_s:.1f} s (top-1 {result.top1:.3f}); "
        f"k-NN 20+200 on 128 dims: {knn_s:.1f} s"
    )
    if args.quick:
        return
    payload = {
        "date": today(),
        "hardware": hardware(),
        "rows": n_train,
        "dims": dims,
        "linear_probe_seconds": linear_s,
        "knn_seconds": knn_s,
    }
    write_json("probe", payload)
    linear = (
        f"linear probe, {n_train:,} x {dims:,} features, 10 classes, 5 weight decays at once, "
        "30 epochs Adam + selection"
    )
    knn = f"weighted k-NN, k = 20 and 200, {n_train:,} train x {n_test:,} test, 128 dims"
    lines = [
        "## Probe cost on cached features (`python benchmarks/probe.py`)",
        "",
        f"{today()}, {hardware()}. Synthetic features (timing does not depend on content).",
        "",
        table(["what", "seconds"], [[linear, f"{linear_s:.0f}"], [knn, f"{knn_s:.1f}"]]),
        "",
        "Goal (issue 4): a linear probe on 50,000 x 9,000 cached features "
        "within a few minutes on 2 CPU cores.",
    ]
    write_section("probe", "\n".join(lines))


if __name__ == "__main__":
    main()
