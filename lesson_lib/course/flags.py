"""Flags for the instructor: what in a submission deserves a second look. Not verdicts, and
they cost no points.

A graded function (or a class that overrides ``__torch_function__``) is flagged when it uses
lesson_lib (the reference implementation), inspects the call stack, or uses ``gc`` or
``inspect``: none of these is needed for the exercises. Each is a way to try for points
without the work; the grader's design blocks most of them, but not calling the reference.
:func:`fingerprint` gives the batch command what it needs to flag near-identical submissions.
This module does not import torch.
"""

import ast
import hashlib
import json
from pathlib import Path

from lesson_lib.course.notebook import _names

# what a graded function may use that deserves a second look by the instructor
SUSPICIOUS = {
    "lesson_lib": "uses lesson_lib (the reference implementation)",
    "_getframe": "inspects the call stack (sys._getframe)",
    "currentframe": "inspects the call stack (inspect.currentframe)",
    "f_back": "inspects the call stack (frame.f_back)",
    "f_locals": "reads another frame's variables (f_locals)",
    "f_globals": "reads another frame's globals (f_globals)",
    "inspect": "uses inspect",
    "gc": "uses the garbage collector (gc)",
    "__torch_function__": "overrides __torch_function__",
}


def by_function(submission):
    """The flags of every top-level ``def`` and ``class`` of a notebook, as ``{name: [flag, ...]}``
    (plain data: the grader reads notebooks in a separate process and keeps only this), and
    under the key ``""`` the flags of the notebook as a whole (``import lesson_lib``). A class
    that overrides ``__torch_function__`` is listed under ``"*"`` too: it is flagged whether
    or not it is graded."""
    found = {"": [], "*": []}
    imported_from_lesson_lib = set()
    for _, nodes in submission["trees"]:
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lesson_lib"):
                imported_from_lesson_lib.update(a.asname or a.name for a in node.names)
            if isinstance(node, ast.Import) and any(a.name.startswith("lesson_lib") for a in node.names):
                found[""].append(f"{_names(node)[0]}: the notebook imports lesson_lib")
    for label, nodes in submission["trees"]:
        for node in nodes:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            seen = set()
            try:
                walked = list(ast.walk(node))
            except RecursionError:
                walked = []
            for sub in walked:
                word = sub.id if isinstance(sub, ast.Name) else sub.attr if isinstance(sub, ast.Attribute) \
                    else sub.name if isinstance(sub, ast.FunctionDef) else None
                for alias in getattr(sub, "names", []) if isinstance(sub, (ast.Import, ast.ImportFrom)) else []:
                    seen.update(part for part in alias.name.split("."))
                if isinstance(sub, ast.ImportFrom) and sub.module:
                    seen.update(sub.module.split("."))
                if word in imported_from_lesson_lib:
                    seen.add("lesson_lib")
                if word:
                    seen.add(word)
            flagged = [f"{node.name} ({label}): {SUSPICIOUS[word]}" for word in SUSPICIOUS if word in seen]
            found.setdefault(node.name, []).extend(flagged)
            if isinstance(node, ast.ClassDef) and any(isinstance(item, ast.FunctionDef) and
                                                      item.name == "__torch_function__" for item in node.body):
                found["*"].extend(flagged)
    return found


def helpers(submission):
    """``{name: [names]}``: for every top-level function or class, the other top-level functions
    and classes of the notebook it reads (the helpers it may call)."""
    defined = {node.name: node for _, nodes in submission["trees"] for node in nodes
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    found = {}
    for name, node in defined.items():
        try:
            read = {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name)}
        except RecursionError:
            read = set()
        found[name] = sorted((read & set(defined)) - {name})
    return found


def select(function_flags, graded_names, helper_names=None):
    """The flags an instructor sees: the notebook's own, those of every graded function and of
    every helper a graded function uses (directly or through another helper, from
    :func:`helpers`), and those of any class that overrides ``__torch_function__``; without
    repeats."""
    chosen, seen, todo = list(function_flags.get("", [])), set(), sorted(graded_names)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        chosen += function_flags.get(name, [])
        todo += (helper_names or {}).get(name, [])
    return list(dict.fromkeys(chosen + function_flags.get("*", [])))


def flags(submission, graded_names):
    """Things in the graded functions (and in any class that overrides __torch_function__)
    that an instructor may want to look at: uses of lesson_lib, of the call stack, of gc or
    inspect, overrides of __torch_function__. A list of
    ``"q_sample: uses lesson_lib (the reference implementation)"``; flags, not verdicts."""
    return select(by_function(submission), graded_names, helpers(submission))


def _is_stub(statement):
    """``raise NotImplementedError(...)`` or ``pass``: what an untouched exercise holds."""
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Raise) and statement.exc is not None:
        exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def fingerprints(submission):
    """``{name: code}`` for every top-level function or class whose body is more than the
    untouched stub, the code without docstrings, comments or layout: two submissions with the
    same code for a name wrote the same thing (see the batch's similarity flags)."""
    parts = {}
    for _, nodes in submission["trees"]:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                        ast.Constant):
                    body = body[1:]
                if all(_is_stub(stmt) for stmt in body):
                    continue  # the exercise as handed out: alike in everyone's notebook
                try:  # unparse, not dump: its text is the same in every Python version
                    parts[node.name] = "\n".join(ast.unparse(stmt) for stmt in body)
                except (RecursionError, ValueError):
                    parts[node.name] = "?"
    return parts


def fingerprint(parts, graded_names):
    """The graded functions' code (from :func:`fingerprints`) as one text, in name order."""
    return "\n".join(f"{name}:{parts[name]}" for name in sorted(graded_names) if name in parts)


PUBLISHED = Path(__file__).parent / "checks" / "published.json"


def digest(code):
    """A short hash of a function's code from :func:`fingerprints`, blind to whitespace."""
    return hashlib.sha256("".join(code.split()).encode("utf-8")).hexdigest()[:16]


def published_digests(solutions_dir):
    """``{lesson: {name: digest}}`` of the graded functions of every solution notebook in
    ``solutions_dir`` (what :data:`PUBLISHED` holds; ``assignments generate`` writes it)."""
    from lesson_lib.course.checks import available_lessons, load_checks
    from lesson_lib.course.notebook import read_definitions, read_notebook

    found = {}
    for path in sorted(Path(solutions_dir).glob("*.ipynb")):
        nb, error = read_notebook(path)
        lesson = ((nb or {}).get("metadata", {}).get("lesson_lib") or {}).get("lesson")
        if error or lesson not in available_lessons():
            continue
        graded = {name for check in load_checks(lesson) for name in check.uses}
        parts = fingerprints(read_definitions(nb))
        found[lesson] = {name: digest(parts[name]) for name in sorted(graded) if name in parts}
    return found


def copies_of_the_solution(parts, graded_names, lesson):
    """Flags for the graded functions whose code is the published solution's, comments,
    docstrings and layout aside (``parts`` from :func:`fingerprints`)."""
    try:
        published = json.loads(PUBLISHED.read_text(encoding="utf-8")).get(lesson, {})
    except (OSError, ValueError):
        return []
    return [f"{name}: identical to the published solution (comments, docstrings and layout aside)"
            for name in sorted(graded_names) if name in parts and published.get(name) == digest(parts[name])]
