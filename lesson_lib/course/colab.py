"""Where the course lives on GitHub, written once: the Colab badge and the install cell.

Every lesson notebook opens with an *Open in Colab* badge, and the first code cell of every
lesson, solution and exercise notebook installs ``lesson_lib`` from GitHub when it runs on
Colab. Both name the repository; this module is the one place that says which::

    REPOSITORY = "ddpm-course/ddpm-course"   # owner/name on GitHub
    BRANCH = "main"                          # the branch the badge opens and pip installs

To move the course (a fork, a renamed repository, a release branch), change the two constants
and rewrite every notebook from them; ``check`` (and ``tests/test_colab.py``) fails while any
notebook disagrees::

    python -m lesson_lib.course.colab sync  [FOLDER ...]   # rewrite the badge and install lines
    python -m lesson_lib.course.colab check [FOLDER ...]   # exit 1 and name each notebook that differs

The folders default to ``notebooks solutions exercises``; the badge links of ``README.md``'s
curriculum table are rewritten and checked too. Only the badge URL and the install
URL change, in place, byte for byte; outputs are untouched, so no notebook needs re-running.
``sync`` then leaves ``python -m lesson_lib.course.assignments check`` passing, since the same
edit is made to a solution and to the exercise generated from it. A notebook in ``notebooks/``
must carry a badge in its first markdown cell; solutions and exercises may carry none.

Colab installs ``lesson_lib`` alone, without the repository around it, so a lesson that reads a
measured table from ``docs/`` asks :func:`course_file` for it: the checkout's copy where the notebook
sits in one, else a copy fetched once from the same repository and branch.
"""

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPOSITORY = "ddpm-course/ddpm-course"
BRANCH = "main"
DEFAULT_BRANCH = "main"          # the branch pip installs when the URL names none
FOLDERS = ("notebooks", "solutions", "exercises")

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
_BADGE = re.compile(r"\[!\[Open In Colab\]\(" + re.escape(BADGE_IMAGE) + r"\)\]\((?P<url>[^)\s]*)\)")
_INSTALL = re.compile(r"lesson_lib @ git\+https://github\.com/[^\s\"'\\]*")
GUARD = 'if "google.colab" in sys.modules:'


def badge_url(path, repository=None, branch=None):
    """The Colab URL of the notebook at ``path`` (``folder/name.ipynb``, relative to the repository root)."""
    path = Path(path)
    relative = f"{path.parent.name}/{path.name}"
    return (f"https://colab.research.google.com/github/{repository or REPOSITORY}"
            f"/blob/{branch or BRANCH}/{relative}")


def badge(path, repository=None, branch=None):
    """The badge's markdown line for the notebook at ``path``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({badge_url(path, repository, branch)})"


def install_spec(repository=None, branch=None):
    """What the install cell hands to pip: ``lesson_lib @ git+https://github.com/OWNER/NAME[@BRANCH]``."""
    branch = branch or BRANCH
    ref = "" if branch == DEFAULT_BRANCH else f"@{branch}"
    return f"lesson_lib @ git+https://github.com/{repository or REPOSITORY}{ref}"


def course_file(relative, checkout="..", base_url=None, cache=None):
    """The local path of the repository's file ``relative`` (e.g. ``"docs/dit_table.json"``).

    A notebook runs in a folder of the checkout (``notebooks/``), so the file is first looked for under
    ``checkout`` (``..``). Without a checkout (Colab) it is fetched once from ``base_url`` (default: the raw
    files of ``REPOSITORY`` at ``BRANCH`` on GitHub) into ``cache`` (default: ``~/.cache/lesson_lib/course``,
    as :func:`lesson_lib.data.images.default_cache_dir` says) and read from there afterwards (delete the copy to
    fetch a newer one). Raises FileNotFoundError, naming both places and the fix, when neither has it."""
    local = Path(checkout) / relative
    if local.exists():
        return local
    from ..data.images import default_cache_dir      # here, not above: it imports torch, which sync and check need not
    kept = Path(cache or Path(default_cache_dir()) / "course") / relative
    if kept.exists():
        return kept
    url = (base_url or f"https://raw.githubusercontent.com/{REPOSITORY}/{BRANCH}/").rstrip("/") + "/" + relative
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            content = response.read()
    except (urllib.error.URLError, OSError) as error:
        raise FileNotFoundError(f"{relative} is neither in the checkout ({local.resolve()}) nor to be fetched from "
                                f"{url} ({error}). Run the notebook from the notebooks/ folder of a clone of "
                                f"https://github.com/{REPOSITORY}, or connect to the internet.") from error
    kept.parent.mkdir(parents=True, exist_ok=True)
    partial = kept.with_name(kept.name + f".{os.getpid()}.part")     # a cut-short fetch never looks complete
    partial.write_bytes(content)
    partial.replace(kept)
    return kept


