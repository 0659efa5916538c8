"""The fence inside the grading worker: what a submission's code may reach once it runs.

The worker (:mod:`lesson_lib.course.worker`) first imports its own, trusted code: torch, the
lesson's checks and the library modules the exercise may build on (the check module's
``WORKER_MODULES``). Then, before any line of the submission runs, :func:`close` does three
things:

1. **The references are taken away.** Each name in the check module's ``HIDDEN`` (the
   functions and classes the judges compare the student's answers with, e.g.
   ``lesson_lib.diffusion.schedules.linear_beta_schedule``) is replaced, in every loaded
   lesson_lib module, by a stand-in that raises :class:`NotAvailableWhileGrading`; a module of
   lesson_lib that is not loaded yet imports as such a stand-in too. So a submission that
   imports, wraps, relabels or digs up the reference gets an error, not points.
2. **Python's audit hooks** (PEP 578) refuse, with ``PermissionError``:

   * reading files outside Python's installation, the worker's own folder and a few system
     places (``/usr``, ``/dev/null``, ``/proc/self``), and reading lesson_lib's source at all
     (no solutions, classmates' notebooks, reports, other processes' ``/proc`` entries, and
     no reference source to re-import);
   * writing, deleting, renaming or linking anything outside the worker's folder;
   * starting processes (``subprocess``, ``os.system``, fork, exec, spawn), sending signals,
     opening sockets and loading native code through ``ctypes``.

   Functions that have no audit event (``_posixsubprocess.fork_exec``, ``os.pidfd_open``,
   ``signal.pidfd_send_signal``) are removed from their modules.
3. Nothing else: the worker's own messages go to a file descriptor it opened before.

**What this is and is not.** In the bubblewrap sandbox (:mod:`lesson_lib.course.sandbox`) the
operating system already enforces the file system, process and network rules, and the sandbox
holds only the library files the lesson's worker loads; the hooks are a second fence. Without
bubblewrap they are the only one, and they stop the ordinary ways (``open``, ``shutil``,
``subprocess``, ``os.kill``, sockets). They are not a security boundary against a determined
attacker: Python code can change any Python object in its process, the hooks' helpers too.
docs/grading.md says exactly what holds with and without the sandbox.
"""

import gc
import importlib
import importlib.abc
import importlib.machinery
import os
import site
import sys
import sysconfig
import types

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))   # .../lesson_lib

# Read-only places every Python program may need (shared libraries, fonts, time zones, CPU facts).
SYSTEM_READABLE = ("/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime", "/etc/fonts",
                   "/etc/alternatives", "/dev/null", "/dev/urandom", "/dev/random", "/dev/zero",
                   "/proc/self", "/proc/thread-self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat",
                   "/sys/devices/system/cpu", "/sys/fs/cgroup")
WRITABLE_DEVICES = ("/dev/null",)

# Audit events that start processes, signal them, reach the network or load native code.
FORBIDDEN_EVENTS = frozenset({
    "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty", "os.startfile",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "webbrowser.open",
    "sqlite3.connect", "sqlite3.connect/handle", "dbm.open", "urllib.Request", "ftplib.connect",
    "smtplib.connect", "poplib.connect", "imaplib.open", "telnetlib.Telnet.open", "http.client.connect"})
FORBIDDEN_PREFIXES = ("socket.", "ctypes.", "_winapi.", "winreg.")

# Events whose first argument is a path that is read, and those that change the file system
# (with the indices of their path arguments).
READ_EVENTS = {"os.listdir": (0,), "os.scandir": (0,), "glob.glob": (0,), "glob.glob/2": (0,),
               "zipimport.zipimporter": (0,)}
WRITE_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
                "os.symlink": (0, 1), "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,),
                "os.lchown": (0,), "os.chflags": (0,), "os.lchflags": (0,), "os.truncate": (0,),
                "os.utime": (0,), "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,),
                "shutil.copyfile": (1,), "shutil.copymode": (1,), "shutil.copystat": (1,),
                "shutil.copytree": (1,), "shutil.move": (0, 1), "shutil.chown": (0,),
                "shutil.make_archive": (0,), "shutil.unpack_archive": (1,), "tempfile.mkstemp": (0,),
                "tempfile.mkdtemp": (0,)}
DIR_FD_INDEX = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2, "os.chmod": 2, "os.chown": 3,
                "os.utime": 3, "os.rename": 2, "os.link": 2, "os.symlink": 2, "shutil.rmtree": 1}
REMOVED = (("_posixsubprocess", "fork_exec"), ("os", "pidfd_open"), ("signal", "pidfd_send_signal"),
           ("os", "register_at_fork"))


class NotAvailableWhileGrading(RuntimeError):
    """A part of lesson_lib the grader takes away while a submission runs (see the module docstring)."""


def _stand_in(dotted, why):
    """A function that raises, standing for ``dotted``: usable as a function or a class name."""
    message = f"{dotted} is not available while grading: {why}"

    def hidden(*args, **kwargs):
        raise NotAvailableWhileGrading(message)

    hidden.__qualname__ = hidden.__name__ = dotted.rsplit(".", 1)[-1]
    hidden.__module__ = dotted.rpartition(".")[0]
    hidden.__doc__ = message
    return hidden


