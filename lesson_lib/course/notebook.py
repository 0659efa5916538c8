"""Reading a submitted notebook: which code the grader may run, and what to tell the instructor.

The grader never runs a notebook top to bottom. It parses every code cell with :mod:`ast` and
keeps only top-level imports, ``def`` and ``class`` statements, assignments of literal
constants (``T = 1000``) and the computed values that the notebook's functions use
(``SQRT2 = math.sqrt(2)``, run with a time limit); training loops, plots and self-checks never run. Everything here runs
in the grader's own process on untrusted text, so every step is bounded and nothing raises:
an unreadable file, a syntax error, a pathological expression (deep nesting that exhausts the
parser's stack or memory) or odd metadata becomes a *note* in an otherwise normal report.

IPython syntax is handled as IPython would see it: a line that *begins a statement* with ``!``
or ``%`` (``%matplotlib inline``, ``!pip install``), or asks for help (``torch.acos?``,
``??np.pad``), is dropped, but a continuation line such as ``!= 0)`` inside brackets is kept. A cell that starts with a cell magic whose body is Python
(``%%time``, ``%%capture``) is graded without its first line; other cell magics (``%%bash``,
``%%writefile``) are skipped. Both are reported in the notes, so a student who loses points
knows why.

The grader itself never calls these on a submission in its own process: parsing untrusted text can
take gigabytes (see :mod:`lesson_lib.course.reader`, which runs them in a limited child process).

Why one module of about 340 lines: every part answers one question, which statements of an
untrusted notebook may run (reading the file, IPython's syntax, the definitions, the computed
values the functions use); split up, each part would need the others' view of a cell.

This module does not import torch.
"""

import ast
import json
import re
import symtable
import warnings
from pathlib import Path

from lesson_lib.course.checks import lesson_id

MAX_NOTEBOOK_BYTES = 256 << 20  # a larger file is graded as unreadable (outputs count: images are large)
MAX_CELL_CHARS = 1 << 20        # a larger code cell is not parsed

PYTHON_CELL_MAGICS = ("time", "capture", "prun")  # their body runs in the notebook's namespace


