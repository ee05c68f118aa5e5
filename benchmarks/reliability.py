"""Run the fault-injection tests and write docs/reliability.md:
each fault, how it is injected, what happened.

    python benchmarks/reliability.py     # ~1 minute on 2 CPU cores

The faults and their expected outcomes are the docstrings of tests/reliability/test_*.py; the
outcome column is what this run of those tests measured (passed = the expectation held).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import fresh_machine
import mutants
from _report import ROOT, hardware, today  # benchmarks/ is on sys.path when run as a script
from natlearn.files import atomic_write
from natlearn.markdown import marked, table

TESTS = ROOT / "tests" / "reliability"


def docstrings() -> dict[str, str]:
    described = {}
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        described |= {
            node.name: " ".join((ast.get_docstring(node) or "").split())
            for node in tree.body
            if isinstance(node, ast.FunctionDef)
        }
    return described


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(TESTS),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
        ]
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        print(completed.stdout[-2000:])
        cases = ElementTree.parse(report).getroot().iter("testcase")
        results = []
        for case in cases:
            failed = case.find("failure") is not None or case.find("error") is not None
            results.append(
                (case.get("name"), "passed" if not failed else "FAILED", float(case.get("time", 0)))
            )
    described = docstrings()
    rows = [[described.get(name, name), outcome, f"{time:.1f}"] for name, outcome, time in results]
    lines = [
        "# Reliability: faults injected and what survived",
        "",
        f"Written by `python benchmarks/reliability.py` on {today()} ({hardware()}); it runs",
        "`python -m pytest tests/reliability` (also part of the normal test suite, "
        "so CI checks every row).",
        "",
        "Kills are real `SIGKILL`s of a `natlearn train` subprocess, "
        "delivered by the process itself at a named point",
        "(`NATLEARN_FAULT=after-step:E:S` or `in-checkpoint:NAME[#K]`, see "
        "`src/natlearn/training/faults.py`), so they land",
        "at exactly the same place on every run. "
        '"Bit-identical" compares every weight, BatchNorm statistic, momentum',
        "buffer, the assignment (image -> target, spare targets, its generator) "
        "and the global RNG state with an",
        "uninterrupted run of the same config, on the CPU.",
        "",
        table(["fault and expected outcome", "outcome", "seconds"], rows),
        "",
        "Also checked elsewhere in the suite: the table of bad command lines in tests/test_cli.py "
        "(each: one line, exit 2, no file written);",
        "the assignment stays a permutation after thousands of random re-assignments "
        "(tests/test_assignment.py, hypothesis);",
        "a resume whose config differs in what matters is refused with the fields listed "
        "(tests/test_train.py).",
    ]
    # the mutant table and the fresh-machine check come from their own (slower) runs:
    # python benchmarks/mutants.py, python benchmarks/fresh_machine.py
    if mutants.RESULTS.is_file():
        lines += ["", mutants.section(json.loads(mutants.RESULTS.read_text()))]
    fresh = ROOT / "benchmarks" / "results" / f"{fresh_machine.NAME}.json"
    if fresh.is_file():
        body = fresh_machine.section(json.loads(fresh.read_text()))
        lines += ["", marked(fresh_machine.NAME, body)]
    atomic_write(
        ROOT / "docs" / "reliability.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n")
    )
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
