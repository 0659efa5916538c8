"""Grade a folder of submissions: one table and one JSON report per student, and a summary CSV.

Usage (for instructors)::

    lesson-lib-grade-class SUBMISSIONS/ --out REPORTS/ [--lesson 01] [--overwrite]
        [--timeout 30] [--memory-mb 4096] [--seed N] [--budget SECONDS] [--sandbox required]

Every ``*.ipynb`` in ``SUBMISSIONS/`` and its sub-folders (as learning platforms export them,
one folder per student; symbolic links and ``.ipynb_checkpoints`` are skipped) is graded on its
own, each worker in a fresh sandbox, so one student's code never sees or changes another's
submission or report. ``REPORTS/`` receives ``NAME.json`` and ``NAME.txt`` per student (NAME from
the file's path under ``SUBMISSIONS/``) and ``summary.csv`` with one row each: the points of every
check, the notes, the flags and the protections in force.

Nothing is lost when something goes wrong: before a submission is graded, its report says
"grading did not finish" (so a grader killed mid-way still leaves a report for everyone), and
each student's final report is written as soon as that student is graded. A submission that
cannot be graded at all (its lesson is unknown, say) gets a report with the reason.

The batch then flags *near-identical* submissions: pairs whose graded functions, without
docstrings, comments and layout (:func:`lesson_lib.course.flags.fingerprints`), are at least
:data:`SIMILAR` alike, and any graded function identical to the published solution. Untouched
stubs are alike by design, so only pairs that both scored points are flagged. Comparing every
pair costs time that grows with the square of the class: the comparison reads at most
:data:`COMPARED_CHARS` of each submission and stops after :data:`SIMILARITY_SECONDS` (the summary
then says how far it got). A flag is a reason to look, not a verdict.
"""

import sys

if __name__ == "__main__":  # a module planted in the working folder must not be importable
    import os as _os
    sys.path[:] = [p for p in sys.path if p not in ("", ".", _os.getcwd())]

import argparse  # noqa: E402
import csv  # noqa: E402
import difflib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from lesson_lib.course import grader, protocol  # noqa: E402
from lesson_lib.course.session import GraderError  # noqa: E402

SIMILAR = 0.95
COMPARED_CHARS = 20_000        # of each submission's graded code, for the similarity flags
SIMILARITY_SECONDS = 120       # for all pairs together
CSV_UNSAFE = ("=", "+", "-", "@", "\t", "\r")   # a spreadsheet would run a cell that starts so


def _safe_name(relative, taken):
    """A report name from the submission's path under the folder: ``alice/01_x.ipynb`` ->
    ``alice__01_x``; only letters, digits, ``. _ -``; unique (case-insensitively) in ``taken``."""
    stem = "__".join(Path(relative).with_suffix("").parts)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:100].lstrip(".") or "submission"
    candidate, n = name, 1
    while candidate.lower() in taken or candidate.lower() == "summary":
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate.lower())
    return candidate


