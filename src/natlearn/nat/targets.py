"""Fixed noise targets, regenerated from their index: no k x d table is ever stored.

Target ``t`` is a function of ``(seed, t)`` only, computed with a counter-based generator
(splitmix64 on a per-target counter, Box-Muller to Gaussians, then L2 normalisation).
Asking for the same ids returns the same vectors whatever the batch, device or call order,
so the only NAT state that grows with the data set is the assignment permutation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the choice's values; at run time this module imports torch alone
    from natlearn.choices import TargetKind


__all__ = ["NoiseTargets", "splitmix64"]

_MASK64 = (1 << 64) - 1


def _as_int64(value: int) -> int:
    """Two's-complement view of an unsigned 64-bit constant, as torch.int64 stores it."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _as_int64(0x9E3779B97F4A7C15)
_MIX1 = _as_int64(0xBF58476D1CE4E5B9)
_MIX2 = _as_int64(0x94D049BB133111EB)


def _shift_right_logical(x: torch.Tensor, bits: int) -> torch.Tensor:
    # torch's >> on int64 is arithmetic; masking off the sign-extended bits makes it logical.
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser (Steele et al. 2014) on int64 tensors, with wrap-around arithmetic.

    Args:
        x: int64 tensor of any shape (counters).
    Returns:
        int64 tensor of the same shape: 64 well-mixed bits per counter, same on CPU and GPU.
    """
    z = x + _GOLDEN
    z = (z ^ _shift_right_logical(z, 30)) * _MIX1
    z = (z ^ _shift_right_logical(z, 27)) * _MIX2
    return z ^ _shift_right_logical(z, 31)


def _uniform_open(bits: torch.Tensor) -> torch.Tensor:
    """Top 53 bits -> float64 in (0, 1]: never 0, so log() in Box-Muller is finite."""
    return (_shift_right_logical(bits, 11).to(torch.float64) + 1.0) * 2.0**-53


class NoiseTargets:
    """k fixed targets in R^d, looked up by index: ``targets[ids] -> (len(ids), d)``.

    Kinds:
        ``sphere`` (the paper): i.i.d. N(0, I_d) rows normalised to unit length, i.e. uniform on the
        sphere.
        ``discrete`` (the paper's clustering-like ablation): target ``t`` is the one-hot vector
        ``e_(t mod num_clusters)``, so ``k / num_clusters`` targets are shared by several images.

    Args:
        k: number of targets (k >= n images).
        d: dimension of each target.
        seed: the targets are a pure function of (seed, index).
        kind: ``"sphere"`` or ``"discrete"``.
        num_clusters: distinct vectors of the discrete kind (default d; at most d).
    """

    def __init__(
        self,
        k: int,
        d: int,
        seed: int = 0,
        kind: TargetKind = "sphere",
        num_clusters: int | None = None,
    ):
        if k < 1 or d < 1:
            raise ValueError(f"NoiseTargets needs k >= 1 and d >= 1, got k={k}, d={d}")
        self.k, self.d, self.seed, self.kind = k, d, seed, kind
        self.num_clusters = d if num_clusters is None else num_clusters
        if kind == "discrete" and not 1 <= self.num_clusters <= d:
            raise ValueError(
                f"discrete targets need 1 <= num_clusters <= d={d}, got {self.num_clusters}"
            )
        # The seed's hash offsets every counter, so different seeds read unrelated streams.
        self._key = _as_int64(splitmix64(torch.tensor([seed], dtype=torch.int64)).item())

    def __len__(self) -> int:
        return self.k

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        """Targets of ``ids`` (int tensor, shape (m,)) as float32 (m, d) on ``ids.device``."""
        ids = torch.as_tensor(ids)
        return self.lookup(ids, ids.device)

    def lookup(self, ids: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """Targets of ``ids`` (int tensor, shape (m,)) as float32 (m, d) generated on ``device``.

        The ids are range-checked where they are, then moved: CPU ids (the assignment's) cost a GPU
        no wait for the check, where ``targets[ids.cuda()]`` would read the ids' range back.
        """
        ids = torch.as_tensor(ids)
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"target ids must be an integer tensor, got {ids.dtype}")
        ids = ids.to(torch.int64)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.k):
            low, high = int(ids.min()), int(ids.max())
            raise IndexError(f"target ids must lie in [0, {self.k}), got range [{low}, {high}]")
        ids = ids.to(device)
        if self.kind == "discrete":
            return torch.nn.functional.one_hot(ids % self.num_clusters, self.d).to(torch.float32)
        return self._sphere(ids)

    def _sphere(self, ids: torch.Tensor) -> torch.Tensor:
        # Box-Muller turns each pair of uniforms into two Gaussians (cos and sin branches).
        pairs = (self.d + 1) // 2
        j = torch.arange(pairs, dtype=torch.int64, device=ids.device)
        counter = 2 * (ids[:, None] * pairs + j[None, :]) + self._key
        radius = torch.sqrt(-2.0 * torch.log(_uniform_open(splitmix64(counter))))
        angle = (2.0 * math.pi) * _uniform_open(splitmix64(counter + 1))
        # float64 keeps the CPU and GPU results equal after rounding to float32.
        gauss = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
        gauss = gauss[:, : self.d]
        return torch.nn.functional.normalize(gauss, dim=1).to(torch.float32)

    def __repr__(self) -> str:
        extra = f", num_clusters={self.num_clusters}" if self.kind == "discrete" else ""
        return f"NoiseTargets(k={self.k}, d={self.d}, seed={self.seed}, kind={self.kind!r}{extra})"
