"""Figures (PNG, matplotlib): nearest neighbours, conv1 filters, training curves, feature
evolution."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from natlearn.errors import NatlearnError
from natlearn.files import atomic_write
from natlearn.models import Network

__all__ = ["neighbours_figure", "filters_figure", "first_conv", "training_curves", "line_plot"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> Path:
    plt = _pyplot()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return Path(path)


def _show(axis, image: torch.Tensor) -> None:
    """Draw a uint8 (C, H, W) image without ticks."""
    if image.shape[0] == 1:
        axis.imshow(image[0].numpy(), cmap="gray_r", vmin=0, vmax=255)
    else:
        axis.imshow(image.permute(1, 2, 0).numpy())
    axis.set_xticks([])
    axis.set_yticks([])


def neighbours_figure(
    panels: dict[str, tuple[torch.Tensor, torch.Tensor]],
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    out: Path,
    queries: int = 8,
    k: int = 6,
) -> Path:
    """Evenly spaced test queries (red frame) and their k nearest training images by cosine
    similarity, one panel per representation. ``panels``: name -> (train features (n, f), test
    features (m, f))."""
    plt = _pyplot()
    picks = torch.linspace(0, len(test_images) - 1, queries).long()
    columns = (k + 1) * len(panels)
    fig, axes = plt.subplots(
        queries, columns, figsize=(columns * 0.8, queries * 0.85), squeeze=False
    )
    for p, (name, (train_f, test_f)) in enumerate(panels.items()):
        similarity = (
            F.normalize(test_f[picks].float(), dim=1) @ F.normalize(train_f.float(), dim=1).T
        )
        neighbours = similarity.topk(k, dim=1).indices
        for row, query in enumerate(picks):
            for col, image in enumerate(
                [test_images[query], *(train_images[j] for j in neighbours[row])]
            ):
                axis = axes[row, p * (k + 1) + col]
                _show(axis, image)
                if col == 0:
                    axis.spines[:].set_color("red")
                    axis.spines[:].set_linewidth(2)
        axes[0, p * (k + 1)].set_title(
            f"{name}: query | {k} nearest training images", loc="left", fontsize=8
        )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.01, wspace=0.08, hspace=0.08)
    return _save(fig, out)


def first_conv(model: Network) -> tuple[str, nn.Conv2d]:
    """The network's first convolution, the one taking the input layer's channels (the frozen input
    layer has none), and its name: its block (``conv1``), or for a timm network its timm module
    (``conv1``, ``stem.0``, ``patch_embed.proj``)."""
    channels = model.input.out_channels
    for name, module in model.convs.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == channels:
            if isinstance(model.convs, nn.Sequential):
                return name.split(".")[0], module
            return name.removeprefix("body."), module
    raise NatlearnError(f"arch={model.arch} has no convolution: no filters to draw")


def filters_figure(model: Network, out: Path, columns: int = 16) -> Path:
    """The first conv layer's filters. Sobel input: each filter's two gradient channels side by
    side (diverging colours, white = 0); gray: one map; RGB: each filter rescaled to [0, 1] as a
    colour image."""
    plt = _pyplot()
    name, conv = first_conv(model)
    weight = conv.weight.detach().cpu().float()
    count, channels = weight.shape[:2]
    rows = -(-count // columns)
    per_filter = channels if channels == 2 else 1
    height = rows * 0.5 + 0.4  # room for the title above the grid
    fig, axes = plt.subplots(
        rows, columns * per_filter, figsize=(columns * per_filter * 0.45, height), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    for index in range(count):
        row, col = divmod(index, columns)
        w = weight[index]
        if channels == 3:
            image = (w - w.min()) / (w.max() - w.min() + 1e-8)
            axes[row, col].imshow(image.permute(1, 2, 0).numpy())
            continue
        limit = float(w.abs().max()) + 1e-8
        for c in range(per_filter):
            axes[row, col * per_filter + c].imshow(
                w[c].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit
            )
    kind = {2: "Sobel input: d/dx | d/dy per filter", 1: "gray input", 3: "RGB input"}[channels]
    fig.suptitle(
        f"{name}: {count} filters {weight.shape[2]}x{weight.shape[3]} ({kind})", fontsize=9
    )
    fig.subplots_adjust(
        left=0.01, right=0.99, top=1 - 0.4 / height, bottom=0.01, wspace=0.05, hspace=0.1
    )
    return _save(fig, out)


def training_curves(histories: dict[str, list[dict]], out: Path) -> Path:
    """Loss per epoch of each run, and NAT's mean cosine to its own target where logged."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, rows in histories.items():
        left.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], marker=".", label=name)
        if rows and "cosine" in rows[0]:
            right.plot(
                [r["epoch"] for r in rows], [r["cosine"] for r in rows], marker=".", label=name
            )
    left.set(xlabel="epoch", ylabel="training loss")
    right.set(xlabel="epoch", ylabel="mean cosine to own target")
    left.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def line_plot(
    x: list, series: dict[str, list[float]], xlabel: str, ylabel: str, title: str, out: Path
) -> Path:
    """One line per series against ``x`` (e.g. transfer accuracy per layer against epoch)."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6, 3.6))
    for name, values in series.items():
        axis.plot(x, values, marker="o", label=name)
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)
