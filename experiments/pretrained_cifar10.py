"""The packaged backbone ``cifar10-small`` (``natlearn.pretrained("cifar10-small")``): a CIFAR-10
NAT run's backbone, stored in float16, measured on the stored weights, with its model card.

    natlearn train cifar10 data=../shared/data/cifar10 out=runs/cifar10-small seed=1111  # ~1 h
    python experiments/pretrained_cifar10.py --run runs/cifar10-small   # ~10 min on 2 CPU cores
    python experiments/pretrained_cifar10.py --from-json                # the card again, no eval

Steps: (1) the run's newest checkpoint exported as a Hub folder (``natlearn export --format hf``)
with its weight matrices (the conv and linear weights, nearly all the bytes) cast to float16,
written to src/natlearn/weights/cifar10-small/; (2) the packaged backbone evaluated as ``natlearn
eval pretrained:cifar10-small data=...`` does (linear probe per layer, the layer chosen on held-out
train images; weighted 20/200-NN on the pooled features), and the checkpoint's float32 weights the
same way (to show what float16 costs); (3) the 20-NN check number on the fixed sample
(:func:`natlearn.evaluate.probes.sample.check_sample_knn`) the package's test compares with. Writes
experiments/results/pretrained_cifar10.json, the model card (README.md in the weights folder) and
the "pretrained" section of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import harness
from natlearn.evaluate import EvalSettings, evaluate
from natlearn.evaluate.probes.sample import CHECK_EVERY, check_sample_knn
from natlearn.evaluate.reports.compare import best_linear
from natlearn.evaluate.uncertainty import with_error
from natlearn.export import HUB_WEIGHTS, export_backbone, hub_description, write_hub_folder
from natlearn.files import atomic_write
from natlearn.markdown import hardware, table, today
from natlearn.training.checkpoint import checkpoint_file
from natlearn.zoo import pretrained_folder

NAME = "cifar10-small"
WEIGHTS = harness.ROOT / "src" / "natlearn" / "weights" / NAME
RESULT = "pretrained_cifar10"


def package(run: str) -> dict:
    """The run's backbone as the packaged Hub folder, weight matrices in float16: what it holds."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        exported = export_backbone(run, Path(tmp) / "hf", "hf")
        WEIGHTS.parent.mkdir(exist_ok=True)
        described = hub_description(exported)
        weights = load_file(str(exported / HUB_WEIGHTS))
    half = {
        key: value.half() if key.endswith(".weight") and value.dim() >= 2 else value
        for key, value in weights.items()
    }
    write_hub_folder(
        WEIGHTS,
        half,
        described["run_config"],
        described["network"],
        described["input"],
        epoch=described["epoch"],
    )
    return {
        "checkpoint": checkpoint_file(run).name,
        "epoch": described["epoch"],
        "parameters": sum(v.numel() for k, v in weights.items() if "running" not in k),
        "bytes": (WEIGHTS / HUB_WEIGHTS).stat().st_size,
    }


def measure(source: str, data: str, out: Path, reuse: tuple[Path, ...] = ()) -> dict:
    """``natlearn eval``'s full protocol less the MLP: per-layer linear probes, k-NN on neck (an
    evaluation of the same weights, settings and data in ``reuse`` is read, not redone)."""
    settings = EvalSettings(mlp=False, progress=False)
    results = evaluate(source, [f"data={data}"], settings, out, reuse=reuse)
    layer, top1 = best_linear(results)
    protocols = results["protocols"]
    return {
        "linear": {name: row["top1"] for name, row in protocols["linear"].items()},
        "held_out": {name: row["held_out_top1"] for name, row in protocols["linear"].items()},
        "best_layer": layer,
        "best_linear": top1,
        "knn20": protocols["knn20"]["neck"]["top1"],
        "knn200": protocols["knn200"]["neck"]["top1"],
        "test_images": results["test_images"],
        "seconds": results.get("seconds"),
    }


def baselines(linear: float, knn20: float) -> str:
    """The same probes on the main CIFAR-10 table's other sources (experiments/cifar_main.py's
    record), best linear layer chosen on held-out train images."""
    names = {
        "random-init": "the same network untrained",
        "supervised-15ep": "the same network trained on the labels (15 epochs)",
        "hand-crafted": "Coates & Ng k-means features (1,600 centroids)",
        "raw-pixels": "raw pixels",
    }
    main = json.loads((harness.RESULTS / "cifar_main.json").read_text())["results"]
    rows = [["this backbone", f"{linear:.4f}", f"{knn20:.4f}"]]
    for source, about in names.items():
        protocols = main[source]["protocols"]
        knn = next(iter(protocols["knn20"].values()))["top1"]
        rows.append([about, f"{best_linear(main[source])[1]:.4f}", f"{knn:.4f}"])
    return (
        "For scale, the same probes on the other sources of natlearn's main CIFAR-10 table "
        "(docs/results.md, `python experiments/cifar_main.py`); the hand-crafted features are "
        "stronger than this backbone on CIFAR-10, as the README says:\n\n"
        + table(["features", "best linear", "20-NN"], rows)
    )


