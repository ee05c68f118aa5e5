"""Pascal VOC in torchvision's ``VOCDetection`` layout: every image of a split with its annotated
objects (boxes, classes, the ``difficult`` flag), for classification and detection transfer.

The layout is ``root/VOCdevkit/VOC2007/{JPEGImages/ID.jpg, Annotations/ID.xml,
ImageSets/Main/<image_set>.txt}``; ``download=True`` lets torchvision fetch and unpack it (VOC2007's
test split comes in a tar of its own, which torchvision picks for ``image_set="test"``). Any data
set written in this format reads the same way, with its own class names.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from natlearn.errors import NatlearnError
from natlearn.progress import steps

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "VOC07",
    "VOC_CLASSES",
    "VOC_IMAGE_SETS",
    "VOCImage",
    "VOCSplit",
    "decode_images",
    "load_image",
    "read_voc",
    "read_voc07",
]

# The official order (the devkit's VOCopts.classes): class index i is VOC_CLASSES[i].
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_IMAGE_SETS = ("train", "val", "trainval", "test")
_YEARS = tuple(str(year) for year in range(2007, 2013))


@dataclass(frozen=True)
class VOCImage:
    """One annotated image.

    Attributes:
        path: its JPEG file.
        boxes: (m, 4) float32 ``xmin, ymin, xmax, ymax`` in pixels, 0-based (the XML's 1-based
            ``xmin``/``ymin`` less 1, ``xmax``/``ymax`` as written: a box spans ``xmax - xmin``
            pixels).
        labels: (m,) int64 indices into :attr:`VOCSplit.classes`.
        difficult: (m,) bool, the objects VOC marks ``difficult`` (ignored when scoring).
    """

    path: Path
    boxes: torch.Tensor
    labels: torch.Tensor
    difficult: torch.Tensor


@dataclass(frozen=True)
class VOCSplit:
    """The images of one VOC image set, and the class names their labels index."""

    images: list[VOCImage]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def class_targets(self) -> torch.Tensor:
        """Image-level multi-label targets, (n, C) int8: 1 where the image holds a non-difficult
        object of the class, 0 where it holds only difficult ones (ignored when training and
        scoring: the VOC2007 classification rule), -1 where the class is absent."""
        n, classes = len(self.images), len(self.classes)
        present = torch.zeros(n, classes, dtype=torch.bool)
        any_object = torch.zeros(n, classes, dtype=torch.bool)
        for row, image in enumerate(self.images):
            any_object[row, image.labels] = True
            present[row, image.labels[~image.difficult]] = True
        targets = torch.full((n, classes), -1, dtype=torch.int8)
        targets[any_object] = 0
        targets[present] = 1
        return targets


def read_voc(
    root: str | Path,
    image_set: str,
    year: str = "2007",
    download: bool = False,
    classes: tuple[str, ...] | None = None,
) -> VOCSplit:
    """The images and objects of ``image_set`` (train, val, trainval or test) of VOC ``year``.

    Class list: ``classes`` when given (read a test split with its train split's classes); else
    :data:`VOC_CLASSES` when every object is one of them; else the sorted names found (a VOC-format
    data set of one's own).

    Raises NatlearnError (one line, with the fix) for a missing layout or file, an unknown image
    set, an unreadable annotation, an object outside ``classes``, or a split with no objects.
    """
    root = Path(root)
    dataset, base, listing = _torchvision_split(root, image_set, year, download)
    if not dataset.images:
        raise NatlearnError(f"{listing} lists no images; give a non-empty image set")
    objects = [
        _objects(Path(xml), Path(jpeg))
        for jpeg, xml in zip(dataset.images, dataset.annotations, strict=True)
    ]
    names = [name for found in objects for name, _, _ in found]
    if not names:
        raise NatlearnError(
            f"the {len(objects)} annotations of VOC{year} {image_set} in {base / 'Annotations'} "
            "hold no <object>; give annotated images"
        )
    if classes is None:
        found_names = set(names)
        classes = VOC_CLASSES if found_names <= set(VOC_CLASSES) else tuple(sorted(found_names))
    index = {name: i for i, name in enumerate(classes)}
    images = []
    for jpeg, found in zip(dataset.images, objects, strict=True):
        unknown = sorted({name for name, _, _ in found} - index.keys())
        if unknown:
            raise NatlearnError(
                f"{Path(jpeg).name} of VOC{year} {image_set} holds {', '.join(unknown)}, not "
                f"among the classes ({', '.join(classes)}); read it with the classes of the "
                "split the classifier was trained on, or fix its annotation"
            )
        images.append(
            VOCImage(
                Path(jpeg),
                torch.tensor([box for _, box, _ in found], dtype=torch.float32).view(-1, 4),
                torch.tensor([index[name] for name, _, _ in found], dtype=torch.int64),
                torch.tensor([hard for _, _, hard in found], dtype=torch.bool),
            )
        )
    return VOCSplit(images, tuple(classes))


def _objects(xml: Path, jpeg: Path) -> list[tuple[str, tuple[float, float, float, float], bool]]:
    """(class name, 0-based box, difficult) of every object of one annotation file."""
    from torchvision.datasets import VOCDetection

    try:
        from defusedxml.ElementTree import parse
    except ImportError:  # torchvision's own fallback: VOC annotations are trusted local files
        from xml.etree.ElementTree import parse
    from xml.etree.ElementTree import ParseError

    for path in (jpeg, xml):
        if not path.is_file():
            raise NatlearnError(
                f"{path} is missing (listed in the image set); restore it or remove its id from "
                "the ImageSets/Main list"
            )
    try:
        top = parse(xml).getroot()
        if top.tag != "annotation":
            raise KeyError("annotation")
        annotation = VOCDetection.parse_voc_xml(top).get("annotation") or {}  # {}: no children
        found = []
        for item in annotation.get("object", []):  # torchvision's parse keeps a list, even of one
            box = item["bndbox"]
            xmin, ymin, xmax, ymax = (float(box[key]) for key in ("xmin", "ymin", "xmax", "ymax"))
            # VOC pixels are 1-based; x in [xmin - 1, xmax) is the box in 0-based coordinates.
            corners = (xmin - 1, ymin - 1, xmax, ymax)
            found.append((str(item["name"]).strip(), corners, item.get("difficult", "0") == "1"))
    except (ParseError, KeyError, TypeError, ValueError) as error:
        raise NatlearnError(
            f"{xml} is not a VOC annotation ({type(error).__name__}: {error}); each <object> "
            "needs <name> and <bndbox> with numeric xmin, ymin, xmax, ymax"
        ) from None
    return found


def load_image(path: Path, mode: str = "RGB") -> Image:
    """The image file of a VOC split, decoded in PIL ``mode`` (``RGB``, or ``L`` for a gray
    network). Raises NatlearnError (one line, naming the file) when it is truncated, corrupt or
    no image: classification and detection transfer read images through here alike."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert(mode)  # decodes the whole file, inside the try
    except (OSError, ValueError, SyntaxError) as error:  # PIL's: truncated, corrupt, not an image
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise NatlearnError(
            f"cannot read image {path} ({reason}); restore the file, or remove its id from the "
            "ImageSets/Main lists"
        ) from None


@dataclass(frozen=True)
class VOC07:
    """VOC2007's splits for transfer: fit on ``train``, choose on ``val``, refit on both,
    score ``test``."""

    train: VOCSplit
    val: VOCSplit
    test: VOCSplit

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


def _torchvision_split(root: Path, image_set: str, year: str, download: bool):
    """(torchvision's VOCDetection of the split, the year's folder, the split's listing file);
    downloads what is missing when ``download``, else refuses a missing split in one line."""
    if year not in _YEARS:
        raise NatlearnError(f"VOC year {year!r} is not one of {', '.join(_YEARS)}")
    sets = VOC_IMAGE_SETS if year == "2007" else VOC_IMAGE_SETS[:3]  # only 2007 released test
    if image_set not in sets:
        raise NatlearnError(f"VOC{year} image set {image_set!r} is not one of {', '.join(sets)}")
    base = root / "VOCdevkit" / f"VOC{year}"
    listing = base / "ImageSets" / "Main" / f"{image_set}.txt"
    if not listing.is_file() and not download:
        where = f"{base} does not exist" if not base.is_dir() else f"{listing} is missing"
        raise NatlearnError(
            f"no VOC{year} {image_set} split in {root}: {where}; give data_root= the folder "
            f"holding VOCdevkit/VOC{year} (torchvision's VOCDetection layout), or download=true"
        )
    from torchvision.datasets import VOCDetection

    try:
        # Downloads only what is missing: torchvision would unpack the whole tar again otherwise.
        dataset = VOCDetection(
            str(root), year=year, image_set=image_set, download=download and not listing.is_file()
        )
    except (OSError, RuntimeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise NatlearnError(
            f"cannot read or download VOC{year} {image_set} into {root} ({reason}); "
            "check the internet connection and free disk space, or unpack the VOC tars there"
        ) from None
    return dataset, base, listing


def read_voc07(root: str | Path, download: bool = False) -> VOC07:
    """VOC2007 train, val and test from ``root`` (torchvision's layout), val and test read with
    train's classes. Raises NatlearnError (one line) when a split is missing or val holds no
    positive (nothing to choose by)."""
    train = read_voc(root, "train", download=download)
    val = read_voc(root, "val", download=download, classes=train.classes)
    test = read_voc(root, "test", download=download, classes=train.classes)
    for name, split in (("val", val), ("test", test)):
        if not bool((split.class_targets() > 0).any()):
            raise NatlearnError(
                f"the {name} split of {root} holds no non-difficult object, so no AP can be "
                f"measured on it; give a {name} split with annotated objects"
            )
    return VOC07(train, val, test)


def _decode(path: Path, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    resized = load_image(path, mode).resize((size, size), Image.BILINEAR)
    array = np.array(resized, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def decode_images(
    split: VOCSplit, size: int, channels: int = 3, progress: bool = False, desc: str = ""
) -> torch.Tensor:
    """Every image of ``split`` resized whole to ``size`` x ``size`` (bilinear; gray when the
    network takes ``channels`` = 1): (n, channels, size, size) uint8."""
    mode = "L" if channels == 1 else "RGB"
    decode = functools.partial(_decode, size=size, mode=mode)
    paths = [image.path for image in split.images]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL frees the GIL
        arrays = list(
            steps(pool.map(decode, paths), f"decoding {desc}", len(paths), progress, 5.0, "images")
        )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
