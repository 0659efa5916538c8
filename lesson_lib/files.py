"""Files that are never half-written, and their fingerprints.

Every file the course writes that a student would hate to lose or find corrupted (training
checkpoints, shipped weights and their cards, sample grids) goes through :func:`atomic_write`;
every shipped file is identified by :func:`sha256_of`. This module imports nothing from the rest
of the library, so every layer can use it.
"""

import hashlib
import os
import tempfile


def atomic_write(path, write):
    """Write a file so that readers see either the old file or the complete new one.

    ``write(f)`` writes to a binary file object for a temporary file in the same folder,
    which is flushed to disk and only then renamed over ``path`` (``os.replace`` is atomic on
    POSIX and Windows). On any error the temporary file is removed and the old file stays.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)               # mkstemp makes the file private; ours need not be
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def sha256_of(path):
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
