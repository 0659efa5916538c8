"""Saving and loading training state so that nothing is ever lost.

* Writes are atomic: the state goes to a temporary file in the same folder, is flushed to
  disk, and only then replaces the old checkpoint with ``os.replace`` (atomic on POSIX and
  Windows). A crash mid-write leaves the previous checkpoint intact.
* Loads use ``torch.load(weights_only=True)``: a checkpoint can hold tensors, numbers,
  strings, lists and dicts, never arbitrary pickled code.
* A checkpoint records the configuration it was trained with, and :func:`check_config`
  refuses to resume from one whose configuration differs, saying which entries differ.
"""

import os

import torch

from ..files import atomic_write


def save_checkpoint(state, path):
    """Write ``state`` (a dict of tensors, numbers, strings, lists and dicts) to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}; train one first (python -m lesson_lib.train) "
                                f"or check the path")
    return torch.load(path, map_location=map_location, weights_only=True)


def check_config(saved, current, what="configuration"):
    """Raise ValueError listing every entry where ``saved`` and ``current`` differ."""
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k}: checkpoint has {saved.get(k, '<missing>')!r}, now {current.get(k, '<missing>')!r}"
             for k in keys if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(f"this checkpoint was written with a different {what}, so it cannot be resumed:\n  "
                         + "\n  ".join(diffs)
                         + "\nuse the original settings, or start a fresh run in another folder")
