"""The sandbox around a grading worker: bubblewrap where it works, process limits everywhere.

A worker runs a student's code, so it is started inside `bubblewrap <https://github.com/
containers/bubblewrap>`_ (``bwrap``, packaged by the major Linux distributions: ``apt install
bubblewrap``, ``dnf install bubblewrap``) when it is installed and can create namespaces.
The sandbox then has

* its own PID namespace (the worker is not pid 1; bwrap's init is), so when the sandbox
  ends every process in it ends too, even one that called ``setsid``, and ``--die-with-parent``
  ends the sandbox if the grader dies;
* no network (its own, empty network namespace), its own IPC and host name;
* a file system made only of the Python installation, the packages it needs and the files of
  ``lesson_lib`` that the lesson's worker loads (:func:`worker_files`: the grading engine, the
  lesson's checks and the library modules the exercise may build on, never the references it
  is compared with), all read-only, the job file (read-only), a fresh ``/dev`` and ``/proc``,
  and size-limited private ``/tmp`` and ``/dev/shm``; it sees no other submission, no report,
  no solution and none of the grader's files;
* no capabilities, a new session (no access to the grader's terminal), a minimal environment.

Inside, the worker lowers its own limits before it runs any student code (see
:mod:`lesson_lib.course.worker`): address space (which counts shared-memory mappings too),
CPU time, file size, no core dumps, and the number of processes. Without bwrap (macOS, a
container that forbids namespaces) only those limits apply, and :func:`protections` says so;
the grader prints and records it in every report.

The number of processes (``RLIMIT_NPROC``) is not enforced by Linux for root, so grade as an
ordinary user: :func:`protections` reports it as not in force when the grader runs as root.
"""

import ast
import functools
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent   # .../lesson_lib
JOB_INSIDE = "/job/job.json"                            # where the sandbox sees the job file
WORK_INSIDE = "/submission"                             # the worker's own folder in the sandbox
TMP_MB = 256                                            # size of the private /tmp and of WORK_INSIDE
SHM_MB = 64                                             # size of the private /dev/shm


@functools.lru_cache(maxsize=None)
def bubblewrap():
    """The path of a working ``bwrap``, or None: it must be installed *and* able to create
    the namespaces the sandbox uses (some containers forbid that)."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    try:
        done = subprocess.run([path, "--unshare-all", "--die-with-parent", "--new-session",
                               "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if done.returncode == 0 else None


def protections(use_bwrap):
    """Which protections are in force for a worker, as ``{name: True/False}`` (stored in
    every report and printed with it)."""
    posix = hasattr(os, "setsid")
    try:
        import resource  # noqa: F401
        limits = True
    except ImportError:
        limits = False
    sandboxed = bool(use_bwrap)
    return {
        "bubblewrap sandbox": sandboxed,
        "own PID namespace (nothing outlives grading)": sandboxed,
        "no network": sandboxed,
        "read-only Python and lesson_lib": sandboxed,
        "no view of other files (submissions, reports, the grader's)": sandboxed,
        "private size-limited working folder, /tmp and /dev/shm": sandboxed,
        "memory limit (RLIMIT_AS)": limits and sys.platform.startswith("linux"),
        "CPU-time limit": limits,
        "file-size limit": limits,
        "process-count limit": limits and os.geteuid() != 0 if posix else False,
        "process group killed at the end": posix,
        "wall-clock budget per submission": True,
    }


def _binds():
    """The read-only paths the worker needs besides lesson_lib: the Python installation and the
    site-packages that hold torch and numpy."""
    paths = {"/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/alternatives",
             sys.prefix, sys.base_prefix, sys.exec_prefix,
             str(Path(os.path.realpath(sys.executable)).parent.parent)}
    for name in ("torch", "numpy"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            paths.add(str(Path(os.path.realpath(spec.origin)).parent.parent))
    real = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)} |
                  {p for p in paths if os.path.exists(p)}, key=lambda p: (p.count("/"), p))
    return [p for p in real if p != "/"]


ENGINE = ("lesson_lib", "lesson_lib.course", "lesson_lib.course.worker", "lesson_lib.course.box",
          "lesson_lib.course.notebook", "lesson_lib.course.protocol", "lesson_lib.course.checks")


def _module_file(name):
    relative = Path(*name.split(".")[1:])
    package = PACKAGE_DIR / relative / "__init__.py"
    return package if package.exists() else (PACKAGE_DIR / relative).with_suffix(".py")


def _top_level_imports(name, path):
    """The lesson_lib modules that module ``name`` imports at its top level (not inside functions:
    a judge's imports run in the grader, never in the worker)."""
    found, package = set(), name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names if a.name.split(".")[0] == "lesson_lib")
            elif isinstance(sub, ast.ImportFrom):
                base = importlib.util.resolve_name("." * sub.level + (sub.module or ""), package) \
                    if sub.level else sub.module or ""
                if base.split(".")[0] == "lesson_lib":
                    found.add(base)
                    found.update(f"{base}.{a.name}" for a in sub.names if _module_file(f"{base}.{a.name}").exists())
    return found


