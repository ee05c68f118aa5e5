"""NATLoss and IndexedDataset: NAT in a hand-written training loop, as a user of another library
would write it."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from natlearn import IndexedDataset, NATLoss
from natlearn.config import apply_overrides
from natlearn.data import Augmentation, pretraining_data
from natlearn.models import initial_model
from natlearn.presets import load_preset
from natlearn.training.schedule import epoch_generator, learning_rate
from natlearn.training.trainer import train


def test_a_hand_written_loop_with_nat_loss_trains_bit_identically_to_natlearn_train(tmp_path):
    """The same seed and settings, the same batches and crops: the module must reproduce
    ``natlearn train``'s weights exactly (re-assignment epochs included)."""
    config = apply_overrides(
        load_preset("digits"), ["epochs=4", "progress=false", f"out={tmp_path / 'run'}"]
    )
    expected = train(config).model.state_dict()

    data = pretraining_data(config)
    nat_loss = NATLoss(
        len(data), config.dim, reassign_every=config.reassign_every, seed=config.seed,
        normalize=False,  # natlearn's network normalises its outputs itself
    )  # fmt: skip
    model = initial_model(config, data)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    augment = Augmentation.from_config(config, data.image_size)
    batches = math.ceil(len(data) / config.batch_size)
    for epoch in range(config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch)
        generator = epoch_generator(config.seed, epoch)
        model.train()
        for ids in torch.randperm(len(data), generator=generator).tensor_split(batches):
            loss = nat_loss(model(augment(data.images[ids], generator)), ids, epoch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    got = model.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_nat_loss_reassigns_on_schedule_and_saves_its_assignment():
    nat_loss = NATLoss(num_images=12, dim=4, reassign_every=2, seed=3)
    outputs = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(6)
    before = nat_loss.nat.assignment.image_to_target.clone()
    nat_loss(outputs, ids, epoch=1)  # 1 % 2 != 0: no re-assignment
    assert torch.equal(nat_loss.nat.assignment.image_to_target, before)
    loss = nat_loss(outputs.requires_grad_(), ids, epoch=2)
    assert not torch.equal(nat_loss.nat.assignment.image_to_target, before)
    loss.backward()
    assert outputs.grad is not None and set(nat_loss.statistics) == {"loss", "cosine"}

    restored = NATLoss(num_images=12, dim=4, reassign_every=2, seed=99)
    restored.load_state_dict(nat_loss.state_dict())
    assert torch.equal(
        restored.nat.assignment.image_to_target, nat_loss.nat.assignment.image_to_target
    )


def test_indexed_dataset_yields_each_sample_with_its_index():
    images = torch.arange(10.0).view(5, 2)
    labelled = IndexedDataset(TensorDataset(images, torch.arange(5) % 2))
    assert len(labelled) == 5
    sample, index = labelled[3]
    assert index == 3 and torch.equal(sample, images[3])  # the label is dropped
    plain = IndexedDataset([torch.tensor(7.0), torch.tensor(8.0)])
    assert plain[1] == (torch.tensor(8.0), 1)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"loss": "hinge"}, "loss='hinge' is not valid; choose one of: square, softmax"),
        ({"reduction": "max"}, "reduction='max' is not valid"),
        ({"targets": "cube"}, "targets='cube' is not valid"),
        ({"k": 8}, "k=8 < n=12"),
    ],
)
def test_nat_loss_refuses_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        NATLoss(num_images=12, dim=4, **settings)


def test_nat_loss_refuses_repeated_negative_and_out_of_range_ids():
    """A sampler with replacement repeats images within a batch: the re-assignment would hand two
    targets to one image and drop one from the assignment, so every call refuses it, as it
    refuses ids that would wrap (negative) or overrun the data set."""
    n = 64
    nat_loss = NATLoss(n, dim=8, seed=0)
    outputs = torch.randn(n, 8)
    sampled = torch.multinomial(torch.ones(n), n, replacement=True, generator=torch.Generator())
    assert sampled.unique().numel() < n  # what RandomSampler(replacement=True) gives
    for epoch in (0, 1):  # a re-assignment epoch and one without
        with pytest.raises(ValueError, match=r"more than once; .*sample without replacement"):
            nat_loss(outputs, sampled, epoch)
    with pytest.raises(IndexError, match=r"must lie in \[0, 64\) .*got range \[-1, 62\]"):
        nat_loss(outputs, torch.arange(-1, 63), 0)
    with pytest.raises(IndexError, match=r"must lie in \[0, 64\) .*got range \[1, 64\]"):
        nat_loss(outputs, torch.arange(1, 65), 1)
    with pytest.raises(TypeError, match="1-D integer tensor"):
        nat_loss(outputs, torch.arange(n).float(), 1)
    before = nat_loss.nat.assignment.image_to_target.clone()
    nat_loss(outputs, torch.randperm(n), 0)  # a valid batch still re-assigns
    held = nat_loss.nat.assignment.image_to_target
    assert held.unique().numel() == n
    assert not torch.equal(before, held)
