#!/usr/bin/env python3
"""Does opening and saving a lesson in JupyterLab change the tracked files?

    python benchmarks/lab_roundtrip.py [FOLDER_OR_NOTEBOOK ...] [--py-newer | --ipynb-newer] [--diff N]
    python benchmarks/lab_roundtrip.py --fix notebooks/NAME.ipynb [...]   # after re-executing one

For every notebook (default: ``notebooks/``, ``solutions/`` and ``exercises/``) this does what a
student's JupyterLab does between opening a lesson and its first (auto)save, on a copy of the files
in a temporary folder (only ``--fix`` writes in the repository):

1. **open**: the notebook is read through the contents manager of JupyterLab's server: jupyter_server's
   ``AsyncLargeFileManager`` as a student has it (``pip install -e ".[lab]"`` or environment.yml: no
   jupytext), and jupytext's, which the ``jupyterlab_jupytext`` server extension derives from it where
   jupytext is installed (the ``[test]`` extra), with the repository's ``jupytext.toml``: it reads the
   paired ``NAME.py`` too and applies jupytext's format options to the notebook's metadata;
2. **load into Lab's model**: consecutive stream outputs of the same name are merged into one and
   carriage returns and backspaces are applied (``OutputAreaModel._add`` in JupyterLab 4), and the
   notebook gets ``kernelspec`` and ``language_info`` metadata (``_ensureMetadata``);
3. **start the kernel**: ``kernelspec`` becomes ``{name, display_name, language}`` of the kernel
   spec Lab starts (the notebook's own, else the default ``python3``), and ``language_info`` the
   kernel's ``kernel_info`` reply (ipykernel's ``language_info``: it holds this Python's version);
4. **save**: the model goes back through the same contents manager, which writes the ``.ipynb``
   (nbformat's JSON) and, jupytext's, because the pair is configured, the ``.py`` too.

It then compares every file written with the original and prints a short diff of each that
changed; it exits 1 when any changed. Both contents managers are tried unless ``--cm`` picks one.
A fresh ``git clone`` writes ``NAME.py`` after ``NAME.ipynb`` (index order), so by default the
``.py`` is made the newer file, as there; ``--ipynb-newer`` checks the other order (a notebook
re-executed after its script was synced), where jupytext reads the cells from the notebook.

``--fix`` writes the named notebooks in the form such a save keeps (and then checks them):
jupytext's metadata exactly as ``jupytext.toml`` and ``lesson_lib.course.pairing`` set it, the
``kernelspec`` of the kernel Lab starts, consecutive stream outputs merged as Lab merges them (nbclient,
which executes the notebooks, stores each flush of a print loop as its own output; nbval merges them
before comparing, so its checks do not change), and no trailing newline at the end of a code cell
(a percent script cannot hold one, so reading the paired script back drops it), and jupytext's
``lines_to_next_cell`` only where reading the script back gives it; then it rewrites the paired
scripts (``pairing sync``). It leaves ``language_info`` as the last execution stored it, and it
leaves ``exercises/`` to ``python -m lesson_lib.course.assignments generate``, which copies the
solutions' metadata (an exercise fixed in place would no longer count as generated).

What it does not model: widget state is only written when Lab's "Save Jupyter widget state in
notebooks" setting is on (default off: the stored ``metadata.widgets`` is kept as it is), and
notebook trust is recorded in the user's signature database, never in the file.
A save on another Python than the one that executed the notebooks rewrites
``language_info.version`` to that Python's: the round trip reports that line and does not count it.
"""
import argparse
import asyncio
import copy
import difflib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("notebooks", "solutions", "exercises")


def lab_outputs(outputs):
    """The outputs as JupyterLab 4's OutputAreaModel holds them after loading (``_add``): consecutive
    stream outputs of the same name merged, ``\\r`` and ``\\b`` applied as Lab applies them."""
    merged, last_stream, index = [], "", 0
    for out in copy.deepcopy(outputs):
        if out.get("output_type") == "stream":
            text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
            if merged and out["name"] == last_stream:
                merged[-1]["text"], index = _process_text(index, text, merged[-1]["text"])
                continue
            out["text"], index = _process_text(0, text)
            last_stream = out["name"]
        else:
            last_stream = ""
        merged.append(out)
    return merged


