"""Folders of images: scanning, robust decoding (odd modes, bad files), and a decode-once cache.

Small images are decoded once into one uint8 tensor, saved in a cache file outside the data folder
and keyed by the folder's content (paths, sizes, modification times, class names and labels) and the
decode settings, so the second run starts at once and any change to the folder makes a new cache.
Only files with an image extension are candidates (others are skipped with one warning).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from natlearn.choices import BadImagePolicy
from natlearn.errors import NatlearnError
from natlearn.files import atomic_write
from natlearn.progress import say, steps

__all__ = [
    "FolderListing",
    "class_folders",
    "scan_folder",
    "decode_image",
    "try_decode",
    "decode_folder",
    "default_cache_dir",
    "IMAGE_EXTENSIONS",
    "no_readable_image",
]

# torchvision's IMG_EXTENSIONS, plus .gif (PIL reads it; folders of GIFs worked before the filter).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
)
_CACHE_FORMAT = "natlearn-folder-cache-v2"  # v2: the key holds the class names and labels


@dataclass(frozen=True)
class FolderListing:
    """The candidate image files of a folder and their labels (-1 everywhere for a flat folder)."""

    root: Path
    files: list[Path]
    labels: list[int]
    classes: list[str]


def scan_folder(root: Path) -> FolderListing:
    """Class sub-folders give labels (files at any depth below them); a folder without sub-folders
    is unlabelled. Hidden files are ignored; files with an image extension
    (:data:`IMAGE_EXTENSIONS`, any case) are candidate images, the others are skipped with one
    warning naming the first."""
    if not root.is_dir():
        raise NatlearnError(f"data folder {root} does not exist; give an existing folder of images")
    subdirs = class_folders(root)
    if subdirs:
        pairs = [
            (f, label)
            for label, d in enumerate(subdirs)
            for f in sorted(d.rglob("*"))
            if _visible_file(f, d)
        ]
        classes = [d.name for d in subdirs]
        loose = sorted(f for f in root.iterdir() if _visible_file(f, root))
        if loose:  # an image left beside the class folders has no class: say it is not used
            warnings.warn(
                f"ignored {len(loose)} file(s) beside the class folders of {root}, the first "
                f"{loose[0].name}; only files inside a class folder are used",
                stacklevel=3,
            )
    else:
        pairs = [(f, -1) for f in sorted(root.iterdir()) if _visible_file(f, root)]
        classes = []
    others = [f for f, _ in pairs if f.suffix.lower() not in IMAGE_EXTENSIONS]
    pairs = [(f, label) for f, label in pairs if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not pairs:
        if others:
            raise NatlearnError(
                f"no image files in {root}: {len(others)} file(s) without an image extension, "
                f"the first {others[0]} (images end in {' '.join(IMAGE_EXTENSIONS)})"
            )
        raise NatlearnError(
            f"no files found in {root}; put images in it (or in one sub-folder per class)"
        )
    if others:
        warnings.warn(
            f"skipped {len(others)} non-image file(s) in {root} (no image extension), "
            f"the first {others[0]}",
            stacklevel=3,
        )
    return FolderListing(root, [f for f, _ in pairs], [label for _, label in pairs], classes)


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of ``root``, sorted by name (hidden ones are not classes): label i is
    the i-th."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _visible_file(path: Path, base: Path) -> bool:
    return path.is_file() and not any(part.startswith(".") for part in path.relative_to(base).parts)


def decode_image(path: Path, size: int) -> np.ndarray:
    """An RGB uint8 (size, size, 3) array: the short side resized to ``size`` (smaller images are
    upscaled), then centre-cropped. Grayscale, palette, RGBA (alpha dropped) and 16-bit images are
    converted. Raises OSError/ValueError for files that are not readable images."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = Image.fromarray(_wide_to_8bit(np.asarray(image)), "L")
        rgb = image.convert("RGB")
    if rgb.size != (size, size):
        scale = size / min(rgb.size)
        rgb = rgb.resize(
            (max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))),
            Image.BILINEAR,
        )
        left, top = (rgb.width - size) // 2, (rgb.height - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.array(rgb, dtype=np.uint8)  # a writable copy, so torch.from_numpy is safe


def _wide_to_8bit(array: np.ndarray) -> np.ndarray:
    """16- or 32-bit gray to uint8. PIL's own conversion saturates at 255, so: values up to 65535
    (16-bit images, whether PIL opens them as ``I;16`` or ``I``) keep their high byte; genuinely
    32-bit data are scaled by their maximum. Negative values become 0."""
    wide = np.clip(array.astype(np.int64), 0, None)
    peak = int(wide.max(initial=0))
    if peak <= 65535:
        return (wide >> 8).astype(np.uint8)
    return np.rint(wide * (255.0 / peak)).astype(np.uint8)


def no_readable_image(
    root: Path, first_bad: Path, count: int, sampled_from: int | None = None
) -> NatlearnError:
    """The error for a folder none of whose ``count`` image files (a sample of ``sampled_from``)
    decodes."""
    of = f" sampled of {sampled_from}" if sampled_from not in (None, count) else ""
    return NatlearnError(
        f"no readable image in {root}: all {count} image file(s){of} are unreadable, "
        f"the first {first_bad}; replace them"
    )


