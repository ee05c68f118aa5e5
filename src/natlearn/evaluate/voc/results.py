"""The VOC transfer's results: ``transfer.json`` and ``transfer.md``, per source a row per class
(AP of each protocol, and of detection when it ran), then mAP and what each protocol chose."""

from __future__ import annotations

import json
from pathlib import Path

from natlearn.files import atomic_write
from natlearn.markdown import table

__all__ = ["format_transfer", "write_transfer"]


def format_transfer(results: dict) -> str:
    """Markdown: per source, a row per class (AP of each protocol, 11-point / all-point, and of
    detection when it ran), then mAP; the settings chosen and the time follow."""
    parts = []
    for name, source in results["sources"].items():
        runs = [
            (f"{protocol} {where}", run["test"], f"{_chosen(run)}; {run['seconds']:.1f} s")
            for protocol, found in source.get("protocols", {}).items()
            for where, run in found.items()
        ]
        if "detection" in source:
            found = source["detection"]
            seconds = sum(found["seconds"].values())
            runs.append(("detection (mAP@0.5)", found, f"{_chosen_lr(found)}; {seconds:.1f} s"))
        classes = list(runs[0][1]["ap11"]) if runs else []
        rows = [
            [c, *(_pair(scores["ap11"][c], scores["ap_all"][c]) for _, scores, _ in runs)]
            for c in classes
        ]
        rows.append(
            ["**mAP**", *(_pair(scores["map11"], scores["map_all"]) for _, scores, _ in runs)]
        )
        header = ["class", *(f"{label} (AP11 / AP all)" for label, _, _ in runs)]
        chosen = [f"- {label}: {how}" for label, _, how in runs]
        parts.append(
            f"## {name}\n\n{source['setup']}\n\n{table(header, rows)}\n\n" + "\n".join(chosen)
        )
    return "\n\n".join(parts)


def _pair(eleven: float | None, all_point: float | None) -> str:
    if eleven is None:
        return "-"
    return f"{eleven:.4f} / {all_point:.4f}"


def _chosen(run: dict) -> str:
    if "weight_decay" in run:
        return (
            f"weight decay {run['weight_decay']:g} chosen on {run['chosen_on']} "
            f"(val mAP11 {run['val_map11']:.4f}), refit on {run['fit_on']}"
        )
    how = "chosen on val" if run["chosen_on"] == "val" else "the one given"
    return f"lr {run['lr']:g} ({how}), {run['epochs']} epochs on {run['fit_on']}"


def _chosen_lr(detection: dict) -> str:
    how = "chosen on val" if detection["lr_chosen_on"] == "val" else "the one given"
    epochs, size = detection["settings"]["epochs"], detection["settings"]["image_size"]
    return f"lr {detection['lr']:g} ({how}), {epochs} epochs at {size} px on trainval"


def write_transfer(out: str | Path, results: dict) -> None:
    """``out/transfer.json`` and ``out/transfer.md``, written atomically."""
    out = Path(out)
    text = json.dumps(results, indent=2, allow_nan=False) + "\n"
    atomic_write(out / "transfer.json", lambda tmp: tmp.write_text(text))
    markdown = f"# Pascal VOC 2007 transfer\n\n{results['setup']}\n\n{format_transfer(results)}\n"
    atomic_write(out / "transfer.md", lambda tmp: tmp.write_text(markdown))
