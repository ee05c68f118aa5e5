"""Several representations side by side, by the same protocols, and how much of the random-init ->
supervised gap each NAT model recovers."""

from __future__ import annotations

import json
from pathlib import Path

from natlearn import markdown
from natlearn.files import atomic_write

__all__ = ["compare_table", "gap_recovered", "best_linear"]


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


def gap_recovered(all_results: dict[str, dict]) -> dict[str, float]:
    """For each NAT evaluation: (best linear - random init's) / (supervised's - random init's)."""
    by_kind = {
        res["objective"] if res["model"] != "random-init" else "random": res
        for res in all_results.values()
    }
    if not {"random", "supervised"} <= by_kind.keys():
        return {}
    low, high = best_linear(by_kind["random"]), best_linear(by_kind["supervised"])
    if low is None or high is None or high[1] <= low[1]:
        return {}
    gaps = {}
    for name, res in all_results.items():
        best = best_linear(res)
        if res["objective"] == "nat" and res["model"] != "random-init" and best is not None:
            gaps[name] = (best[1] - low[1]) / (high[1] - low[1])
    return gaps


def compare_table(all_results: dict[str, dict], out: Path | None = None) -> str:
    """Markdown: rows = protocol and layer, columns = the evaluated sources (top-1)."""
    names = list(all_results)
    rows: dict[str, dict[str, float]] = {}
    for name, res in all_results.items():
        for protocol, table in res["protocols"].items():
            for layer, values in table.items():
                rows.setdefault(f"{protocol} {layer}", {})[name] = values["top1"]
    cells = []
    for key, values in rows.items():
        cells.append([key, *(f"{values[n]:.4f}" if n in values else "" for n in names)])
    best = [f"**{b[1]:.4f}** ({b[0]})" if b else "" for b in map(best_linear, all_results.values())]
    cells.append(["**best linear** (layer chosen on held-out train)", *best])
    lines = [markdown.table(["protocol, layer", *names], cells)]
    gaps = gap_recovered(all_results)
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
    if gaps:
        text += (
            "\n\nFraction of the random-init -> supervised gap (best linear probe, layers chosen "
            "on held-out train) recovered: "
            + ", ".join(f"{name} {gap:.0%}" for name, gap in gaps.items())
        )
    if out is not None:
        payload = {"results": all_results, "gap_recovered": gaps}
        atomic_write(
            Path(out) / "compare.json",
            lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"),
        )
        atomic_write(Path(out) / "compare.md", lambda tmp: tmp.write_text(text + "\n"))
    return text
