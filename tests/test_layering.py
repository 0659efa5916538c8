"""The library's layers, checked from its source: who may import whom, and module length.

    models/      never imports diffusion/, training/, evaluation/, course/ (a network is just a network)
    diffusion/   imports only itself, models.base (the prediction vocabulary), files and arguments
    course/      is imported by nothing outside course/ (the library never depends on the grader)
    training/    never imports pretrained or recipes (shipped models are made by recipes, which use training)
    no cycles    between modules, nor between the members (modules and sub-packages) of any package
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


# --- import cycles ----------------------------------------------------------------------------

# Imports that close a cycle, known and left to their owners: pairing imports assignments inside a
# function (lazily), while assignments imports pairing at the top.
KNOWN_CYCLE_EDGES = {("lesson_lib.course.pairing", "lesson_lib.course.assignments")}


def import_graph():
    """Every lesson_lib module -> the lesson_lib modules it imports (lazy imports included), each
    import resolved to the module it names: ``from ..pretrained import load_artifact`` is an edge to
    lesson_lib.pretrained, ``from .training import checkpoint`` one to lesson_lib.training.checkpoint."""
    names = {_name(path) for path in MODULES}

    def resolve(module):
        while module not in names and "." in module:
            module = module.rsplit(".", 1)[0]
        return module if module in names else None

    graph = {}
    for path in MODULES:
        name = _name(path)
        graph[name] = {m for m in map(resolve, imports_of(path)) if m and m != name}
    return graph


def find_cycle(graph):
    """A cycle of ``graph`` (node -> set of nodes) as a list whose last node is its first, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                return stack[stack.index(successor):] + [successor]
            if successor not in state:
                cycle = visit(successor)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def between_members(graph, package):
    """The import graph between the direct members of ``package`` (its modules and sub-packages,
    each sub-package standing for everything inside it): a cycle here is one between packages."""
    def member(module):
        if not module.startswith(package + "."):
            return None
        return package + "." + module[len(package) + 1:].split(".")[0]

    collapsed = {}
    for module, imported in graph.items():
        source = member(module)
        if source:
            collapsed.setdefault(source, set()).update(m for m in map(member, imported) if m and m != source)
    return collapsed


def _without_known(graph):
    return {module: {m for m in imported if (module, m) not in KNOWN_CYCLE_EDGES} for module, imported in graph.items()}


def test_the_cycle_finder_finds_a_cycle_between_packages():
    graph = {"lesson_lib.pretrained": {"lesson_lib.training.checkpoint"},
             "lesson_lib.training.checkpoint": {"lesson_lib.files"},
             "lesson_lib.training.classifier_fit": {"lesson_lib.pretrained"}}
    assert find_cycle(graph) is None                          # no cycle between modules...
    assert find_cycle(between_members(graph, "lesson_lib")) == [     # ...but one between packages
        "lesson_lib.pretrained", "lesson_lib.training", "lesson_lib.pretrained"]


def test_no_import_cycle_between_modules():
    cycle = find_cycle(_without_known(import_graph()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_the_members_of_any_package():
    graph = _without_known(import_graph())
    packages = ["lesson_lib"] + sorted(_name(p) for p in MODULES if p.name == "__init__.py" and p.parent != ROOT)
    for package in packages:
        cycle = find_cycle(between_members(graph, package))
        assert cycle is None, f"import cycle between the members of {package}: " + " -> ".join(cycle)


def test_the_known_cycle_edges_still_exist():
    """When an owner removes a known cycle, its exemption goes too."""
    graph = import_graph()
    gone = [edge for edge in KNOWN_CYCLE_EDGES if edge[1] not in graph.get(edge[0], ())]
    assert not gone, f"these imports are gone: remove them from KNOWN_CYCLE_EDGES: {gone}"


def test_training_never_imports_pretrained_or_recipes():
    for path in (ROOT / "training").rglob("*.py"):
        bad = [m for m in imports_of(path) if _in(m, "lesson_lib.pretrained") or _in(m, "lesson_lib.recipes")]
        assert not bad, f"{_name(path)} imports {bad}: training is what recipes and pretrained build on"
