"""pytest configuration for `pytest --nbval notebooks/`.

The notebooks' stored outputs were produced with the small CI profile (see
lesson_lib/profiles.py), so checking them runs the same profile unless DDPM_PROFILE is
already set. The kernel that nbval starts inherits this environment.
"""
import os

os.environ.setdefault("DDPM_PROFILE", "ci")