def try_decode(path: Path, size: int) -> np.ndarray | None:
    """:func:`decode_image`, or None for a file that is not a readable image."""
    try:
        return decode_image(path, size)
    except (OSError, ValueError, SyntaxError):  # PIL's: truncated, corrupt or not an image
        return None


def first_image_size(listing: FolderListing) -> int:
    """Short side of the first readable image: the default size of a folder's images."""
    from PIL import Image

    for path in listing.files:
        try:
            with Image.open(path) as image:
                return min(image.size)
        except (OSError, ValueError, SyntaxError):
            continue
    raise no_readable_image(listing.root, listing.files[0], len(listing.files))


def default_cache_dir() -> Path:
    return Path(os.environ.get("NATLEARN_CACHE") or Path.home() / ".cache" / "natlearn")


def _cache_key(listing: FolderListing, size: int, on_bad_image: BadImagePolicy) -> str:
    digest = hashlib.sha256(
        f"{_CACHE_FORMAT}\n{listing.root.resolve()}\n{size}\n{on_bad_image}\n".encode()
    )
    # An added class folder shifts the labels.
    digest.update(("classes\t" + "\t".join(listing.classes) + "\n").encode())
    for path, label in zip(listing.files, listing.labels, strict=True):
        stat = path.stat()
        line = f"{path.relative_to(listing.root)}\t{stat.st_size}\t{stat.st_mtime_ns}\t{label}\n"
        digest.update(line.encode())
    return digest.hexdigest()[:24]


def _decoded(listing: FolderListing, size: int, on_bad_image: BadImagePolicy) -> dict:
    """What :func:`decode_folder` stores: the readable images of ``listing`` decoded, the bad files
    refused (``on_bad_image="error"``) or listed as skipped."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        decoded = pool.map(lambda path: try_decode(path, size), listing.files)
        what = f"decoding {listing.root}"
        arrays = list(steps(decoded, what, len(listing.files), every=5.0, unit="images"))
    bad = [path for path, array in zip(listing.files, arrays, strict=True) if array is None]
    keep = [i for i, array in enumerate(arrays) if array is not None]
    if not keep:
        raise no_readable_image(listing.root, bad[0], len(bad))
    if bad and on_bad_image == "error":
        raise NatlearnError(
            f"{bad[0]} is not a readable image ({len(bad)} bad file(s) in {listing.root}); "
            "remove it or set on_bad_image=skip"
        )
    return {
        "format": _CACHE_FORMAT,
        "images": torch.from_numpy(
            np.stack([arrays[i] for i in keep]).transpose(0, 3, 1, 2).copy()
        ),
        "labels": torch.tensor([listing.labels[i] for i in keep], dtype=torch.int64),
        "files": [str(listing.files[i].relative_to(listing.root)) for i in keep],
        "skipped": [str(path.relative_to(listing.root)) for path in bad],
    }


def decode_folder(
    listing: FolderListing,
    size: int,
    on_bad_image: BadImagePolicy = "error",
    cache_dir: Path | None = None,
) -> dict:
    """Decode every image of ``listing`` to ``size`` x ``size``, through the cache when
    ``cache_dir`` is set.

    Bad files (unreadable or not images) stop with an error naming the first one, or with
    ``on_bad_image="skip"`` are left out with one warning listing them.

    Returns:
        {"images": (n, 3, size, size) uint8, "labels": (n,) int64, "files": [relative paths]}.
    """
    cache = (
        cache_dir / f"folder-{_cache_key(listing, size, on_bad_image)}.pt" if cache_dir else None
    )
    if cache is not None and cache.is_file():
        try:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
            if stored.get("format") == _CACHE_FORMAT:
                _warn_skipped(listing.root, stored["skipped"])
                found = f"{len(stored['images']):,} images at {size} px"
                say(f"{listing.root}: {found} from the decode cache {cache}")
                return stored
        except Exception:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"rebuilding damaged cache file {cache}", stacklevel=2)
    stored = _decoded(listing, size, on_bad_image)
    _warn_skipped(listing.root, stored["skipped"])
    decoded = f"{listing.root}: decoded {len(stored['images']):,} images at {size} px"
    if cache is None:
        say(f"{decoded}; not cached (cache=false)")
    else:
        try:
            atomic_write(cache, lambda tmp: torch.save(stored, tmp))
            say(f"{decoded}; cached in {cache}, so the next run skips decoding")
        except OSError as error:
            warnings.warn(
                f"cannot write the decode cache in {cache_dir} ({error.strerror}); "
                "set NATLEARN_CACHE to a writable folder",
                stacklevel=2,
            )
    return stored


def _warn_skipped(root: Path, skipped: list[str]) -> None:
    if skipped:
        shown = ", ".join(skipped[:10]) + (
            f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        )
        warnings.warn(f"skipped {len(skipped)} unreadable file(s) in {root}: {shown}", stacklevel=3)
