"""torchrun with 2 CPU processes (gloo): the global assignment, equivalence with one process, kill
and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import assert_same_run
from natlearn.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # whole runs in subprocesses: not in the quick subset

TESTS = Path(__file__).parent
# A global batch of 128 = 2 shares of 64; k > n with spares and blocks, so every part of the global
# problem is used.
RUN = [
    "data=digits",
    "widths=[8,16]",
    "dim=16",
    "subset=1024",
    "batch_size=128",
    "epochs=3",
    "reassign_every=1",
    "k=1100",
    "spare_targets=16",
    "assign_block=64",
    "progress=false",
    "keep_last=5",
]


def torchrun(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


def natlearn_train(
    out: Path, *extra: str, ranks: int = 2, env: dict | None = None
) -> subprocess.CompletedProcess:
    args = ["-m", "natlearn", "train", *RUN, f"out={out}", *extra]
    if ranks == 1:
        return subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=300,
        )
    return torchrun(*args, env=env)


def log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "two"
    done = natlearn_train(out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done: 3 epochs") == 1, "only rank 0 reports"
    return out


@pytest.mark.parametrize(
    "scenario",
    [
        "global_reassignment",
        "one_rank_solves",
        "ranks_disagree",
        "gathers_uneven_shards",
        "nat_loss_gathers_the_global_batch",
    ],
)
def test_two_rank_scenarios(scenario):
    done = torchrun(str(TESTS / "two_ranks.py"), scenario)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_ranks_train_like_one_process_with_the_global_batch(two_rank_run, tmp_path):
    one = tmp_path / "one"
    done = natlearn_train(one, ranks=1)
    assert done.returncode == 0, done.stderr
    for a, b in zip(log(one), log(two_rank_run), strict=True):
        for key in ("loss", "cosine", "reassigned"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    single, double = (
        load_checkpoint(one / "checkpoints" / "epoch_0003.pt"),
        load_checkpoint(two_rank_run / "checkpoints" / "epoch_0003.pt"),
    )
    assignment = double["objective"]["assignment"]
    assert torch.equal(
        single["objective"]["assignment"]["image_to_target"], assignment["image_to_target"]
    )
    assert torch.equal(single["objective"]["assignment"]["spare"], assignment["spare"])
    everything = torch.cat([assignment["image_to_target"], assignment["spare"]])
    assert torch.equal(everything.sort().values, torch.arange(1100)), (
        "still a one-to-one map onto the k targets"
    )
    for name, value in single["model"].items():
        assert torch.allclose(value.double(), double["model"][name].double(), atol=1e-4), name


def test_kill_and_resume_under_two_ranks_ends_where_an_uninterrupted_run_ends(
    two_rank_run, tmp_path
):
    out = tmp_path / "killed"
    killed = natlearn_train(
        out, "checkpoint_every_steps=3", env={"NATLEARN_FAULT": "after-step:2:5"}
    )
    assert killed.returncode != 0
    assert not (out / "checkpoints" / "epoch_0002.pt").exists()
    resumed = torchrun("-m", "natlearn", "train", f"out={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(out, two_rank_run)  # weights, momentum, assignment, RNG and log: bit-identical


def test_rank_zero_alone_writes_the_run_folder(two_rank_run):
    names = sorted(path.name for path in (two_rank_run / "checkpoints").iterdir())
    epochs = [f"epoch_{e:04d}.pt{suffix}" for e in (1, 2, 3) for suffix in ("", ".sha256")]
    assert names == [*epochs, "last.pt", "last.pt.sha256"]
    assert (two_rank_run / "backbone.safetensors").is_file()
    assert len(log(two_rank_run)) == 3


def test_a_rank_share_starts_where_tensor_split_puts_it():
    from natlearn.training.distributed import Ranks

    for world in (1, 2, 3, 8):
        for batch in (8, 9, 11, 256):
            for rank in range(world):
                ranks = Ranks(rank, world)
                expected = sum(len(part) for part in torch.arange(batch).tensor_split(world)[:rank])
                assert ranks.first_row(batch) == expected
                if world > 1:
                    assert int(ranks.shard(torch.arange(batch))[0]) == expected


# A global batch of 125 = shares of 63 and 62 (uneven: a per-rank mean would weigh rows unequally),
# momentum on.
EXACT = [
    "data=digits",
    "widths=[8,16]",
    "dim=16",
    "subset=1000",
    "batch_size=125",
    "epochs=1",
    "reassign_every=1",
    "momentum=0.9",
    "progress=false",
    "keep_last=1",
]


@pytest.mark.parametrize(
    "settings",
    [
        ["loss_reduction=sum", "lr=0.0005"],
        ["loss_reduction=mean", "loss=softmax"],
        ["loss_reduction=sum", "loss=softmax", "lr=0.0005", "reassign_every=0"],
        ["objective=supervised", "loss_reduction=sum", "lr=0.0005"],
        ["objective=supervised", "loss=square"],
    ],
    ids=[
        "nat-square-sum",
        "nat-softmax-mean",
        "nat-softmax-sum-no-reassign",
        "supervised-ce-sum",
        "supervised-square-mean",
    ],
)
def test_two_ranks_take_the_one_process_step_for_every_loss_and_reduction(settings, tmp_path):
    """DDP averages gradients over ranks: each rank's loss must be scaled so that N ranks train
    exactly as one process with the global batch (a per-rank sum would train at lr / N; the NAT
    softmax must see the global batch)."""
    from natlearn.config import Config, apply_overrides
    from natlearn.training.trainer import train

    one = train(
        apply_overrides(Config(), [*EXACT, *settings, f"out={tmp_path / 'one'}"])
    ).model.state_dict()
    done = torchrun("-m", "natlearn", "train", *EXACT, *settings, f"out={tmp_path / 'two'}")
    assert done.returncode == 0, done.stderr[-3000:]
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "epoch_0001.pt")["model"]
    moved = 0
    for name, value in one.items():
        if value.is_floating_point():
            error = float(
                (value - two[name]).double().norm() / value.double().norm().clamp_min(1e-12)
            )
            assert error < 1e-4, f"{name}: relative difference {error:.2e}"
            moved += 1
    assert moved > 0


def test_two_ranks_stream_a_folder_and_skip_an_unreadable_image(tmp_path):
    """A rank whose share loses an unreadable image must still find its own rows of the global
    batch: two ranks train as one process on the same folder (same crops, same loss scale)."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(generator.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(
                tmp_path / "data" / name / f"{i:02d}.png"
            )
    (tmp_path / "data" / "a" / "03.png").write_bytes(b"not an image")
    settings = [
        "-m",
        "natlearn",
        "train",
        f"data={tmp_path / 'data'}",
        "train_split=all",
        "data_mode=stream",
        "on_bad_image=skip",
        "workers=0",
        "widths=[8,8]",
        "dim=8",
        "batch_size=16",
        "epochs=2",
        "reassign_every=1",
        "progress=false",
    ]
    env = {"NATLEARN_CACHE": str(tmp_path / "cache")}
    done = torchrun(*settings, f"out={tmp_path / 'run'}", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, *settings, f"out={tmp_path / 'one'}"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    for a, b in zip(log(tmp_path / "one"), log(tmp_path / "run"), strict=True):
        assert a["reassigned"] == b["reassigned"]
    single = load_checkpoint(tmp_path / "one" / "checkpoints" / "epoch_0002.pt")["model"]
    double = load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0002.pt")["model"]
    for name, value in single.items():
        assert torch.allclose(value.double(), double[name].double(), atol=1e-4), name


def two_nodes(out: Path, *extra: str, fault_on_one: str = "") -> list[subprocess.CompletedProcess]:
    """Two ``torchrun --nnodes 2 --nproc-per-node 1`` launchers meeting at a c10d rendezvous on
    127.0.0.1, as the README's multi-node line does on real hosts; ``fault_on_one`` kills the first
    launcher's process at that point (NATLEARN_FAULT).

    The rendezvous store is hosted here rather than by one launcher (``is_host=0`` for both):
    a launcher hosting it may exit while the other still writes its goodbye to the store, which
    then fails with RendezvousConnectionError on a loaded machine; a long-lived store (as on a
    real cluster's head node) removes that race from what the test measures."""
    import socket
    from datetime import timedelta

    from torch.distributed import TCPStore

    with socket.socket() as probe:  # a free port for this rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = TCPStore(
        "127.0.0.1", port, is_master=True, multi_tenant=True, timeout=timedelta(seconds=300)
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        f"nat-{port}",
        "--rdzv-conf",
        "is_host=0,read_timeout=300",
        "-m",
        "natlearn",
        "train",
        f"out={out}",
        *extra,
    ]
    # One thread per process, as torchrun sets it for the 2-process node run compared against (it
    # leaves a 1-process node alone), so the float arithmetic is the same.
    faults = [{"NATLEARN_FAULT": fault_on_one} if fault_on_one else {}, {}]
    nodes = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", **fault},
        )
        for fault in faults
    ]
    finished = []
    for node in nodes:
        try:
            stdout, stderr = node.communicate(timeout=300)
        except subprocess.TimeoutExpired:  # a node left waiting for a dead peer
            node.kill()
            stdout, stderr = node.communicate()
        finished.append(subprocess.CompletedProcess(command, node.returncode, stdout, stderr))
    del store  # the launchers are gone: close the rendezvous
    return finished


def test_two_nodes_train_as_one_two_process_run_and_resume_after_a_node_dies(
    two_rank_run, tmp_path
):
    """Two launchers (nodes) on one machine: the same global batch, assignment and weights as the
    two-process run on one node; one node killed mid-epoch, both relaunched with --resume: the run
    ends bit-identical to the uninterrupted one."""
    out = tmp_path / "nodes"
    nodes = two_nodes(out, *RUN)
    assert all(node.returncode == 0 for node in nodes), nodes[0].stderr[-2000:]
    assert sum(node.stdout.count("done: 3 epochs") for node in nodes) == 1, "rank 0 reports once"
    assert_same_run(out, two_rank_run)

    killed = tmp_path / "killed"
    nodes = two_nodes(killed, *RUN, "checkpoint_every_steps=3", fault_on_one="after-step:2:5")
    assert any(node.returncode != 0 for node in nodes)
    assert not (killed / "checkpoints" / "epoch_0002.pt").exists()
    nodes = two_nodes(killed, "--resume")
    assert all(node.returncode == 0 for node in nodes), [node.stderr[-2000:] for node in nodes]
    assert_same_run(killed, two_rank_run)
