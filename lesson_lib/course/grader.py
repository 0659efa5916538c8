"""Grade an exercise notebook automatically, without running the notebook.

Usage (for instructors)::

    lesson-lib-grade SUBMISSION.ipynb [--lesson 01] [--json OUT.json] [--overwrite]
        [--timeout 30] [--memory-mb 4096] [--seed N] [--budget SECONDS] [--sandbox auto|required|off]

(``python -P -m lesson_lib.course.grader`` is the same command on Python >= 3.11; for a folder of
submissions, see :mod:`lesson_lib.course.batch`.) How a submission is graded:

1. Read the definitions (:mod:`lesson_lib.course.notebook`, in the memory-limited process of
   :mod:`lesson_lib.course.reader`): only top-level imports, ``def``, ``class``, literal
   constants and the computed values the functions use are kept; nothing else ever runs.
2. Draw every check's inputs in this process from a fresh seed (``--seed`` to repeat a run),
   and send them to a worker (:mod:`lesson_lib.course.worker`) in a sandbox
   (:mod:`lesson_lib.course.sandbox`). The worker runs the definitions, calls the student's
   functions on those inputs and sends back what they returned, as plain data
   (:mod:`lesson_lib.course.protocol`), under one time budget (:mod:`lesson_lib.course.session`).
3. Judge every answer here, in a process that never runs student code: compare it with
   lesson_lib's reference implementation, and score. Then report a table (and a JSON file) with
   the points of every check, the notes, the instructor flags and the protections in force.

Exit codes: 0 when grading completed (whatever the score), 2 on usage errors (missing file,
unknown lesson), 1 when the grader itself could not run (e.g. torch fails to import). This
module and the usage errors need no torch.
Why one module: this is the trusted side's one pass, read top to bottom: which lesson, draw the
inputs, run the worker, judge, report, and the command line that starts it. Reading, the
sandbox, the worker, the protocol and the time budget each live in their own module (above).
"""

import sys

if __name__ == "__main__":  # a module planted in the working folder must not be importable
    import os as _os
    sys.path[:] = [p for p in sys.path if p not in ("", ".", _os.getcwd())]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from lesson_lib.course import flags, notebook, protocol, reader  # noqa: E402
from lesson_lib.course.checks import available_lessons, explain, lesson_id  # noqa: E402
from lesson_lib.course.session import GraderError, default_budget  # noqa: E402

FILE_LIMIT_MB = 64        # largest file the worker may write (RLIMIT_FSIZE)
MIN_MEMORY_MB = 1024      # memory for the student's code, on top of what torch maps
PROCESSES = 64            # processes and threads per sandbox (RLIMIT_NPROC)
REASON_LIMIT = 500        # characters kept of a reason


class UsageError(Exception):
    """A problem with the command line: exit code 2."""


__all__ = ["grade", "format_report", "write_json", "main", "UsageError", "GraderError", "resolve_lesson"]


# --- which lesson ----------------------------------------------------------------------

def _normalize_lesson(value, where):
    found = lesson_id(value)
    if found is None:
        raise UsageError(f"the lesson must be a number such as 01 (or with a letter, 01b), got "
                         f"{protocol.printable(value, 40)!r} from {where}")
    return found


def resolve_lesson(requested, read, path):
    """The lesson to grade and a list of warnings: ``--lesson``, else the id the file name
    starts with (``01_forward_process.ipynb``, ``01b_reverse_process.ipynb``: a number, then an
    optional letter for a lesson inserted between two others), else the notebook's
    ``metadata.lesson_lib.lesson`` (a student can edit the metadata, not the name the
    instructor filed the work under). ``read`` is :func:`lesson_lib.course.notebook.read_submission`'s
    summary of the notebook."""
    warnings = []
    from_meta, meta_note = read.get("metadata_lesson"), read.get("metadata_note")
    if meta_note:
        warnings.append(meta_note)
    match = re.match(r"(\d{1,3}[a-z]?)[_\-. ]", Path(path).name)
    from_name = _normalize_lesson(match.group(1), "the file name") if match else None
    if requested is not None:
        lesson, source = _normalize_lesson(requested, "--lesson"), "--lesson"
    elif from_name:
        lesson, source = from_name, "the file name"
    elif from_meta:
        lesson, source = from_meta, "the notebook metadata"
    else:
        raise UsageError(f"cannot tell which lesson {protocol.printable(path)} belongs to (no number at the "
                         f"start of the file name, no lesson_lib metadata); pass --lesson 01")
    for other, where in ((from_name, "the file name"), (from_meta, "the notebook metadata")):
        if other and other != lesson and where != source:
            warnings.append(f"{where} says lesson {other}, but lesson {lesson} (from {source}) was graded")
    if lesson not in available_lessons():
        raise UsageError(f"unknown lesson {lesson}; lessons with checks: {', '.join(available_lessons())}")
    return lesson, warnings


