"""The docs' build-time helpers (docs/hooks): Sphinx roles in docstrings become checked links, and
the README's sections become pages. The strict build itself runs in .ci/run."""

from pathlib import Path

import pytest

griffe = pytest.importorskip("griffe")  # the docs extra (in the test extra)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def natlearn_api():
    extensions = griffe.load_extensions(str(ROOT / "docs/hooks/sphinx_roles.py") + ":SphinxRoles")
    return griffe.load("natlearn", search_paths=[str(ROOT / "src")], extensions=extensions)


def test_roles_become_links_or_code(natlearn_api):
    # a public natlearn object: a link that autorefs checks (the strict build fails if missing)
    softmax = natlearn_api["nat.loss.softmax_loss"].docstring.value
    assert "[`square_loss`][natlearn.nat.loss.square_loss]" in softmax
    # ~ shows the last part; a re-export links to where the object is defined
    embedding = natlearn_api["evaluate.reports.embedding"].docstring.value
    assert "[`load_split`][natlearn.data.datasets.load_split]" in embedding
    # outside natlearn (no inventory) and not exported (not in __all__): code, no link
    assert "`numpy.lib.format.open_memmap`" in embedding
    assert "[`numpy" not in embedding
    probes = natlearn_api["evaluate.probes.linear.linear_probe"].docstring.value
    assert "`PATIENCE`" in probes and "][natlearn.evaluate.fit.PATIENCE]" not in probes
    assert ":func:" not in softmax + embedding + probes


def test_unresolvable_role_stays_a_reference(natlearn_api):
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("sphinx_roles", ROOT / "docs/hooks/sphinx_roles.py")
    roles = module_from_spec(spec)
    spec.loader.exec_module(roles)
    scope = natlearn_api["nat.loss.softmax_loss"]
    loader = griffe.GriffeLoader(search_paths=[str(ROOT / "src")])
    loader.modules_collection["natlearn"] = natlearn_api
    assert roles._crossref(scope, "square_los", loader) == "[`square_los`][square_los]"
    assert roles._crossref(scope, "~natlearn.nope.Foo", loader) == "[`Foo`][natlearn.nope.Foo]"


def test_readme_sections_are_pages():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("pages", ROOT / "docs/hooks/pages.py")
    pages = module_from_spec(spec)
    spec.loader.exec_module(pages)
    made = pages.readme_pages()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = [line[3:].strip() for line in readme.splitlines() if line.startswith("## ")]
    assert [title for title, _, _ in made] == ["Home", *headings]
    assert made[0][1] == "index.md" and made[0][2].startswith("# natlearn")
    assert "](docs/" not in "".join(text for _, _, text in made)
    assert "natlearn.nat.module" in pages.api_modules()


def test_the_readme_quotes_the_training_step_as_it_is():
    # The README shows train_step "as it reads": a change to the step must reach the README too.
    import inspect

    from natlearn.training.trainer import train_step

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quoted = readme.split("The training step (`natlearn/training/trainer.py`), as it reads:", 1)[1]
    quoted = quoted.split("```python\n", 1)[1].split("```", 1)[0]
    assert quoted == inspect.getsource(train_step)
