"""How sure a number is: every top-1 printed with its binomial standard error, and differences
inside two standard errors called within noise instead of a gain or a gap fraction."""

import json
import math

import pytest

from natlearn.cli import main
from natlearn.demo import format_table
from natlearn.evaluate import format_eval
from natlearn.evaluate.reports.compare import compare_table, gap_recovered
from natlearn.evaluate.uncertainty import gap_note, standard_error, within_noise


def test_standard_error_is_the_binomial_one():
    assert standard_error(0.9, 1400) == pytest.approx(math.sqrt(0.9 * 0.1 / 1400))
    assert standard_error(0.9, 1400) == pytest.approx(0.0080178, abs=1e-7)
    assert standard_error(1.0, 50) == 0.0
    # two top-1s on 1,400 images each: 0.9 points apart is noise, 3 points is not
    assert within_noise(0.889, 1400, 0.898, 1400)
    assert within_noise(0.878, 1400, 0.898, 1400)  # 1.7 standard errors of the difference
    assert not within_noise(0.868, 1400, 0.898, 1400)  # 2.5
    assert within_noise(1.0, 24, 1.0, 24)  # no difference is no gain, though the error is 0 at 1
    assert not within_noise(1.0, 24, 0.0, 24)
    with pytest.raises(ValueError, match="at least one test image"):
        standard_error(0.5, 0)


def test_a_gap_fraction_of_noise_is_not_reported():
    # The case that read "-109%": NAT .889, random init .898, supervised .906 on 1,400 images.
    fraction, words = gap_note((0.889, 1400), (0.898, 1400), (0.906, 1400))
    assert fraction is None and words.startswith("no gap to recover") and "within noise" in words
    fraction, words = gap_note((0.889, 1400), (0.898, 1400), (0.95, 1400))
    assert fraction is None and words.startswith("within noise of random init (-0.9%")
    fraction, words = gap_note((0.92, 10_000), (0.898, 10_000), (0.95, 10_000))
    assert fraction == pytest.approx(0.022 / 0.052)
    assert words == "42% of the random-init -> supervised gap"


def _result(model, objective, n, **linear):
    return {
        "model": model,
        "objective": objective,
        "test_images": n,
        "protocols": {
            "linear": {layer: {"top1": t, "held_out_top1": h} for layer, (t, h) in linear.items()}
        },
    }


def test_compare_prints_standard_errors_and_says_within_noise(tmp_path):
    results = {
        "nat": _result("a.pt", "nat", 1400, conv1=(0.85, 0.8), conv2=(0.889, 0.9)),
        "random-init": _result("random-init", "nat", 1400, conv1=(0.86, 0.8), conv2=(0.898, 0.9)),
        "sup": _result("b.pt", "supervised", 1400, conv1=(0.95, 0.9), conv2=(0.9, 0.8)),
    }
    text = compare_table(results, tmp_path)
    se = standard_error(0.889, 1400)
    assert f"| linear conv2 | {0.889:.4f} ± {se:.4f} |" in text
    assert f"**{0.889:.4f} ± {se:.4f}** (conv2)" in text
    assert "nat -0.9 points (within noise: two standard errors" in text
    assert "sup +5.2 points (beyond noise" in text
    assert "nat: within noise of random init" in text and "%" not in text.split("nat: ")[-1][:30]
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["gap_recovered"] == {"nat": None} == gap_recovered(results)
    assert saved["gap_notes"]["nat"].startswith("within noise")


def test_eval_and_demo_tables_carry_the_standard_error():
    eval_results = _result("a.pt", "nat", 599, conv1=(0.9, 0.9))
    assert f"| conv1 | 0.9000 ± {standard_error(0.9, 599):.4f} |" in format_eval(eval_results)
    row = {"linear_probe_top1": 0.95, "knn_top1": 0.9, "best_layer": "conv2"}
    row["best_layer_top1"] = 0.99
    demo = {name: row for name in ("nat", "random_init", "raw_pixels", "supervised")}
    table = format_table({**demo, "test_images": 599})
    se = standard_error
    assert f"| nat | 0.9500 ± {se(0.95, 599):.4f} | 0.9000 ± {se(0.9, 599):.4f} |" in table
    assert f"conv2 0.9900 ± {se(0.99, 599):.4f} |" in table


def test_natlearn_eval_prints_each_probe_with_its_standard_error(tmp_path, capsys):
    assert main(["eval", "raw-pixels", "--out", str(tmp_path), "--no-mlp", "--knn", "20"]) == 0
    captured = capsys.readouterr()
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["test_images"] == 599  # the digits' fixed test split
    for protocol in ("linear", "knn20"):
        top1 = results["protocols"][protocol]["pixels"]["top1"]
        shown = f"top-1 {top1:.4f} ± {standard_error(top1, 599):.4f}"
        assert f"{protocol} pixels (64 features): {shown}" in captured.err + captured.out
        assert f"{top1:.4f} ± {standard_error(top1, 599):.4f}" in (tmp_path / "eval.md").read_text()


def test_results_stored_without_a_test_count_print_bare_and_say_noise_is_unknown():
    results = {
        "nat": _result("a.pt", "nat", 0, conv1=(0.7, 0.7)),
        "random-init": _result("random-init", "nat", 0, conv1=(0.6, 0.6)),
        "sup": _result("b.pt", "supervised", 0, conv1=(0.8, 0.8)),
    }
    for res in results.values():
        del res["test_images"]  # an eval.json written before evaluations counted them
    text = compare_table(results)
    assert "| linear conv1 | 0.7000 | 0.6000 | 0.8000 |" in text
    assert "nat: 50% of the random-init -> supervised gap (noise unknown" in text
    assert "nat +10.0 points (noise unknown)" in text
