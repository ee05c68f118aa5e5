"""What every evaluation protocol is given (:class:`EvalSettings`: what to run, and how) and what
each probe returns (:class:`ProbeResult`). Nothing here imports torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvalSettings", "ProbeResult"]


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
    workers: int = 2  # DataLoader processes reading a streamed folder (the config's ``workers``)
    # The settings of protocols added to the table beyond these fields, by field name.
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_flags(cls, values: dict[str, Any]) -> EvalSettings:
        """The settings of :func:`~natlearn.evaluate.probes.protocols.flag_values`: its fields
        that are not EvalSettings' own go to ``options``."""
        own = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{key: value for key, value in values.items() if key in own},
            options={key: value for key, value in values.items() if key not in own},
        )

    def as_dict(self) -> dict[str, Any]:
        """Every setting, ``options`` among the fields (as a protocol of the table sees them)."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        options = settings.pop("options")
        return {**settings, **options}

    def matching(self, config) -> EvalSettings:
        """These settings with the view, flips and stream workers of the training ``config``."""
        return dataclasses.replace(
            self,
            crop=config.crop,
            crop_scale=config.crop_scale,
            flip=config.flip,
            workers=config.workers,
        )


@dataclass(frozen=True)
class ProbeResult:
    """Test accuracy of a probe (top-5 only with more than 10 classes) and what was chosen on
    training data.

    Attributes:
        weight_decay: the decay the linear probe chose on held-out training images.
        held_out_top1: the chosen probe's accuracy on held-out *training* images (cross-validation
            or a 10% split): what a layer, a decay or a checkpoint is chosen by. Never the test
            split.
        solver: how the linear probe was fit (``lbfgs`` or ``adam``).
        k: neighbours the k-NN used (the requested k, or the training set's size if smaller).
        steps: optimisation steps the MLP probe took.
    """

    top1: float
    top5: float | None = None
    weight_decay: float | None = None
    held_out_top1: float | None = None
    solver: str | None = None
    k: int | None = None
    steps: int | None = None

    def as_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if value is not None}
