"""The image -> target assignment of Noise As Targets, and its in-batch re-assignment.

The whole state is two int64 vectors: ``image_to_target`` (length n, a one-to-one map into
range(k)) and ``spare`` (the k - n targets no image holds). A re-assignment only permutes the
targets the batch's images already hold (plus, optionally, m spare targets), so the map stays
one-to-one and each step is an O(b^3) linear assignment on a b x (b + m) cost matrix instead of
an O(n^3) one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from natlearn.nat.targets import NoiseTargets

__all__ = ["Assignment", "ProcessGroup", "ReassignResult", "reassign_global_batch"]


@dataclass(frozen=True)
class ReassignResult:
    """What one batch re-assignment did.

    Attributes:
        targets: (b, d) the batch's new target vectors, row a for image ``image_ids[a]``.
        changed: fraction of the batch's images whose target changed, in [0, 1].
        cosine_before: mean cosine between outputs and their targets before the re-assignment.
        cosine_after: the same after it (never lower: the solver maximises the total cosine).
        chosen: (b,) int64 index of each image's new target among the problem's candidates (what
            :meth:`Assignment.replay` needs to repeat the re-assignment on another rank).
    """

    targets: torch.Tensor
    changed: float
    cosine_before: float
    cosine_after: float
    chosen: torch.Tensor


class Assignment:
    """One-to-one map from n images to k >= n target ids.

    Args:
        n: number of images.
        k: number of targets (default n, as in the official code).
        seed: seeds the initial random permutation and the choice of spare targets.
        spare_targets: m, the number of unassigned targets offered to each batch problem
            (requires k > n; the problem becomes b x (b + m)).
    """

    def __init__(self, n: int, k: int | None = None, seed: int = 0, spare_targets: int = 0):
        k = n if k is None else k
        if n < 1:
            raise ValueError(f"an assignment needs n >= 1 images, got n={n}")
        if k < n:
            raise ValueError(f"NAT needs at least one target per image: k={k} < n={n}; set k >= n")
        if spare_targets < 0 or spare_targets > k - n:
            raise ValueError(f"spare_targets={spare_targets} must lie in [0, k - n] = [0, {k - n}]")
        self.n, self.k, self.spare_targets = n, k, spare_targets
        self.generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(k, generator=self.generator)
        self.image_to_target = order[:n].clone()
        self.spare = order[n:].clone()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, image_ids: torch.Tensor) -> torch.Tensor:
        """Target ids currently held by the batch ``image_ids`` (int64, same shape and device)."""
        image_ids = torch.as_tensor(image_ids)
        return self.image_to_target[self.batch_ids(image_ids)].to(image_ids.device)

    def batch_ids(self, image_ids: torch.Tensor) -> torch.Tensor:
        """``image_ids`` as int64 CPU indices, checked to name distinct images of ``range(n)``.

        A repeated id would let the batch's one-to-one problem hand two targets to one image and
        drop the other from the assignment (the sorted-multiset check cannot see it), and a
        negative id would silently index from the end: both are refused here, where every lookup
        and re-assignment passes.
        """
        ids = torch.as_tensor(image_ids)
        if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(
                f"image ids must be a 1-D integer tensor (the data set's indices), got a "
                f"{ids.dim()}-D {ids.dtype} tensor"
            )
        ids = ids.cpu().to(torch.int64)
        if not ids.numel():
            return ids
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.n:
            raise IndexError(
                f"image ids must lie in [0, {self.n}) (the indices of the {self.n} images the "
                f"targets were made for), got range [{low}, {high}]"
            )
        if torch.unique(ids).numel() != ids.numel():
            raise ValueError(
                f"a batch names {ids.numel() - torch.unique(ids).numel()} image(s) more than once; "
                "every image holds one target, so batches must sample without replacement "
                "(a RandomSampler(replacement=True) or a padded DistributedSampler repeats images)"
            )
        return ids

    def reassign(
        self, image_ids: torch.Tensor, outputs: torch.Tensor, targets: NoiseTargets
    ) -> ReassignResult:
        """Re-solve the batch's assignment: image ``image_ids[a]`` takes the candidate target
        closest to ``outputs[a]`` under the one-to-one constraint (Hungarian method, scipy).

        Args:
            image_ids: (b,) distinct image indices of the batch.
            outputs: (b, d) L2-normalised network outputs of those images (no gradient needed).
            targets: the fixed targets the ids refer to.
        Returns:
            A :class:`ReassignResult`: the new target vectors (so the loss needs no second lookup)
            and the fraction of the batch whose target changed.
        """
        ids, current, candidates, spare_slots = self._propose(image_ids)
        candidate_vectors = targets.lookup(candidates, outputs.device)
        similarity = (
            (outputs.detach().to(candidate_vectors.dtype) @ candidate_vectors.T)
            .double()
            .cpu()
            .numpy()
        )
        rows, cols = linear_sum_assignment(similarity, maximize=True)
        chosen = torch.from_numpy(cols.astype(np.int64))
        changed = self._settle(ids, current, candidates, spare_slots, chosen)
        return ReassignResult(
            targets=candidate_vectors[chosen.to(candidate_vectors.device)],
            changed=changed,
            cosine_before=float(np.trace(similarity[:, : len(ids)])) / len(ids),
            cosine_after=float(similarity[rows, cols].mean()),
            chosen=chosen,
        )

    def replay(self, image_ids: torch.Tensor, chosen: torch.Tensor) -> float:
        """Apply a re-assignment that :meth:`reassign` solved elsewhere (another rank, same state):
        draw the same spare targets, then give image ``image_ids[a]`` candidate ``chosen[a]``.
        Returns the fraction of the batch whose target changed. Ranks that replay the solver rank's
        choices hold the same assignment by construction, whatever their GPUs' arithmetic."""
        ids, current, candidates, spare_slots = self._propose(image_ids)
        return self._settle(
            ids, current, candidates, spare_slots, torch.as_tensor(chosen).cpu().to(torch.int64)
        )

    def _propose(
        self, image_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(ids, the targets they hold, the candidate targets, the spare slots drawn): the batch's
        problem."""
        ids = self.batch_ids(image_ids)
        current = self.image_to_target[ids]
        m = self.spare_targets
        spare_slots = (
            torch.randperm(self.spare.numel(), generator=self.generator)[:m] if m else None
        )
        candidates = torch.cat([current, self.spare[spare_slots]]) if m else current
        return ids, current, candidates, spare_slots

    def _settle(
        self,
        ids: torch.Tensor,
        current: torch.Tensor,
        candidates: torch.Tensor,
        spare_slots: torch.Tensor | None,
        chosen: torch.Tensor,
    ) -> float:
        """Image ``ids[a]`` takes ``candidates[chosen[a]]``; the unchosen candidates become
        spare."""
        new = candidates[chosen]
        self.image_to_target[ids] = new
        if spare_slots is not None:
            unchosen = torch.ones(len(candidates), dtype=torch.bool)
            unchosen[chosen] = False
            self.spare[spare_slots] = candidates[unchosen]
        self._check_batch(current, new, candidates)
        return float((new != current).double().mean())

    def _check_batch(self, old: torch.Tensor, new: torch.Tensor, candidates: torch.Tensor) -> None:
        """Cheap per-step invariant: the batch took distinct targets from its candidates only."""
        if self.spare_targets == 0:
            ok = torch.equal(torch.sort(old).values, torch.sort(new).values)
        else:
            ok = torch.unique(new).numel() == new.numel() and bool(
                torch.isin(new, candidates).all()
            )
        if not ok:
            raise RuntimeError(
                "assignment invariant broken: the batch re-assignment is not one-to-one"
            )

    def check(self) -> None:
        """Full O(k) invariant: image_to_target and spare together hold every target id exactly
        once."""
        if self.image_to_target.shape != (self.n,) or self.spare.shape != (self.k - self.n,):
            raise RuntimeError("assignment invariant broken: wrong state shapes")
        everything = torch.cat([self.image_to_target, self.spare])
        if int(everything.min()) < 0 or int(everything.max()) >= self.k:
            raise RuntimeError(f"assignment invariant broken: a target id outside range({self.k})")
        if not bool((torch.bincount(everything, minlength=self.k) == 1).all()):
            raise RuntimeError("assignment invariant broken: two images share a target")

    def state_dict(self) -> dict:
        return {
            "n": self.n,
            "k": self.k,
            "spare_targets": self.spare_targets,
            "image_to_target": self.image_to_target.clone(),
            "spare": self.spare.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["n"], state["k"]) != (self.n, self.k):
            raise ValueError(
                f"assignment state is for n={state['n']}, k={state['k']}; "
                f"this one has n={self.n}, k={self.k}"
            )
        # Checkpoints written before natlearn named it spare_targets call it spare_targets.
        self.spare_targets = (
            state["spare_targets"] if "spare_targets" in state else state["spare_per_batch"]
        )
        self.image_to_target = state["image_to_target"].clone().to(torch.int64)
        self.spare = state["spare"].clone().to(torch.int64)
        self.generator.set_state(state["generator"])
        self.check()

    def nbytes(self) -> int:
        """Bytes of state: 8 per target id (n assigned + k - n spare)."""
        return self.image_to_target.element_size() * (
            self.image_to_target.numel() + self.spare.numel()
        )


class ProcessGroup(Protocol):
    """What :func:`reassign_global_batch` needs of the processes training together
    (:class:`natlearn.training.distributed.Ranks` is one; a single process is a group of one)."""

    @property
    def main(self) -> bool:
        """Whether this process solves the global batch's problems (rank 0)."""
        ...

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Every process's ``rows``, concatenated in rank order."""
        ...

    def broadcast(self, values: torch.Tensor) -> torch.Tensor:
        """The main process's ``values``, on every process."""
        ...


def reassign_global_batch(
    assignment: Assignment,
    targets: NoiseTargets,
    ids: torch.Tensor,
    outputs: torch.Tensor,
    ranks: ProcessGroup,
    block: int = 0,
) -> float:
    """Re-assign the global batch (every rank's ``ids`` (b,) and ``outputs`` (b, d), in rank order)
    in blocks of at most ``block`` images (0: one block); returns the fraction of the global batch
    whose target changed.

    Rank 0 solves the gathered batch and broadcasts its choices; the other ranks replay them, so
    every rank holds the same assignment whatever its GPU's arithmetic.
    """
    all_ids, all_outputs = ranks.gather(ids.to(outputs.device)).cpu(), ranks.gather(outputs.float())
    blocks = math.ceil(len(all_ids) / block) if block else 1
    id_blocks, output_blocks = all_ids.tensor_split(blocks), all_outputs.tensor_split(blocks)
    if ranks.main:
        results = [
            assignment.reassign(i, o, targets)
            for i, o in zip(id_blocks, output_blocks, strict=True)
        ]
        ranks.broadcast(torch.cat([r.chosen for r in results]))
        return sum(r.changed * len(r.targets) for r in results) / len(all_ids)
    choices = ranks.broadcast(torch.empty(len(all_ids), dtype=torch.int64)).tensor_split(blocks)
    return sum(
        assignment.replay(i, c) * len(i) for i, c in zip(id_blocks, choices, strict=True)
    ) / len(all_ids)
