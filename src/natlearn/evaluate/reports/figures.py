"""Figures (PNG, matplotlib): nearest neighbours, conv1 filters, training curves, feature
evolution. Each is titled by :func:`figure_title` (data set, model, epoch, layer)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from natlearn.errors import NatlearnError
from natlearn.files import atomic_write
from natlearn.models import Network

__all__ = [
    "figure_title",
    "neighbours_figure",
    "filters_figure",
    "filter_grid",
    "first_conv",
    "reassignment_epochs",
    "training_curves",
    "line_plot",
]

QUERY, SAME_CLASS, OTHER_CLASS = "tab:blue", "tab:green", "red"  # neighbour frames


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


def figure_title(config, epoch: int | None = None, layer: str | None = None) -> str:
    """What a figure shows, for its title: ``digits · small (nat) · epoch 4 · conv1``. ``config``:
    a Config or its dict (a checkpoint's ``config``, a run's config.yaml); missing fields are
    left out."""
    config = config if isinstance(config, Mapping) else config.to_dict()
    parts = [Path(str(config["data"])).name] if config.get("data") else []
    if config.get("arch"):
        objective = config.get("objective")
        parts.append(f"{config['arch']} ({objective})" if objective else str(config["arch"]))
    parts += [f"epoch {epoch}"] if epoch is not None else []
    return " · ".join(parts + ([layer] if layer else []))


def _show(axis, image: torch.Tensor) -> None:
    """Draw a uint8 (C, H, W) image without ticks."""
    if image.shape[0] == 1:
        axis.imshow(image[0].numpy(), cmap="gray_r", vmin=0, vmax=255)
    else:
        axis.imshow(image.permute(1, 2, 0).numpy())
    axis.set_xticks([])
    axis.set_yticks([])


def _frame(axis, colour: str, width: float) -> None:
    axis.spines[:].set_color(colour)
    axis.spines[:].set_linewidth(width)


def neighbours_figure(
    panels: dict[str, tuple[torch.Tensor, torch.Tensor]],
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    out: Path,
    queries: int = 8,
    k: int = 6,
    *,
    labels: tuple[torch.Tensor, torch.Tensor] | None = None,
    classes: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Evenly spaced test queries (blue frame) and their k nearest training images by cosine
    similarity, one panel per representation. ``panels``: name -> (train features (n, f), test
    features (m, f)). With ``labels`` (train labels, test labels) each image is captioned with its
    class (``classes``: the names) and each neighbour framed green (the query's class) or red (an
    other class)."""
    plt = _pyplot()
    picks = torch.linspace(0, len(test_images) - 1, queries).long()
    columns = (k + 1) * len(panels)
    fig, axes = plt.subplots(
        queries, columns, figsize=(columns * 0.8, queries * 0.85), squeeze=False
    )

    def name(label) -> str:
        return classes[int(label)] if classes else str(int(label))

    for p, (panel, (train_f, test_f)) in enumerate(panels.items()):
        similarity = (
            F.normalize(test_f[picks].float(), dim=1) @ F.normalize(train_f.float(), dim=1).T
        )
        nearest = similarity.topk(k, dim=1).indices
        for row, (query, neighbours) in enumerate(zip(picks, nearest, strict=True)):
            left = axes[row, p * (k + 1)]
            _show(left, test_images[query])
            _frame(left, QUERY, 2.5)
            for col, j in enumerate(neighbours, start=1):
                axis = axes[row, p * (k + 1) + col]
                _show(axis, train_images[j])
                if labels is not None:
                    same = bool(labels[0][j] == labels[1][query])
                    _frame(axis, SAME_CLASS if same else OTHER_CLASS, 1 if same else 2.5)
                    axis.set_xlabel(name(labels[0][j]), fontsize=7, labelpad=1)
            if labels is not None:
                left.set_ylabel(name(labels[1][query]), fontsize=8, labelpad=2)
        key = " (green: same class, red: other)" if labels is not None else ""
        axes[0, p * (k + 1)].set_title(
            f"{panel}: query | {k} nearest training images{key}", loc="left", fontsize=7
        )
    fig.suptitle(title, fontsize=9)
    height = queries * 0.85  # inches: room for both titles above, class names below
    space = 0.3 if labels is not None else 0.08
    fig.subplots_adjust(
        left=0.04,
        right=0.99,
        top=1 - 0.45 / height,
        bottom=(0.15 if labels is not None else 0.02) / height,
        wspace=space / 2,
        hspace=space,
    )
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


def _direction_colours(dx: np.ndarray, dy: np.ndarray, length: np.ndarray) -> np.ndarray:
    """RGB of gradient vectors (image axes: x right, y down): hue = direction, brightness =
    ``length`` in [0, 1]."""
    from matplotlib.colors import hsv_to_rgb

    hue = (np.arctan2(dy, dx) / (2 * math.pi)) % 1
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), length], axis=-1))


