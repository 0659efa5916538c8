"""Saving and loading training state so that nothing is ever lost.

* Writes are atomic: the state goes to a temporary file in the same folder, is flushed to
  disk, and only then replaces the old checkpoint with ``os.replace`` (atomic on POSIX and
  Windows). A crash mid-write leaves the previous checkpoint intact.
* The previous checkpoint is kept: ``save_checkpoint(..., keep_previous=True)`` (what
  :meth:`Trainer.save <lesson_lib.training.trainer.Trainer.save>` does) first copies the complete
  checkpoint already at ``checkpoint.pt`` to ``checkpoint.prev.pt``. A checkpoint that later turns
  out unreadable (a copy cut short, a full disk that lied about it) thus always has an earlier
  copy beside it, and :func:`load_latest_checkpoint` falls back to it, saying so.
* Loads use ``torch.load(weights_only=True)``: a checkpoint can hold tensors, numbers,
  strings, lists and dicts, never arbitrary pickled code.
* A checkpoint records the configuration it was trained with, and :func:`check_config`
  refuses to resume from one whose configuration differs, saying which entries differ.
* :func:`check_writable` tries the folder before training starts, so that an unwritable one
  fails at once rather than at the first save, after the work.
"""

import hashlib
import os
import pickle
import shutil
import sys
import tempfile
import zipfile

import torch

from ..files import atomic_write


class NotACheckpointError(ValueError, pickle.UnpicklingError):
    """A file that is not a checkpoint of lesson_lib (also an ``UnpicklingError``, which is what
    ``torch.load`` raises for a file it refuses to unpickle)."""


class ConfigMismatchError(ValueError):
    """A checkpoint written with another configuration; ``keys`` lists the entries that differ."""

    def __init__(self, message, keys):
        super().__init__(message)
        self.keys = keys


def previous_path(path):
    """Where the copy of the checkpoint before ``path`` is kept: ``run/checkpoint.pt`` ->
    ``run/checkpoint.prev.pt``."""
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}.prev{ext}"


def checkpoint_exists(path):
    """Whether ``path`` or the previous copy beside it exists: together they are one checkpoint."""
    return os.path.exists(path) or os.path.exists(previous_path(path))


def _cannot_write(path, error):
    return (f"cannot write the checkpoint {os.fspath(path)!r}: {error.strerror or error}; "
            f"choose a folder you can write to (checkpoint_path=... or --out ...)")


def check_writable(path):
    """Create the folder of ``path``, then create and remove a temporary file in it: an unwritable
    folder fails now, before any training, instead of at the first save hours later."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise OSError(_cannot_write(path, error)) from error


def is_complete(path):
    """Whether the file at ``path`` is a whole torch checkpoint: ``torch.save`` writes a zip
    archive whose index comes last, so a file cut short has none."""
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def save_checkpoint(state, path, keep_previous=False):
    """Write ``state`` (a dict of tensors, numbers, strings, lists and dicts) to ``path`` atomically.

    With ``keep_previous``, a complete checkpoint already at ``path`` is first copied (atomically
    too) to :func:`previous_path`, so an earlier good copy survives whatever happens to the new one.
    An incomplete file is not copied over a good previous one."""
    try:
        if keep_previous and is_complete(path):
            with open(path, "rb") as current:
                atomic_write(previous_path(path), lambda f: shutil.copyfileobj(current, f))
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError as error:
        raise OSError(_cannot_write(path, error)) from error


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


def load_latest_checkpoint(path, map_location="cpu"):
    """The newest readable checkpoint at ``path``: the file itself, or, when it is missing or
    unreadable, the previous copy beside it (:func:`previous_path`), with a warning on stderr.
    None when neither exists; ValueError when neither can be read."""
    path, previous = os.fspath(path), previous_path(path)
    if not os.path.exists(previous):
        return load_checkpoint(path, map_location) if os.path.exists(path) else None
    try:
        return load_checkpoint(path, map_location)
    except (FileNotFoundError, ValueError) as error:
        problem = f"{path} is missing" if isinstance(error, FileNotFoundError) else str(error)
    try:
        state = load_checkpoint(previous, map_location)
    except (FileNotFoundError, ValueError) as error:
        raise NotACheckpointError(f"{problem}; and the previous copy cannot be read either ({error}); "
                                  f"start a fresh run in another folder") from error
    print(f"warning: {problem}\nwarning: resuming from the previous checkpoint {previous} instead "
          f"(step {state.get('step')}): the steps after it are trained again, and the next save "
          f"replaces {path}", file=sys.stderr)
    return state


def check_config(saved, current, what="configuration"):
    """Raise ConfigMismatchError listing every entry where ``saved`` and ``current`` differ."""
    keys = sorted(set(saved) | set(current))
    differ = [k for k in keys if saved.get(k) != current.get(k)]
    if differ:
        raise ConfigMismatchError(
            f"this checkpoint was written with a different {what}, so it cannot be resumed:\n  "
            + "\n  ".join(f"{k}: checkpoint has {saved.get(k, '<missing>')!r}, now {current.get(k, '<missing>')!r}"
                          for k in differ)
            + "\nuse the original settings, or start a fresh run in another folder", differ)


def weights_sha256(model):
    """The sha256 of a network's weights: the name, dtype, shape and bytes of every tensor of its
    ``state_dict``, in order. The same weights give the same name on any device or memory layout,
    so a checkpoint can record which network it was trained against (e.g. a distillation teacher)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