def install_cell(repository=None, branch=None):
    """The source of the first code cell of every notebook: install on Colab, do nothing elsewhere."""
    return ("# On Colab, install the course library; elsewhere this cell does nothing.\n"
            "import sys, subprocess\n"
            f"{GUARD}\n"
            '    subprocess.run([sys.executable, "-m", "pip", "install", "-q",\n'
            f'                    "{install_spec(repository, branch)}"], check=True)')


def _source(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def problems(path, repository=None, branch=None):
    """What in the notebook at ``path`` disagrees with the constants, as (found, wanted) pairs;
    ``found`` is None where the badge or install line is missing altogether."""
    path = Path(path)
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    found = []
    markdown = [c for c in cells if c["cell_type"] == "markdown"]
    match = _BADGE.search(_source(markdown[0])) if markdown else None
    if match:
        if match["url"] != badge_url(path, repository, branch):
            found.append((match["url"], badge_url(path, repository, branch)))
    elif path.parent.name == "notebooks":
        found.append((None, badge(path, repository, branch)))
    code = [c for c in cells if c["cell_type"] == "code"]
    first = _source(code[0]) if code else ""
    match = _INSTALL.search(first)
    if match is None or GUARD not in first:
        found.append((None, install_spec(repository, branch)))
    elif match.group(0) != install_spec(repository, branch):
        found.append((match.group(0), install_spec(repository, branch)))
    return found


def sync(path, repository=None, branch=None):
    """Rewrite the badge URL and the install URL of the notebook at ``path`` in place; returns
    True when the file changed. Raises ValueError where a line is missing (add it by hand once)."""
    path = Path(path)
    text = original = path.read_text(encoding="utf-8")
    for old, new in problems(path, repository, branch):
        if old is None:
            raise ValueError(f"{path}: no line to rewrite; add this by hand first: {new}")
        if text.count(old) != 1:
            raise ValueError(f"{path}: {old!r} occurs {text.count(old)} times; expected once")
        text = text.replace(old, new)
    if text != original:
        path.write_text(text, encoding="utf-8")
    return text != original


def readme_problems(readme):
    """Every badge link in the README (``README.md``) that disagrees with the constants, as (found, wanted)."""
    readme = Path(readme)
    found = []
    for match in _BADGE.finditer(readme.read_text(encoding="utf-8")):
        tail = re.search(r"/blob/[^/]+/(?P<rel>.+)$", match["url"])
        wanted = badge_url(tail["rel"]) if tail else None
        if match["url"] != wanted:
            found.append((match["url"], wanted))
    return found


def sync_readme(readme):
    """Rewrite the README's badge links from the constants; returns True when it changed."""
    readme = Path(readme)
    text = original = readme.read_text(encoding="utf-8")
    for old, new in readme_problems(readme):
        if new is None:
            raise ValueError(f"{readme}: cannot tell which notebook {old} opens; fix it by hand")
        text = text.replace(old, new)
    if text != original:
        readme.write_text(text, encoding="utf-8")
    return text != original


def notebooks(folders=FOLDERS, root="."):
    """Every ``*.ipynb`` directly inside the given folders (those that exist), sorted."""
    return sorted(p for folder in folders for p in (Path(root) / folder).glob("*.ipynb"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lesson_lib.course.colab",
                                     description=f"Point every notebook's Colab badge and install cell at "
                                                 f"{REPOSITORY} ({BRANCH}), the constants of this module.")
    parser.add_argument("command", choices=("sync", "check"),
                        help="sync: rewrite the badge and install lines; check: exit 1 if any notebook differs")
    parser.add_argument("folders", nargs="*", default=list(FOLDERS),
                        help="folders of notebooks (default: notebooks solutions exercises)")
    args = parser.parse_args(argv)
    paths = notebooks(args.folders)
    if not paths:
        parser.error(f"no notebooks found in {' '.join(args.folders)}")
    readme = Path("README.md")
    jobs = [(path, sync, problems) for path in paths]
    if readme.exists():
        jobs.append((readme, sync_readme, readme_problems))
    failed = 0
    for path, rewrite, differences in jobs:   # a notebook, or the README's badge links
        if args.command == "sync":
            try:
                if rewrite(path):
                    print(f"rewrote {path}")
            except ValueError as error:
                print(error, file=sys.stderr)
                failed += 1
        else:
            for old, new in differences(path):
                print(f"{path}: has {old or 'nothing'}, want {new}", file=sys.stderr)
                failed += 1
    if args.command == "check" and not failed:
        print(f"{len(paths)} notebooks point at {REPOSITORY} ({BRANCH})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
