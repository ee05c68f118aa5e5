#!/usr/bin/env bash
# A short CIFAR-10 run and its evaluation against the baselines (docs/results.md, "Short CIFAR-10 run").
# About 1 h 15 min on 2 CPU cores: NAT 10 epochs, supervised 5 epochs, then four evaluations.
# Usage: bash experiments/cifar_short.sh [RUNS_DIR]   (data: ../shared/data/cifar10, the JPEG q75 copy)
set -euo pipefail
runs=${1:-runs}
data=$(cd "$(dirname "$0")/../.." && pwd)/shared/data/cifar10
natlearn train cifar10 data="$data" epochs=10 keep_every=2 progress=false out="$runs/cifar_nat"
natlearn train cifar10 data="$data" epochs=5 progress=false out="$runs/cifar_sup" --supervised
natlearn compare "$runs/cifar_nat/checkpoints/epoch_0010.pt" random-init "$runs/cifar_sup/checkpoints/epoch_0005.pt" raw-pixels \
    --out "$runs/cifar_compare"
natlearn filters "$runs/cifar_nat/checkpoints/epoch_0010.pt" --out "$runs/cifar_nat/filters.png"
natlearn neighbors "$runs/cifar_nat/checkpoints/epoch_0010.pt" --out "$runs/cifar_nat/neighbours.png"
mkdir -p "$runs/cifar_nat/eval" && cp "$runs/cifar_compare/0-cifar_nat/eval."* "$runs/cifar_nat/eval/"
natlearn evolution "$runs/cifar_nat" --layers conv3,neck --knn 20 --no-mlp
natlearn report "$runs/cifar_nat"
