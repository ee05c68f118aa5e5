"""The evaluation protocols as one table. :data:`PROTOCOLS` names each protocol, the command-line
options it takes and the module that runs it; the commands' flags, the
:class:`~natlearn.evaluate.probes.settings.EvalSettings` they fill, the start-up summary and the
probe suite (:mod:`natlearn.evaluate.probes.suite`) are all read off it, so a new protocol is one
module and one entry here. Each probe returns a
:class:`~natlearn.evaluate.probes.settings.ProbeResult`.

A protocol's module defines some of (a missing one does nothing)

- ``layers(settings, network) -> list[str]``: the network layers whose features it reads;
- ``probes(inputs) -> list[Probe]``: its probes of a source's frozen features (:class:`Inputs`),
  run together with every other protocol's by the suite;
- ``describe(settings, network) -> str | None``: its part of the start-up summary's "protocols:"
  line (None: it does not run); ``network`` is None for features of no network;
- ``check(settings, train_set, test_set)``: refuse, before any work, data it cannot run on;
- ``train(inputs) -> dict[str, ProbeResult]``: for a protocol that trains the network itself
  rather than probing frozen features, its results by row, run after the probes, alone.

Nothing here imports torch: ``natlearn --help`` builds its parsers from this table.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from natlearn.errors import NatlearnError
from natlearn.evaluate.probes.settings import EvalSettings, ProbeResult

if TYPE_CHECKING:
    import torch

    from natlearn.data import ImageData
    from natlearn.models import Network

__all__ = [
    "PROTOCOLS",
    "Inputs",
    "Option",
    "Probe",
    "Protocol",
    "add_flags",
    "flag_values",
    "layer_flags",
    "names",
]


@dataclass(frozen=True)
class Option:
    """One command-line option of a protocol and the settings field it fills.

    ``group`` orders ``--help``: first what is probed ("what": layers, k), then how long ("how"),
    then the switches that turn protocols on or off ("switch"), each group in table order.
    ``parse`` turns the parsed value into the field's (raising a one-line
    :class:`~natlearn.errors.NatlearnError` on bad input); ``layers``: the value names network
    layers, checked against the network before any work. A field that is not one of
    EvalSettings' own lands in its ``options``."""

    flag: str
    field: str
    group: Literal["what", "how", "switch"]
    argparse: dict[str, Any]
    parse: Callable[[Any], Any] = lambda value: value
    layers: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Protocol:
    """An entry of the table: a name, its options, and the module (under
    ``natlearn.evaluate.probes``) that runs it."""

    name: str
    module: str
    options: tuple[Option, ...] = ()

    def _hook(self, name: str, default: Callable) -> Callable:
        module = importlib.import_module(f"natlearn.evaluate.probes.{self.module}")
        return getattr(module, name, default)

    def layers(self, settings: EvalSettings, network: Network) -> list[str]:
        return self._hook("layers", lambda settings, network: [])(settings, network)

    def probes(self, inputs: Inputs) -> list[Probe]:
        return self._hook("probes", lambda inputs: [])(inputs)

    def describe(self, settings: EvalSettings, network: Network | None) -> str | None:
        return self._hook("describe", lambda settings, network: None)(settings, network)

    def check(self, settings: EvalSettings, train_set: ImageData, test_set: ImageData) -> None:
        self._hook("check", lambda settings, train_set, test_set: None)(
            settings, train_set, test_set
        )

    def train(self, inputs: Inputs) -> dict[str, ProbeResult]:
        return self._hook("train", lambda inputs: {})(inputs)


@dataclass(frozen=True)
class Probe:
    """One probe of one layer's features: what it is, how to run it on ``threads`` CPU threads
    (None: the probe's own choice), and a rough cost (seconds on one core) to start the longest
    first."""

    protocol: str
    layer: str
    features: int
    run: Callable[[int | None], ProbeResult]
    cost: float


