"""The protocol table: a protocol added to it (one module + one entry) is run, described, keyed and
switched from the command line with no other file touched."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import natlearn.evaluate.probes.protocols as protocols
import natlearn.evaluate.probes.run as run
import natlearn.evaluate.probes.scoring as scoring
import natlearn.evaluate.probes.suite as suite
from natlearn.cli import main
from natlearn.evaluate.probes.protocols import PROTOCOLS, Option, Probe, Protocol
from natlearn.evaluate.probes.settings import EvalSettings, ProbeResult


def _toy_module() -> types.ModuleType:
    """Nearest class mean on the neck: the toy a reader would add as one module."""
    toy = types.ModuleType("natlearn.evaluate.probes.toy_centroid")

    def layers(settings, network):
        return ["neck"] if settings.options.get("centroid", True) else []

    def probes(inputs):
        if not inputs.settings.options.get("centroid", True):
            return []
        layer = "neck" if inputs.network is not None else next(iter(inputs.train))
        x, y = F.normalize(inputs.train[layer], dim=1), inputs.train_y

        def classify(threads):
            means = torch.stack([x[y == c].mean(0) for c in range(inputs.classes())])
            guess = (F.normalize(inputs.test[layer], dim=1) @ means.T).argmax(1)
            return ProbeResult(float((guess == inputs.test_y).double().mean()))

        return [Probe("centroid", layer, x.shape[1], classify, 0.0)]

    def describe(settings, network):
        return "class means on neck" if settings.options.get("centroid", True) else None

    toy.layers, toy.probes, toy.describe = layers, probes, describe
    return toy


@pytest.fixture
def with_toy(monkeypatch):
    monkeypatch.setitem(sys.modules, "natlearn.evaluate.probes.toy_centroid", _toy_module())
    entry = Protocol(
        "centroid",
        "toy_centroid",
        (
            Option(
                "--no-centroid",
                "centroid",
                "switch",
                {"action": "store_true", "help": "skip the class means"},
                lambda off: not off,
            ),
        ),
    )
    table = (*PROTOCOLS, entry)
    for module in (protocols, suite, scoring, run):
        monkeypatch.setattr(module, "PROTOCOLS", table)


def test_a_protocol_in_the_table_runs_from_the_command_line(with_toy, tmp_path, capsys):
    common = ["eval", "random-init", "digits", "widths=[8,16]", "dim=16", "--no-linear"]
    common += ["--no-mlp", "--knn", "5"]
    main([*common, "--out", str(tmp_path / "on")])
    out = capsys.readouterr().err  # the start-up summary
    assert "protocols: 5-NN on neck; class means on neck;" in out
    result = json.loads((tmp_path / "on" / "eval.json").read_text())
    assert set(result["protocols"]) == {"knn5", "centroid"}
    assert result["protocols"]["centroid"]["neck"]["top1"] > 0.5  # 10 digit classes
    assert result["key"]["settings"]["centroid"] is True  # part of what was measured
    main([*common, "--no-centroid", "--out", str(tmp_path / "off")])
    result = json.loads((tmp_path / "off" / "eval.json").read_text())
    assert set(result["protocols"]) == {"knn5"}
    assert result["key"]["settings"]["centroid"] is False


def test_flags_come_from_the_table_in_help_order(with_toy, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    flags = ["--layers", "--knn", "--knn-layers", "--probe-epochs", "--no-linear", "--no-mlp"]
    flags += ["--finetune", "--no-centroid"]  # what, how, then the switches, each in table order
    positions = [text.index(f"  {flag} ") for flag in flags]
    assert positions == sorted(positions)


def test_settings_of_a_new_protocol_go_to_options_and_into_the_key():
    settings = EvalSettings.from_flags({"knn": (5,), "centroid": False})
    assert settings.knn == (5,) and settings.options == {"centroid": False}
    assert settings.as_dict()["centroid"] is False and "options" not in settings.as_dict()


def test_built_in_settings_keep_the_key_they_always_had():
    """An evaluation stored before the table (no ``options``) is still found by its key."""
    assert list(EvalSettings().as_dict()) == [
        "layers",
        "linear",
        "knn",
        "knn_layers",
        "mlp",
        "mlp_hidden",
        "probe_epochs",
        "finetune_epochs",
        "crop",
        "crop_scale",
        "flip",
        "progress",
        "workers",
    ]
