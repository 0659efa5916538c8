"""Grade an exercise notebook automatically, without running the notebook.

Usage (for instructors)::

    python -m lesson_lib.course.grader SUBMISSION.ipynb [--lesson 01] [--json OUT.json]
                                [--timeout 30] [--memory-mb 4096]

How a submission is graded:

1. Read the definitions. Every code cell is parsed with :mod:`ast` (IPython lines that start
   with ``!`` or ``%`` are skipped) and only top-level imports, function and class
   definitions and constant assignments such as ``T = 1000`` are kept. Training loops,
   plots and self-checks are never run. A cell with a syntax error is reported as a note.
2. Run the lesson's checks (:mod:`lesson_lib.course.checks.lesson01`, ...) in a separate worker
   process (``python -m lesson_lib.course.grader --worker``) with a wall-clock limit per check,
   limits on memory and on the size of files it writes, its output capped, and a fresh
   temporary directory as its working directory. Results come back one JSON line per event
   over a pipe, so a worker that dies or hangs loses only the check it was running: it is
   killed and a new worker continues with the remaining checks.
3. Report a table (and, with ``--json``, a file) with the points of every check.

Exit codes: 0 when grading completed (whatever the score), 2 on usage errors (missing file,
unknown lesson), 1 when the grader itself could not run (e.g. torch fails to import).

The sandbox is an ordinary process with resource limits, not a container: see
docs/grading.md for what it does and does not protect against.
"""

import argparse
import ast
import builtins
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
import warnings
from pathlib import Path

from lesson_lib.course.checks import available_lessons, load_checks

STARTUP_SECONDS = 120     # time allowed to start a worker and import torch (trusted code)
MIN_SETUP_SECONDS = 30    # at least this long to run the notebook's imports and definitions
OUTPUT_LIMIT = 1 << 20    # characters of print() output kept per check; the rest is dropped
FILE_LIMIT_MB = 64        # largest file the worker may write (RLIMIT_FSIZE)
MIN_MEMORY_MB = 1024      # importing torch alone needs about 600 MB of data segment
REASON_LIMIT = 500        # characters kept of a reason

NOT_IMPLEMENTED = "not implemented yet"


class UsageError(Exception):
    """A problem with the command line: exit code 2."""


class GraderError(Exception):
    """The grader itself could not run (not the submission's fault): exit code 1."""


# --- 1. reading the definitions out of a notebook ----------------------------------------

_IPYTHON_LINE = re.compile(r"^\s*[!%]")


def _parse_cell(source):
    """Parse a cell; if it is not plain Python, retry with IPython lines (``!ls``,
    ``%matplotlib inline``) blanked. Returns ``(tree, source_parsed)``; raises SyntaxError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. SyntaxWarning for invalid escape sequences
        try:
            return ast.parse(source), source
        except SyntaxError:
            cleaned = "\n".join("" if _IPYTHON_LINE.match(line) else line for line in source.split("\n"))
            if cleaned == source:
                raise
            return ast.parse(cleaned), cleaned


def _is_definition(node):
    """Imports, ``def``, ``class`` and ``NAME = <literal>`` are kept; everything else is not run."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if all(isinstance(target, ast.Name) for target in targets):
            try:
                ast.literal_eval(node.value)
                return True
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return False
    return False


def definitions(tree):
    """The top-level statements of a parsed cell that the grader runs."""
    return [node for node in tree.body if _is_definition(node)]


