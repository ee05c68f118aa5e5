"""Evaluate frozen features with the standard protocols: per-layer linear probes (DeepCluster), the
paper's fc6-8 MLP on the last conv layer, weighted k-NN, and optional full fine-tuning.

One function scores one representation (a network, or raw pixels); features are extracted once and
shared by every probe. Baselines (random init, supervised, raw pixels) go through the same code.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from natlearn.data import Augmentation, ImageDataset, center_crop, eval_view
from natlearn.evaluate.features import extract_features
from natlearn.evaluate.fit import fit_minibatches
from natlearn.evaluate.knn import knn_classify
from natlearn.evaluate.mlp import mlp_probe
from natlearn.evaluate.probes import ProbeResult, linear_probe, topk_accuracy
from natlearn.files import atomic_write
from natlearn.markdown import table
from natlearn.models import Head, Network

__all__ = [
    "EvalSettings",
    "evaluate_network",
    "evaluate_pixels",
    "finetune",
    "write_eval",
    "format_eval",
]


@dataclass
class EvalSettings:
    """What to run. ``layers=None``: every conv layer and the penultimate features (``neck``) for
    the linear probe; k-NN runs on ``knn_layers`` only (default the penultimate features, as DINO's
    k-NN does: on 9k-dim conv features it would cost minutes per layer on a CPU)."""

    layers: list[str] | None = None
    linear: bool = True
    knn: tuple[int, ...] = (20, 200)
    knn_layers: tuple[str, ...] = ("neck",)
    mlp: bool = True
    mlp_hidden: int = 0  # 0: 4096 for AlexNet (the paper's fc6-7), 512 for small networks
    probe_epochs: int = 30
    finetune_epochs: int = 0
    # How the network was trained (its config's crop, crop_scale, flip): features are taken from the
    # matching deterministic view (:func:`natlearn.data.eval_view`), and fine-tuning flips only if
    # training did.
    crop: str = "pad"
    crop_scale: float = 0.25
    flip: bool = True
    progress: bool = True

    def matching(self, config) -> EvalSettings:
        """These settings with the view and flips of the training ``config``."""
        return dataclasses.replace(
            self, crop=config.crop, crop_scale=config.crop_scale, flip=config.flip
        )


def _probe_all(
    train: dict,
    test: dict,
    train_y: torch.Tensor,
    test_y: torch.Tensor,
    settings: EvalSettings,
    knn_layers: list[str],
) -> dict:
    """Linear probes on ``settings.layers``' features (every key of ``train`` but k-NN-only ones)
    and k-NN on ``knn_layers``."""
    results: dict[str, dict[str, dict]] = {}
    for layer in train:
        if settings.linear and (
            settings.layers is None or layer in settings.layers or layer == "pixels"
        ):
            result = linear_probe(
                train[layer],
                train_y,
                test[layer],
                test_y,
                epochs=settings.probe_epochs,
                progress=settings.progress,
            )
            results.setdefault("linear", {})[layer] = result.as_dict()
        for k in settings.knn if layer in knn_layers else ():
            results.setdefault(f"knn{k}", {})[layer] = knn_classify(
                train[layer], train_y, test[layer], test_y, k=k
            ).as_dict()
    return results


def evaluate_network(
    model: Network,
    train_set: ImageDataset,
    test_set: ImageDataset,
    crop_size: int,
    settings: EvalSettings,
) -> dict:
    """Every protocol of ``settings`` on ``model``'s frozen features (train split fits, test split
    scores)."""
    started = time.perf_counter()
    layers = list(
        dict.fromkeys([*(settings.layers or [*model.conv_names, "neck"]), *settings.knn_layers])
    )  # k-NN layers too
    wanted = list(dict.fromkeys([*layers, model.conv_names[-1]] if settings.mlp else layers))
    view = {"crop": settings.crop, "scale": settings.crop_scale, "progress": settings.progress}
    train = extract_features(model, train_set.images, wanted, crop_size, **view)
    test = extract_features(model, test_set.images, wanted, crop_size, **view)
    probed = ({k: train[k] for k in layers}, {k: test[k] for k in layers})
    results = _probe_all(
        *probed, train_set.labels, test_set.labels, settings, list(settings.knn_layers)
    )
    if settings.mlp:
        last = model.conv_names[-1]
        hidden = settings.mlp_hidden or (4096 if model.arch == "alexnet" else 512)
        result = mlp_probe(
            train[last],
            train_set.labels,
            test[last],
            test_set.labels,
            hidden,
            settings.probe_epochs,
            progress=settings.progress,
        )
        results["mlp"] = {last: result.as_dict()}
    if settings.finetune_epochs:
        tuned = finetune(
            model,
            train_set,
            test_set,
            crop_size,
            settings.finetune_epochs,
            settings.progress,
            flip=settings.flip,
        )
        results["finetune"] = {"all": tuned.as_dict()}
    return {"protocols": results, "seconds": time.perf_counter() - started}


def evaluate_pixels(
    train_set: ImageDataset, test_set: ImageDataset, crop_size: int, settings: EvalSettings
) -> dict:
    """Raw pixels of the centre crop as features: the floor any representation should clear."""
    started = time.perf_counter()
    train = {
        "pixels": eval_view(
            train_set.images, crop_size, settings.crop, settings.crop_scale
        ).flatten(1)
    }
    test = {
        "pixels": eval_view(test_set.images, crop_size, settings.crop, settings.crop_scale).flatten(
            1
        )
    }
    results = _probe_all(train, test, train_set.labels, test_set.labels, settings, ["pixels"])
    return {"protocols": results, "seconds": time.perf_counter() - started}


def finetune(
    model: Network,
    train_set: ImageDataset,
    test_set: ImageDataset,
    crop_size: int,
    epochs: int,
    progress: bool = False,
    lr: float = 0.01,
    flip: bool = True,
) -> ProbeResult:
    """Full fine-tuning: a copy of the network with a fresh linear classifier, every layer trained
    on the labels with random crops (and flips when ``flip``; data whose orientation carries meaning
    turns them off) (SGD, momentum 0.9, cosine), scored on centre crops."""
    device = next(model.parameters()).device
    tuned = copy.deepcopy(model).train()
    classes = len(train_set.classes)
    with torch.random.fork_rng(
        devices=[]
    ):  # the new classifier is seeded: scores do not depend on what ran before
        torch.manual_seed(0)
        tuned.head = Head(tuned.head.linear.in_features, classes, normalize=False).to(device)
    optimizer = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    augmentation = Augmentation(crop_size, "pad", max(1, crop_size // 8), flip=flip)
    # One generator orders the batches and draws their crops and flips.
    generator = torch.Generator().manual_seed(0)

    def batch_loss(ids: torch.Tensor) -> torch.Tensor:
        inputs = augmentation(train_set.images[ids].to(device), generator)
        return F.cross_entropy(tuned(inputs), train_set.labels[ids].to(device))

    fit_minibatches(
        optimizer,
        batch_loss,
        rows=torch.arange(len(train_set)),
        batch_size=128,
        epochs=epochs,
        generator=generator,
        batching="even",
        label="finetune",
        progress=progress,
    )
    tuned.eval()
    with torch.inference_mode():
        scores = torch.cat(
            [
                tuned(center_crop(chunk.to(device), crop_size)).cpu()
                for chunk in test_set.images.split(512)
            ]
        )
    top1, top5 = topk_accuracy(scores, test_set.labels)
    return ProbeResult(top1, top5)


def format_eval(results: dict) -> str:
    """Markdown: one row per layer, one column per protocol (top-1, and top-5 where measured)."""
    protocols = results["protocols"]
    layers = list(dict.fromkeys(layer for scores in protocols.values() for layer in scores))

    def cells(layer: str) -> list[str]:
        return [layer, *(_cell(name, scores.get(layer)) for name, scores in protocols.items())]

    return table(["layer", *protocols], [cells(layer) for layer in layers])


def _cell(protocol: str, row: dict | None) -> str:
    if row is None:
        return ""
    top5 = f" / {row['top5']:.4f}" if "top5" in row else ""
    # A k-NN with fewer training images than its k says how many voted.
    used_k = f" (k={row['k']})" if "k" in row and protocol != f"knn{row['k']}" else ""
    return f"{row['top1']:.4f}{top5}{used_k}"


def write_eval(out: Path, results: dict) -> None:
    """``out/eval.json`` and ``out/eval.md``, written atomically."""
    out = Path(out)
    atomic_write(
        out / "eval.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n")
    )
    title = f"# Evaluation of {results.get('model', 'a model')}\n\n{results.get('setup', '')}\n\n"
    atomic_write(out / "eval.md", lambda tmp: tmp.write_text(title + format_eval(results) + "\n"))
