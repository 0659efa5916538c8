"""The grading worker: the only process that runs a student's code.

Started by the grader inside the sandbox (:mod:`lesson_lib.course.sandbox`) as
``python -s -B -m lesson_lib.course.worker JOB.json``. It

1. lowers its CPU-time, file-size and core-dump limits, reads the job and imports torch, the
   lesson's checks and the library modules the exercise may build on (trusted code), then
   lowers its memory and process-count limits and closes the fence of
   :mod:`lesson_lib.course.box` (the references taken away, files, processes, signals and
   sockets refused);
2. runs the notebook's kept definitions (a failing one becomes a note);
3. for each check in the job, decodes the check's case (inputs the grader drew from this run's
   seed), runs the check's *probe* on the student's functions and sends back what they
   returned, as plain data (:mod:`lesson_lib.course.protocol`).

It decides nothing. Its messages go to its original stdout, one JSON line each; ``print`` and
anything the student writes to stdout go to stderr, which the grader drains and discards. A
student's code can write to the channel too, or replace anything in this process: that can
only make the answers wrong or the messages malformed, which costs the student the points.
"""

import ast
import builtins
import importlib
import io
import json
import os
import random
import signal
import sys
import time
import traceback
import types

from lesson_lib.course import box, notebook, protocol

OUTPUT_LIMIT = 1 << 20   # characters of print() output passed on per check
CONSTANT_SECONDS = 5     # for each computed top-level value the functions use


class _CappedOutput(io.TextIOBase):
    """Stands in for sys.stdout and sys.stderr: passes on the first ``limit`` characters
    written during a check and drops the rest."""

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


def _set_limit(name, value):
    try:
        import resource
    except ImportError:  # Windows: only the grader's wall-clock budget applies
        return
    which = getattr(resource, name, None)
    if which is None:
        return
    try:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass


def _address_space():
    """Bytes of address space this process uses now (torch maps a lot without touching it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _safe_str(error):
    try:
        return str(error)[:protocol.MAX_REASON // 2]
    except Exception:
        return f"<{type(error).__name__} that cannot be printed>"


def _student_frame(error):
    """``(cell 5, line 3, in q_sample)`` for the innermost frame of the student's code, and
    whether the error was raised in the student's code itself."""
    frames = traceback.extract_tb(error.__traceback__)
    theirs = [f for f in frames if f.filename.startswith("<cell ")]
    if not theirs:
        return "", False
    frame = theirs[-1]
    return f" ({frame.filename[1:-1]}, line {frame.lineno}, in {frame.name})", \
        frames[-1].filename.startswith("<cell ")


def _raised(error, memory_mb):
    """``(kind, reason)`` for an exception out of a probe (see protocol.RAISED_KINDS)."""
    where, innermost = _student_frame(error)
    message = _safe_str(error)
    if isinstance(error, NotImplementedError):
        return "not implemented", "not implemented yet" + where
    if isinstance(error, AssertionError) and not innermost:  # the probe's own assertion
        return "failed", message or "assertion failed"
    if isinstance(error, SystemExit):
        return "error", f"the code called sys.exit({_safe_str(error.code)}){where}"
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "allocate" in message):
        return "error", f"ran out of memory (the grader allows {memory_mb} MB){where}"
    return "error", f"{type(error).__name__}{': ' + message if message else ''}{where}"


class _ConstantTooSlow(BaseException):
    """A computed top-level value took longer than CONSTANT_SECONDS (a BaseException, so that a
    student's ``except Exception`` does not swallow it)."""


def _within_time_limit(code, namespace, seconds):
    """exec ``code``, stopped after ``seconds`` (SIGALRM; POSIX only, else without a limit)."""
    if not hasattr(signal, "setitimer"):
        exec(code, namespace)
        return

    def stop(signum, frame):
        raise _ConstantTooSlow()

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        exec(code, namespace)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _exec_definitions(cells, namespace, constants=()):
    """Run the kept statements one by one; a failing one becomes a note, not a crash. A computed
    value the functions use (``constants``, see :func:`lesson_lib.course.notebook.used_constants`)
    runs with a limit of CONSTANT_SECONDS, so that ``model = train(...)`` cannot take the time of
    every check."""
    notes, constants = [], set(constants)
    for cell in cells:
        try:
            tree, _, _ = notebook.parse_cell(cell["source"])
        except SyntaxError as error:
            notes.append(f"{cell['label']} could not be parsed: {error.msg}")
            continue
        for node in notebook.definitions(tree, constants):
            line = cell["source"].split("\n")[node.lineno - 1].strip()[:80]
            try:
                code = compile(ast.Module(body=[node], type_ignores=[]), f"<{cell['label']}>", "exec")
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and not notebook.is_literal(node):
                    _within_time_limit(code, namespace, CONSTANT_SECONDS)
                else:
                    exec(code, namespace)
            except _ConstantTooSlow:
                notes.append(f"{cell['label']}, line {node.lineno}: `{line}` took more than {CONSTANT_SECONDS} s "
                             f"and was not run; keep slow work out of the values your functions use")
            except BaseException as error:
                notes.append(f"{cell['label']}, line {node.lineno}: `{line}` raised "
                             f"{type(error).__name__}: {_safe_str(error)}")
    return notes


