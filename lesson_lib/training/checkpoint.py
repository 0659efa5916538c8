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
import pickle

import torch

from ..files import atomic_write


class NotACheckpointError(ValueError, pickle.UnpicklingError):
    """A file that is not a checkpoint of lesson_lib (also an ``UnpicklingError``, which is what
    ``torch.load`` raises for a file it refuses to unpickle)."""


def save_checkpoint(state, path):
    """Write ``state`` (a dict of tensors, numbers, strings, lists and dicts) to ``path`` atomically."""
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError as error:
        raise OSError(f"cannot write the checkpoint {os.fspath(path)!r}: {error.strerror or error}; "
                      f"choose a folder you can write to (checkpoint_path=... or --out ...)") from error


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    A missing file raises FileNotFoundError; a folder, an empty, truncated or text file, or a
    file that holds something other than a dict raises ValueError("... is not a checkpoint of
    lesson_lib: ...") instead of the unpickler's own error."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}; train one first (python -m lesson_lib.train) "
                                f"or check the path")
    if os.path.isdir(path):
        raise ValueError(f"{path} is not a checkpoint of lesson_lib: it is a folder; pass the .pt file inside it")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is not a checkpoint of lesson_lib: the file is empty (was its writing "
                         f"interrupted? checkpoints are written atomically, so look for the previous one)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:   # the unpickler raises many types for a file that is not ours
        raise NotACheckpointError(f"{path} is not a checkpoint of lesson_lib: torch.load could not read it "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}); "
                         f"it may be truncated, or another kind of file") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a checkpoint of lesson_lib: it holds a {type(state).__name__}, "
                         f"not the dict that lesson_lib writes")
    return state


def check_config(saved, current, what="configuration"):
    """Raise ValueError listing every entry where ``saved`` and ``current`` differ."""
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k}: checkpoint has {saved.get(k, '<missing>')!r}, now {current.get(k, '<missing>')!r}"
             for k in keys if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(f"this checkpoint was written with a different {what}, so it cannot be resumed:\n  "
                         + "\n  ".join(diffs)
                         + "\nuse the original settings, or start a fresh run in another folder")
