"""What the command lines share: argument types that say what they accept, and errors without tracebacks.

A student who types ``--n 0`` or points ``--checkpoint`` at the wrong file made an ordinary
mistake; they should read one line that names the argument and the fix, not forty lines of
traceback. :func:`run` prints such errors (ValueError, TypeError, FileNotFoundError, OSError
raised by the library's own checks) as one line ``prog: error: ...`` and exits with status 2,
as argparse does for a bad flag. Set ``LESSON_LIB_TRACEBACK=1`` to see the full traceback instead.

A command checks everything it can before the long part starts (sampling, training): the
device (:func:`check_device`) and the file it will write (:func:`check_output_file`), so that a
typo costs a second, not the minutes of sampling before the write fails.
"""

import argparse
import os
import sys
import tempfile

import torch


def _whole_number(minimum, maximum=None):
    """An argparse type that accepts whole numbers in [minimum, maximum] and says so otherwise."""
    bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {value}")
        return value
    return parse


positive_int = _whole_number(1)          # --n, --steps
non_negative_int = _whole_number(0)      # --checkpoint-every, --sample-every (0 = only at the end)
seed_int = _whole_number(0, 2 ** 32 - 1)  # --seed


def check_device(parser, text):
    """``--device`` as a torch device that this machine has: cpu, cuda or cuda:N, mps."""
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        parser.error(f"--device must be cpu, cuda, cuda:N or mps, got --device {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but this machine has no CUDA GPU; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        parser.error(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                     f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps, but this machine has no Apple GPU; use --device cpu")
    return text


def check_output_file(parser, path, flag="--out", extensions=(".png", ".jpg", ".jpeg"), overwrite=False):
    """Refuse, before any work, an output file that could not be written or would replace a file
    this run did not make: a wrong extension, a folder that is missing or not writable, a name
    that is a folder, or an existing file (unless ``overwrite``)."""
    if os.path.splitext(path)[1].lower() not in extensions:
        parser.error(f"{flag} must end in {', '.join(extensions[:-1])} or {extensions[-1]}, got {flag} {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        parser.error(f"{flag} {path!r} is a folder; give a file name, e.g. {flag} "
                     f"{os.path.join(path, 'samples' + extensions[0])}")
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        parser.error(f"{flag} {path!r}: {folder} {what}; create the folder first (mkdir -p) or choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        parser.error(f"{flag} {path!r}: cannot write to the folder {folder}; choose another {flag}")
    if os.path.exists(path) and not overwrite:
        parser.error(f"{flag} {path!r} already exists; pass --overwrite to replace it, or choose another {flag}")
    return path


def run(main, argv, prog):
    """Call ``main(argv)``; an ordinary user error becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError) as error:
        if os.environ.get("LESSON_LIB_TRACEBACK"):
            raise
        message = " ".join(str(error).split())              # one line, whatever the message holds
        print(f"{prog}: error: {message} (LESSON_LIB_TRACEBACK=1 shows where it came from)", file=sys.stderr)
        raise SystemExit(2) from None