def _process_text(index, text, into=""):
    """A port of JupyterLab 4's ``Private.processText``: write ``text`` into ``into`` from ``index``;
    the new text and the index after it."""
    if not re.search(r"[\b\r\n]", text):
        return into[:index] + text + into[index + len(text):], index + len(text)
    pos = index
    for piece in re.split(r"([\n\r\b])", text):
        if piece == "\n":
            into += "\n"
            pos = len(into)
        elif piece == "\r":
            while pos > 0 and into[pos - 1] != "\n":
                pos -= 1
        elif piece == "\b":
            if pos > 0 and into[pos - 1] != "\n":
                into = into[:pos - 1] + into[pos + 1:]
                pos -= 1
        elif piece:
            into = into[:pos] + piece + into[pos + len(piece):]
            pos += len(piece)
    return into, pos


def kernel_metadata(nb):
    """``kernelspec`` and ``language_info`` as Lab sets them when the kernel starts."""
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    name = (nb.get("metadata", {}).get("kernelspec") or {}).get("name") or "python3"
    spec = KernelSpecManager().get_kernel_spec(name)
    return ({"name": name, "display_name": spec.display_name, "language": spec.language},
            dict(IPythonKernel.language_info))


def lab_model(content):
    """The notebook JSON Lab sends back on save, for a notebook it has just opened."""
    nb = copy.deepcopy(content)
    nb.setdefault("metadata", {})
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = lab_outputs(cell["outputs"])
    kernelspec, language_info = kernel_metadata(nb)
    nb["metadata"]["kernelspec"] = kernelspec
    nb["metadata"]["language_info"] = language_info
    return nb


def fix(path):
    """Rewrite the notebook at ``path`` (and its script) in the form a save in Lab keeps; True when
    the notebook changed."""
    import jupytext
    from lesson_lib.course import pairing

    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=nbformat.NO_CONVERT)
    nb.metadata["jupytext"] = dict(pairing.METADATA)
    nb.metadata["kernelspec"] = kernel_metadata(nb)[0]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = cell.source.rstrip("\n")
            cell.outputs = [nbformat.from_dict(out) for out in lab_outputs(cell.outputs)]
    # jupytext's blank-line hint: keep it only where reading the script back gives it (where the
    # script's spacing is not jupytext's default), as opening the pair in Lab would
    back = jupytext.reads(pairing.script_of_text(nbformat.writes(nb)), fmt=pairing.FORMAT)
    if [c.cell_type for c in back.cells] == [c.cell_type for c in nb.cells]:
        for cell, read in zip(nb.cells, back.cells):
            if "lines_to_next_cell" in read.metadata:
                cell.metadata["lines_to_next_cell"] = read.metadata["lines_to_next_cell"]
            else:
                cell.metadata.pop("lines_to_next_cell", None)
    after = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    after = after if after.endswith("\n") else after + "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
    pairing.sync(path)
    return after != before


def contents_manager(root, kind="jupytext"):
    """The server's contents manager: ``"plain"`` (jupyter_server's default) or ``"jupytext"``."""
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

    if kind == "plain":
        return AsyncLargeFileManager(root_dir=str(root))
    from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

    return build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(root))


def copy_tree(paths, tmp, newer):
    """Copy each notebook, its paired script and jupytext.toml under ``tmp``; make ``newer``
    ('.py' or '.ipynb') the more recent file of each pair, by one second."""
    shutil.copy2(ROOT / "jupytext.toml", tmp / "jupytext.toml")
    now = time.time()
    for nb in paths:
        for suffix in (".ipynb", ".py"):
            src = nb.with_suffix(suffix)
            if not src.exists():
                continue
            dst = tmp / src.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            stamp = now if suffix == newer else now - 1
            os.utime(dst, (stamp, stamp))


def short_diff(before, after, name, limit):
    lines = list(difflib.unified_diff(before.splitlines(), after.splitlines(), f"a/{name}", f"b/{name}",
                                      lineterm="", n=1))
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more diff lines)"]
    return "\n".join(lines)


