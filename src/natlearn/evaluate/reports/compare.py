"""Several representations side by side, by the same protocols, and how much of the random-init ->
supervised gap each NAT model recovers."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from natlearn import markdown
from natlearn.choices import RANDOM_INIT
from natlearn.config import Config
from natlearn.evaluate.probes.run import evaluate
from natlearn.evaluate.probes.settings import EvalSettings
from natlearn.evaluate.sources import run_folder
from natlearn.evaluate.uncertainty import (
    NOISE_ERRORS,
    difference_error,
    gap_note,
    with_error,
    within_noise,
)
from natlearn.files import atomic_write
from natlearn.progress import say

__all__ = [
    "best_against_random_init",
    "best_linear",
    "compare_sources",
    "compare_table",
    "gap_notes",
    "gap_recovered",
]


def compare_sources(
    sources: Sequence[str],
    overrides: list[str],
    settings: EvalSettings,
    out: Path,
    base: Config | None,
) -> dict[str, dict]:
    """Each source evaluated (:func:`natlearn.evaluate.evaluate`) into ``out/N-NAME/``, N its
    position: name -> results. An evaluation of the same network, settings and data is reused:
    this folder's from an earlier compare (under any name), or the run's own ``RUN/eval`` of
    ``natlearn eval``."""
    results = {}
    for index, source in enumerate(sources):
        started, name = time.perf_counter(), f"{index}-{run_folder(source, Path(source)).name}"
        say(f"compare [{index + 1}/{len(sources)}]: {source}", settings.progress)
        earlier = [
            out / name / "eval.json",
            *sorted(out.glob("*/eval.json")),
            run_folder(source, out / name) / "eval" / "eval.json",
        ]
        results[name] = evaluate(source, overrides, settings, out / name, base, reuse=earlier)
        took = f"{time.perf_counter() - started:.0f} s"
        say(f"compare [{index + 1}/{len(sources)}]: {source} done, {took}", settings.progress)
    return results


def best_linear(results: dict) -> tuple[str, float] | None:
    """(layer, test top-1) of the best linear probe of one evaluation. The layer is chosen by its
    accuracy on held-out *training* images (``held_out_top1``; ties go to the earlier layer), never
    by test accuracy: the test split is only read for the chosen layer's score."""
    table = results["protocols"].get("linear")
    if not table:
        return None
    missing = [name for name, row in table.items() if "held_out_top1" not in row]
    if missing:
        raise ValueError(
            f"linear probe of {', '.join(missing)} has no held-out score to choose a layer by; "
            "re-run the evaluation"
        )
    layer = max(table, key=lambda name: table[name]["held_out_top1"])
    return layer, table[layer]["top1"]


def _kinds(all_results: dict[str, dict]) -> dict[str, dict]:
    """The evaluations by kind: ``random`` (random init), ``supervised``, ``nat`` and others."""
    return {
        res["objective"] if res["model"] != RANDOM_INIT else "random": res
        for res in all_results.values()
    }


def gap_notes(all_results: dict[str, dict]) -> dict[str, tuple[float | None, str]]:
    """For each NAT evaluation: (fraction, words) of the random-init -> supervised gap its best
    linear probe recovers (:func:`natlearn.evaluate.uncertainty.gap_note`: no fraction when the
    gap or NAT's distance from random init is within noise of the test images)."""
    by_kind = _kinds(all_results)
    if not {"random", "supervised"} <= by_kind.keys():
        return {}
    low, high = best_linear(by_kind["random"]), best_linear(by_kind["supervised"])
    if low is None or high is None:
        return {}
    low_n, high_n = by_kind["random"].get("test_images"), by_kind["supervised"].get("test_images")
    notes = {}
    for name, res in all_results.items():
        best = best_linear(res)
        if res["objective"] == "nat" and res["model"] != RANDOM_INIT and best is not None:
            notes[name] = gap_note(
                (best[1], res.get("test_images")), (low[1], low_n), (high[1], high_n)
            )
    return notes


