"""Every lesson notebook opens in Colab, installs the course there, and carries its outputs."""
import json
from pathlib import Path

import pytest

from lesson_lib.course import colab

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = colab.REPOSITORY                   # owner/name on GitHub, written once in lesson_lib.course.colab
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"])


def test_every_lesson_is_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert NOTEBOOKS
    for nb in NOTEBOOKS:
        assert f"(notebooks/{nb.name})" in readme, f"README's curriculum map does not link {nb.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_points_at_this_notebook(path):
    first = source(cells(path)[0])
    assert f"colab.research.google.com/github/{REPOSITORY}/blob/{colab.BRANCH}/notebooks/{path.name}" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_the_course_on_colab_only(path):
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    first = source(code[0])
    assert 'if "google.colab" in sys.modules:' in first
    assert f"lesson_lib @ git+https://github.com/{REPOSITORY}" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_stored(path):
    code = [c for c in cells(path) if c["cell_type"] == "code" and source(c).strip()]
    executed = [c for c in code if c.get("execution_count")]
    assert len(executed) == len(code), f"{path.name}: run .ci/execute_notebooks.py and commit the outputs"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c.get("outputs", [])), "no figures stored"