def card(result: dict) -> str:
    """The model card (the weights folder's README.md)."""
    half, full = result["float16"], result["float32"]
    n = half["test_images"]
    rows = [
        [
            f"linear, {layer}" + (" (chosen)" if layer == half["best_layer"] else ""),
            with_error(half["linear"][layer], n),
            f"{full['linear'][layer]:.4f}",
        ]
        for layer in half["linear"]
    ]
    rows += [
        [f"weighted {k}-NN, neck", with_error(half[f"knn{k}"], n), f"{full[f'knn{k}']:.4f}"]
        for k in (20, 200)
    ]
    package = result["package"]
    return f"""---
library_name: natlearn
tags: [noise-as-targets, self-supervised, image-feature-extraction]
datasets: [cifar10]
---
# cifar10-small: a Noise-As-Targets backbone for CIFAR-like images

```python
import natlearn
backbone = natlearn.pretrained("{NAME}")  # eval mode, CPU, float32
features = backbone(images)  # (b, 3, 32, 32) RGB in [0, 1] -> (b, 128) pooled features
maps = backbone.features(images, ["conv3"])  # any layer's activations
```
`natlearn eval pretrained:{NAME} data=DIR` probes it on a labelled folder (train/ and test/ inside).

**Network**: natlearn's small conv net (widths 32-64-128-128, BatchNorm, ReLU), Sobel input
(grayscale + Sobel gradients, computed inside the network: feed RGB), 32 x 32 images;
{package["parameters"]:,} parameters, the NAT head (the 128-d projection to the targets) dropped.
Weight matrices in float16 ({package["bytes"] / 1e6:.2f} MB), loaded as float32.

**Training** (no labels): Noise As Targets (Bojanowski & Joulin, ICML 2017) on the 50,000 CIFAR-10
train images (natlearn's JPEG q75 copy), the `cifar10` preset: d = 128, k = n targets on the
sphere, re-assignment every 3rd epoch, pad-4 crops + flips, SGD momentum 0.9, lr 0.05 cosine, batch
256, weight decay 5e-4, {package["epoch"]} epochs, seed 1111: `natlearn train cifar10
data=../shared/data/cifar10 out=runs/cifar10-small seed=1111`.

**Measured** ({result["date"]}, {result["hardware"]}) on these stored weights, fit on the 50,000
train images and scored once on the {n:,} test images (centre crops); the layer and each probe's
weight decay chosen on held-out train images, never on the test split; top-1 ± its binomial
standard error:

{table(["protocol", "top-1 (float16, shipped)", "float32 checkpoint"], rows)}

Command: `python experiments/pretrained_cifar10.py --run runs/cifar10-small` (it packages the run,
then runs `natlearn eval pretrained:{NAME} data=../shared/data/cifar10 --no-mlp`).

{baselines(half["best_linear"], half["knn20"])}

**Check sample**: weighted 20-NN on every {CHECK_EVERY}th train image (bank) and every
{CHECK_EVERY}th test image (queries): **{result["check_knn20"]:.4f}**
(`natlearn.evaluate.probes.sample.check_sample_knn("pretrained:{NAME}", DATA)`); natlearn's
tests hold the shipped weights within 1 point of it.

**Limits**: 32 x 32 inputs (larger images are read at 32 px by `natlearn eval`); trained on
CIFAR-10 only; the features are grayscale-and-gradient features (no colour). Licence: the
project's.
"""


def report(result: dict) -> str:
    """The "pretrained" section of docs/results.md."""
    half, full = result["float16"], result["float32"]
    n = half["test_images"]
    rows = [
        [
            precision,
            f"{scores['best_layer']} {with_error(scores['best_linear'], n)}",
            with_error(scores["knn20"], n),
        ]
        for precision, scores in (("float16 (shipped)", half), ("float32 checkpoint", full))
    ]
    return (
        f"## The packaged backbone `pretrained:{NAME}`\n\n"
        f"{result['date']}, {result['hardware']}. The 40-epoch `cifar10` NAT run (seed 1111) as "
        'shipped in the package (`natlearn.pretrained("cifar10-small")`), weight matrices in '
        f"float16 ({result['package']['bytes'] / 1e6:.2f} MB), against its float32 checkpoint; "
        "linear probe (layer chosen on held-out train images) and weighted 20-NN on the pooled "
        f"features, scored once on the {n:,} CIFAR-10 test images. Check-sample 20-NN "
        f"(`check_sample_knn`): {result['check_knn20']:.4f}. Command: "
        "`python experiments/pretrained_cifar10.py --run RUN`; JSON: "
        f"`experiments/results/{RESULT}.json`; model card: "
        f"`src/natlearn/weights/{NAME}/README.md`.\n\n"
        + table(["weights", "best linear", "20-NN neck"], rows)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="the CIFAR-10 NAT run folder (or checkpoint) to package")
    parser.add_argument("--from-json", action="store_true", help="card and docs from the JSON")
    harness.add_cifar10_option(parser)
    args = parser.parse_args()
    path = harness.RESULTS / f"{RESULT}.json"
    if args.from_json:
        result = json.loads(path.read_text())
    elif not args.run:
        sys.exit("error: give --run RUN (a cifar10 preset run to package) or --from-json")
    else:
        harness.cifar10_config(args.cifar10)  # exits with one line when the folder is missing
        started = time.perf_counter()
        result = {"date": today(), "hardware": hardware(), "package": package(args.run)}
        with tempfile.TemporaryDirectory() as tmp:
            result["float16"] = measure(f"pretrained:{NAME}", args.cifar10, Path(tmp) / "half")
            earlier = (Path(args.run) / "eval" / "eval.json",)  # natlearn eval RUN's
            result["float32"] = measure(args.run, args.cifar10, Path(tmp) / "full", earlier)
        result["check_knn20"] = check_sample_knn(f"pretrained:{NAME}", args.cifar10)
        result["minutes"] = (time.perf_counter() - started) / 60
        harness.write_json(RESULT, result)
    folder = pretrained_folder(NAME)
    atomic_write(folder / "README.md", lambda tmp: tmp.write_text(card(result)))
    harness.write_section("pretrained", report(result))
    print(report(result))


if __name__ == "__main__":
    main()
