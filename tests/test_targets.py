import time

import pytest
import torch

from natlearn.nat.targets import NoiseTargets, splitmix64

MASK = (1 << 64) - 1


def splitmix64_reference(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_splitmix64_matches_the_unsigned_reference():
    xs = [0, 1, 2, 12345, 2**31, 2**40 + 7, 2**62 + 3]
    got = splitmix64(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert [g & MASK for g in got] == [splitmix64_reference(x) for x in xs]


def test_sphere_targets_are_unit_vectors_with_mean_near_zero():
    targets = NoiseTargets(k=20000, d=16, seed=3)
    rows = targets[torch.arange(20000)]
    assert rows.shape == (20000, 16) and rows.dtype == torch.float32
    assert torch.allclose(rows.norm(dim=1), torch.ones(20000), atol=1e-6)
    # Uniform on the sphere: mean ~ 0 (sd 1/sqrt(k d) per coordinate), each coordinate variance 1/d.
    assert rows.mean(dim=0).abs().max() < 5 / (20000 * 16) ** 0.5
    assert torch.allclose(rows.var(dim=0), torch.full((16,), 1 / 16), rtol=0.08)


def test_targets_are_deterministic_and_batch_independent():
    a, b = NoiseTargets(k=500, d=32, seed=7), NoiseTargets(k=500, d=32, seed=7)
    all_rows = a[torch.arange(500)]
    ids = torch.tensor([499, 3, 3, 250, 0])
    assert torch.equal(b[ids], all_rows[ids])
    assert torch.equal(a[ids[:2]], all_rows[ids[:2]])
    assert torch.equal(a[ids.to(torch.int32)], all_rows[ids])


def test_different_seeds_give_different_targets():
    ids = torch.arange(10)
    assert not torch.allclose(NoiseTargets(10, 8, seed=0)[ids], NoiseTargets(10, 8, seed=1)[ids])


def test_imagenet_sized_targets_need_no_table():
    start = time.perf_counter()
    targets = NoiseTargets(k=1_281_167, d=2048, seed=1111)
    rows = targets[torch.tensor([0, 1_281_166])]
    assert rows.shape == (2, 2048)
    assert time.perf_counter() - start < 5  # an n x d table would be 10.5 GB
    assert not any(isinstance(v, torch.Tensor) and v.numel() > 2048 for v in vars(targets).values())


def test_discrete_targets_are_shared_one_hot_vectors():
    targets = NoiseTargets(k=12, d=8, kind="discrete", num_clusters=4)
    rows = targets[torch.arange(12)]
    assert torch.equal(rows.argmax(dim=1), torch.arange(12) % 4)
    assert torch.equal(rows.sum(dim=1), torch.ones(12))
    assert torch.equal(rows[0], rows[4])


@pytest.mark.parametrize(
    "kwargs",
    [dict(k=0, d=4), dict(k=4, d=0), dict(k=4, d=4, kind="discrete", num_clusters=5)],
)
def test_bad_target_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        NoiseTargets(**kwargs)


def test_out_of_range_ids_are_rejected():
    with pytest.raises(IndexError):
        NoiseTargets(k=5, d=3)[torch.tensor([5])]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_targets_equal_on_cpu_and_gpu():
    targets, ids = NoiseTargets(k=1000, d=64, seed=5), torch.arange(1000)
    assert torch.equal(targets[ids], targets[ids.cuda()].cpu())


def test_the_nat_loss_reads_nothing_back_from_the_device_the_outputs_are_on():
    """A step outside re-assignment epochs must not wait for the GPU: on the meta device (no data)
    any host read of a device value (int(), .item(), .cpu()) raises, so this runs only if the loss,
    its statistics and the target lookup keep every value on the outputs' device."""
    from natlearn.nat.objective import NoiseAsTargets

    objective = NoiseAsTargets(100, 16, seed=0)
    outputs = torch.empty(8, 16, device="meta")
    loss, stats = objective.loss(torch.arange(8), outputs)
    assert loss.device.type == "meta" and {v.device.type for v in stats.values()} == {"meta"}
    targets = NoiseTargets(100, 16, seed=0)
    assert targets.lookup(torch.arange(5), "meta").shape == (5, 16)
    with pytest.raises(IndexError, match=r"\[0, 100\)"):
        targets.lookup(torch.tensor([3, 100]), "meta")  # checked on the CPU, before the move
