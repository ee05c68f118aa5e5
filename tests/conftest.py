import pytest

from natlearn.config import Config


@pytest.fixture
def tiny_config(tmp_path) -> Config:
    """NAT on digits with a network small enough for a test to train it in seconds."""
    return Config(
        data="digits",
        widths=(8, 16),
        dim=16,
        epochs=4,
        batch_size=128,
        reassign_every=1,
        flip=False,
        out=str(tmp_path / "run"),
        progress=False,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-epoch NAT run on digits keeping every epoch's checkpoint, trained once per test module
    (each module's evaluations write into its own run)."""
    from natlearn.training.trainer import train

    out = tmp_path_factory.mktemp("run") / "run"
    config = Config(
        widths=(8, 16),
        dim=16,
        epochs=2,
        batch_size=128,
        reassign_every=1,
        keep_every=1,
        out=str(out),
        progress=False,
    )
    return train(config)


@pytest.fixture(scope="session")
def timm_run(tmp_path_factory):
    """One tiny NAT run of timm's resnet18 on digits (8x8 images): its epoch-1 checkpoint, shared
    by the timm tests (backbones, the Hub export)."""
    pytest.importorskip("timm")
    from natlearn.cli import main

    out = tmp_path_factory.mktemp("timm") / "run"
    settings = ["arch=timm:resnet18", "dim=16", "subset=256", "batch_size=64", "epochs=1"]
    assert main(["train", "digits", *settings, "progress=false", f"out={out}"]) == 0
    return out / "checkpoints" / "epoch_0001.pt"
