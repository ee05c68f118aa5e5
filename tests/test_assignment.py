import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from natlearn.nat.assignment import Assignment
from natlearn.nat.targets import NoiseTargets


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows, dim=1)


@pytest.mark.parametrize("b", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_reassignment_equals_brute_force(b, seed):
    n = 20
    targets = NoiseTargets(k=n, d=6, seed=seed)
    assignment = Assignment(n, seed=seed)
    ids = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:b]
    outputs = _unit(torch.randn(b, 6, generator=torch.Generator().manual_seed(100 + seed)))
    held = assignment[ids].clone()
    vectors = targets[held]
    best = max(
        sum(float(outputs[a] @ vectors[p[a]]) for a in range(b))
        for p in itertools.permutations(range(b))
    )
    result = assignment.reassign(ids, outputs, targets)
    got = float((outputs * targets[assignment[ids]]).sum())
    assert got == pytest.approx(best, abs=1e-5)
    assert sorted(assignment[ids].tolist()) == sorted(
        held.tolist()
    )  # only the batch's own targets move
    assert result.cosine_after == pytest.approx(best / b, abs=1e-5)
    assert result.cosine_after >= result.cosine_before - 1e-9


@pytest.mark.parametrize("b,m", [(3, 2), (4, 3), (5, 1)])
def test_rectangular_reassignment_with_spares_equals_brute_force(b, m):
    n, k = 10, 16
    targets = NoiseTargets(k=k, d=5, seed=b)
    assignment = Assignment(n, k, seed=b, spare_targets=m)
    generator_copy = torch.Generator().manual_seed(0)
    generator_copy.set_state(assignment.generator.get_state())
    slots = torch.randperm(k - n, generator=generator_copy)[:m]
    ids = torch.arange(b)
    candidates = torch.cat([assignment[ids], assignment.spare[slots]])
    outputs = _unit(torch.randn(b, 5, generator=torch.Generator().manual_seed(b)))
    sims = outputs @ targets[candidates].T
    best = max(
        sum(float(sims[a, p[a]]) for a in range(b)) for p in itertools.permutations(range(b + m), b)
    )
    assignment.reassign(ids, outputs, targets)
    assert float((outputs * targets[assignment[ids]]).sum()) == pytest.approx(best, abs=1e-5)
    assignment.check()


def test_no_change_when_outputs_are_their_own_targets():
    targets = NoiseTargets(k=50, d=16, seed=0)
    assignment = Assignment(50, seed=0)
    ids = torch.arange(0, 50, 3)
    before = assignment[ids].clone()
    result = assignment.reassign(ids, targets[before], targets)
    assert result.changed == 0.0
    assert torch.equal(assignment[ids], before)


def test_outputs_move_targets_between_images():
    targets = NoiseTargets(k=4, d=8, seed=0)
    assignment = Assignment(4, seed=0)
    ids = torch.arange(4)
    held = assignment[ids].clone()
    wanted = held[[1, 0, 3, 2]]  # each image looks exactly like a neighbour's target
    result = assignment.reassign(ids, targets[wanted], targets)
    assert torch.equal(assignment[ids], wanted)
    assert result.changed == 1.0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    extra=st.integers(0, 10),
    m=st.integers(0, 5),
    steps=st.integers(1, 15),
    seed=st.integers(0, 2**16),
)
def test_assignment_stays_a_permutation(n, extra, m, steps, seed):
    k = n + extra
    m = min(m, extra)
    targets = NoiseTargets(k=k, d=4, seed=seed)
    assignment = Assignment(n, k, seed=seed, spare_targets=m)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = int(torch.randint(1, n + 1, (1,), generator=generator))
        ids = torch.randperm(n, generator=generator)[:b]
        assignment.reassign(ids, _unit(torch.randn(b, 4, generator=generator)), targets)
        assignment.check()
    assert len(set(assignment.image_to_target.tolist())) == n


def test_state_dict_round_trip_continues_identically():
    targets = NoiseTargets(k=30, d=4, seed=1)
    original = Assignment(20, 30, seed=1, spare_targets=3)
    outputs = _unit(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))
    original.reassign(torch.arange(6), outputs, targets)
    restored = Assignment(20, 30, seed=99, spare_targets=3)
    restored.load_state_dict(original.state_dict())
    for a in (original, restored):
        a.reassign(torch.arange(6, 12), outputs, targets)
    assert torch.equal(original.image_to_target, restored.image_to_target)
    assert torch.equal(original.spare, restored.spare)


def test_a_state_saved_under_the_old_spare_key_still_loads():
    saved = Assignment(20, 30, seed=1, spare_targets=3).state_dict()
    saved["spare_per_batch"] = saved.pop("spare_targets")  # checkpoints written before the rename
    restored = Assignment(20, 30, seed=99)
    restored.load_state_dict(saved)
    assert restored.spare_targets == 3
    assert torch.equal(restored.spare, torch.as_tensor(saved["spare"]))


def test_check_detects_a_shared_target():
    assignment = Assignment(5, seed=0)
    assignment.image_to_target[1] = assignment.image_to_target[0]
    with pytest.raises(RuntimeError, match="share"):
        assignment.check()


def test_invalid_sizes_are_rejected():
    with pytest.raises(ValueError, match="k >= n"):
        Assignment(10, 9)
    with pytest.raises(ValueError, match="spare_targets"):
        Assignment(10, 12, spare_targets=3)


def test_state_is_eight_bytes_per_target():
    assert Assignment(1000, 1200).nbytes() == 8 * 1200


def test_reassign_returns_the_new_target_vectors():
    targets = NoiseTargets(k=40, d=8, seed=4)
    assignment = Assignment(30, 40, seed=4, spare_targets=5)
    ids = torch.arange(10, 22)
    result = assignment.reassign(
        ids, _unit(torch.randn(12, 8, generator=torch.Generator().manual_seed(4))), targets
    )
    assert torch.equal(result.targets, targets[assignment[ids]])
