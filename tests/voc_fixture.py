"""A tiny Pascal VOC data set on disk, in the real layout and XML format, for tests of
:mod:`natlearn.data.voc` and the VOC transfer protocols.

Each image is a noisy canvas with 1-3 filled shapes; a class has its own colour and shape, so a
network can learn the classes in a few steps. Some objects are marked ``<difficult>1</difficult>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["FixtureObject", "VOCFixture", "write_voc_fixture"]

DEFAULT_CLASSES = ("cat", "dog", "person")
_COLOURS = ((220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 200, 30), (200, 40, 200))


@dataclass(frozen=True)
class FixtureObject:
    """What the XML says, and the 0-based box a reader should return for it."""

    name: str
    box: tuple[int, int, int, int]  # 0-based xmin, ymin, xmax, ymax (xmax/ymax exclusive)
    difficult: bool


@dataclass
class VOCFixture:
    root: Path  # the folder holding VOCdevkit/
    base: Path  # root/VOCdevkit/VOC<year>
    splits: dict[str, list[str]]  # image set -> image ids, in listing order
    objects: dict[str, list[FixtureObject]] = field(default_factory=dict)  # image id -> objects


def write_voc_fixture(
    root: Path,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    sizes: dict[str, int] | None = None,
    year: str = "2007",
    seed: int = 0,
) -> VOCFixture:
    """Write ``root/VOCdevkit/VOC<year>`` with JPEGs (40-64 px sides), annotations and
    ``ImageSets/Main/{train,val,trainval,test}.txt``.

    Every split holds every class as a non-difficult object at least once (image ``i`` of a split
    has class ``i % C``), and some images hold a difficult object of a class they hold nowhere
    else, so class targets of 0 occur. Args: ``sizes``: images per split (default train 12, val 9,
    test 12); ``classes``: names to draw (e.g. CIFAR names, to test a non-VOC class list).
    """
    sizes = {"train": 12, "val": 9, "test": 12, **(sizes or {})}
    rng = np.random.default_rng(seed)
    base = Path(root) / "VOCdevkit" / f"VOC{year}"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    fixture = VOCFixture(Path(root), base, {})
    number = 0
    for split in ("train", "val", "test"):
        ids = []
        for i in range(sizes[split]):
            number += 1
            image_id = f"{number:06d}"
            width, height = (int(v) for v in rng.integers(40, 65, size=2))
            names = [classes[i % len(classes)]]
            others = [c for c in classes if c != names[0]]
            if rng.random() < 0.5:
                names.append(others[int(rng.integers(len(others)))])
            hard = [False] * len(names)
            if i % 3 == 1:  # a difficult object of a class not otherwise in the image
                extra = [c for c in classes if c not in names]
                if extra:
                    names.append(extra[int(rng.integers(len(extra)))])
                    hard.append(True)
            fixture.objects[image_id] = _draw(
                base, image_id, width, height, names, hard, classes, rng
            )
            ids.append(image_id)
        fixture.splits[split] = ids
    fixture.splits["trainval"] = fixture.splits["train"] + fixture.splits["val"]
    for split, ids in fixture.splits.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return fixture


def _draw(
    base: Path,
    image_id: str,
    width: int,
    height: int,
    names: list[str],
    hard: list[bool],
    classes: tuple[str, ...],
    rng: np.random.Generator,
) -> list[FixtureObject]:
    pixels = rng.integers(90, 140, size=(height, width, 3), dtype=np.uint8)
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    objects = []
    for name, difficult in zip(names, hard, strict=True):
        side = int(rng.integers(12, 22))
        x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        x1, y1 = x0 + side, y0 + side  # exclusive
        k = classes.index(name)
        colour = _COLOURS[k % len(_COLOURS)]
        if k % 2:
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
        objects.append(FixtureObject(name, (x0, y0, x1, y1), difficult))
    canvas.save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
    (base / "Annotations" / f"{image_id}.xml").write_text(
        _xml(image_id, width, height, objects), encoding="utf-8"
    )
    return objects


def _xml(image_id: str, width: int, height: int, objects: list[FixtureObject]) -> str:
    """An annotation as the VOC2007 devkit writes one (1-based, inclusive pixel coordinates)."""
    parts = [
        "<annotation>",
        "\t<folder>VOC2007</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>\n\t\t<database>natlearn test fixture</database>\n\t</source>",
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
        "\t\t<depth>3</depth>\n\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for item in objects:
        x0, y0, x1, y1 = item.box
        parts += [
            "\t<object>",
            f"\t\t<name>{escape(item.name)}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            f"\t\t<difficult>{int(item.difficult)}</difficult>",
            f"\t\t<bndbox>\n\t\t\t<xmin>{x0 + 1}</xmin>\n\t\t\t<ymin>{y0 + 1}</ymin>\n"
            f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>",
            "\t</object>",
        ]
    return "\n".join([*parts, "</annotation>"]) + "\n"
