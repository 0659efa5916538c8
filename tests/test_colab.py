"""Every notebook's Colab badge and install cell name the repository written in lesson_lib.course.colab."""
import shutil
from pathlib import Path

import pytest

from lesson_lib.course import assignments, colab

ROOT = Path(__file__).resolve().parents[1]
ALL = colab.notebooks(colab.FOLDERS, root=ROOT)


def test_there_are_notebooks_in_every_folder():
    for folder in colab.FOLDERS:
        assert any(p.parent.name == folder for p in ALL), f"no notebooks in {folder}/"


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_agrees_with_the_constants(path):
    found = colab.problems(path)
    assert not found, (f"{path.parent.name}/{path.name}: {found}; run python -m lesson_lib.course.colab sync")


def test_readme_badges_agree_with_the_constants():
    assert not colab.readme_problems(ROOT / "README.md")


def test_the_urls_are_built_from_the_constants():
    path = Path("notebooks/01_forward_process.ipynb")
    assert colab.badge_url(path) == (f"https://colab.research.google.com/github/{colab.REPOSITORY}"
                                     f"/blob/{colab.BRANCH}/notebooks/01_forward_process.ipynb")
    assert colab.badge_url(path) in colab.badge(path)
    assert colab.install_spec() in colab.install_cell()
    assert colab.install_spec("me/fork", "dev") == "lesson_lib @ git+https://github.com/me/fork@dev"


def test_sync_moves_every_notebook_and_keeps_the_exercises_generated(tmp_path):
    for folder in ("notebooks", "solutions", "exercises"):
        (tmp_path / folder).mkdir()
    shutil.copy(ROOT / "notebooks" / "01_forward_process.ipynb", tmp_path / "notebooks")
    shutil.copy(ROOT / "solutions" / "01_forward_process.ipynb", tmp_path / "solutions")
    shutil.copy(ROOT / "exercises" / "01_forward_process.ipynb", tmp_path / "exercises")
    paths = colab.notebooks(root=tmp_path)
    before = {p: p.read_bytes() for p in paths}

    for path in paths:
        assert colab.problems(path, "me/fork", "dev"), "a fork must disagree before sync"
        assert colab.sync(path, "me/fork", "dev")
        assert not colab.problems(path, "me/fork", "dev")
        assert not colab.sync(path, "me/fork", "dev"), "a second sync changes nothing"

    nb = tmp_path / "notebooks" / "01_forward_process.ipynb"
    assert "github/me/fork/blob/dev/notebooks/01_forward_process.ipynb" in nb.read_text()
    assert "image/png" in nb.read_text(), "outputs are kept"
    assert assignments.check(tmp_path / "solutions", tmp_path / "exercises") == []

    for path in paths:                                    # and back, byte for byte
        colab.sync(path)
        assert path.read_bytes() == before[path]


def test_a_missing_badge_is_reported_not_invented(tmp_path):
    (tmp_path / "notebooks").mkdir()
    path = tmp_path / "notebooks" / "99_x.ipynb"
    path.write_text('{"cells": [{"cell_type": "markdown", "source": ["# no badge"]}, '
                    '{"cell_type": "code", "source": ["print(1)"]}], "metadata": {}, '
                    '"nbformat": 4, "nbformat_minor": 5}')
    assert [old for old, _ in colab.problems(path)] == [None, None]
    with pytest.raises(ValueError, match="add this by hand"):
        colab.sync(path)


def test_the_command_line_checks_the_repository(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert colab.main(["check"]) == 0
    assert colab.REPOSITORY in capsys.readouterr().out


def test_sync_readme_rewrites_only_the_badge_links(tmp_path):
    readme = tmp_path / "README.md"
    line = ("| 1 | [x](notebooks/01_forward_process.ipynb) [![Open In Colab](" + colab.BADGE_IMAGE + ")]"
            "(https://colab.research.google.com/github/old/name/blob/dev/notebooks/01_forward_process.ipynb) |\n")
    readme.write_text("# course\n" + line)
    assert colab.readme_problems(readme)
    assert colab.sync_readme(readme)
    assert not colab.readme_problems(readme)
    assert readme.read_text() == "# course\n" + line.replace(
        "https://colab.research.google.com/github/old/name/blob/dev/notebooks/01_forward_process.ipynb",
        colab.badge_url("notebooks/01_forward_process.ipynb"))


def test_course_file_prefers_the_checkout(tmp_path):
    (tmp_path / "repo" / "docs").mkdir(parents=True)
    (tmp_path / "repo" / "docs" / "t.json").write_text("{}")
    found = colab.course_file("docs/t.json", checkout=tmp_path / "repo", base_url="file:///nonexistent",
                              cache=tmp_path / "cache")
    assert found == tmp_path / "repo" / "docs" / "t.json"
    assert not (tmp_path / "cache").exists()                       # nothing fetched


def test_course_file_without_a_checkout_fetches_once_and_keeps_it(tmp_path):
    remote = tmp_path / "remote"
    (remote / "docs").mkdir(parents=True)
    (remote / "docs" / "t.json").write_text('{"n": 5000}')
    ask = lambda: colab.course_file("docs/t.json", checkout=tmp_path / "nowhere",        # noqa: E731
                                    base_url=remote.as_uri(), cache=tmp_path / "cache")
    first = ask()
    assert first == tmp_path / "cache" / "docs" / "t.json" and first.read_text() == '{"n": 5000}'
    (remote / "docs" / "t.json").unlink()                          # the second call reads the kept copy
    assert ask().read_text() == '{"n": 5000}'
    assert [p.name for p in (tmp_path / "cache" / "docs").iterdir()] == ["t.json"]   # no partial file left


def test_course_file_names_both_places_and_the_fix_when_neither_has_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"docs/missing\.json.*clone of https://github\.com/"):
        colab.course_file("docs/missing.json", checkout=tmp_path, base_url=(tmp_path / "remote").as_uri(),
                          cache=tmp_path / "cache")


def test_course_file_fetches_from_the_repository_and_branch_of_the_constants(tmp_path, monkeypatch):
    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        raise colab.urllib.error.URLError("offline")
    monkeypatch.setattr(colab.urllib.request, "urlopen", urlopen)
    with pytest.raises(FileNotFoundError):
        colab.course_file("docs/t.json", checkout=tmp_path, cache=tmp_path / "cache")
    assert asked == [f"https://raw.githubusercontent.com/{colab.REPOSITORY}/{colab.BRANCH}/docs/t.json"]


def test_every_file_a_notebook_reads_from_the_repository_exists_and_goes_through_course_file():
    """A lesson on Colab has no checkout: what it reads from docs/ must come through course_file (which fetches it),
    and must be committed under the name it asks for."""
    import re
    asked = set()
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""Path\(["']\.\.["']\)""", text), f"{path.name} reads the checkout directly"
        asked |= set(re.findall(r"""course_file\(f?["']([^"'{]+)["']\)""", text))
    assert asked, "no notebook reads a stored file: this test would check nothing"
    missing = sorted(name for name in asked if not (ROOT / name).exists())
    assert not missing, missing
