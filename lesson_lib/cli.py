"""What the command lines share: argument types that say what they accept, and errors without tracebacks.

A student who types ``--n 0`` or points ``--checkpoint`` at the wrong file made an ordinary
mistake; they should read one line that names the argument and the fix, not forty lines of
traceback. :func:`run` prints such errors (ValueError, TypeError, FileNotFoundError, OSError
raised by the library's own checks) as ``prog: error: ...`` and exits with status 2, as argparse
does for a bad flag. Set ``LESSON_LIB_TRACEBACK=1`` to see the full traceback instead.
"""

import argparse
import os
import sys


def _whole_number(minimum):
    """An argparse type that accepts whole numbers >= ``minimum`` and says so otherwise."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {value}")
        return value
    return parse


positive_int = _whole_number(1)          # --n, --steps
non_negative_int = _whole_number(0)      # --checkpoint-every, --sample-every (0 = only at the end)


def run(main, argv, prog):
    """Call ``main(argv)``; an ordinary user error becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError) as error:
        if os.environ.get("LESSON_LIB_TRACEBACK"):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        print(f"{prog}: (set LESSON_LIB_TRACEBACK=1 to see where it came from)", file=sys.stderr)
        raise SystemExit(2) from None