def submissions(folder):
    """Every notebook under ``folder``, sub-folders included, in a stable order; symbolic links
    and Jupyter's ``.ipynb_checkpoints`` copies are left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints" and not os.path.islink(os.path.join(root, d)))
        for name in sorted(files):
            path = Path(root) / name
            if name.lower().endswith(".ipynb") and not path.is_symlink() and path.is_file():
                found.append(path)
    return found


def similar_pairs(entries, deadline=None):
    """``([(a, b, ratio)], complete)`` for the graded entries whose fingerprints are near-identical;
    ``complete`` is False when ``deadline`` (a ``time.monotonic()`` value) ended the search."""
    pairs = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            if deadline is not None and time.monotonic() > deadline:
                return pairs, False
            if not (a["fingerprint"] and b["fingerprint"]) or a["lesson"] != b["lesson"]:
                continue
            if a["report"]["total"] == 0 or b["report"]["total"] == 0:
                continue
            fa, fb = a["fingerprint"][:COMPARED_CHARS], b["fingerprint"][:COMPARED_CHARS]
            matcher = difflib.SequenceMatcher(None, fa, fb, autojunk=False)
            if matcher.real_quick_ratio() >= SIMILAR and matcher.quick_ratio() >= SIMILAR:
                ratio = matcher.ratio()
                if ratio >= SIMILAR:
                    pairs.append((a, b, ratio))
    return pairs, True


def _not_graded(path, lesson, reason):
    """The report of a submission that could not be graded at all: 0 points and the reason."""
    return {"submission": str(path), "lesson": lesson or "", "seed": None, "total": 0, "max": 0,
            "notes": [protocol.printable(reason, 1000)], "flags": [], "sandbox": {}, "checks": []}


def _write_report(out, entry):
    grader.write_json(entry["report"], out / f"{entry['name']}.json")
    _write_text(out / f"{entry['name']}.txt", grader.format_report(entry["report"], full=True) + "\n")


def grade_folder(folder, out, lesson=None, **options):
    """Grade every notebook under ``folder``, write the reports into ``out``; returns the rows of
    the summary (one dict per submission)."""
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries, taken = [], set()
    for path in submissions(folder):
        entry = {"path": path, "name": _safe_name(path.relative_to(folder), taken), "fingerprint": "",
                 "lesson": None, "error": ""}
        entry["report"] = _not_graded(path, lesson, "grading did not finish: the grader stopped while "
                                                    "grading this notebook; grade it again")
        _write_report(out, entry)
        try:
            entry["report"], entry["fingerprint"] = grader.assess(path, lesson, **options)
            entry["lesson"] = entry["report"]["lesson"]
        except (grader.UsageError, GraderError) as error:
            entry["error"] = protocol.printable(error, 300)
            entry["report"] = _not_graded(path, lesson, f"not graded: {entry['error']}")
        _write_report(out, entry)
        entries.append(entry)
        print(grader.format_report(entry["report"]), flush=True)
    graded = [e for e in entries if not e["error"]]
    pairs, complete = similar_pairs(graded, time.monotonic() + SIMILARITY_SECONDS)
    for a, b, ratio in pairs:
        for one, other in ((a, b), (b, a)):
            one["report"]["flags"].append(f"near-identical graded code to "
                                          f"{protocol.printable(other['path'].relative_to(folder))} "
                                          f"(similarity {ratio:.2f})")
    for entry in {id(e): e for pair in pairs for e in pair[:2]}.values():
        _write_report(out, entry)
    rows = [_row(entry, folder) for entry in entries]
    if not complete:
        print(f"the similarity flags are incomplete: comparing every pair took more than "
              f"{SIMILARITY_SECONDS} s", flush=True)
    _write_text(out / "summary.csv", _csv(rows))
    return rows


def _row(entry, folder):
    """One line of summary.csv: the totals, the points of every check, the notes, the flags,
    the protections that were not in force and the error, if any."""
    report = entry["report"]
    statuses = [r["status"] for r in report["checks"]]
    missing = [name for name, on in report.get("sandbox", {}).items() if not on]
    row = {"submission": protocol.printable(entry["path"].relative_to(folder)), "report": entry["name"],
           "lesson": report["lesson"], "total": report["total"], "max": report["max"],
           "passed": statuses.count("passed"), "checks": len(statuses)}
    row.update({f"points: {r['name']}": r["points"] for r in report["checks"]})
    row.update({"notes": " | ".join(report["notes"]), "flags": " | ".join(report["flags"]),
                "sandbox": "all protections in force" if report.get("sandbox") and not missing
                else "NOT in force: " + "; ".join(missing) if missing else "",
                "error": entry["error"]})
    return row


def _cell(value):
    """A CSV cell a spreadsheet shows as text: one starting with = + - @ (a formula) gets a quote."""
    text = str(value)
    return "'" + text if text.startswith(CSV_UNSAFE) and not isinstance(value, (int, float)) else text


def _csv(rows):
    fields = list(dict.fromkeys(key for row in rows for key in row)) or ["submission"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def _write_text(path, text):
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    with open(tmp, "x", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lesson-lib-grade-class",
                                     description="Grade every notebook in a folder, each in its own sandbox.")
    parser.add_argument("folder", help="the folder of submitted .ipynb files")
    parser.add_argument("--out", required=True, help="the folder for the reports and summary.csv")
    grader.add_options(parser)
    args = parser.parse_args(argv)
    grader.check_options(parser, args)
    if not Path(args.folder).is_dir():
        print(f"error: no such folder: {protocol.printable(args.folder)}", file=sys.stderr)
        return 2
    if not submissions(args.folder):
        print(f"error: no .ipynb files in {protocol.printable(args.folder)} or its sub-folders; point the "
              f"command at the folder of submitted notebooks", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {protocol.printable(args.out)} is a file; name a folder for the reports", file=sys.stderr)
        return 2
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        print(f"error: --out {protocol.printable(args.out)} already holds files; name a new folder, or pass "
              f"--overwrite to replace the reports there", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        print(f"error: cannot write reports to --out {protocol.printable(args.out)}: {error.strerror or error}; "
              f"choose a folder you can write to", file=sys.stderr)
        return 2
    rows = grade_folder(args.folder, args.out, args.lesson, timeout=args.timeout, memory_mb=args.memory_mb,
                        seed=args.seed, budget=args.budget, sandbox=args.sandbox)
    print(f"{len(rows)} submissions graded; summary in {protocol.printable(Path(args.out) / 'summary.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