KINDS = {b"%PDF": "a PDF", b"PK\x03\x04": "a zip archive", b"<!DOCTYPE": "a web page", b"<html": "a web page",
         b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image"}


def _not_a_notebook(path, data):
    """Why a file that is not valid notebook JSON cannot be graded, in the student's terms."""
    start = data[:16].lstrip()
    kind = next((what for magic, what in KINDS.items() if start.startswith(magic)), None)
    if kind is None and path.suffix.lower() in (".py", ".txt", ".md", ".html", ".pdf", ".zip"):
        kind = f"a {path.suffix.lower()} file"
    if kind is None and (start.startswith((b"# %%", b"#", b"import", b"from", b"def")) or not start):
        kind = "Python code or an empty file" if start else "an empty file"
    what = f"it is {kind}, not" if kind else "it is not"
    return (f"could not read the notebook: {what} a Jupyter notebook (.ipynb, JSON); hand in the .ipynb "
            f"file itself (in JupyterLab: File > Save, then the file from the file browser)")


def read_notebook(path):
    """The notebook at ``path`` as a dict, or ``(None, reason)`` when it cannot be read;
    returns ``(notebook, None)`` on success. Never raises for a bad file."""
    path = Path(path)
    data = b""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            return None, f"the notebook is {size >> 20} MB, more than the {MAX_NOTEBOOK_BYTES >> 20} MB allowed"
        with open(path, "rb") as f:
            data = f.read(MAX_NOTEBOOK_BYTES + 1)
        nb = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, _not_a_notebook(path, data)
    except MemoryError:
        return None, "could not read the notebook: it needs more memory than the grader's reader allows"
    except (OSError, ValueError, RecursionError) as error:
        return None, f"could not read the notebook: {type(error).__name__}: {str(error)[:200]}"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, "could not read the notebook: it has no list of cells"
    return nb, None


def metadata_lesson(nb):
    """``metadata.lesson_lib.lesson`` when it is a short string or int, else None; second
    value: a note when the metadata is present but unusable."""
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    meta = meta.get("lesson_lib") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or "lesson" not in meta:
        return None, None
    value = meta["lesson"]
    found = lesson_id(value) if type(value) is str or (type(value) is int and 0 <= value < 100) else None
    if found:                                               # "01", or "01b" for an inserted lesson
        return found, None
    return None, "the notebook metadata lesson_lib.lesson is not a lesson number; it was ignored"


def _source(cell):
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


_HELP = re.compile(r"\s*(\?{1,2}[\w.]+|[\w.]+\?{1,2})\s*$")   # IPython's help: obj? obj?? ?obj


def _blank_magic_lines(source):
    """Drop the IPython lines that begin a statement (``!cmd``, ``%magic``, ``obj?``), keeping lines
    inside brackets, strings or after a backslash; returns ``(source, dropped count)``."""
    lines, dropped = source.split("\n"), 0
    depth, quote, continued = 0, None, False
    for number, line in enumerate(lines):
        if depth == 0 and quote is None and not continued and (re.match(r"\s*[!%]", line) or _HELP.match(line)):
            lines[number], dropped = "", dropped + 1
            continue
        depth, quote, continued = _scan(line, depth, quote)
    return "\n".join(lines), dropped


def _scan(line, depth, quote):
    """Update (bracket depth, open triple quote) over ``line``; third value: it ends with ``\\``."""
    i, n, single = 0, len(line), None
    while i < n:
        c = line[i]
        if quote is not None:  # inside a triple-quoted string
            if c == "\\":
                i += 2
                continue
            if line.startswith(quote, i):
                quote, i = None, i + 3
                continue
        elif single is not None:
            if c == "\\":
                i += 2
                continue
            if c == single:
                single = None
        elif c == "#":
            break
        elif line.startswith('"""', i) or line.startswith("'''", i):
            quote, i = line[i:i + 3], i + 3
            continue
        elif c in "\"'":
            single = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, quote, line.endswith("\\") and quote is None


def _parse(source):
    """``ast.parse`` that never raises anything but SyntaxError (with a readable message)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. SyntaxWarning for invalid escape sequences
        try:
            return ast.parse(source)
        except SyntaxError:
            raise
        except (RecursionError, MemoryError) as error:
            raise SyntaxError(f"the code is too deeply nested to parse ({type(error).__name__})") from None
        except (ValueError, OverflowError) as error:
            raise SyntaxError(f"{type(error).__name__}: {str(error)[:100]}") from None


def parse_cell(source):
    """Parse a cell; if it is not plain Python, retry with the IPython lines dropped. Returns
    ``(tree, source parsed, number of lines dropped)``; raises SyntaxError."""
    try:
        return _parse(source), source, 0
    except SyntaxError:
        cleaned, dropped = _blank_magic_lines(source)
        if not dropped:
            raise
        return _parse(cleaned), cleaned, dropped


def _assigned(node):
    """The names a plain top-level assignment binds (``x = ...``, ``a, b = ...``), else None."""
    if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
        return None
    names = []
    for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
        elements = target.elts if isinstance(target, ast.Tuple) else [target]
        if not all(isinstance(e, ast.Name) for e in elements):
            return None
        names += [e.id for e in elements]
    return names


def is_literal(node):
    """``NAME = <literal>`` (``T = 1000``, ``KINDS = ("a", "b")``): safe to run as it is."""
    try:
        ast.literal_eval(node.value)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def _is_definition(node, constants=frozenset()):
    """Imports, ``def``, ``class``, ``NAME = <literal>``, and assignments of the names in
    ``constants`` (the top-level values the notebook's functions use, such as
    ``SQRT2 = math.sqrt(2)``) are kept; everything else is not run."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef)):
        return True
    names = _assigned(node)
    return bool(names) and (is_literal(node) or all(name in constants for name in names))


def definitions(tree, constants=frozenset()):
    """The top-level statements of a parsed cell that the grader runs (see :func:`_is_definition`)."""
    return [node for node in tree.body if _is_definition(node, constants)]


def _loaded_names(nodes):
    """Every name read anywhere inside ``nodes``."""
    found = set()
    for node in nodes:
        try:
            found.update(sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and
                         isinstance(sub.ctx, ast.Load))
        except RecursionError:
            pass
    return found


def _global_names(source, tree):
    """The global names that the top-level functions and classes of ``source`` read (their free
    names, not their arguments or locals), from Python's own symbol tables."""
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.ClassDef))}
    try:
        table = symtable.symtable(source, "<cell>", "exec")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return set()
    found, todo = set(), [child for child in table.get_children() if child.get_name() in defined]
    while todo:
        scope = todo.pop()
        todo += scope.get_children()
        for symbol in scope.get_symbols():
            if symbol.is_referenced() and (symbol.is_global() or (scope.get_type() == "class" and
                                                                  not symbol.is_assigned())):
                found.add(symbol.get_name())
    return found


