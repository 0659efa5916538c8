"""The sandbox around a grading worker: bubblewrap where it works, process limits everywhere.

A worker runs a student's code, so it is started inside `bubblewrap <https://github.com/
containers/bubblewrap>`_ (``bwrap``, packaged by the major Linux distributions: ``apt install
bubblewrap``, ``dnf install bubblewrap``) when it is installed and can create namespaces.
The sandbox then has

* its own PID namespace (the worker is not pid 1; bwrap's init is), so when the sandbox
  ends every process in it ends too, even one that called ``setsid``, and ``--die-with-parent``
  ends the sandbox if the grader dies;
* no network (its own, empty network namespace), its own IPC and host name;
* a file system made only of the Python installation, the packages it needs and the
  ``lesson_lib`` package, all read-only, the job file (read-only), a fresh ``/dev`` and
  ``/proc``, and size-limited private ``/tmp`` and ``/dev/shm``; it sees no other submission,
  no report and none of the grader's files;
* no capabilities, a new session (no access to the grader's terminal), a minimal environment.

Inside, the worker lowers its own limits before it runs any student code (see
:mod:`lesson_lib.course.worker`): address space (which counts shared-memory mappings too),
CPU time, file size, no core dumps, and the number of processes. Without bwrap (macOS, a
container that forbids namespaces) only those limits apply, and :func:`protections` says so;
the grader prints and records it in every report.

The number of processes (``RLIMIT_NPROC``) is not enforced by Linux for root, so grade as an
ordinary user: :func:`protections` reports it as not in force when the grader runs as root.
"""

import functools
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent   # .../lesson_lib
JOB_INSIDE = "/job/job.json"                            # where the sandbox sees the job file
TMP_MB = 256                                            # size of the private /tmp
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
        "private size-limited /tmp and /dev/shm": sandboxed,
        "memory limit (RLIMIT_AS)": limits and sys.platform.startswith("linux"),
        "CPU-time limit": limits,
        "file-size limit": limits,
        "process-count limit": limits and os.geteuid() != 0 if posix else False,
        "process group killed at the end": posix,
        "wall-clock budget per submission": True,
    }


def _binds():
    """The read-only paths the worker needs: the Python installation, the site-packages that
    hold torch and numpy, and lesson_lib itself (only the package, not the folder around it)."""
    paths = {"/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/alternatives",
             sys.prefix, sys.base_prefix, sys.exec_prefix,
             str(Path(os.path.realpath(sys.executable)).parent.parent), str(PACKAGE_DIR)}
    for name in ("torch", "numpy"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            paths.add(str(Path(os.path.realpath(spec.origin)).parent.parent))
    real = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)} |
                  {p for p in paths if os.path.exists(p)}, key=lambda p: (p.count("/"), p))
    return [p for p in real if p != "/"]


def worker_env(workdir):
    """The worker's whole environment: nothing of the grader's (no secrets), one thread, no GPU."""
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "PYTHONPATH": str(PACKAGE_DIR.parent), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
            "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg", "MPLCONFIGDIR": workdir,
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def command(job_path, workdir, use_bwrap):
    """The command line that starts one worker on ``job_path``; with bwrap, inside a sandbox
    whose working directory is its private /tmp, else in ``workdir``."""
    worker = [sys.executable, "-s", "-B", "-m", "lesson_lib.course.worker"]
    if not use_bwrap:
        return worker + [str(job_path)], workdir, worker_env(workdir)
    argv = [use_bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox"]
    # bwrap mounts in order, later on top: the private /tmp first, then the read-only binds, so
    # that a course checked out or installed under /tmp (as CI may do) stays visible.
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(TMP_MB << 20), "--tmpfs", "/tmp",
             "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm"]
    for path in _binds():
        argv += ["--ro-bind", path, path]
    argv += ["--ro-bind", str(job_path), JOB_INSIDE, "--chdir", "/tmp"]
    return argv + ["--"] + worker + [JOB_INSIDE], workdir, worker_env("/tmp")


def start(job_path, workdir, use_bwrap, token):
    """Start a worker with its stdout (the result channel) and stderr as pipes; it leads its
    own process group, and ``token`` in its environment marks it and its children."""
    argv, cwd, env = command(job_path, workdir, use_bwrap)
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
