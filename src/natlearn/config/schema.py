"""The schema: :class:`Config`, one flat dataclass, every field typed (choices as ``Literal``,
resume-locked fields as ``Locked[...]``) and documented (the docstring under a field is its help),
and :func:`apply_overrides`, which coerces text and YAML values to the fields' types."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

from natlearn.choices import (
    Arch,
    BadImagePolicy,
    Crop,
    DataMode,
    HeadKind,
    InputMode,
    LoggerKind,
    LossKind,
    NonfinitePolicy,
    ObjectiveName,
    Precision,
    Reduction,
    Schedule,
    TargetKind,
    TrainSplit,
)
from natlearn.config import checks, text
from natlearn.config.resolved import Resolved
from natlearn.errors import NatlearnError

__all__ = ["FIELD_TYPES", "RESUME_LOCKED", "Config", "apply_overrides", "choices"]

_T = TypeVar("_T")
_LOCKED = "resume-locked"
# A resumed run must agree with its checkpoint on a Locked field, or its weights/targets mean
# something else (e.g. spare_targets: the checkpoint's assignment carries its own m, which would
# silently win over a new value; loss: for objective=supervised it decides the head, so the weights
# would not load; test_fraction and split_seed: which folder images are pre-trained on, so what the
# assignment's image indices mean).
Locked = Annotated[_T, _LOCKED]


@dataclass
class Config:
    # data
    data: Locked[str] = "digits"
    """Data set: digits (bundled), synthetic (random images: speed tests), cifar10, cifar100, mnist,
    fashion-mnist, svhn, stl10 (torchvision), or an image folder."""
    data_root: Locked[str] = ""
    """Folder holding a named data set in torchvision's layout (default ./data); unused for digits
    and folders."""
    download: bool = False
    """Let torchvision download a named data set missing from data_root (needs internet)."""
    train_split: Locked[TrainSplit] = "auto"
    """Split to pre-train on; auto = train (stl10: train+unlabeled, its 100k unlabelled images plus
    train; train for supervised)."""
    test_fraction: Locked[float] = 0.2
    """Class folders without train/ and test/: the fraction of each class held out (stratified,
    seeded by split_seed) as the test split; pre-training leaves it out (train_split=all pre-trains
    on every image)."""
    split_seed: Locked[int] = 0
    """Seeds that held-out split; apart from seed, so runs with other seeds are scored on the same
    test images."""
    image_size: Locked[int] = 0
    """Folders: side images are resized to (short side; smaller ones upscaled), then centre-cropped;
    0 = first image's."""
    crop_size: Locked[int] = 0
    """Side of the random training crop and of the evaluation centre crop; 0 = the image size."""
    crop: Crop = "pad"
    """pad (zero-pad by crop_padding, then random crop), resized (random box of crop_scale..1 of the
    area), none (centre)."""
    crop_padding: int = 1
    """Pixels of zero padding on each side for crop=pad (0 = random crops inside the image)."""
    crop_scale: float = 0.25
    """Smallest area fraction of a crop=resized box."""
    flip: bool = True
    """Random horizontal flip."""
    color_jitter: float = 0.0
    """Strength s of SimCLR's colour jitter on 80% of the crops: brightness, contrast and saturation
    by up to 0.8 s, hue by up to 0.2 s of a turn (SimCLR's CIFAR-10 s = 0.5; 0 = off, the
    paper's)."""
    grayscale: float = 0.0
    """Probability that a crop is turned gray (SimCLR's 0.2; 0 = off, the paper's)."""
    input: Locked[InputMode] = "sobel"
    """Input layer: rgb, gray or sobel (the paper's)."""
    on_bad_image: BadImagePolicy = "error"
    """A folder file that is not a readable image: error (name it and stop) or skip (one warning
    listing them)."""
    data_mode: DataMode = "auto"
    """Folders: memory (decode once, cached), stream (DataLoader workers read from disk), auto
    (stream above 4 GiB)."""
    workers: int = 2
    """DataLoader worker processes for data_mode=stream."""
    cache: bool = True
    """Cache decoded folder images ($NATLEARN_CACHE or ~/.cache/natlearn), keyed by the folder's
    content."""
    subset: Locked[int] = 0
    """Pre-train on a random subset of this many images (fixed by seed; 0 = all): quick experiments,
    ablations."""
    # network
    arch: Locked[Arch] = "small"
    """small (conv net for 8x8..64x64 images), alexnet (the paper's AlexNet-BN, 224x224),
    resnet18 / resnet34 / resnet50 (torchvision's; images up to 64 px get the CIFAR stem: a 3x3
    stride-1 first conv and no max-pool), or timm:NAME, any timm model with feature levels (e.g.
    timm:convnext_atto, timm:vit_tiny_patch16_224; needs pip install 'natlearn[timm]'): its levels
    are probed as stage1, stage2, ..."""
    widths: Locked[tuple[int, ...]] = (32, 64, 128, 128)
    """Channels of the small conv net's blocks."""
    dim: Locked[int] = 128
    """d: dimension of the output and of the targets (paper: 2048)."""
    head: Locked[HeadKind] = "linear"
    """What maps the probed pooled features (the neck) to the d-dim output: linear (one map) or mlp
    (the official code's fc-BN-ReLU layers of head_widths, then a map to d; instance-discrimination
    methods on ResNets train through such a projection head). Either is dropped from exports."""
    head_widths: Locked[tuple[int, ...]] = (2048, 2048)
    """Hidden widths of the mlp head (official, on AlexNet's 9216-d conv5: 4096, 4096)."""
    head_dropout: float = 0.0
    """Dropout after the mlp head's first hidden layer (official fc6: 0.5; 0 = none)."""
    # NAT
    objective: Locked[ObjectiveName] = "nat"
    """nat (noise as targets) or supervised (labels; a baseline on the same network)."""
    k: Locked[int | None] = None
    """Number of targets, k >= n; None = n (official)."""
    targets: Locked[TargetKind] = "sphere"
    """sphere (the paper) or discrete (one-hot, shared by several images: the clustering
    ablation)."""
    num_clusters: Locked[int | None] = None
    """Distinct discrete targets; None = dim."""
    reassign_every: int = 3
    """Re-assign targets in epochs where epoch % reassign_every == 0 (official 3); 0 = never."""
    spare_targets: Locked[int] = 0
    """m unassigned targets added to each batch problem (needs k >= n + m)."""
    assign_block: int = 0
    """Solve a batch's re-assignment in near-equal blocks of at most this many images (0 = the whole
    batch, official). The Hungarian method is O(b^3): blocks bound its cost for large (multi-GPU)
    batches."""
    loss: Locked[LossKind] = "auto"
    """square (the paper's) or softmax; auto = square for nat, softmax (cross-entropy) for
    supervised."""
    temperature: float = 0.1
    """Softmax temperature of the NAT softmax loss."""
    loss_reduction: Reduction = "mean"
    """mean over the batch, or sum (the official code: gradient scales with the batch)."""
    # optimisation
    epochs: int = 30
    """Passes over the pre-training images (official: about 100 on ImageNet; the cifar10 and stl10
    presets: 40, cifar10_resnet18: 200)."""
    batch_size: Locked[int] = 256
    """Images per step, over all ranks: under torchrun with N processes each rank trains on
    batch_size / N."""
    lr: float = 0.05
    """SGD learning rate, the start of lr_schedule (official: 0.01, constant; 0.05 with cosine is
    this project's CIFAR-10 default; 0.1 for ResNet-50 at batch 256)."""
    momentum: float = 0.9
    """SGD momentum (official: 0, plain SGD; 0.9 is this project's default, the usual modern
    choice)."""
    weight_decay: float = 5e-4
    """SGD L2 weight decay (official: 0; 5e-4 is the usual CIFAR value and this project's default;
    1e-4 for ResNet-50 on ImageNet)."""
    lr_schedule: Schedule = "cosine"
    """constant (official), cosine, or step (x0.1 at 50% and 75% of training)."""
    warmup_epochs: int = 0
    """Epochs of linear lr warm-up before lr_schedule (epoch e < warmup_epochs trains at
    lr * (e+1) / (warmup_epochs+1)); 0 = none, official (the imagenet_resnet50 preset: 5)."""
    # run
    seed: Locked[int] = 1111
    """Seeds everything: model init, targets, assignment, batch order, augmentation."""
    device: str = "auto"
    """auto (cuda when present), cpu, cuda, or cuda:N (under torchrun each rank takes
    cuda:LOCAL_RANK)."""
    precision: Precision = "auto"
    """Forward/backward arithmetic: fp32, bf16 (autocast; the loss and the assignment stay fp32),
    auto = bf16 on GPUs, fp32 on CPUs."""
    channels_last: bool = True
    """On GPUs, keep activations in channels-last layout (faster convolutions with bf16); ignored on
    CPUs."""
    compile: bool = False
    """torch.compile the network (GPUs; the first steps compile for a minute or more)."""
    out: str = "runs/nat"
    """Run folder: config.yaml, log.jsonl, checkpoints/."""
    keep_last: int = 2
    """Most recent epoch checkpoints kept."""
    checkpoint_every_steps: int = 0
    """Also checkpoint every N steps inside an epoch (0 = only at epoch ends), so a crash loses
    fewer steps."""
    on_nonfinite: NonfinitePolicy = "stop"
    """A NaN/inf output or loss: stop (one-line error naming epoch, step, last good checkpoint) or
    skip the batch."""
    keep_every: int = 0
    """Also keep every N-th epoch's checkpoint (0 = none), e.g. for feature-evolution plots."""
    progress: bool = True
    """Show a progress bar."""
    logger: LoggerKind = "none"
    """Metrics besides log.jsonl: tensorboard (RUN/tensorboard/: scalars every 25 steps and every
    epoch; needs pip install 'natlearn[tensorboard]'), csv (RUN/metrics.csv, a row per epoch), wandb
    (needs pip install wandb), or none. May change on --resume."""

    @classmethod
    def from_checkpoint(cls, saved: dict, overrides: dict[str, object] | list[str] = ()) -> Config:
        """The config a checkpoint was trained with (``state["config"]``), then ``overrides``. Keys
        the checkpoint lacks (written before they existed) take their defaults."""
        known = {key: value for key, value in saved.items() if key in FIELD_TYPES}
        return apply_overrides(
            apply_overrides(cls(), known),
            list(overrides) if isinstance(overrides, tuple) else overrides,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        """Check every field on its own; raises NatlearnError naming the field and the fix. What
        depends on the data or the machine is checked by :meth:`resolve`."""
        checks.check_values(self, {name: choices(name) for name in FIELD_TYPES})
        return self

    def resolve(
        self,
        image_size: int = 0,
        images: int | None = None,
        world_size: int = 1,
        local_rank: int = 0,
    ) -> Resolved:
        """Every value this config leaves to the data or the machine, checked once.

        Args:
            image_size: side of the data set's images (the crop size when ``crop_size=0``).
            images: for a training run, how many images its training split holds: ``subset``, ``k``,
                ``spare_targets`` and ``batch_size`` are checked against it. None for evaluation.
            world_size: under torchrun, the number of processes.
            local_rank: under torchrun, this process's GPU.
        """
        self.validate()
        n, k = checks.training_sizes(self, images, world_size)
        rank = local_rank if world_size > 1 else None
        return Resolved(
            self._loss(),
            self.pretrain_split(),
            self.crop_size or image_size,
            n,
            k,
            self.device,
            self.precision,
            rank,
        )

    def check_resumable(self, saved: dict) -> None:
        """Refuse (one line) to resume a checkpoint whose config (``state["config"]``) differs in a
        Locked field."""
        before = Config.from_checkpoint(saved)

        def value(config: Config, key: str) -> object:
            return {"loss": config._loss, "train_split": config.pretrain_split}.get(
                key, lambda: getattr(config, key)
            )()

        differ = [
            f"{key} (checkpoint {getattr(before, key)!r}, now {getattr(self, key)!r})"
            for key in RESUME_LOCKED
            if value(before, key) != value(self, key)
        ]
        if differ:
            raise NatlearnError(
                f"cannot resume: the config differs from the checkpoint's in {'; '.join(differ)}; "
                "keep the checkpoint's values or start a new run in another out="
            )

    def _loss(self) -> Literal["square", "softmax"]:
        if self.loss != "auto":
            return self.loss
        return "square" if self.objective == "nat" else "softmax"

    def pretrain_split(self) -> str:
        """The split pre-training reads: ``train_split``, ``auto`` resolved."""
        if self.train_split != "auto":
            return self.train_split
        # stl10's unlabeled images carry label -1: a supervised run trains on its labelled train
        # split.
        return (
            "train+unlabeled"
            if self.data == "stl10" and self.objective != "supervised"
            else "train"
        )


def choices(name: str) -> tuple[str, ...]:
    """The values a choice field allows (from its Literal type); () for other fields."""
    kind = FIELD_TYPES[name]
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()


FIELD_TYPES = typing.get_type_hints(Config)  # name -> type, Locked[...] stripped
RESUME_LOCKED = tuple(
    name
    for name, hint in typing.get_type_hints(Config, include_extras=True).items()
    if _LOCKED in getattr(hint, "__metadata__", ())
)


def apply_overrides(config: Config, overrides: dict[str, object] | list[str]) -> Config:
    """A copy of ``config`` with fields replaced, from a dict or from ``["key=value", ...]``."""
    if isinstance(overrides, list):
        overrides = text.key_values(
            overrides, lambda key: key in FIELD_TYPES and text.is_text(FIELD_TYPES[key])
        )
    changes = {}
    for key, raw in overrides.items():
        if key not in FIELD_TYPES:
            raise text.unknown_key(key, FIELD_TYPES)
        changes[key] = text.parse_value(key, FIELD_TYPES[key], raw)
    return dataclasses.replace(config, **changes)
