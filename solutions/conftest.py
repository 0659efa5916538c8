"""pytest configuration for `pytest --nbval solutions/`: the same environment as
notebooks/conftest.py (the small CI profile, one CPU thread), inherited by nbval's kernel."""
import os

os.environ.setdefault("DDPM_PROFILE", "ci")
os.environ.setdefault("OMP_NUM_THREADS", "1")
