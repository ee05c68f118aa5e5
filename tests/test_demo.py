"""`natlearn demo` end to end at a tiny budget: every row measured, from the network it names, and
every file written."""

import json

from PIL import Image

from natlearn.demo import run_demo
from natlearn.presets import load_preset


def test_demo_writes_measured_results_and_figures(tmp_path):
    config = load_preset("digits")
    config.epochs, config.progress = 3, False
    results = run_demo(tmp_path, config, supervised_epochs=2)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["nat"]["linear_probe_top1"] == results["nat"]["linear_probe_top1"]
    for name in ("nat", "random_init", "raw_pixels", "supervised"):
        row = saved[name]
        assert 0.1 < row["linear_probe_top1"] <= 1 and 0.1 < row["knn_top1"] <= 1
        assert row["best_layer_top1"] >= row["linear_probe_top1"]
    assert saved["raw_pixels"]["feature_dims"] == 64
    assert set(saved["nat"]["per_layer_top1"]) == {"conv1", "conv2", "conv3", "neck"}
    # The nat row scores the trained network: the same probes on the untrained (or the supervised)
    # network's features cannot give the same accuracy on every layer and on the k-NN (seeds are
    # fixed: deterministic).
    for other in ("random_init", "supervised"):
        scores = [
            saved[name]["per_layer_top1"] | {"knn": saved[name]["knn_top1"]}
            for name in ("nat", other)
        ]
        assert scores[0] != scores[1], f"the nat row scores the same features as {other}"
    assert "| nat |" in (tmp_path / "results.md").read_text()
    for figure in ("loss_curve.png", "neighbours.png"):
        with Image.open(tmp_path / figure) as image:
            assert image.width > 300 and image.height > 200
    assert len(json.loads((tmp_path / "nat" / "log.jsonl").read_text().splitlines()[-1])) > 3
