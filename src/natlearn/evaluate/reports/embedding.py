"""``natlearn embed``: the frozen features of every image of a folder or data set, written for the
user's own use (retrieval, clustering, plots), through the view evaluation uses.

Two files, ``feats.npy`` and the index ``feats.csv`` beside it:

- ``feats.npy``: float32 (n, F), row i the features of image i. A .npy file opens memory-mapped
  (``np.load("feats.npy", mmap_mode="r")`` reads only the rows used, so a file larger than memory
  opens at once), is written the same way, batch by batch into a preallocated
  :func:`numpy.lib.format.open_memmap` (never every feature in memory), and numpy alone reads it
  (``torch.from_numpy``, scikit-learn, faiss; other languages have .npy readers). An .npz is a zip:
  neither memory-mapped nor written in place; parquet would add a pyarrow dependency, and a
  columnar table is a poor fit for thousands of float columns.
- ``feats.csv``: one line per row of features: ``row`` and ``path`` (the file, relative to the data
  folder) for folders; ``row``, ``split`` and ``index`` (the image's position in that split, as
  :func:`~natlearn.data.load_split` gives it) for named data sets; then ``label`` and
  ``class`` when the data has labels (-1 and empty for an unlabelled image). Text columns belong in
  a text file that any tool reads (pandas, spreadsheets, awk), not in the float matrix.

Both go to temporary files beside their names and are renamed once complete, the ``.npy`` last: a
``feats.npy`` is never half-written, and a failure leaves an earlier pair as it was.

``split="all"`` (the default) is every image exactly once: a flat or class folder whole (its
held-out test split included), a folder with ``train/`` and ``test/`` both (train first), digits'
``all``, and the train then the test split of the other named data sets (svhn's ``extra``, stl10's
``unlabeled``: ask for them by name).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from natlearn.config import Config, apply_overrides, resolve_device
from natlearn.data import DATASETS, ImageData, load_split
from natlearn.errors import NatlearnError
from natlearn.evaluate.features import FEATURE_BUDGET, batch_features, image_batches
from natlearn.files import atomic_write
from natlearn.models import Network, feature_layers
from natlearn.training.checkpoint import evaluation_config, load_checkpoint, network_from_state

__all__ = ["Embedding", "embed", "embed_splits", "index_path"]


@dataclass(frozen=True)
class Embedding:
    """What :func:`embed` wrote: ``rows`` x ``dims`` float32 features of ``layer`` in ``features``,
    their index in ``index``; ``source``: which images (the data sets' split notes)."""

    features: Path
    index: Path
    rows: int
    dims: int
    layer: str
    source: str
    image_size: str = ""  # the side images were read at, and where it came from

    def summary(self) -> str:
        """The closing line of ``natlearn embed``: what was written and how to load it."""
        size = f" read at {self.image_size}" if self.image_size else ""
        return (
            f"wrote {self.features} ({self.rows:,} x {self.dims:,} float32, layer {self.layer} of "
            f"{self.source}{size}) and its index {self.index}; load them with "
            f'np.load("{self.features}", mmap_mode="r") and pandas.read_csv("{self.index}")'
        )


def index_path(out: str | Path) -> Path:
    """The index file beside the features file ``out``: the same name ending in ``.csv``."""
    return Path(out).with_suffix(".csv")


def embed_splits(data: str, split: str) -> list[str]:
    """The splits of data set ``data`` that ``split`` stands for (``all``: every image once)."""
    folder, named = Path(data), data in DATASETS
    split_folders = not named and (folder / "train").is_dir() and (folder / "test").is_dir()
    if split == "all" and data != "digits" and (named or split_folders):
        return ["train", "test"]  # no "all" split: torchvision's, synthetic, train/ + test/ folders
    flat = not named and folder.is_dir() and not split_folders
    if split == "test" and flat and not any(_class_folder(path) for path in folder.iterdir()):
        raise NatlearnError(
            f"{data} is a flat folder (no class sub-folders): it has no test split; "
            "use --split all (every image)"
        )
    return [split]


def _class_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")  # as natlearn.data.folder scans them


def _configs(
    state: dict, name: str, overrides: Sequence[str] | dict[str, object], layer: str
) -> tuple[Config, str, Config]:
    """(the checkpoint's config for reading the data, where its image size came from, the user's
    own ``progress=`` and ``device=``), refusing a ``layer`` the network lacks."""
    overrides = dict(overrides) if isinstance(overrides, dict) else list(overrides)
    config, size_note = evaluation_config(state, overrides)
    asked = apply_overrides(Config(), overrides)  # the user's progress= and device=, not the run's
    config = dataclasses.replace(config, progress=asked.progress)
    valid = feature_layers(config.arch, config.widths)
    if layer not in valid:
        raise NatlearnError(
            f"--layer {layer}: no such layer in {name}; valid layers: {', '.join(valid)}"
        )
    return config, size_note, asked


def embed(
    checkpoint: str | Path | dict,
    overrides: Sequence[str] | dict[str, object] = (),
    layer: str = "neck",
    out: str | Path = "feats.npy",
    split: str = "all",
    batch_size: int = 256,
    max_dims: int = FEATURE_BUDGET,
) -> Embedding:
    """Write the ``layer`` features of every image of the ``split`` of the data a checkpoint's
    config names (changed by ``overrides``, e.g. ``["data=path/to/folder"]``) to ``out`` (.npy) and
    the index beside it (:func:`index_path`).

    The features are evaluation's: eval mode, the deterministic view of the training crops
    (:func:`natlearn.data.eval_view`), conv maps average-pooled to about ``max_dims`` values
    (:func:`~natlearn.evaluate.features.pool_conv_map`); ``neck`` is the penultimate layer, ``head``
    the NAT output. ``progress=`` and ``device=`` among ``overrides`` apply (default: a progress bar
    on a terminal, a line per tenth otherwise; the GPU when there is one), not the run's. Images are
    read at the size the network trained at unless ``image_size=`` is given
    (:func:`~natlearn.training.checkpoint.evaluation_config`). A streamed folder
    (``data_mode=stream``, or one over 4 GiB decoded) is read a batch at a time by ``workers``
    DataLoader processes.

    Args:
        checkpoint: a run folder (its newest checkpoint), a checkpoint .pt file, or a checkpoint
            already loaded by :func:`~natlearn.training.checkpoint.load_checkpoint`.
    """
    out = Path(out)
    if out.suffix.lower() != ".npy":
        raise NatlearnError(
            f"--out {out}: the features are a .npy file; give a name ending in .npy"
        )
    if batch_size < 1:
        raise NatlearnError(f"--batch-size {batch_size} must be >= 1")
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    name = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    config, size_note, asked = _configs(state, name, overrides, layer)
    parts = {part: load_split(config, part) for part in embed_splits(config.data, split)}
    model = network_from_state(state).to(resolve_device(asked.device)).eval()
    _check_channels(model, parts.values(), name)
    first = next(iter(parts.values()))  # its image size sets the crop, as the train split's does
    size = config.resolve(first.image_size).crop_size
    view = {"crop_size": size, "crop": config.crop, "scale": config.crop_scale}
    view["max_dims"] = max_dims
    columns = ["row", "split", "index"] if config.data in DATASETS else ["row", "path"]
    if any(part.labels is not None for part in parts.values()):
        columns += ["label", "class"]
    shape: list[int] = []
    job = (columns, parts, model, layer, view, config, batch_size)

    def write_both(features_tmp: Path) -> None:  # the index is renamed first, the .npy last
        atomic_write(index_path(out), lambda index: shape.extend(_write(features_tmp, index, *job)))

    atomic_write(out, write_both)
    notes = "; ".join(part.split_note for part in parts.values())
    size = f"{first.image_size} px ({size_note})"
    return Embedding(out, index_path(out), shape[0], shape[1], layer, notes, size)


def _write(
    path: Path,
    index_file: Path,
    columns: list[str],
    parts: dict[str, ImageData],
    model: Network,
    layer: str,
    view: dict,
    config: Config,
    batch_size: int,
) -> tuple[int, int]:
    """Write the features of ``parts`` (split name -> data) into a .npy at ``path``, a batch at a
    time, and their index lines (``columns``) to a csv at ``index_file``; returns (rows, dims)."""
    total, row, matrix = sum(len(data) for data in parts.values()), 0, None
    device = next(model.parameters()).device
    named, root = config.data in DATASETS, Path(config.data)
    shown = _Progress(total, config.progress)
    with open(index_file, "w", newline="") as handle, shown:
        index = csv.writer(handle)
        index.writerow(columns)
        for split, data in parts.items():
            for ids, images in image_batches(data, batch_size, device, config.workers):
                values = batch_features(model, images, [layer], **view)[layer].numpy()
                if matrix is None:  # the width is known once the first batch is through
                    matrix = np.lib.format.open_memmap(
                        path, mode="w+", dtype=np.float32, shape=(total, values.shape[1])
                    )
                matrix[row : row + len(values)] = values
                for offset, i in enumerate(ids.tolist()):
                    where = [split, i] if named else [_relative(data.files[i], root)]
                    index.writerow([row + offset, *where, *_label(data, i, columns)])
                row += len(values)
                shown.update(len(values))
    if matrix is None:
        raise NatlearnError(f"no readable image in {config.data}; nothing to embed")
    matrix.flush()
    dims = matrix.shape[1]
    del matrix
    if row < total:  # a stream with on_bad_image=skip left unreadable files out
        _keep_rows(path, row, dims)
    return row, dims


def _check_channels(model: Network, parts: Iterable[ImageData], name: str) -> None:
    """Refuse images whose channels an ``input=rgb`` network cannot take (gray and sobel average
    the channels, so they take any)."""
    if model.input.mode != "rgb":
        return
    expected = model.input.in_channels
    for part in parts:
        if part.channels != expected:
            raise NatlearnError(
                f"{name} takes {expected}-channel images (input=rgb), but {part.split_note} has "
                f"{part.channels}; embed images like the ones it was trained on"
            )


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _label(data: ImageData, i: int, columns: list[str]) -> list:
    if "label" not in columns:
        return []
    if data.labels is None:
        return [-1, ""]
    label = int(data.labels[i])
    return [label, data.classes[label] if 0 <= label < len(data.classes) else ""]


def _keep_rows(path: Path, rows: int, dims: int) -> None:
    """Cut the .npy at ``path`` to its first ``rows`` rows (through a copy, a block at a time)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    shorter = Path(name)
    try:
        full = np.load(path, mmap_mode="r")
        cut = np.lib.format.open_memmap(shorter, mode="w+", dtype=np.float32, shape=(rows, dims))
        for start in range(0, rows, 65536):
            stop = min(start + 65536, rows)
            cut[start:stop] = full[start:stop]
        cut.flush()
        del cut, full
        os.replace(shorter, path)
    except BaseException:
        shorter.unlink(missing_ok=True)
        raise


class _Progress:
    """A tqdm bar on a terminal; elsewhere (logs, CI) a plain line at each tenth of the way;
    nothing with ``progress=false``."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.tenths = total, 0, 0
        terminal = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="embed", unit="img", leave=False) if terminal else None
        self.lines = enabled and not terminal

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.lines and (tenths := 10 * self.done // max(1, self.total)) > self.tenths:
            self.tenths = tenths
            print(
                f"embed: {self.done:,} of {self.total:,} images ({10 * tenths}%)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