class _StandInModule(types.ModuleType):
    """A lesson_lib module that is not loaded in the worker: every attribute is a stand-in."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stand_in(f"{self.__name__}.{name}", NOT_LOADED)


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports every lesson_lib module that is not loaded yet as a :class:`_StandInModule`."""

    def find_spec(self, name, path=None, target=None):
        if name == "lesson_lib" or name.startswith("lesson_lib."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


NOT_LOADED = ("the grader of this lesson does not load that module (it holds what the exercises are "
              "compared with, or nothing they need): write the graded functions without it")
REFERENCE = "it is what this exercise is compared with: write your own"


def hide(names, why=REFERENCE):
    """Take each dotted name away from the submission: a function or class
    (``"lesson_lib.diffusion.schedules.linear_beta_schedule"``), or a whole module
    (``"lesson_lib.diffusion.forward"``: the module and everything defined in it). Every
    reference to it in a loaded lesson_lib module is replaced by a stand-in, then the garbage
    collector frees the originals. Returns the names that could not be found."""
    missing = []
    for dotted in names:
        if dotted in sys.modules:
            module = sys.modules[dotted]
            sys.modules[dotted] = stand_in = _StandInModule(dotted)
            stand_in.__path__ = []
            _replace(lambda value: value is module, stand_in)
            _replace(lambda value: getattr(value, "__module__", None) == dotted, None, why)
        else:
            module_name, _, attribute = dotted.rpartition(".")
            original = getattr(sys.modules.get(module_name), attribute, None)
            if original is None:
                missing.append(dotted)
                continue
            _replace(lambda value: value is original, None, why)
        module = original = None
    gc.collect()
    return missing


def _replace(is_target, stand_in, why=""):
    """In every loaded lesson_lib module, replace each global for which ``is_target`` holds by
    ``stand_in`` (None: a raising stand-in named after what it replaces)."""
    for name, loaded in list(sys.modules.items()):
        if name.split(".")[0] != "lesson_lib" or loaded is None or isinstance(loaded, _StandInModule):
            continue
        for key, value in list(vars(loaded).items()):
            if not key.startswith("__") and is_target(value):
                owner = getattr(value, "__module__", None) or name
                setattr(loaded, key, stand_in if stand_in is not None else
                        _stand_in(f"{owner}.{getattr(value, '__name__', key)}", why))


def _roots(paths):
    found = set()
    for path in paths:
        if path and os.path.exists(path):
            found.add(os.path.realpath(path).rstrip("/") or "/")
    return tuple(sorted(found))


def readable_roots():
    """Where a submission may read: Python's installation and packages, and :data:`SYSTEM_READABLE`."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, getattr(sys, "base_exec_prefix", ""),
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))]
    paths += [sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    try:
        paths += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:  # a virtual environment's old site module
        pass
    for name in ("torch", "numpy"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            paths.append(os.path.dirname(os.path.dirname(os.path.realpath(module.__file__))))
    return _roots(paths + list(SYSTEM_READABLE))


def _within(path, roots):
    return any(path == root or path.startswith(root + "/") or root == "/" for root in roots)


def _make_hook(workdir, readable, package):
    """The audit hook; everything it needs is bound now, as default arguments."""

    def hook(event, args, _forbidden=FORBIDDEN_EVENTS, _prefixes=FORBIDDEN_PREFIXES, _reads=READ_EVENTS,
             _writes=WRITE_EVENTS, _dir_fds=DIR_FD_INDEX, _workdir=workdir, _readable=readable,
             _package=package, _writable_devices=WRITABLE_DEVICES, _realpath=os.path.realpath,
             _fsdecode=os.fsdecode, _readlink=os.readlink, _join=os.path.join, _isinstance=isinstance,
             _int=int, _str=str, _within=_within, _error=PermissionError):
        if event in _forbidden or event.startswith(_prefixes):
            raise _error(f"the grader does not allow {event} while grading a submission")
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (_isinstance(mode, _str) and any(c in mode for c in "wax+")) or \
                (mode is None and _isinstance(flags, _int) and flags & 0o3103)  # O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND
            paths = [(path, None)]
        elif event == "compile":
            filename = args[1] if len(args) > 1 else None
            if _isinstance(filename, (_str, bytes)) and _fsdecode(filename).startswith(_package + "/"):
                raise _error("the grader does not allow compiling lesson_lib's source while grading")
            return
        elif event in _reads:
            writing, paths = False, [(args[i], None) for i in _reads[event] if i < len(args)]
        elif event in _writes:
            index = _dir_fds.get(event)
            dir_fd = args[index] if index is not None and index < len(args) else None
            writing, paths = True, [(args[i], dir_fd) for i in _writes[event] if i < len(args)]
        else:
            return
        for path, dir_fd in paths:
            if path is None or _isinstance(path, _int):
                continue                       # an open file descriptor: it was checked when opened
            try:
                text = _fsdecode(path)
                if _isinstance(dir_fd, _int) and not text.startswith("/"):
                    text = _join(_readlink(f"/proc/self/fd/{dir_fd}"), text)
                real = _realpath(text)
            except (TypeError, ValueError, OSError):
                raise _error(f"the grader does not allow {event} on {path!r} while grading") from None
            if _within(real, (_package,)):
                raise _error(f"the grader does not allow reading or changing lesson_lib's files ({event})")
            if _within(real, (_workdir,)) or real in _writable_devices:
                continue
            if writing or not _within(real, _readable):
                raise _error(f"the grader does not allow {event} on {real} while grading: a submission "
                             f"may only {'write' if writing else 'read'} its own working folder")

    return hook


def close(workdir, hidden=()):
    """Fence the process in (see the module docstring) before the submission's code runs:
    ``hidden`` names the references to take away; ``workdir`` is the only writable folder."""
    hide(hidden)
    sys.meta_path.insert(0, _StandInFinder())
    for module_name, attribute in REMOVED:
        module = sys.modules.get(module_name) or (importlib.import_module(module_name)
                                                  if module_name in ("os", "signal") else None)
        if module is not None and hasattr(module, attribute):
            delattr(module, attribute)
    workdir = os.path.realpath(workdir)
    sys.addaudithook(_make_hook(workdir, readable_roots(), PACKAGE_DIR))
