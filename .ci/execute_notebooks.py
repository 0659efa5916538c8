#!/usr/bin/env python3
"""Re-execute notebooks in place and store their outputs (what readers see on a static page).

    python .ci/execute_notebooks.py notebooks/01_forward_process.ipynb [...]

Runs each notebook top to bottom in a fresh kernel in its own folder with the CI profile
(DDPM_PROFILE=ci and OMP_NUM_THREADS=1 unless set), exactly as `pytest --nbval notebooks/` will later, and writes
the outputs back in the form JupyterLab saves (``benchmarks/lab_roundtrip.py``'s ``fix``: merged
print output, the kernelspec Lab starts, jupytext's metadata), so that opening and saving a lesson
in Lab changes nothing. Commit the result.
"""
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from lab_roundtrip import fix  # noqa: E402

os.environ.setdefault("DDPM_PROFILE", "ci")
os.environ.setdefault("OMP_NUM_THREADS", "1")          # as notebooks/conftest.py does
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    start = time.time()
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    nbformat.write(nb, path)
    fix(pathlib.Path(path))
    print(f"{path}: executed in {time.time() - start:.0f} s")