def used_constants(parsed):
    """The names of the computed top-level values (``x = f(...)``) that the notebook's functions
    and classes read as globals, directly or through another such value: the grader runs those
    assignments too (each with a time limit), so a function that uses ``SQRT2 = math.sqrt(2)``
    keeps working. ``parsed`` is a list of ``(source, tree)`` of the cells."""
    computed = {}
    for _, tree in parsed:
        for node in tree.body:
            names = _assigned(node)
            if names and not is_literal(node):
                for name in names:
                    computed.setdefault(name, []).append(node)
    wanted = set()
    for source, tree in parsed:
        wanted |= _global_names(source, tree)
    constants, todo = set(), wanted & set(computed)
    while todo:
        name = todo.pop()
        constants.add(name)
        todo |= (_loaded_names(computed[name]) & set(computed)) - constants
    return constants


def _names(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Import):
        return [alias.asname or alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [alias.asname or alias.name for alias in node.names]
    return _assigned(node) or []


def read_definitions(nb):
    """Pick the code the grader may run out of a notebook.

    Returns a dict with ``cells`` (a list of ``{"label": "cell 3", "source": ...}`` for the
    cells that define something), ``constants`` (:func:`used_constants`), ``names`` (every
    name defined at top level; ``"*"`` for a star import), ``failed`` (``{label: source}`` of
    the cells that could not be parsed), ``notes``, and ``trees`` (the kept statements per
    cell, for :mod:`lesson_lib.course.flags`).
    """
    parsed, notes, failed = [], [], {}
    for index, cell in enumerate(nb.get("cells", []), start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        label, source = f"cell {index}", _source(cell)
        if len(source) > MAX_CELL_CHARS:
            notes.append(f"{label} has more than {MAX_CELL_CHARS} characters and was not graded")
            continue
        magic = re.match(r"\s*%%(\w*)", source)
        if magic:
            if magic.group(1) not in PYTHON_CELL_MAGICS:
                notes.append(f"{label} is a %%{magic.group(1)} cell, not Python: it was not graded")
                continue
            notes.append(f"{label} starts with %%{magic.group(1)}: its body was graded without that line")
            source = "\n" + source.split("\n", 1)[1] if "\n" in source.lstrip() else ""
        try:
            tree, source, dropped = parse_cell(source)
        except SyntaxError as error:
            failed[label] = source
            line = f" (line {error.lineno})" if isinstance(error.lineno, int) else ""
            notes.append(f"{label} could not be parsed, so nothing in it was graded: {error.msg}{line}")
            continue
        if dropped:
            notes.append(f"{label}: {dropped} IPython line(s) (! or % commands, ? help) were not graded")
        parsed.append((label, source, tree))
    constants = used_constants([(source, tree) for _, source, tree in parsed])
    cells, names, trees = [], set(), []
    for label, source, tree in parsed:
        kept = definitions(tree, constants)
        if kept:
            cells.append({"label": label, "source": source})
            names.update(name for node in kept for name in _names(node))
            trees.append((label, kept))
    return {"cells": cells, "constants": sorted(constants), "names": names, "notes": notes,
            "failed": failed, "trees": trees}


def parse_error_hint(name, submission):
    """`` (cell 8 could not be parsed)`` for the cell that seems to define ``name``; the hint
    that explains why a function is missing. Empty when no cell failed. ``submission["failed"]``
    maps each cell that could not be parsed to the names it seems to define."""
    failed = submission["failed"]
    for label, names in failed.items():
        if name in names:
            return f" ({label} could not be parsed)"
    if failed:
        return f" ({', '.join(failed)} could not be parsed)"
    return ""


def defined_names(source):
    """The names a cell that cannot be parsed seems to define (``def name`` or ``class name``)."""
    return sorted(set(re.findall(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)", source, re.MULTILINE)))[:100]
