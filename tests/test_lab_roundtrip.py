"""Opening and saving a lesson in JupyterLab changes no tracked file (benchmarks/lab_roundtrip.py
replays what Lab's server and model do between opening a notebook and its first save)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_opening_and_saving_every_notebook_in_lab_changes_nothing():
    pytest.importorskip("jupyter_server")
    pytest.importorskip("jupytext")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lab_roundtrip.py"), "--diff", "5"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:] + \
        "\nre-executed a notebook? run python benchmarks/lab_roundtrip.py --fix notebooks/NAME.ipynb"


def test_a_save_on_another_python_changes_only_the_version_line():
    """On a student's other Python, Lab's save rewrites language_info.version and nothing else:
    that line alone is reported and not counted; any other change still is."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from lab_roundtrip import only_python_version
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    stored = '{\n "metadata": {\n  "language_info": {\n   "name": "python",\n   "version": "3.11.7"\n  }\n }\n}\n'
    assert only_python_version(stored, stored.replace("3.11.7", "3.13.0")) == "3.11.7"
    assert only_python_version(stored, stored) is None
    assert only_python_version(stored, stored.replace("3.11.7", "3.13.0").replace("python", "pithon")) is None
    assert only_python_version(stored, "not json") is None