# --- scoring -----------------------------------------------------------------------------

def _row(check, status, reason="", points=0, seconds=0.0, traceback=""):
    row = {"name": check.name, "description": check.description, "points": points,
           "max_points": check.points, "status": status,
           "reason": protocol.printable(reason, REASON_LIMIT), "seconds": round(float(seconds), 3)}
    if traceback:
        row["traceback"] = protocol.printable(traceback.replace("\n", " | "), protocol.MAX_TRACEBACK)
    return row


def _judge(check, case, value, seconds):
    """Score one answer: full points if the judge accepts it, else 0 and the judge's reason."""
    try:
        check.judge(case, value)
    except AssertionError as error:
        return _row(check, "failed", str(error) or "assertion failed", seconds=seconds)
    except Exception as error:  # an answer of an unexpected form that the judge did not foresee
        return _row(check, "failed", f"the answer has an unexpected form ({type(error).__name__}: "
                                     f"{str(error)[:200]})", seconds=seconds)
    return _row(check, "passed", points=check.points, seconds=seconds)


def _settings(timeout, memory_mb, budget, n_checks, use_bwrap):
    return {"timeout": float(timeout), "memory_mb": int(memory_mb), "file_mb": FILE_LIMIT_MB,
            "processes": PROCESSES, "bwrap": use_bwrap,
            "budget": float(budget if budget is not None else default_budget(n_checks, timeout))}


def grade(path, lesson=None, timeout=30.0, memory_mb=4096, seed=None, budget=None, sandbox="auto"):
    """Grade the notebook at ``path``; returns the report as a dict (see docs/grading.md).
    ``sandbox`` is "auto" (bubblewrap when it works), "required" or "off"."""
    return assess(path, lesson, timeout, memory_mb, seed, budget, sandbox)[0]


def assess(path, lesson=None, timeout=30.0, memory_mb=4096, seed=None, budget=None, sandbox="auto"):
    """:func:`grade`, and the fingerprint of the graded functions (the batch compares them)."""
    from lesson_lib.course import sandbox as isolation

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such notebook: {protocol.printable(path)}")
    read = reader.read_submission(path)
    lesson, warnings = resolve_lesson(lesson, read, path)
    use_bwrap = isolation.bubblewrap() if sandbox != "off" else None
    if sandbox == "required" and not use_bwrap:
        raise UsageError("--sandbox required, but bubblewrap (bwrap) is not installed or cannot create "
                         "namespaces here; see docs/grading.md")
    from lesson_lib.course.checks import load_checks

    checks = load_checks(lesson)
    seed = secrets.randbelow(2 ** 31) if seed is None else int(seed)
    results, notes, instructor_flags = {}, list(warnings), []
    graded = {name for check in checks for name in check.uses}
    if read["error"]:
        results = {check.name: _row(check, "error", read["error"]) for check in checks}
        notes.append(read["error"])
    else:
        notes += read["notes"]
        instructor_flags = flags.select(read["flags"], graded, read["helpers"]) + \
            flags.copies_of_the_solution(read["fingerprints"], graded, lesson)
        runnable = []
        for check in checks:
            missing = [name for name in check.uses if name not in read["names"]]
            if missing and "*" not in read["names"]:
                hint = notebook.parse_error_hint(missing[0], read)
                results[check.name] = _row(check, "missing", f"function {missing[0]} not defined{hint}")
            else:
                runnable.append(check)
        if runnable:
            results.update(_run(runnable, read, lesson, seed,
                                _settings(timeout, memory_mb, budget, len(runnable), use_bwrap), notes))
    ordered = [results[check.name] for check in checks]
    for row in explain(checks, [dict(r) for r in ordered]):
        results[row["name"]]["reason"] = protocol.printable(row["reason"], REASON_LIMIT)
        if row.get("see_first"):
            results[row["name"]]["see_first"] = row["see_first"]
    ordered = [results[check.name] for check in checks]
    return protocol.finite({
        "submission": str(path), "lesson": lesson, "seed": seed,
        "total": sum(r["points"] for r in ordered), "max": sum(c.points for c in checks),
        "notes": [protocol.printable(n, 1000) for n in notes], "flags": instructor_flags,
        "sandbox": isolation.protections(use_bwrap), "checks": ordered}), \
        flags.fingerprint(read.get("fingerprints", {}), graded)


def _run(checks, read, lesson, seed, settings, notes):
    """Draw the cases, run the probes in a session, judge the answers; rows by check name."""
    from lesson_lib.course.session import Session

    by_name = {check.name: check for check in checks}
    cases, items = {}, []
    for index, check in enumerate(checks):
        case_seed = (seed + 1000 * index) % 2 ** 31
        cases[check.name] = check.make_case(case_seed)
        items.append({"name": check.name, "case": protocol.encode_value(cases[check.name]),
                      "seed": case_seed + 1})

    def judge(name, value, seconds):
        return _judge(by_name[name], cases[name], value, seconds)

    def lost(name, status, reason, seconds=0.0, traceback=""):
        return _row(by_name[name], status, reason, seconds=seconds, traceback=traceback)

    rows, worker_notes = Session(items, read["cells"], lesson, settings, judge, lost, read["constants"]).run()
    notes += worker_notes
    return rows