@dataclass(frozen=True)
class Inputs:
    """What a protocol runs on: one source's (n, f) features per layer, fit on ``train`` with
    ``train_y``, scored on ``test`` with ``test_y``, on ``device``. ``network`` (with the data it
    came from and the crop it sees) is None for features of no network (raw pixels,
    hand-crafted), which hold a single entry."""

    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    train_y: torch.Tensor
    test_y: torch.Tensor
    settings: EvalSettings
    device: torch.device
    network: Network | None = None
    train_set: ImageData | None = None
    test_set: ImageData | None = None
    crop_size: int = 0

    def classes(self) -> int:
        return int(self.train_y.max()) + 1


def names(text: str) -> list[str]:
    """The comma-separated names of ``text``, blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        ks = (0,)  # not integers: refused below with the same message
    if any(k < 1 for k in ks):
        raise NatlearnError(
            f"--knn {text!r} must be comma-separated positive integers, e.g. 20,200 "
            "('' for no k-NN)"
        )
    return ks


def _at_least(flag: str, low: int, note: str = "") -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < low:
            raise NatlearnError(f"{flag} {value} must be >= {low}{note}")
        return value

    return check


PROTOCOLS: tuple[Protocol, ...] = (
    Protocol(
        "linear",
        "linear",
        (
            Option(
                "--layers",
                "layers",
                "what",
                {
                    "default": "",
                    "help": "comma-separated layers (default: every conv layer and neck)",
                },
                lambda text: names(text) or None,
                layers=True,
            ),
            Option(
                "--probe-epochs",
                "probe_epochs",
                "how",
                {"type": int, "default": 30, "help": "epochs of the linear and MLP probes"},
                _at_least("--probe-epochs", 1),
            ),
            Option(
                "--no-linear",
                "linear",
                "switch",
                {"action": "store_true", "help": "skip the linear probes"},
                lambda off: not off,
            ),
        ),
    ),
    Protocol(
        "knn",
        "knn",
        (
            Option(
                "--knn",
                "knn",
                "what",
                {"default": "20,200", "help": "k values of the weighted k-NN ('' for none)"},
                _ks,
            ),
            Option(
                "--knn-layers",
                "knn_layers",
                "what",
                {"default": "neck", "help": "layers the k-NN runs on (comma-separated)"},
                lambda text: tuple(names(text)),
                layers=True,
            ),
        ),
    ),
    Protocol(
        "mlp",
        "mlp",
        (
            Option(
                "--no-mlp",
                "mlp",
                "switch",
                {
                    "action": "store_true",
                    "help": "skip the paper's fc6-8 MLP on the last conv layer",
                },
                lambda off: not off,
            ),
        ),
    ),
    Protocol(
        "finetune",
        "finetune",
        (
            Option(
                "--finetune",
                "finetune_epochs",
                "switch",
                {
                    "type": int,
                    "default": 0,
                    "metavar": "EPOCHS",
                    "help": "also fine-tune every layer (0 = no)",
                },
                _at_least("--finetune", 0, " (0 = no fine-tuning)"),
            ),
        ),
    ),
)


def _options() -> list[Option]:
    order = {"what": 0, "how": 1, "switch": 2}
    listed = [option for protocol in PROTOCOLS for option in protocol.options]
    return sorted(listed, key=lambda option: order[option.group])  # stable: table order within


def add_flags(add: Callable[..., argparse.Action]) -> None:
    """Every protocol's options (``add``: a parser's add_argument)."""
    for option in _options():
        add(option.flag, **option.argparse)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """Settings field -> value of every protocol's option in ``args``, each checked."""
    return {option.field: option.parse(getattr(args, option.dest)) for option in _options()}


def layer_flags(args: argparse.Namespace) -> dict[str, list[str]]:
    """The options that name network layers: their dest -> the names given."""
    return {
        option.dest: names(getattr(args, option.dest)) for option in _options() if option.layers
    }
