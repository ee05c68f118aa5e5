"""`natlearn report RUN_DIR`: one markdown page with a run's config, training curves, evaluations,
figures."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from natlearn.errors import NatlearnError
from natlearn.evaluate.reports.figures import figure_title, training_curves
from natlearn.files import atomic_write
from natlearn.markdown import table

__all__ = ["write_report"]


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` (and ``training_curves.png``) from what the run folder holds."""
    run_dir = Path(run_dir)
    log = run_dir / "log.jsonl"
    if not log.is_file():
        raise NatlearnError(
            f"{run_dir} is not a natlearn run folder (no log.jsonl); "
            "give the out= folder of natlearn train"
        )
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    config = (
        yaml.safe_load((run_dir / "config.yaml").read_text())
        if (run_dir / "config.yaml").is_file()
        else {}
    )
    lines = [f"# Run report: {run_dir.name}", ""]
    if rows:
        last = rows[-1]
        seconds = sum(r["seconds"] for r in rows)
        summary = ", ".join(
            f"{k} {last[k]:.4f}"
            for k in ("loss", "cosine", "reassigned", "train_accuracy")
            if k in last
        )
        lines += [
            f"{len(rows)} epochs in {seconds / 60:.1f} minutes ({last['images_per_s']:.0f} "
            f"images/s in the last epoch). Last epoch: {summary}.",
            "",
        ]
        training_curves(
            {config.get("objective", "run"): rows},
            run_dir / "training_curves.png",
            f"{run_dir.name}: {figure_title(config, last['epoch'])}",
        )
        lines += ["![training curves](training_curves.png)", ""]
    for title, relative in (
        ("Evaluation", "eval/eval.md"),
        ("Feature evolution", "evolution/evolution.md"),
    ):
        path = run_dir / relative
        if path.is_file():
            body = path.read_text().split("\n", 1)[1].strip()  # drop its own title
            lines += [f"## {title}", "", body, ""]
            if (path.parent / "evolution.png").is_file() and title == "Feature evolution":
                lines += [f"![evolution]({path.parent.name}/evolution.png)", ""]
    figures = sorted(p for p in run_dir.glob("*.png") if p.name != "training_curves.png")
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    lines += ["## Config", "", table(["key", "value"], config.items()), ""]
    out = run_dir / "report.md"
    atomic_write(out, lambda tmp: tmp.write_text("\n".join(lines)))
    return out