# --- reporting ---------------------------------------------------------------------------

def format_report(report, full=False):
    """The report as a plain-text table; everything from the submission is escaped. On a
    terminal a long reason is cut at 120 characters; ``full`` (the .txt reports) keeps every
    reason whole, wrapped under its row."""
    one_line = lambda text: protocol.printable(" ".join(str(text).split()))  # noqa: E731
    rows = [(one_line(r["name"]), f"{r['points']}/{r['max_points']}", r["status"], one_line(r["reason"]))
            for r in report["checks"]]
    width = max([len("check")] + [len(row[0]) for row in rows])
    lines = [f"{one_line(report['submission'])}: lesson {report['lesson']} (seed {report['seed']})"]
    lines += [f"  note: {one_line(note)}" for note in report["notes"]]
    lines += [f"  flag: {one_line(flag)}" for flag in report.get("flags", [])]
    missing = [name for name, on in report.get("sandbox", {}).items() if not on]
    if missing:
        lines.append(f"  sandbox: NOT in force: {'; '.join(missing)}")
    lines.append(f"{'check':<{width}}  points  {'status':<15}  reason")
    for (name, points, status, reason), result in zip(rows, report["checks"]):
        if result.get("see_first"):
            reason = f"(fix {one_line(result['see_first'])} first) {reason}"
        if full:
            lines.append(f"{name:<{width}}  {points:>6}  {status:<15}  {reason[:120]}".rstrip())
            lines += [f"{'':<{width + 27}}{reason[i:i + 120]}" for i in range(120, len(reason), 120)]
            continue
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        lines.append(f"{name:<{width}}  {points:>6}  {status:<15}  {reason}".rstrip())
    lines.append(f"{'total':<{width}}  {str(report['total']) + '/' + str(report['max']):>6}")
    return "\n".join(lines)


def write_json(report, path):
    """Write the report to ``path`` atomically (a new temporary file, then a rename that
    replaces whatever is at ``path``, a planted symbolic link included, without following it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(protocol.finite(report), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def add_options(parser):
    """The options shared by this command and the batch command."""
    parser.add_argument("--lesson", help="lesson number, e.g. 01 (default: the number the file name "
                        "starts with, else the notebook metadata)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per check (default 30)")
    parser.add_argument("--memory-mb", type=int, default=4096,
                        help=f"memory for the student's code in MB (default 4096, at least {MIN_MEMORY_MB})")
    parser.add_argument("--seed", type=int, help="seed for the checks' inputs (default: a fresh one)")
    parser.add_argument("--budget", type=float, help="wall-clock seconds for a whole submission "
                        "(default: enough for every check's --timeout)")
    parser.add_argument("--sandbox", choices=["auto", "required", "off"], default="auto",
                        help="bubblewrap sandbox: when available (auto), or refuse to grade without it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace reports that are already there (by default an existing file is never replaced)")


def check_options(parser, args):
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout:g}")
    if args.memory_mb < MIN_MEMORY_MB:
        parser.error(f"--memory-mb must be at least {MIN_MEMORY_MB}, got {args.memory_mb}")
    if args.budget is not None and args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget:g}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="lesson-lib-grade",
        description="Grade an exercise notebook: run the lesson's checks against the functions it "
                    "defines, in a sandboxed worker, and score the answers outside it.")
    parser.add_argument("submission", help="the student's .ipynb file")
    parser.add_argument("--json", dest="json_path", metavar="OUT.json", help="also write the report here")
    add_options(parser)
    args = parser.parse_args(argv)
    check_options(parser, args)
    if args.json_path:
        target = Path(args.json_path)
        if not target.resolve().parent.is_dir():
            parser.error(f"--json: the folder of {args.json_path} does not exist")
        if target.exists() and Path(args.submission).exists() and target.resolve() == Path(args.submission).resolve():
            parser.error("--json names the submission itself: the report would replace the student's notebook; "
                         "write it elsewhere, e.g. --json report.json")
        if target.exists() and not args.overwrite:
            parser.error(f"--json: {args.json_path} already exists; choose a new file, or pass --overwrite "
                         f"to replace it")
        if target.exists() and not target.is_file():
            parser.error(f"--json: {args.json_path} is not a file")
        if not os.access(target.resolve().parent, os.W_OK):
            parser.error(f"--json: cannot write to the folder of {args.json_path}")
    try:
        report = grade(args.submission, args.lesson, args.timeout, args.memory_mb, args.seed,
                       args.budget, args.sandbox)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except GraderError as error:
        print(f"grader error: {protocol.printable(error)}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json_path:
        write_json(report, args.json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
