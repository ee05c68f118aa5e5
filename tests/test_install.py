"""Set-up on a fresh machine: the README's test command is what CI runs, and it installs a pinned
environment, while the library's own requirements stay open ranges."""

import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """A requirement's project name, normalised as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _readme_test_command() -> str:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    return lines[lines.index(next(x for x in lines if x.startswith("# 2. "))) + 1]


def test_ci_runs_the_readme_test_command_verbatim_in_a_fresh_environment():
    command = _readme_test_command()
    assert command.startswith('pip install -e ".[test]" -c requirements/test.txt && ')
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert any(line.startswith(command) for line in ci.splitlines()), ci
    assert ci.index("python -m venv") < ci.index(command)  # a new environment, then the command


def test_the_test_environment_pins_every_requirement_and_the_library_keeps_ranges():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["test"], *extras["docs"]]
    assert not [r for r in project["dependencies"] if "==" in r]
    pins = {}
    for line in (ROOT / "requirements" / "test.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), line
            pins[_name(name)] = version
    missing = {_name(r) for r in wanted if not r.startswith("natlearn[")} - pins.keys()
    assert not missing, f"not pinned in requirements/test.txt: {sorted(missing)}"
    assert "natlearn" not in pins  # the checkout itself is installed, never a pinned release


def test_committed_results_name_no_machine_paths():
    """Records under experiments/results and benchmarks/results name data relative to the
    repository (``../shared/data/cifar10``), never the absolute path of the machine that ran
    them."""
    from natlearn.files import relative_paths

    here = {"data": str(ROOT.parent / "shared" / "data" / "cifar10"), "run": str(ROOT / "runs")}
    assert relative_paths(here, ROOT) == {"data": "../shared/data/cifar10", "run": "runs"}
    # A checkout straight under the temp folder (a fresh clone in /tmp) would flag the records'
    # throw-away run folders (/tmp/tmpXXXX), which name no data: only a real parent counts.
    in_temp = str(ROOT.parent) == tempfile.gettempdir()
    parent = [] if in_temp else [re.escape(str(ROOT.parent)) + "/"]
    beside = re.compile("|".join([*parent, "/work/", "/root/", "/home/"]))
    for folder in ("experiments/results", "benchmarks/results"):
        for record in sorted((ROOT / folder).glob("*.json")):
            found = beside.search(record.read_text(encoding="utf-8"))
            assert found is None, f"{record.relative_to(ROOT)} names a machine path: {found[0]}"


def test_the_wheel_carries_the_presets_and_types_and_one_version(tmp_path):
    """What a wheel-only install needs travels in the wheel (the YAML presets, py.typed, the
    pretrained backbones), nothing of the repository's tests or benchmarks does, and its version is
    natlearn.__version__ (the one place it is written). CI (.ci/wheel) also installs it outside the
    checkout and runs the demo and the pretrained backbone."""
    import shutil
    import subprocess
    import sys
    import zipfile

    import natlearn

    # Built from a copy of what the sdist holds: an in-tree build reuses a stale build/ folder.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("natlearn-*.whl")
    assert wheel.name.startswith(f"natlearn-{natlearn.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    presets = {p.name for p in (ROOT / "src" / "natlearn" / "configs").glob("*.yaml")}
    assert presets and presets <= {Path(n).name for n in names if n.startswith("natlearn/configs/")}
    assert "natlearn/py.typed" in names
    shipped = ROOT / "src" / "natlearn" / "weights"  # the pretrained backbones and their cards
    weights = {str(p.relative_to(ROOT / "src")) for p in shipped.rglob("*") if p.is_file()}
    assert weights and weights <= set(names)
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "experiments")]
