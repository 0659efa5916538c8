"""pytest configuration for `pytest --nbval notebooks/`.

The notebooks' stored outputs were produced with the small CI profile (see
lesson_lib/training/profiles.py), so checking them runs the same profile unless DDPM_PROFILE is
already set, with one CPU thread. The kernel that nbval starts inherits this environment.
"""
import os

os.environ.setdefault("DDPM_PROFILE", "ci")
# The ci profile's models are tiny: on a 2-core machine a second thread costs more in
# synchronisation than it gains (up to 10x slower when anything else runs).
os.environ.setdefault("OMP_NUM_THREADS", "1")
