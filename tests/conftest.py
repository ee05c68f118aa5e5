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