def only_python_version(before, after):
    """The stored ``language_info.version`` of the Python that executed the notebook, when the
    save changed that and nothing else (the running kernel's version: 3.13.0 on a student's 3.13,
    whichever Python the course used); else None."""
    try:
        stored = json.loads(before)["metadata"]["language_info"]["version"]
        running = json.loads(after)["metadata"]["language_info"]["version"]
    except (ValueError, KeyError, TypeError):
        return None
    if stored == running or after.replace(f'"version": "{running}"', f'"version": "{stored}"') != before:
        return None
    return stored


async def round_trip(paths, newer, limit, kind="jupytext"):
    changed = 0
    other_python = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        copy_tree(paths, tmp, newer)
        cm = contents_manager(tmp, kind)
        for nb_path in paths:
            rel = nb_path.relative_to(ROOT).as_posix()
            originals = {s: nb_path.with_suffix(s).read_text(encoding="utf-8")
                         for s in (".ipynb", ".py") if nb_path.with_suffix(s).exists()}
            try:
                model = await cm.get(rel, content=True, type="notebook")
                await cm.save({"type": "notebook", "content": lab_model(model["content"])}, rel)
            except Exception as err:                      # e.g. jupytext refusing an outdated pair
                print(f"{rel}: Lab could not open/save it: {err}")
                changed += 1
                continue
            for suffix, before in originals.items():
                after = (tmp / rel).with_suffix(suffix).read_text(encoding="utf-8")
                if after != before and only_python_version(before, after):
                    other_python.append(only_python_version(before, after))
                elif after != before:
                    changed += 1
                    name = str(Path(rel).with_suffix(suffix))
                    print(f"{name}: CHANGED by open + save in Lab ({kind} contents manager)")
                    if limit:
                        print(short_diff(before, after, name, limit))
    if other_python:
        print(f"{len(other_python)} notebook(s) changed only the Python version in language_info "
              f"({', '.join(sorted(set(other_python)))} stored, {platform.python_version()} here): Lab records "
              f"the kernel's Python on every save, so this line differs for everyone not on the Python that "
              f"executed the notebooks; not counted")
    return changed


def notebook_paths(args):
    found = []
    for arg in args or FOLDERS:
        p = (ROOT / arg) if not Path(arg).is_absolute() else Path(arg)
        found += sorted(p.glob("*.ipynb")) if p.is_dir() else [p]
    return [p.resolve() for p in found]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help=f"folders or notebooks (default: {' '.join(FOLDERS)})")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--py-newer", dest="newer", action="store_const", const=".py", default=".py",
                       help="the paired script is the newer file, as after git clone (default)")
    order.add_argument("--ipynb-newer", dest="newer", action="store_const", const=".ipynb",
                       help="the notebook is the newer file")
    parser.add_argument("--cm", choices=("jupytext", "plain", "both"), default="both",
                        help="the server's contents manager: with jupytext, without, or both (default)")
    parser.add_argument("--fix", action="store_true",
                        help="first rewrite the notebooks (and their scripts) in the form Lab's save keeps")
    parser.add_argument("--diff", type=int, default=20, metavar="N", help="diff lines shown per file (0: none)")
    args = parser.parse_args(argv)
    paths = notebook_paths(args.paths)
    if args.fix:
        for path in paths:
            if path.parent.name == "exercises":
                print(f"not fixing {path.relative_to(ROOT)}: fix the solution, then run "
                      f"python -m lesson_lib.course.assignments generate")
            elif fix(path):
                print(f"fixed {path.relative_to(ROOT)}")
    failed = 0
    for kind in ("jupytext", "plain") if args.cm == "both" else (args.cm,):
        changed = asyncio.run(round_trip(paths, args.newer, args.diff, kind))
        print(f"{len(paths)} notebooks opened and saved as JupyterLab does, {kind} contents manager"
              + (f" ({args.newer} newer)" if kind == "jupytext" else "") + ": "
              + (f"{changed} file(s) changed" if changed else "no file changed"))
        failed += changed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
