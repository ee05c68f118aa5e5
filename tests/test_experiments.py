"""The experiment scripts' --quick smoke runs (digits, tiny nets): they run end to end and leave
docs/ alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # whole experiment scripts in subprocesses: not in the quick subset

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, folder: str = "experiments") -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / folder / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_ablations_quick_runs_rows_and_resumes_from_cached_rows(tmp_path):
    docs = (ROOT / "docs" / "results.md").read_text()
    rows = "nat,random-init,nat-discrete,nat-k2n-spare"
    first = run_script("cifar_ablations.py", "--quick", "--runs", str(tmp_path), "--rows", rows)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((tmp_path / "ablations-quick" / "results.json").read_text())["rows"]
    assert {"nat", "random-init", "nat-discrete", "nat-k2n-spare"} <= results.keys()
    assert all(0.1 < results[row]["linear_conv3"] <= 1 for row in rows.split(","))
    assert (tmp_path / "ablations-quick" / "nat" / "ablation_eval.json").exists()
    again = run_script("cifar_ablations.py", "--quick", "--runs", str(tmp_path), "--rows", "nat")
    assert (
        again.returncode == 0 and "nat: conv2" in again.stdout
    )  # served from the cached evaluation
    assert (ROOT / "docs" / "results.md").read_text() == docs
    assert not (ROOT / "experiments" / "results" / "cifar_ablations_quick.json").exists()


def test_ablations_reject_unknown_rows(tmp_path):
    done = run_script(
        "cifar_ablations.py", "--quick", "--runs", str(tmp_path), "--rows", "nat,nat-typo"
    )
    assert done.returncode != 0 and "unknown row(s) nat-typo" in done.stderr


def test_main_table_quick_runs_end_to_end(tmp_path):
    done = run_script("cifar_main.py", "--quick", "--runs", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| **best linear** (layer chosen on held-out train) |" in done.stdout
    assert len(list((tmp_path / "cifar_main_quick" / "evolution").glob("epoch_*.json"))) >= 2


def test_resnet_benchmark_quick_trains_and_scores_rows_next_to_lightlys_table(tmp_path):
    docs_before = (ROOT / "docs" / "results.md").read_text()
    args = ["--quick", "--runs", str(tmp_path), "--rows", "nat-simclr,random-init"]
    done = run_script("cifar_resnet.py", *args, folder="benchmarks")
    assert done.returncode == 0, done.stderr
    assert "lightly, published: BYOL, batch 128 | 200 | 0.869" in done.stdout
    rows = json.loads((tmp_path / "cifar_resnet-quick" / "results.json").read_text())["rows"]
    assert set(rows) == {"nat-simclr", "random-init"}
    assert rows["nat-simclr"]["epochs"] == 1 and rows["random-init"]["epochs"] == 0
    assert (
        0.2 < rows["nat-simclr"]["knn200_neck"] <= 1 and rows["nat-simclr"]["linear"]["neck"] > 0.2
    )
    config = (tmp_path / "cifar_resnet-quick" / "nat-simclr" / "config.yaml").read_text()
    assert "color_jitter: 0.5" in config and "arch: resnet18" in config
    assert (ROOT / "docs" / "results.md").read_text() == docs_before


def test_eval_speed_quick_times_compare_and_its_reuse_without_touching_docs(tmp_path):
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    results = ROOT / "benchmarks" / "results" / "eval_speed.json"
    before = results.read_text() if results.exists() else None
    done = run_script("eval_speed.py", "--quick", "--work", str(tmp_path), folder="benchmarks")
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "quick" / "eval_speed_quick.json").read_text())["rows"]["after"]
    assert row["first"]["wall_s"] > 0 and row["first"]["cpu_s"] > 0
    assert row["code"]["reuses_eval_json"] and all(row["second"]["reused"].values())
    assert set(row["top1"]) == {"nat", "random-init", "sup", "raw-pixels"}
    assert 0.1 < row["top1"]["nat"]["linear"]["neck"] <= 1
    assert len(row["first"]["load_before"]) == 3
    assert "| after |" in done.stdout
    assert (ROOT / "docs" / "benchmarks.md").read_text() == docs
    assert (results.read_text() if results.exists() else None) == before


def test_detection_standin_quick_writes_a_voc_layout_and_scores_three_backbones(tmp_path):
    docs = (ROOT / "docs" / "results.md").read_text()
    kept = ROOT / "experiments" / "results" / "detection_standin.json"
    measured = kept.read_text() if kept.exists() else None
    done = run_script("detection_standin.py", "--quick", "--runs", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    runs = tmp_path / "detection_standin-quick"
    main = runs / "voc" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    listed = {name: (main / f"{name}.txt").read_text().split() for name in ("train", "val", "test")}
    assert sorted(listed["train"] + listed["val"]) == (main / "trainval.txt").read_text().split()
    assert not set(listed["test"]) & set(listed["train"] + listed["val"])
    results = json.loads((runs / "results.json").read_text())
    assert set(results["results"]) == {"nat", "random-init", "supervised"}
    for row in results["results"].values():
        assert 0 <= row["map11"] <= 1 and 0 <= row["map_all"] <= 1
        assert row["test_images"] == len(listed["test"])
    assert "| supervised |" in done.stdout
    # a fine-tuning is reused only for the same backbone weights (and settings)
    cached = runs / "scores" / "test-nat-lr0.01.json"
    stored = json.loads(cached.read_text())
    cached.write_text(json.dumps({**stored, "weights": "another backbone"}))
    again = run_script("detection_standin.py", "--quick", "--runs", str(tmp_path))
    assert again.returncode == 0, again.stderr[-2000:]
    refitted = [line.split(":")[0] for line in again.stdout.splitlines() if ": mAP11" in line]
    assert refitted == ["test-nat-lr0.01"]
    assert (ROOT / "docs" / "results.md").read_text() == docs
    assert (kept.read_text() if kept.exists() else None) == measured


def test_resnet_recipe_quick_scores_rows_on_held_out_train_images_only(tmp_path):
    """The recipe study's smoke run: rows train, are scored on train images the runs never saw (a
    screen has no test score), keep their per-epoch diagnostics, and leave docs/ and the JSON
    alone."""
    docs_before = (ROOT / "docs" / "results.md").read_text()
    saved = ROOT / "benchmarks" / "results" / "resnet_recipe.json"
    json_before = saved.read_text() if saved.exists() else None
    args = ["--quick", "--runs", str(tmp_path), "--rows", "mlp,random-init"]
    done = run_script("resnet_recipe.py", *args, folder="benchmarks")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "resnet_recipe" / "quick" / "results.json").read_text())["rows"]
    assert [(row["name"], row["epochs"]) for row in rows] == [("mlp", 2), ("random-init", 0)]
    assert all(0.1 < row["held_out"]["knn200"] <= 1 and "knn200" not in row for row in rows)
    logged = rows[0]["history"][0].keys()
    assert {"cosine", "h_norm", "grad_conv1", "grad_layer4", "grad_head"} <= logged
    config = (tmp_path / "resnet_recipe" / "quick" / "mlp-s1111" / "config.yaml").read_text()
    assert "head: mlp" in config and "arch: resnet18" in config
    assert "| norm of h |" in done.stdout
    assert (ROOT / "docs" / "results.md").read_text() == docs_before
    assert (saved.read_text() if saved.exists() else None) == json_before


def test_handcrafted_gap_quick_measures_every_part_on_held_out_train_images_only():
    record = ROOT / "experiments" / "results" / "handcrafted_gap.json"
    before = record.read_text() if record.exists() else None
    done = run_script("handcrafted_gap.py", "--quick")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {row["part"] for row in rows} == {"svm", "zca", "jpeg"}
    assert all(0.5 < row["held_out"] <= 1 for row in rows)
    # the test split is scored only by the svm part's two classifiers, once each, after the choice
    scored = [row for row in rows if "top1" in row]
    assert [row["classifier"] for row in scored] == [
        "logistic (natlearn)",
        "l2-svm (chosen, refit on all train)",
    ]
    svm = [row for row in rows if row.get("classifier") == "l2-svm"]
    assert len(svm) == 5 and all(row["fit_top1_5000"] > 0.9 for row in svm)
    assert scored[1]["decay"] == max(svm, key=lambda row: row["held_out"])["decay"]
    changed = next(row for row in rows if row.get("jpeg") == "re-encoded q50")
    assert changed["mean_abs_pixel_change"] > 0.5  # the re-encoding did change the pixels
    assert (record.read_text() if record.exists() else None) == before
