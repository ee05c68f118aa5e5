"""The fresh-machine check: a new clone of the repository's HEAD, a new virtual environment, and the
README's two commands in it verbatim (read from README.md, so the check cannot drift from what a
user is told). Writes benchmarks/results/fresh_machine.json and its section of docs/reliability.md.

    python benchmarks/fresh_machine.py             # both commands (~12 min on 2 idle CPU cores)
    python benchmarks/fresh_machine.py --only 2    # the test command only

Only what is committed is checked (a clone of HEAD); uncommitted changes are named in a warning.
PyTorch comes from pip's configured sources, as on a machine with a GPU (the README's optional
CPU-only line is not run: it needs download.pytorch.org).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/ is on sys.path when run as a script
from _report import ROOT, hardware, today, write_json
from natlearn import markdown

NAME = "fresh_machine"
DOC = ROOT / "docs" / "reliability.md"
TITLE = "# Reliability: faults injected and what survived"


def readme_commands() -> dict[str, str]:
    """The README's numbered commands: {"1": "pip install . && ...", "2": ...}."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    found = {}
    for at, line in enumerate(lines):
        if match := re.match(r"# ([12])\. ", line):
            found[match[1]] = lines[at + 1].strip()
    if set(found) != {"1", "2"}:
        raise SystemExit("error: README.md no longer has the '# 1.' and '# 2.' command lines")
    return found


def _summary(output: str) -> str:
    """pytest's closing line (``394 passed, 2 skipped in 433.01s``), or the demo's last line."""
    lines = [line.strip("= ") for line in output.splitlines() if line.strip()]
    tests = [line for line in lines if re.search(r"\d+ (passed|failed|error)", line)]
    return (tests or lines or [""])[-1]


def run_check(only: str | None) -> dict:
    commands = readme_commands()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    if dirty.strip():
        print(f"warning: uncommitted changes are not checked:\n{dirty}", file=sys.stderr)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="natlearn-fresh-") as scratch:
        clone, venv = Path(scratch) / "natlearn", Path(scratch) / "venv"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {**os.environ, "VIRTUAL_ENV": str(venv)}
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        env.pop("PYTHONPATH", None)
        for number, command in commands.items():
            if only and number != only:
                continue
            print(f"[{number}] {command}", flush=True)
            started = time.perf_counter()
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=clone,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            seconds = time.perf_counter() - started
            summary = _summary(done.stdout)
            print(f"    exit {done.returncode} in {seconds / 60:.1f} min: {summary}", flush=True)
            if done.returncode:
                print(done.stdout[-6000:], file=sys.stderr)
            rows.append(
                {
                    "command": number,
                    "text": command,
                    "exit": done.returncode,
                    "minutes": round(seconds / 60, 1),
                    "summary": summary,
                }
            )
    return {
        "date": today(),
        "hardware": hardware(),
        "python": sys.version.split()[0],
        "commit": commit,
        "rows": rows,
    }


def section(payload: dict) -> str:
    """The docs/reliability.md section for a saved check."""
    rows = [
        [
            f"{row['command']}. `{row['text']}`",
            "passed" if row["exit"] == 0 else f"FAILED (exit {row['exit']})",
            row["summary"],
            row["minutes"],
        ]
        for row in payload["rows"]
    ]
    body = "\n".join(
        [
            "## A fresh machine: the README's commands in a new clone and a new venv",
            "",
            f"Written by `python benchmarks/fresh_machine.py` on {payload['date']} "
            f"({payload['hardware']}; Python {payload['python']}), commit "
            f"`{payload['commit'][:10]}`: a new clone of HEAD, a new virtual environment, each "
            "command run verbatim as the README gives it. The test environment is pinned by "
            "`requirements/test.txt` (refresh: `bash requirements/lock.sh`); CI (`.ci/run`) "
            "builds a new virtual environment on every run as well.",
            "",
            markdown.table(["command", "outcome", "closing line", "minutes"], rows),
        ]
    )
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["1", "2"], help="run one of the README's commands")
    args = parser.parse_args(argv)
    payload = run_check(args.only)
    write_json(NAME, payload)
    body = section(payload)
    markdown.write_section(DOC, NAME, body, TITLE)
    print(body)
    return max(row["exit"] for row in payload["rows"])


if __name__ == "__main__":
    sys.exit(main())