@functools.lru_cache(maxsize=None)
def worker_files(lesson):
    """The files of lesson_lib that a worker for ``lesson`` loads: the grading engine, the
    lesson's check module and its ``WORKER_MODULES``, with every lesson_lib module they import
    at top level and the packages above them. The sandbox holds these and no other."""
    checks = f"lesson_lib.course.checks.lesson{lesson}"
    todo = set(ENGINE) | {checks} | set(getattr(importlib.import_module(checks), "WORKER_MODULES", ()))
    done = set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        parts = name.split(".")
        todo.update(".".join(parts[:i]) for i in range(1, len(parts)))
        path = _module_file(name)
        if path.exists():
            todo.update(_top_level_imports(name, path) - done)
    return tuple(sorted(str(_module_file(name)) for name in done if _module_file(name).exists()))


def worker_env(workdir):
    """The worker's whole environment: nothing of the grader's (no secrets), one thread, no GPU."""
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "PYTHONPATH": str(PACKAGE_DIR.parent), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
            "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg", "MPLCONFIGDIR": workdir,
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def command(job_path, workdir, use_bwrap, lesson="01"):
    """The command line that starts one worker on ``job_path``; with bwrap, inside a sandbox
    whose working directory is its private WORK_INSIDE, else in ``workdir``."""
    worker = [os.path.abspath(sys.executable), "-s", "-B", "-m", "lesson_lib.course.worker"]
    if not use_bwrap:
        return worker + [str(job_path)], workdir, worker_env(workdir)
    argv = [use_bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox"]
    # bwrap mounts in order, later on top: the private /tmp first, then the read-only binds, so
    # that a course checked out or installed under /tmp (as CI may do) stays visible; then an
    # empty lesson_lib (it may sit inside a bound site-packages) with only the worker's files.
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(TMP_MB << 20), "--tmpfs", "/tmp",
             "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm"]
    for path in _binds():
        argv += ["--ro-bind", path, path]
    argv += ["--tmpfs", str(PACKAGE_DIR)]
    for path in worker_files(lesson):
        argv += ["--ro-bind", path, path]
    argv += ["--remount-ro", str(PACKAGE_DIR)]
    # the working folder is its own empty tmpfs, not /tmp: a course installed under /tmp has its
    # read-only mount points there, and a submission that walks its folder must find only its files
    argv += ["--size", str(TMP_MB << 20), "--tmpfs", WORK_INSIDE]
    argv += ["--ro-bind", str(job_path), JOB_INSIDE, "--chdir", WORK_INSIDE]
    return argv + ["--"] + worker + [JOB_INSIDE], workdir, worker_env(WORK_INSIDE)


def start(job_path, workdir, use_bwrap, token, lesson="01"):
    """Start a worker with its stdout (the result channel) and stderr as pipes; it leads its
    own process group, and ``token`` in its environment marks it and its children."""
    argv, cwd, env = command(job_path, workdir, use_bwrap, lesson)
    env["LESSON_LIB_WORKER"] = token
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def kill(proc, token=None):
    """End the worker and everything it started: its process group (with bwrap, killing the
    sandbox's monitor ends the whole PID namespace), and without bwrap also any process that
    still carries the worker's ``token`` in its environment (one that left the group)."""
    for _ in range(2):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
        if token:
            _kill_carrying(token)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _kill_carrying(token):
    needle = f"LESSON_LIB_WORKER={token}".encode()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read(1 << 20).split(b"\0"):
                    os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError):
            pass


class Strays:
    """Processes that a worker leaves behind, found and ended even when they left its process
    group and cleared their environment (so they no longer carry the worker's token).

    On Linux the grader becomes a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``): a
    process whose parent exits is handed to the grader instead of to init, so every process a
    worker started, however it detached, stays a descendant of the grader. :meth:`end` kills
    and reaps every child of the grader that was not there when this object was made.
    Elsewhere it does nothing (the sandbox's PID namespace, or the process group, must do)."""

    def __init__(self):
        self.before = set(_children()) if _adopt_orphans() else None

    def end(self):
        if self.before is None:
            return
        for _ in range(3):
            strays = [pid for pid in _children() if pid not in self.before]
            if not strays:
                return
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            for pid in strays:
                try:
                    os.waitpid(pid, 0)
                except OSError:
                    pass


@functools.lru_cache(maxsize=None)
def _adopt_orphans():
    """Make this process a child subreaper (Linux >= 3.4); True if it is one."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        PR_SET_CHILD_SUBREAPER = 36
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children():
    """The pids whose parent is this process, read from /proc/PID/stat."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[1]) == me:
                found.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return found