def best_against_random_init(all_results: dict[str, dict]) -> dict[str, str]:
    """For each other source: its best linear top-1 minus random init's, in points, and whether
    that is within noise (:func:`natlearn.evaluate.uncertainty.within_noise`)."""
    random = _kinds(all_results).get("random")
    base = best_linear(random) if random is not None else None
    if base is None:
        return {}
    words = {}
    for name, res in all_results.items():
        best = best_linear(res)
        if res is random or best is None:
            continue
        n, n_base = res.get("test_images"), random.get("test_images")
        if n is None or n_base is None:
            words[name] = f"{100 * (best[1] - base[1]):+.1f} points (noise unknown)"
            continue
        spread = NOISE_ERRORS * difference_error(best[1], n, base[1], n_base)
        verdict = "within noise" if within_noise(best[1], n, base[1], n_base) else "beyond noise"
        words[name] = (
            f"{100 * (best[1] - base[1]):+.1f} points ({verdict}: two standard errors "
            f"{100 * spread:.1f})"
        )
    return words


def gap_recovered(all_results: dict[str, dict]) -> dict[str, float | None]:
    """For each NAT evaluation: (best linear - random init's) / (supervised's - random init's),
    None where that is a fraction of noise (:func:`gap_notes` says which)."""
    return {name: fraction for name, (fraction, _) in gap_notes(all_results).items()}


def compare_table(all_results: dict[str, dict], out: Path | None = None) -> str:
    """Markdown: rows = protocol and layer, columns = the evaluated sources (top-1)."""
    names = list(all_results)
    rows: dict[str, dict[str, float]] = {}
    for name, res in all_results.items():
        for protocol, table in res["protocols"].items():
            for layer, values in table.items():
                rows.setdefault(f"{protocol} {layer}", {})[name] = values["top1"]
    sizes = {name: res.get("test_images") for name, res in all_results.items()}
    cells = []
    for key, values in rows.items():
        cells.append(
            [key, *(with_error(values[n], sizes[n]) if n in values else "" for n in names)]
        )
    best = [
        f"**{with_error(b[1], sizes[name])}** ({b[0]})" if b else ""
        for name, b in zip(names, map(best_linear, all_results.values()), strict=True)
    ]
    cells.append(["**best linear** (layer chosen on held-out train)", *best])
    lines = [markdown.table(["protocol, layer", *names], cells)]
    lines.append(
        "\n(top-1 ± its binomial standard error over the test images; a difference inside two "
        "standard errors of it is within noise)"
    )
    gaps = gap_notes(all_results)
    # (results stored before evaluations recorded their test split say nothing either way)
    splits = {res.get("test_split") for res in all_results.values()} - {None}
    if (
        len(splits) > 1
    ):  # e.g. checkpoints trained with another split_seed or test_fraction on one folder
        lines.append("")
        lines.append(
            "**Warning: these sources were scored on different test splits, so their columns are "
            "not comparable:** "
            + "; ".join(f"{name}: {res.get('test_split')}" for name, res in all_results.items())
        )
    text = "\n".join(lines)
    against = best_against_random_init(all_results)
    if against:
        text += "\n\nBest linear probe against random init's: " + "; ".join(
            f"{name} {words}" for name, words in against.items()
        )
    if gaps:
        text += (
            "\n\nThe random-init -> supervised gap (best linear probe, layers chosen on held-out "
            "train) recovered by "
            + "; ".join(f"{name}: {words}" for name, (_, words) in gaps.items())
        )
    if out is not None:
        payload = {
            "results": all_results,
            "gap_recovered": {name: fraction for name, (fraction, _) in gaps.items()},
            "gap_notes": {name: words for name, (_, words) in gaps.items()},
        }
        atomic_write(
            Path(out) / "compare.json",
            lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"),
        )
        atomic_write(Path(out) / "compare.md", lambda tmp: tmp.write_text(text + "\n"))
    return text