def _names(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Import):
        return [alias.asname or alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [alias.asname or alias.name for alias in node.names]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [target.id for target in targets]


def read_definitions(nb):
    """Pick the code the grader may run out of a notebook.

    Returns a dict with ``cells`` (a list of ``{"label": "cell 3", "source": ...}`` for
    the cells that define something), ``names`` (every name defined at top level; ``"*"``
    for a star import), and ``notes`` (cells that could not be parsed).
    """
    cells, names, notes = [], set(), []
    for index, cell in enumerate(nb.get("cells", []), start=1):
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if cell.get("cell_type") != "code" or source.lstrip().startswith("%%"):
            continue  # markdown, or a cell magic such as %%bash
        label = f"cell {index}"
        try:
            tree, source = _parse_cell(source)
        except SyntaxError as error:
            notes.append(f"{label} could not be parsed, so nothing in it was graded: "
                         f"{error.msg} (line {error.lineno})")
            continue
        kept = definitions(tree)
        if kept:
            cells.append({"label": label, "source": source})
            names.update(name for node in kept for name in _names(node))
    return {"cells": cells, "names": names, "notes": notes}


# --- which lesson ----------------------------------------------------------------------

def _normalize_lesson(value, where):
    text = str(value).strip()
    if not text.isdigit():
        raise UsageError(f"the lesson must be a number such as 01, got {value!r} from {where}")
    return f"{int(text):02d}"


def resolve_lesson(requested, nb, path):
    """The lesson to grade: ``--lesson``, else the notebook's ``metadata.lesson_lib.lesson``,
    else the number the file name starts with (``01_forward_process.ipynb``)."""
    if requested is not None:
        lesson = _normalize_lesson(requested, "--lesson")
    else:
        meta = nb.get("metadata", {}).get("lesson_lib") if nb is not None else None
        match = re.match(r"(\d+)[_\-. ]", Path(path).name)
        if isinstance(meta, dict) and meta.get("lesson") is not None:
            lesson = _normalize_lesson(meta["lesson"], "the notebook metadata lesson_lib.lesson")
        elif match:
            lesson = _normalize_lesson(match.group(1), "the file name")
        else:
            raise UsageError(f"cannot tell which lesson {path} belongs to (no lesson_lib metadata, "
                             f"no number at the start of the file name); pass --lesson 01")
    if lesson not in available_lessons():
        raise UsageError(f"unknown lesson {lesson}; lessons with checks: {', '.join(available_lessons())}")
    return lesson


# --- 2a. the parent side: run the checks in worker processes -----------------------------

def _result(check, status, reason="", points=0, seconds=0.0, **extra):
    return {"name": check.name, "description": check.description, "points": points,
            "max_points": check.points, "status": status, "reason": reason[:REASON_LIMIT],
            "seconds": round(seconds, 3), **extra}


def _from_worker(check, result):
    """A result as sent by the worker, re-made from trusted parts: points follow the status."""
    status = str(result.get("status"))
    try:
        seconds = float(result.get("seconds", 0.0))
    except (TypeError, ValueError):
        seconds = 0.0
    extra = {"traceback": str(result["traceback"])} if "traceback" in result else {}
    return _result(check, status, str(result.get("reason", "")), seconds=seconds,
                   points=check.points if status == "passed" else 0, **extra)


def _worker_env():
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_root, env.get("PYTHONPATH")] if p)
    # grade on the CPU, single-threaded, without a display
    env.update(CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    return env


def _kill(proc):
    """Kill the worker and anything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _log_tail(log_path):
    try:
        with open(log_path, "rb") as log:
            log.seek(max(0, os.path.getsize(log_path) - 300))
            lines = log.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-150:] if lines else ""


def _describe_exit(code, log_path):
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        why = {"SIGKILL": " (out of memory?)", "SIGSEGV": " (a crash)", "SIGXCPU": " (CPU time limit)"}
        text = f"the grading process was killed by {name}{why.get(name, '')}"
    else:
        text = f"the grading process exited with code {code} (os._exit, or a crash)"
    tail = _log_tail(log_path)
    return text + (f"; its last output: {tail!r}" if tail else "")


def _run_worker(job_path, base, number, timeout):
    """Start one worker and follow its events.

    Returns ``(results, notes, failure)``: the results it sent, the notes about the
    notebook's definitions, and ``None`` if it finished, else ``(phase, check, reason)``
    where phase is "start" (it never started), "setup" (running the notebook's
    definitions), "check" (running ``check``) or "between" (between checks).
    """
    workdir = tempfile.mkdtemp(prefix=f"cwd-{number}-", dir=base)
    log_path = os.path.join(base, f"worker-{number}.log")
    read_fd, write_fd = os.pipe()
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lesson_lib.course.grader", "--worker", job_path, str(write_fd)],
                cwd=workdir, env=_worker_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(write_fd,), start_new_session=True)
    finally:
        os.close(write_fd)
    results, notes, buffer = {}, [], b""
    phase, current, deadline = "start", None, time.monotonic() + STARTUP_SECONDS
    setup_seconds = max(timeout, MIN_SETUP_SECONDS)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill(proc)
                where = {"start": f"the grading process did not start within {STARTUP_SECONDS} s",
                         "setup": f"timed out after {setup_seconds:g}s while running the notebook's "
                                  f"imports and definitions"}
                return results, notes, (phase, current, where.get(phase, f"timed out after {timeout:g}s"))
            ready, _, _ = select.select([read_fd], [], [], min(left, 0.25))
            if not ready:
                if proc.poll() is None:
                    continue
                ready, _, _ = select.select([read_fd], [], [], 0)  # exited: drain what is left
                if not ready:
                    break
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            *lines, buffer = (buffer + chunk).split(b"\n")
            buffer = buffer if len(buffer) < (1 << 20) else b""
            for line in lines:
                try:
                    event = json.loads(line)
                    kind = event["event"]
                except (ValueError, KeyError, TypeError):
                    continue
                now = time.monotonic()
                if kind == "imported":
                    phase, deadline = "setup", now + setup_seconds
                elif kind == "fatal":
                    return results, notes, ("start", None, str(event.get("reason")))
                elif kind == "ready":
                    phase, deadline, notes = "between", now + timeout, list(event.get("notes", []))
                elif kind == "start":
                    phase, current, deadline = "check", event.get("check"), now + timeout
                elif kind == "result":
                    results[event.get("name")] = {k: v for k, v in event.items() if k != "event"}
                    phase, current, deadline = "between", None, now + timeout
                elif kind == "done":
                    return results, notes, None
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return results, notes, (phase, current, _describe_exit(code, log_path))
    finally:
        os.close(read_fd)
        _kill(proc)


def _run_checks(checks, cells, lesson, timeout, memory_mb):
    """Run ``checks`` in workers, restarting after a crash or timeout; returns
    ``(results by name, notes)``."""
    results, notes = {}, []
    by_name = {check.name: check for check in checks}
    base = tempfile.mkdtemp(prefix="lesson_lib_grader_")
    job_path = os.path.join(base, "job.json")
    number = 0
    try:
        while True:
            pending = [check.name for check in checks if check.name not in results]
            if not pending:
                break
            number += 1
            os.makedirs(base, exist_ok=True)  # in case a submission deleted it
            job = {"lesson": lesson, "cells": cells, "checks": pending, "timeout": timeout,
                   "memory_mb": memory_mb, "file_mb": FILE_LIMIT_MB}
            with open(job_path, "w", encoding="utf-8") as f:
                json.dump(job, f)
            before = len(results)
            done, worker_notes, failure = _run_worker(job_path, base, number, timeout)
            notes = worker_notes or notes
            for name, result in done.items():
                if name in by_name:
                    results[name] = _from_worker(by_name[name], result)
            if failure is None:
                if len(results) == before:  # "done" without results: garbage on the pipe
                    failure = ("between", None, "the grading process ended without reporting a result")
                else:
                    continue
            phase, current, reason = failure
            if phase == "start":
                raise GraderError(f"the grading worker could not start: {reason}; if it ran out of "
                                  f"memory, raise --memory-mb")
            if phase == "setup":  # the notebook's own definitions hang or kill the process
                for name in pending:
                    if name not in results:
                        results[name] = _result(by_name[name], "crashed" if "timed out" not in reason
                                                else "timeout", reason)
                break
            # a check hung or killed the worker: that check gets 0, a new worker does the rest
            victim = current if current in by_name and current not in results else \
                next((name for name in pending if name not in results), None)
            if victim is not None:
                timed_out = reason.startswith("timed out")
                results[victim] = _result(by_name[victim], "timeout" if timed_out else "crashed", reason,
                                          seconds=timeout if timed_out else 0.0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results, notes


def grade(path, lesson=None, timeout=30.0, memory_mb=4096):
    """Grade the notebook at ``path``; returns the report as a dict
    ``{"submission", "lesson", "total", "max", "notes", "checks": [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such notebook: {path}")
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
        read_error = None
    except Exception as error:  # any unreadable file is graded as 0, with the reason
        nb, read_error = None, f"could not read the notebook: {type(error).__name__}: {error}"
    lesson = resolve_lesson(lesson, nb, path)
    checks = load_checks(lesson)
    results, notes = {}, []
    if read_error:
        results = {check.name: _result(check, "error", read_error) for check in checks}
        notes = [read_error]
    else:
        submission = read_definitions(nb)
        notes = list(submission["notes"])
        hint = f" ({notes[0].split(':')[0]})" if notes else ""  # "cell 8 could not be parsed, ..."
        runnable = []
        for check in checks:
            missing = [name for name in check.uses if name not in submission["names"]]
            if missing and "*" not in submission["names"]:
                results[check.name] = _result(check, "missing", f"function {missing[0]} not defined{hint}")
            else:
                runnable.append(check)
        if runnable:
            ran, worker_notes = _run_checks(runnable, submission["cells"], lesson, timeout, memory_mb)
            results.update(ran)
            notes += worker_notes
    ordered = [results[check.name] for check in checks]
    return {"submission": str(path), "lesson": lesson,
            "total": sum(r["points"] for r in ordered), "max": sum(c.points for c in checks),
            "notes": notes, "checks": ordered}


# --- 2b. the worker side: runs inside the limited process ---------------------------------

class _CappedOutput(io.TextIOBase):
    """Stands in for sys.stdout and sys.stderr in the worker: passes on the first
    ``limit`` characters written during a check and silently drops the rest."""

    def __init__(self, stream, limit):
        self.stream, self.limit, self.written = stream, limit, 0

    def writable(self):
        return True

    def write(self, text):
        text = str(text)
        if self.written < self.limit:
            try:
                self.stream.write(text[:self.limit - self.written])
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self.written += len(text)
        return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass


_OUTPUTS = (sys.stdout, sys.stderr)  # replaced by two _CappedOutput in the worker


def _limit_resources(memory_mb, file_mb, cpu_seconds):
    """Lower this process's limits (best effort: macOS does not enforce the memory limit)."""
    try:
        import resource
    except ImportError:  # Windows: no limits, only the time limit applies
        return
    limits = [("RLIMIT_DATA", memory_mb << 20), ("RLIMIT_FSIZE", file_mb << 20),
              ("RLIMIT_CORE", 0), ("RLIMIT_CPU", int(cpu_seconds))]
    for name, value in limits:
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass
    if hasattr(signal, "SIGXFSZ"):  # a too-large write raises OSError instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _safe_str(error):
    try:
        return str(error)[:REASON_LIMIT]
    except Exception:
        return f"<{type(error).__name__} that cannot be printed>"


def _student_frame(error):
    """``(cell 5, line 3, in q_sample)`` for the innermost frame of the student's code."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith("<cell ")]
    if not frames:
        return "", False
    frame = frames[-1]
    innermost = traceback.extract_tb(error.__traceback__)[-1].filename.startswith("<cell ")
    return f" ({frame.filename[1:-1]}, line {frame.lineno}, in {frame.name})", innermost


def _run_check(check, namespace, memory_mb):
    """Run one check against the student's namespace; never raises."""
    import random

    import torch

    for name in check.uses:
        value = namespace.get(name)
        if value is None:
            return _result(check, "missing", f"function {name} not defined")
        if not callable(value):
            return _result(check, "missing", f"{name} is a {type(value).__name__}, not a function")
        module = getattr(value, "__module__", "submission")
        if module not in (None, "submission"):
            return _result(check, "missing", f"{name} is imported from {module}; implement it in the notebook")
    torch.manual_seed(0)
    random.seed(0)
    sys.stdout, sys.stderr = _OUTPUTS  # in case the previous check replaced them
    for stream in _OUTPUTS:
        stream.written = 0
    start = time.monotonic()
    try:
        check.fn(namespace)
        return _result(check, "passed", points=check.points, seconds=time.monotonic() - start)
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: nothing escapes
        seconds = time.monotonic() - start
        where, innermost = _student_frame(error)
        message = _safe_str(error)
        if isinstance(error, NotImplementedError):
            return _result(check, "not implemented", NOT_IMPLEMENTED + where, seconds=seconds)
        if isinstance(error, AssertionError) and not innermost:
            return _result(check, "failed", message or "assertion failed", seconds=seconds)
        if isinstance(error, SystemExit):
            reason = f"the code called sys.exit({error.code!r}){where}"
        elif isinstance(error, MemoryError) or (
                isinstance(error, RuntimeError) and "can't allocate memory" in message):
            reason = f"ran out of memory (the grader allows {memory_mb} MB){where}"
        else:
            reason = f"{type(error).__name__}{': ' + message if message else ''}{where}"
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return _result(check, "error", reason, seconds=seconds, traceback=details[-2000:])


def _exec_definitions(cells, namespace):
    """Run the kept statements one by one; a failing one becomes a note, not a crash."""
    notes = []
    for cell in cells:
        tree, _ = _parse_cell(cell["source"])
        for node in definitions(tree):
            code = compile(ast.Module(body=[node], type_ignores=[]), f"<{cell['label']}>", "exec")
            try:
                exec(code, namespace)
            except BaseException as error:
                line = cell["source"].split("\n")[node.lineno - 1].strip()[:80]
                notes.append(f"{cell['label']}, line {node.lineno}: `{line}` raised "
                             f"{type(error).__name__}: {_safe_str(error)}")
    return notes


def _worker(job_path, fd):
    """The worker process: import the checks, run the notebook's definitions, run each
    check, and send one JSON line per event over the pipe ``fd``."""
    os.set_inheritable(fd, False)
    channel = os.fdopen(fd, "w", encoding="utf-8")

    def send(**event):
        try:
            channel.write(json.dumps(event) + "\n")
            channel.flush()
        except (OSError, ValueError, TypeError):
            os._exit(3)  # the pipe is gone (or the student closed it): nothing left to do

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    _limit_resources(job["memory_mb"], job["file_mb"],
                     cpu_seconds=STARTUP_SECONDS + job["timeout"] * (len(job["checks"]) + 2))
    try:
        import torch

        checks = {check.name: check for check in load_checks(job["lesson"])}
        torch.set_num_threads(1)
    except BaseException as error:
        send(event="fatal", reason=f"{type(error).__name__}: {_safe_str(error)}")
        os._exit(1)
    send(event="imported")
    global _OUTPUTS
    _OUTPUTS = (_CappedOutput(sys.stdout, OUTPUT_LIMIT), _CappedOutput(sys.stderr, OUTPUT_LIMIT))
    sys.stdout, sys.stderr = _OUTPUTS
    module = types.ModuleType("submission")
    module.__dict__["__builtins__"] = builtins
    sys.modules["submission"] = module
    notes = _exec_definitions(job["cells"], module.__dict__)
    send(event="ready", notes=notes)
    for name in job["checks"]:
        send(event="start", check=name)
        send(event="result", **_run_check(checks[name], module.__dict__, job["memory_mb"]))
    send(event="done")
    os._exit(0)  # skip atexit handlers and non-daemon threads the student may have left


# --- 3. reporting ------------------------------------------------------------------------

def format_report(report):
    """The report as a plain-text table."""
    one_line = lambda text: " ".join(str(text).split())  # noqa: E731
    rows = [(r["name"], f"{r['points']}/{r['max_points']}", r["status"], one_line(r["reason"]))
            for r in report["checks"]]
    width = max([len("check")] + [len(row[0]) for row in rows])
    lines = [f"{report['submission']}: lesson {report['lesson']}"]
    lines += [f"  note: {one_line(note)}" for note in report["notes"]]
    lines.append(f"{'check':<{width}}  points  {'status':<15}  reason")
    for name, points, status, reason in rows:
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        lines.append(f"{name:<{width}}  {points:>6}  {status:<15}  {reason}".rstrip())
    lines.append(f"{'total':<{width}}  {str(report['total']) + '/' + str(report['max']):>6}")
    return "\n".join(lines)


def write_json(report, path):
    """Write the report to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"] and len(argv) == 3:
        _worker(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m lesson_lib.course.grader",
        description="Grade an exercise notebook: run the lesson's checks against the functions it "
                    "defines, in a separate process with time and memory limits.")
    parser.add_argument("submission", help="the student's .ipynb file")
    parser.add_argument("--lesson", help="lesson number, e.g. 01 (default: the notebook metadata, "
                        "else the number the file name starts with)")
    parser.add_argument("--json", dest="json_path", metavar="OUT.json", help="also write the report here")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per check (default 30)")
    parser.add_argument("--memory-mb", type=int, default=4096,
                        help=f"memory limit of the grading process in MB (default 4096, at least {MIN_MEMORY_MB})")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout:g}")
    if args.memory_mb < MIN_MEMORY_MB:
        parser.error(f"--memory-mb must be at least {MIN_MEMORY_MB} (torch alone needs about 600 MB), "
                     f"got {args.memory_mb}")
    if args.json_path and not Path(args.json_path).resolve().parent.is_dir():
        parser.error(f"--json: the folder of {args.json_path} does not exist")
    try:
        report = grade(args.submission, args.lesson, args.timeout, args.memory_mb)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except GraderError as error:
        print(f"grader error: {error}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json_path:
        write_json(report, args.json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
