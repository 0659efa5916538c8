"""Grade a folder of submissions: one table and one JSON report per student, and a summary CSV.

Usage (for instructors)::

    python -P -m lesson_lib.course.batch SUBMISSIONS/ --out REPORTS/ [--lesson 01]
        [--timeout 30] [--memory-mb 4096] [--seed N] [--budget SECONDS] [--sandbox required]

Every ``*.ipynb`` directly in ``SUBMISSIONS/`` (symbolic links are skipped) is graded on its
own, each worker in a fresh sandbox, so one student's code never sees or changes another's
submission or report. ``REPORTS/`` receives ``NAME.json`` and ``NAME.txt`` per student and
``summary.csv`` with one row each. A submission that cannot be graded at all (its lesson is
unknown, say) gets a row with the reason instead of stopping the batch.

The batch also flags *near-identical* submissions: pairs whose graded functions, without
docstrings, comments and layout (:func:`lesson_lib.course.flags.fingerprint`), are at least
:data:`SIMILAR` alike. Untouched stubs are alike by design, so only pairs that both scored
points are flagged. A flag is a reason to look, not a verdict.
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
from pathlib import Path  # noqa: E402

from lesson_lib.course import flags, grader, notebook, protocol  # noqa: E402
from lesson_lib.course.session import GraderError  # noqa: E402

SIMILAR = 0.95


def _safe_name(stem, taken):
    name = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:100].lstrip(".") or "submission"
    candidate, n = name, 1
    while candidate.lower() in taken or candidate.lower() == "summary":
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate.lower())
    return candidate


def _fingerprint(path, lesson):
    from lesson_lib.course.checks import load_checks

    nb, error = notebook.read_notebook(path)
    if error:
        return ""
    graded = {name for check in load_checks(lesson) for name in check.uses}
    return flags.fingerprint(notebook.read_definitions(nb), graded)


def similar_pairs(entries):
    """``[(a, b, ratio)]`` for the graded entries whose fingerprints are near-identical."""
    pairs = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            if not (a["fingerprint"] and b["fingerprint"]) or a["lesson"] != b["lesson"]:
                continue
            if a["report"]["total"] == 0 or b["report"]["total"] == 0:
                continue
            matcher = difflib.SequenceMatcher(None, a["fingerprint"], b["fingerprint"], autojunk=False)
            if matcher.real_quick_ratio() >= SIMILAR and matcher.quick_ratio() >= SIMILAR:
                ratio = matcher.ratio()
                if ratio >= SIMILAR:
                    pairs.append((a, b, ratio))
    return pairs


def grade_folder(folder, out, lesson=None, **options):
    """Grade every notebook in ``folder``, write the reports into ``out``; returns the rows of
    the summary (one dict per submission)."""
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries, taken = [], set()
    for path in sorted(folder.glob("*.ipynb")):
        if path.is_symlink() or not path.is_file():
            continue
        name = _safe_name(path.stem, taken)
        entry = {"path": path, "name": name, "report": None, "error": "", "fingerprint": "", "lesson": None}
        try:
            entry["report"] = grader.grade(path, lesson, **options)
            entry["lesson"] = entry["report"]["lesson"]
            entry["fingerprint"] = _fingerprint(path, entry["lesson"])
        except (grader.UsageError, GraderError) as error:
            entry["error"] = protocol.printable(error, 300)
        entries.append(entry)
        print(grader.format_report(entry["report"]) if entry["report"]
              else f"{protocol.printable(path)}: not graded: {entry['error']}", flush=True)
    graded = [e for e in entries if e["report"]]
    for a, b, ratio in similar_pairs(graded):
        for one, other in ((a, b), (b, a)):
            one["report"]["flags"].append(f"near-identical graded code to {other['path'].name} "
                                          f"(similarity {ratio:.2f})")
    rows = []
    for entry in entries:
        report = entry["report"]
        if report:
            grader.write_json(report, out / f"{entry['name']}.json")
            _write_text(out / f"{entry['name']}.txt", grader.format_report(report) + "\n")
        statuses = [r["status"] for r in report["checks"]] if report else []
        rows.append({"submission": protocol.printable(entry["path"].name), "report": entry["name"],
                     "lesson": report["lesson"] if report else "", "total": report["total"] if report else 0,
                     "max": report["max"] if report else "", "passed": statuses.count("passed"),
                     "checks": len(statuses), "flags": " | ".join(report["flags"]) if report else "",
                     "error": entry["error"]})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["submission"])
    writer.writeheader()
    writer.writerows(rows)
    _write_text(out / "summary.csv", buffer.getvalue())
    return rows


def _write_text(path, text):
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    with open(tmp, "x", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -P -m lesson_lib.course.batch",
                                     description="Grade every notebook in a folder, each in its own sandbox.")
    parser.add_argument("folder", help="the folder of submitted .ipynb files")
    parser.add_argument("--out", required=True, help="the folder for the reports and summary.csv")
    grader.add_options(parser)
    args = parser.parse_args(argv)
    grader.check_options(parser, args)
    if not Path(args.folder).is_dir():
        print(f"error: no such folder: {protocol.printable(args.folder)}", file=sys.stderr)
        return 2
    rows = grade_folder(args.folder, args.out, args.lesson, timeout=args.timeout, memory_mb=args.memory_mb,
                        seed=args.seed, budget=args.budget, sandbox=args.sandbox)
    print(f"{len(rows)} submissions graded; summary in {protocol.printable(Path(args.out) / 'summary.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
