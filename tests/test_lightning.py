"""natlearn.lightning: NAT as a LightningModule under DDP, resumed from a Lightning checkpoint, and
the README's example as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lightning_ranks import (  # noqa: E402
    BATCH,
    DDP_EPOCHS,
    GatheredOrder,
    indexed,
    nat_module,
    trainer,
)

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def assignment(model) -> torch.Tensor:
    return model.nat_loss.nat.assignment.image_to_target


def assert_one_permutation(image_to_target: torch.Tensor) -> None:
    assert torch.equal(image_to_target.sort().values, torch.arange(len(image_to_target)))


@pytest.mark.slow  # torchrun in a subprocess, as tests/test_distributed.py
def test_ddp_on_two_ranks_keeps_one_assignment_and_trains_as_one_process(tmp_path):
    """Trainer(strategy="ddp") on 2 gloo ranks, each with half of every global batch: both ranks
    must end with the same assignment, a permutation, and with the weights and assignment of one
    process reading the same global batches (in the order the ranks' gather holds them: Lightning
    shuffles each rank's share with a DistributedSampler, which GatheredOrder replays)."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + [str(TESTS / "lightning_ranks.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert_one_permutation(ranks[0]["assignment"])
    assert torch.equal(ranks[0]["assignment"], ranks[1]["assignment"])

    model = nat_module()
    loader = DataLoader(indexed(), batch_size=BATCH, sampler=GatheredOrder())
    trainer(max_epochs=DDP_EPOCHS).fit(model, loader)
    assert torch.equal(assignment(model), ranks[0]["assignment"])
    assert not torch.equal(assignment(model), nat_module().nat_loss.nat.assignment.image_to_target)
    for key, value in model.backbone.state_dict().items():
        for rank in ranks:
            assert torch.allclose(rank["weights"][key], value, atol=1e-4, rtol=0), key


def test_a_run_resumed_from_a_lightning_checkpoint_equals_the_uninterrupted_run(tmp_path):
    """5 epochs re-assigning every 2nd (epochs 0, 2, 4), stopped after 3 and resumed from the
    checkpoint with ``fit(ckpt_path=...)``: the same weights and assignment as 5 epochs in one go.
    Resumed at epoch 3, the schedule must come from the restored epoch (a count restarted at 0
    would re-assign in epoch 3), and the assignment from the checkpoint."""
    loader = DataLoader(indexed(), batch_size=BATCH, shuffle=False)
    whole = nat_module()
    trainer(max_epochs=5).fit(whole, loader)

    saved = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = nat_module()
    trainer(max_epochs=3, enable_checkpointing=True, callbacks=[saved]).fit(first, loader)
    resumed = nat_module()
    trainer(max_epochs=5).fit(resumed, loader, ckpt_path=tmp_path / "last.ckpt")

    assert_one_permutation(assignment(resumed))
    assert torch.equal(assignment(resumed), assignment(whole))
    assert not torch.equal(assignment(first), assignment(whole))  # epoch 4 re-assigned
    expected = whole.backbone.state_dict()
    for key, value in resumed.backbone.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6, rtol=0), key

    # Loaded outside a Trainer: the saved seed rebuilds the same targets, the assignment comes back.
    loaded = type(resumed).load_from_checkpoint(tmp_path / "last.ckpt", backbone=first.backbone)
    assert loaded.nat_loss.nat.targets.seed == 3
    assert torch.equal(assignment(loaded), assignment(first))
    with pytest.raises(ValueError, match=r"NAT targets differ from this module's: seed=3 \(here 4"):
        trainer(max_epochs=5).fit(nat_module(seed=4), loader, ckpt_path=tmp_path / "last.ckpt")


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### In PyTorch Lightning", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_lightning_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # Lightning's default logs and checkpoints go there
    code = readme_example()
    assert 15 <= len(code.splitlines()) <= 30
    namespace: dict = {}
    exec(compile(code, "README.md (Lightning)", "exec"), namespace)
    trainer = namespace["trainer"]
    assert isinstance(trainer, L.Trainer) and trainer.current_epoch == trainer.max_epochs
    assert float(trainer.callback_metrics["knn_top1"]) > 0.8  # logged by OnlineKNN
    assert "k-NN top-1: " in capsys.readouterr().out
    assert_one_permutation(assignment(namespace["model"]))


def test_without_lightning_the_import_names_the_extra(monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, "lightning", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "natlearn.lightning", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'natlearn\[lightning\]'"):
        importlib.import_module("natlearn.lightning")
