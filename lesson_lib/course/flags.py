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


def flags(submission, graded_names):
    """Things in the graded functions (and in any class that overrides __torch_function__)
    that an instructor may want to look at: uses of lesson_lib, of the call stack, of gc or
    inspect, overrides of __torch_function__. A list of
    ``"q_sample: uses lesson_lib (the reference implementation)"``; flags, not verdicts."""
    found = []
    imported_from_lesson_lib = set()
    for _, nodes in submission["trees"]:
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lesson_lib"):
                imported_from_lesson_lib.update(a.asname or a.name for a in node.names)
            if isinstance(node, ast.Import) and any(a.name.startswith("lesson_lib") for a in node.names):
                found.append(f"{_names(node)[0]}: the notebook imports lesson_lib")
    for label, nodes in submission["trees"]:
        for node in nodes:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            overrides = isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name == "__torch_function__" for item in node.body)
            if node.name not in graded_names and not overrides:
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
            found += [f"{node.name} ({label}): {SUSPICIOUS[word]}" for word in SUSPICIOUS if word in seen]
    return list(dict.fromkeys(found))


def _is_stub(statement):
    """``raise NotImplementedError(...)`` or ``pass``: what an untouched exercise holds."""
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Raise) and statement.exc is not None:
        exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def fingerprint(submission, graded_names):
    """The graded functions' code without docstrings, comments or layout: two submissions
    with the same fingerprint have the same graded code (see the batch's similarity flags)."""
    parts = []
    for _, nodes in submission["trees"]:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and node.name in graded_names:
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                        ast.Constant):
                    body = body[1:]
                if all(_is_stub(stmt) for stmt in body):
                    continue  # the exercise as handed out: alike in everyone's notebook
                try:
                    parts.append(node.name + ":" + "\n".join(ast.dump(stmt) for stmt in body))
                except RecursionError:
                    parts.append(node.name + ":?")
    return "\n".join(sorted(parts))