def _usable(check, namespace):
    """None if every function the check uses is the student's own, else why not."""
    for name in check.uses:
        value = namespace.get(name)
        if value is None:
            return f"function {name} not defined"
        if not callable(value):
            return f"{name} is a {type(value).__name__}, not a function"
        module = getattr(value, "__module__", "submission")
        if module not in (None, "submission"):
            return f"{name} is imported from {module}; implement it in the notebook"
    return None


def main(job_path):
    channel_fd = os.dup(1)
    os.dup2(2, 1)  # print() goes to stderr; the channel is ours
    write, dumps = os.write, json.dumps

    def send(event, **fields):
        data = (dumps({"event": event, **fields}, allow_nan=False) + "\n").encode("utf-8")
        try:
            while data:
                data = data[write(channel_fd, data):]
        except OSError:
            os._exit(3)  # the grader is gone: nothing left to do

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    _set_limit("RLIMIT_CPU", int(job["cpu_seconds"]))
    _set_limit("RLIMIT_FSIZE", job["file_mb"] << 20)
    _set_limit("RLIMIT_CORE", 0)
    if hasattr(signal, "SIGXFSZ"):  # a too-large write raises OSError instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        import torch

        from lesson_lib.course.checks import load_checks
        checks = {check.name: check for check in load_checks(job["lesson"])}
        lesson = importlib.import_module(f"lesson_lib.course.checks.lesson{job['lesson']}")
        for name in getattr(lesson, "WORKER_MODULES", ()):
            importlib.import_module(name)
        torch.set_num_threads(1)
    except BaseException as error:  # the grader reports "could not start" with this line
        os.write(2, f"worker could not start: {type(error).__name__}: {_safe_str(error)}\n".encode())
        os._exit(1)
    _set_limit("RLIMIT_AS", _address_space() + (job["memory_mb"] << 20))
    _set_limit("RLIMIT_NPROC", job["processes"])
    box.close(os.getcwd(), hidden=getattr(lesson, "HIDDEN", ()))
    send("imported")
    outputs = (_CappedOutput(sys.stdout, OUTPUT_LIMIT), _CappedOutput(sys.stderr, OUTPUT_LIMIT))
    sys.stdout, sys.stderr = outputs
    module = types.ModuleType("submission")
    module.__dict__["__builtins__"] = builtins
    sys.modules["submission"] = module
    notes = _exec_definitions(job["cells"], module.__dict__, job.get("constants", ()))
    send("ready", notes=[n[:protocol.MAX_REASON] for n in notes[:protocol.MAX_NOTES]])
    for item in job["checks"]:
        name = item["name"]
        send("start", check=name)
        sys.stdout, sys.stderr = outputs
        for stream in outputs:
            stream.written = 0
        start = time.monotonic()
        problem = _usable(checks[name], module.__dict__)
        if problem:
            send("raised", check=name, kind="missing", reason=problem, traceback="", seconds=0.0)
            continue
        try:
            case = protocol.decode_value(item["case"])
            torch.manual_seed(item["seed"])
            random.seed(item["seed"])
            value = protocol.encode_value(checks[name].probe(module.__dict__, case))
            send("answer", check=name, value=value, seconds=time.monotonic() - start)
        except BaseException as error:  # SystemExit and KeyboardInterrupt too: nothing escapes
            kind, reason = _raised(error, job["memory_mb"])
            details = "" if kind in ("not implemented", "failed") else "".join(
                traceback.format_exception(type(error), error, error.__traceback__))
            send("raised", check=name, kind=kind, reason=reason[:protocol.MAX_REASON],
                 traceback=details[-protocol.MAX_TRACEBACK:], seconds=time.monotonic() - start)
    send("done")
    os._exit(0)  # skip atexit handlers and non-daemon threads the student may have left


if __name__ == "__main__":
    main(sys.argv[1])
