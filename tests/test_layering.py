"""The library's layers, checked from its source: who may import whom, and module length.

    models/      never imports diffusion/, training/, evaluation/, course/ (a network is just a network)
    diffusion/   imports only itself, models.base (the prediction vocabulary), files and arguments
    course/      is imported by nothing outside course/ (the library never depends on the grader)
"""

import ast
from pathlib import Path

import lesson_lib

ROOT = Path(lesson_lib.__file__).parent
MODULES = sorted(p for p in ROOT.rglob("*.py"))


def _name(path):
    return ".".join(("lesson_lib",) + path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path):
    """Every lesson_lib module that ``path`` imports (absolute or relative, lazy ones included)."""
    package = _name(path) if path.name == "__init__.py" else _name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lesson_lib"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("lesson_lib"):
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _in(module, package):
    return module == package or module.startswith(package + ".")


def test_the_import_parser_sees_relative_imports():
    assert "lesson_lib.diffusion.schedules" in imports_of(ROOT / "diffusion" / "forward.py")
    assert "lesson_lib.files" in imports_of(ROOT / "training" / "checkpoint.py")


def test_models_never_import_the_maths_training_evaluation_or_course():
    for path in (ROOT / "models").rglob("*.py"):
        bad = [m for m in imports_of(path) if any(_in(m, f"lesson_lib.{p}") for p in
                                                   ("diffusion", "training", "evaluation", "course", "data"))]
        assert not bad, f"{path.name} imports {bad}"


def test_diffusion_imports_only_itself_the_vocabulary_and_files():
    allowed = ("lesson_lib.diffusion", "lesson_lib.models.base", "lesson_lib.files", "lesson_lib.arguments")
    for path in (ROOT / "diffusion").rglob("*.py"):
        bad = [m for m in imports_of(path) if not any(_in(m, a) for a in allowed)
               and m not in ("lesson_lib.models",)]
        assert not bad, f"{path.name} imports {bad}"


def test_nothing_outside_course_imports_course():
    for path in MODULES:
        if _in(_name(path), "lesson_lib.course"):
            continue
        bad = [m for m in imports_of(path) if _in(m, "lesson_lib.course")]
        assert not bad, f"{_name(path)} imports {bad}"


def test_long_modules_say_why():
    """A module of more than about 300 lines must say at its top why it is one module."""
    for path in MODULES:
        lines = path.read_text().splitlines()
        if len(lines) > 320:
            head = "\n".join(lines[:40])
            assert "Why one module" in head, f"{_name(path)} has {len(lines)} lines and no 'Why one module' note"


def test_the_reading_map_lists_every_module():
    doc = lesson_lib.__doc__
    for path in MODULES:
        if path.name == "__init__.py" or _in(_name(path), "lesson_lib.course.checks"):
            continue
        assert path.stem in doc, f"{_name(path)} is missing from the reading map in lesson_lib/__init__.py"
