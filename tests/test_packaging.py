"""The conda environment and the pip metadata must ask for the same packages."""
import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}          # conda package name -> pip name


def _requirement(text):
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(>=\s*[0-9.]+)?\s*", text)
    assert m, f"cannot parse requirement {text!r}"
    return m.group(1).lower().replace("_", "-"), (m.group(2) or "").replace(" ", "")


def conda_requirements():
    reqs, in_deps = {}, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        m = re.match(r"^  - ([^:]+)$", line)
        if in_deps and m:
            name, bound = _requirement(m.group(1))
            reqs[CONDA_NAMES.get(name, name)] = bound
    return reqs


def pip_requirements():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {}
    for text in project["dependencies"] + project["optional-dependencies"]["lab"]:
        name, bound = _requirement(text)
        reqs[name] = bound
    return reqs, project["requires-python"]


def test_environment_yml_matches_pyproject():
    conda = conda_requirements()
    pip, python = pip_requirements()
    assert conda.pop("python") == python
    assert conda.pop("pip") == ""
    assert conda == pip, "environment.yml and pyproject.toml (dependencies + [lab]) disagree"


def test_environment_yml_installs_the_course_package():
    assert "      - -e ." in (ROOT / "environment.yml").read_text().splitlines()
