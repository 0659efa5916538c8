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