def filter_grid(weight: torch.Tensor, cell: int = 48, gap: int = 3) -> np.ndarray:
    """Filters (count, channels, h, w) as one (H, W, 3) image in [0, 1]: ceil(sqrt(count))
    columns of cells, each filter scaled by its own largest weight and upscaled (nearest) to about
    ``cell`` pixels, white between cells. Colours by input channels: 3 (RGB) the filter's colour,
    gray = 0; 1 (gray) blue-white-red, white = 0; 2 (Sobel) the (d/dx, d/dy) weight pair at each
    tap as a colour, hue = the direction in which the filter wants brightness to grow (the key's
    wheel) and brightness = the pair's length."""
    from matplotlib import colormaps

    w = weight.detach().cpu().float()
    count, channels = w.shape[:2]
    w = w / w.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)  # each in [-1, 1]
    if channels == 2:
        # the Sobel channels are (left - right, top - bottom): brightness grows towards -(w0, w1)
        length = w.norm(dim=1)
        length = length / length.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
        cells = _direction_colours(-w[:, 0].numpy(), -w[:, 1].numpy(), length.numpy())
    elif channels == 1:
        cells = colormaps["RdBu_r"]((w[:, 0].numpy() + 1) / 2)[..., :3]
    else:
        cells = ((w[:, :3] + 1) / 2).permute(0, 2, 3, 1).numpy()
    scale = max(1, round(cell / max(cells.shape[1:3])))
    cells = cells.repeat(scale, axis=1).repeat(scale, axis=2)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    h, w_ = cells.shape[1] + gap, cells.shape[2] + gap
    grid = np.ones((rows * h + gap, columns * w_ + gap, 3))
    for index, image in enumerate(cells):
        row, col = divmod(index, columns)
        grid[gap + row * h : (row + 1) * h, gap + col * w_ : (col + 1) * w_] = image
    return grid


def filters_figure(model: Network, out: Path, title: str = "") -> Path:
    """The first conv layer's filters as :func:`filter_grid` draws them, under ``title`` (see
    :func:`figure_title`) and the layer's name; Sobel input adds the key: a wheel of directions."""
    plt = _pyplot()
    name, conv = first_conv(model)
    count, channels, kh, kw = conv.weight.shape
    grid = filter_grid(conv.weight)
    grid_w, grid_h = grid.shape[1] / 100, grid.shape[0] / 100  # inches at 100 dpi
    key = 1.4 if channels == 2 else 0.0  # inches for the wheel right of the grid
    width, height = max(5.0, grid_w + key + 0.2), max(grid_h, key) + 0.75
    fig = plt.figure(figsize=(width, height))
    left = (width - grid_w - key) / 2
    axis = fig.add_axes((left / width, 0.05 / height, grid_w / width, grid_h / height))
    axis.imshow(grid, interpolation="nearest")
    axis.axis("off")
    kind = {2: "Sobel input", 1: "gray input, red > 0 > blue", 3: "RGB input, gray = 0"}[channels]
    heading = f"{name}: {count} filters {kh}x{kw} ({kind}), each on its own scale"
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=9)
    if channels == 2:
        ys, xs = np.mgrid[-1:1:101j, -1:1:101j]
        radius = np.hypot(xs, ys)
        wheel = _direction_colours(xs, ys, np.clip(radius, 0, 1))
        wheel[radius > 1] = 1
        side = key - 0.4
        bottom = 0.05 + grid_h - side
        inset = fig.add_axes(
            ((left + grid_w + 0.3) / width, bottom / height, side / width, side / height)
        )
        inset.imshow(wheel)
        inset.set_xticks([])
        inset.set_yticks([])
        inset.spines[:].set_visible(False)
        inset.set_xlabel(
            "colour: where the\nfilter wants the\nimage brighter;\ndark: weak", fontsize=7
        )
    return _save(fig, out)


def reassignment_epochs(rows: list[dict]) -> list[int]:
    """The epochs of a training log that re-assigned NAT's targets (they log the time it took)."""
    return [r["epoch"] for r in rows if r.get("assign_ms", 0) > 0 or r.get("reassigned", 0) > 0]


def training_curves(histories: dict[str, list[dict]], out: Path, title: str = "") -> Path:
    """Loss per epoch of each run, and NAT's mean cosine to its own target where logged; the
    epochs that re-assigned the targets shaded (their loss drops: the sawtooth is the schedule)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    shaded = sorted({e for rows in histories.values() for e in reassignment_epochs(rows)})
    for axis in (left, right):
        for index, epoch in enumerate(shaded):
            label = "targets re-assigned" if index == 0 and axis is left else None
            axis.axvspan(epoch - 0.4, epoch + 0.4, color="tab:orange", alpha=0.15, label=label)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for name, rows in histories.items():
        left.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], marker=".", label=name)
        if rows and "cosine" in rows[0]:
            right.plot(
                [r["epoch"] for r in rows], [r["cosine"] for r in rows], marker=".", label=name
            )
    left.set(xlabel="epoch", ylabel="training loss")
    right.set(xlabel="epoch", ylabel="mean cosine to own target")
    left.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def line_plot(
    x: list,
    series: dict[str, list[float]],
    xlabel: str,
    ylabel: str,
    title: str,
    out: Path,
    chance: float | None = None,
) -> Path:
    """One line per series against ``x`` (e.g. transfer accuracy per layer against epoch). With
    ``chance`` (an accuracy's chance level) the y-axis runs from it (dashed) to 1, so differences
    show at their true size."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axis = plt.subplots(figsize=(6, 3.6))
    for name, values in series.items():
        axis.plot(x, values, marker="o", label=name)
    if chance is not None:
        axis.axhline(chance, color="gray", linestyle="--", label=f"chance ({chance:.3g})")
        lowest = min([chance, *(v for values in series.values() for v in values)])
        axis.set_ylim(lowest, 1)
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.title.set_fontsize(9)
    if all(isinstance(value, int) for value in x):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)
