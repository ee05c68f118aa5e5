"""The figures read at a glance: a near-square filter grid with each filter on its own scale and
Sobel directions drawn the right way round, neighbours framed by class, the re-assignment epochs
marked on the training curves, accuracy axes from chance, and every figure titled."""

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image

from natlearn.cli import main
from natlearn.config import Config
from natlearn.data import load_dataset
from natlearn.evaluate import EvalSettings
from natlearn.evaluate.reports import figures
from natlearn.evaluate.reports.evolution import evolution
from natlearn.evaluate.reports.figures import (
    filter_grid,
    filters_figure,
    line_plot,
    neighbours_figure,
    training_curves,
)
from natlearn.models import initial_model
from natlearn.models.input import InputLayer
from natlearn.training.trainer import train


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the figure functions save (written as usual), newest last."""
    kept, save = [], figures._save

    def keep(fig, path, dpi=100):
        kept.append(fig)
        return save(fig, path, dpi)

    monkeypatch.setattr(figures, "_save", keep)
    return kept


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures") / "run"
    config = Config(widths=(8, 16), dim=16, epochs=1, batch_size=128, out=str(out), progress=False)
    train(config)
    return out


def _cell(grid: np.ndarray, index: int, count: int, gap: int = 3) -> np.ndarray:
    """The pixels of filter ``index`` in a filter_grid of ``count`` filters."""
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    h, w = (grid.shape[0] - gap) // rows, (grid.shape[1] - gap) // columns
    row, col = divmod(index, columns)
    return grid[row * h + gap : (row + 1) * h, col * w + gap : (col + 1) * w]


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_each_filter_spans_the_colour_range_on_its_own_scale(channels):
    weight = torch.randn(32, channels, 3, 3, generator=torch.Generator().manual_seed(0))
    weight[5] *= 1e-4  # a filter with tiny weights beside large ones
    grid = filter_grid(weight)
    assert grid.shape[2] == 3 and grid.min() >= 0 and grid.max() <= 1
    tiny, large = _cell(grid, 5, 32), _cell(grid, 6, 32)
    assert tiny.shape == large.shape and tiny.shape[0] >= 24  # upscaled 3x3 cells
    if channels == 2:  # brightness = weight size: the tiny filter's largest tap is full brightness
        assert tiny.max() == pytest.approx(1, abs=1e-6)
    else:  # white/gray = 0: its largest weight reaches an end of the colour scale
        assert np.abs(tiny - (1 if channels == 1 else 0.5)).max() > 0.45


@pytest.mark.parametrize(("ramp", "direction"), [("right", (1, 0)), ("down", (0, 1))])
def test_a_sobel_filter_has_the_wheel_colour_of_the_direction_it_wants_brighter(ramp, direction):
    # the filter that matches the Sobel input of an image growing brighter to the right (or down)
    y, x = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    image = (x if ramp == "right" else y).view(1, 1, 9, 9) / 8
    gradients = InputLayer("sobel", in_channels=1)(image)[0, :, 3:6, 3:6]
    cell = _cell(filter_grid(gradients.unsqueeze(0)), 0, 1)
    expected = figures._direction_colours(np.array(direction[0]), np.array(direction[1]), 1.0)
    assert np.allclose(cell[cell.shape[0] // 2, cell.shape[1] // 2], expected, atol=1e-6)


def test_filters_figure_is_a_near_square_titled_grid(drawn, tmp_path):
    config = Config(widths=(64, 8), dim=8)
    model = initial_model(config, load_dataset("digits", "train"))  # 64 filters, Sobel input
    with Image.open(filters_figure(model, tmp_path / "f.png", "digits · small")) as image:
        assert 0.75 < image.width / image.height < 1.6 and image.height > 300
    title = drawn[-1]._suptitle.get_text()
    assert "digits · small" in title and "conv1: 64 filters 3x3 (Sobel input)" in title


def test_neighbours_are_framed_and_captioned_by_class(drawn, tmp_path):
    train_images = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    test_images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    train_labels, test_labels = torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([0, 1])
    # query 0 is nearest train images 0, 1, 2 in that order; query 1 nearest 3, 4, 5
    train_f = torch.tensor([[1, 0.0], [1, 0.1], [1, 0.2], [0, 1.0], [0.1, 1], [0.2, 1]])
    test_f = torch.tensor([[1, 0.0], [0, 1.0]])
    neighbours_figure(
        {"neck": (train_f, test_f)},
        train_images,
        test_images,
        tmp_path / "n.png",
        queries=2,
        k=3,
        labels=(train_labels, test_labels),
        classes=["cat", "dog"],
        title="toy · small · epoch 3 · neck",
    )
    fig = drawn[-1]
    axes = np.array(fig.axes).reshape(2, 4)
    frames = [[axis.spines["top"].get_edgecolor() for axis in row[1:]] for row in axes]
    red, green = to_rgba(figures.OTHER_CLASS), to_rgba(figures.SAME_CLASS)
    assert frames == [[green, red, green], [green, red, green]]
    assert [axis.get_ylabel() for axis in axes[:, 0]] == ["cat", "dog"]
    assert [axis.get_xlabel() for axis in axes[0, 1:]] == ["cat", "dog", "cat"]
    assert all(axis.spines["top"].get_edgecolor() == to_rgba(figures.QUERY) for axis in axes[:, 0])
    assert fig._suptitle.get_text() == "toy · small · epoch 3 · neck"


def _shaded_epochs(axis) -> list[float]:
    return sorted(round(patch.get_x() + patch.get_width() / 2, 3) for patch in axis.patches)


def test_training_curves_mark_exactly_the_reassignment_epochs(drawn, tmp_path):
    # reassign_every=3: epochs 1, 4 and 7 re-assign (epoch 7 re-assigned none: still the schedule)
    rows = [
        {
            "epoch": e,
            "loss": 1.0,
            "cosine": 0.5,
            "reassigned": 0.3 if e in (1, 4) else 0.0,
            "assign_ms": 2.0 if e in (1, 4, 7) else 0.0,
        }
        for e in range(1, 9)
    ]
    supervised = [{"epoch": e, "loss": 0.5} for e in range(1, 5)]
    training_curves({"nat": rows, "supervised": supervised}, tmp_path / "c.png", "digits · small")
    fig = drawn[-1]
    assert [_shaded_epochs(axis) for axis in fig.axes[:2]] == [[1, 4, 7], [1, 4, 7]]
    assert fig._suptitle.get_text() == "digits · small"


@pytest.mark.parametrize(("values", "bottom"), [([0.98, 0.99], 0.1), ([0.05, 0.99], 0.05)])
def test_accuracy_axis_starts_at_chance(drawn, tmp_path, values, bottom):
    line_plot([0, 1], {"conv1": values}, "epoch", "top-1", "t", tmp_path / "e.png", chance=0.1)
    assert drawn[-1].axes[0].get_ylim() == pytest.approx((bottom, 1))


def test_commands_title_their_figures_with_data_model_epoch_layer(drawn, tiny_run, tmp_path):
    checkpoint = str(tiny_run / "checkpoints" / "last.pt")
    assert main(["filters", checkpoint, "--out", str(tmp_path / "f.png")]) == 0
    assert drawn[-1]._suptitle.get_text().startswith("digits · small (nat) · epoch 1\nconv1:")
    argv = ["neighbors", checkpoint, "--queries", "2", "--k", "2", "--out", str(tmp_path / "n.png")]
    assert main(argv) == 0
    assert drawn[-1]._suptitle.get_text() == "digits · small (nat) · epoch 1 · neck"
    assert drawn[-1].axes[0].get_ylabel() in [str(d) for d in range(10)]  # the query's class
    assert main(["report", str(tiny_run)]) == 0
    assert drawn[-1]._suptitle.get_text() == "run: digits · small (nat) · epoch 1"


def test_evolution_plots_from_chance_under_a_titled_axis(drawn, tiny_run, tmp_path):
    settings = EvalSettings(layers=["neck"], knn=(), mlp=False, probe_epochs=2, progress=False)
    rows = evolution(tiny_run, settings, out=tmp_path)
    axis = drawn[-1].axes[0]
    lowest = min(row["protocols"]["linear"]["neck"]["top1"] for row in rows)
    assert axis.get_ylim()[0] == pytest.approx(min(0.1, lowest))  # digits: 10 classes
    assert axis.get_title() == "run: digits · small (nat), transfer along training"
