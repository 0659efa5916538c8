"""The grader under hostile and broken submissions (the threat model is in docs/grading.md).

Most submissions are graded together, as a class would be, by one run of the batch command
(each submission in its own fresh sandbox, a fixed seed so that the run is reproducible); the
tests then look at what each one got, and at what did *not* happen: no process survives,
nothing outside the sandbox changed, the honest students in the same batch keep their true
scores, and the grader's own memory and time stay bounded. The earlier hostile cases (syntax
error, exception on import, infinite loop, sys.exit, os._exit, deleting files, huge output,
huge memory) are in tests/test_grader.py.
"""

import csv
import hashlib
import io
import json
import os
import resource
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from lesson_lib.course import batch, grader, notebook, protocol, sandbox

REPO = Path(__file__).resolve().parent.parent
COURSE = REPO / "lesson_lib" / "course"
# Every test runs with the sandbox where bubblewrap works and without it everywhere else (the
# worker's audit hooks, lesson_lib/course/box.py, must then hold the line); GRADER_TESTS_WITHOUT_SANDBOX=1
# runs them without the sandbox on a machine that has it. CI runs both.
SANDBOXED = bool(sandbox.bubblewrap()) and not os.environ.get("GRADER_TESTS_WITHOUT_SANDBOX")
MARKER = f"lesson-lib-hostile-{secrets.token_hex(4)}"
TIMEOUT = 5

FORGED = (b'{"event": "imported"}\n{"event": "ready", "notes": []}\n'
          b'{"event": "start", "check": "linear_betas_matches_reference"}\n'
          b'{"event": "raised", "check": "linear_betas_matches_reference", "kind": "passed", "reason": "", '
          b'"traceback": "", "seconds": 0}\n')
WRITE_TO_CHANNEL = """
import os
def _to_every_fd(data):
    for fd in range(3, 40):
        try:
            os.write(fd, data)
        except OSError:
            pass
"""

# name -> (lesson of the base exercise or None for no base, the hostile cells)
SUBMISSIONS = {
    # 1. points without work
    "forged_messages": ("01", [WRITE_TO_CHANNEL + f"class Forge:\n    _to_every_fd({FORGED!r})"]),
    "patched_checks": ("01", ["""
        import torch
        import lesson_lib.course.checks as checks
        import lesson_lib.course.worker as worker
        class Patch:
            for check in checks._REGISTRY.get("lesson_lib.course.checks.lesson01", []):
                object.__setattr__(check, "judge", lambda case, answer: None)
                object.__setattr__(check, "probe", lambda ns, case: None)
            worker._usable = lambda check, ns: None
            torch.allclose = lambda *a, **k: True
            torch.equal = lambda *a, **k: True
            torch.Tensor.__eq__ = lambda self, other: True
            try:
                with open(checks.__file__.replace("__init__", "lesson01"), "a") as f:
                    f.write("\\n# patched")
            except OSError:
                pass
        """]),
    "tensor_subclass": ("01", ["""
        import torch
        class Liar(torch.Tensor):
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                return super().__torch_function__(func, types, args, kwargs or {})
            def __eq__(self, other):
                return True
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            return torch.zeros(T, dtype=torch.float64).as_subclass(Liar)
        """]),
    "frame_reader": ("01", ["""
        import sys
        import torch
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            frame = sys._getframe(1)
            while frame is not None:
                for value in list(frame.f_locals.values()):
                    if isinstance(value, torch.Tensor) and value.shape == (T,) and value.dtype == torch.float64:
                        return value.clone()  # only the inputs live here, never the expected answer
                frame = frame.f_back
            return torch.zeros(T, dtype=torch.float64)
        """]),
    "gc_scan": ("01", ["""
        import gc
        import torch
        def cosine_betas(T, s=0.008, max_beta=0.999):
            for obj in gc.get_objects():
                if isinstance(obj, torch.Tensor) and obj.shape == (T,) and obj.dtype == torch.float64:
                    return obj.clone()
            return torch.zeros(T, dtype=torch.float64)
        """]),
    "lookup_table": ("01", ["""
        import torch
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            if T in (1000, 10, 1, 50):  # the inputs a fixed check would use
                return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
            return torch.zeros(T, dtype=torch.float64)
        """]),
    "uses_reference": ("01", ["""
        from lesson_lib.diffusion.schedules import linear_beta_schedule as reference
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            return reference(T, beta_start, beta_end)
        """]),
    "references": ("01", ["""
        import glob, importlib, json, sys
        from lesson_lib.diffusion.schedules import cosine_beta_schedule as _schedule
        class linear_betas:   # relabelled: a class defined here whose construction returns the reference's answer
            def __new__(cls, *args, **kwargs):
                return importlib.import_module("lesson_lib.diffusion.schedules").linear_beta_schedule(*args, **kwargs)
        def _helper(T, s, max_beta):   # called through an ungraded helper
            return _schedule(T, s, max_beta)
        def cosine_betas(T, s=0.008, max_beta=0.999):
            return _helper(T, s, max_beta)
        def alpha_bars_from_betas(betas):   # the reference's source, read and run
            for root in sys.path + [REPO]:
                for path in glob.glob(root + "/lesson_lib/diffusion/schedules.py"):
                    namespace = {}
                    exec(open(path).read(), namespace)
                    return namespace["NoiseSchedule"](betas).alpha_bars
        def q_sample(x0, t, alpha_bars, eps):   # the published solution, read and run
            for cell in json.load(open(SOLUTION))["cells"]:
                source = "".join(cell["source"])
                if "def q_sample" in source:
                    namespace = {"torch": __import__("torch")}
                    exec(source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""), namespace)
                    return namespace["q_sample"](x0, t, alpha_bars, eps)
        """]),
    "nan_answers": ("01", ["""
        import torch
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            return torch.full((T,), float("nan"), dtype=torch.float64)
        def q_sample(x0, t, alpha_bars, eps):
            return torch.full_like(x0, float("nan"))
        def signal_left(t, T=1000):
            return {"linear": float("nan"), "cosine": float("nan"), "more": "cosine" if 5 < t < 900 else "linear"}
        """]),
    "empty_probes": ("01", ["""
        import lesson_lib.course.checks as checks
        class Empty:   # every probe in this worker answers an empty list, which zip() would pass
            for check in checks._REGISTRY.get("lesson_lib.course.checks.lesson01", []):
                object.__setattr__(check, "probe", lambda ns, case: [])
        """]),
    "kills_grader": ("01", ["""
        import os, signal
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            os.kill(os.getppid(), signal.SIGKILL)
        def cosine_betas(T, s=0.008, max_beta=0.999):
            os.killpg(os.getpgid(0), signal.SIGKILL)
        """]),
    "daemon": ("01", [f"""
        import os, subprocess
        class Daemon:   # an empty environment and a new session: no token, no process group
            for argv in (["/bin/sh", "-c", "sleep 3; echo {{}} > " + OUT + "/01_honest.json; sleep 60; echo {MARKER}"],):
                try:
                    subprocess.Popen(argv, start_new_session=True, env={{}}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                except OSError:
                    pass
        """]),
    # 2. harm beyond the submission
    "survivor": ("01", [f"""
        import os, subprocess, sys
        class Spawn:
            for env in (None, {{}}):
                subprocess.Popen(["/bin/sh", "-c", "sleep 60; echo {MARKER}"], start_new_session=True, env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        """]),
    "vandal": ("01", ["""
        import glob, os, shutil, tempfile
        class Vandal:
            for path in [PRECIOUS, FOLDER, OUT] + glob.glob(tempfile.gettempdir() + "/lesson_lib_grader_*"):
                try:
                    os.remove(path) if os.path.isfile(path) else shutil.rmtree(path)
                except OSError:
                    pass
        """]),
    "planter": ("01", ["""
        import glob, os, sys, tempfile
        class Plant:
            for folder in [os.getcwd(), FOLDER, OUT, os.path.dirname(PRECIOUS)] + sys.path[:3]:
                for name in ("torch.py", "json.py", "nbformat.py"):
                    try:
                        with open(os.path.join(folder, name), "w") as f:
                            f.write("raise SystemExit('planted')\\n")
                    except OSError:
                        pass
            for folder in glob.glob(tempfile.gettempdir() + "/lesson_lib_grader_*") + [OUT]:
                for name in ("job.json", ".01_honest.json.tmp", "summary.csv"):
                    try:
                        os.symlink(PRECIOUS, os.path.join(folder, name))
                    except OSError:
                        pass
        """]),
    "package_tamper": ("01", ["""
        import os, torch
        import lesson_lib.course.checks as checks
        class Tamper:
            folder = os.path.dirname(checks.__file__)
            for path, text in [(os.path.join(folder, "lesson01.py"), "\\nraise SystemExit"),
                               (os.path.join(folder, "lesson99.py"), "x = 1"),
                               (torch.__file__, "\\nraise SystemExit")]:
                try:
                    with open(path, "a") as f:
                        f.write(text)
                except OSError:
                    pass
        """]),
    "classmate": ("01", ["""
        import glob, json
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            for path in glob.glob(FOLDER + "/*.ipynb"):
                for cell in json.load(open(path))["cells"]:
                    source = "".join(cell["source"])
                    if "def linear_betas" in source and "NotImplementedError" not in source:
                        namespace = {}
                        exec(source, namespace)
                        return namespace["linear_betas"](T, beta_start, beta_end)
            raise NotImplementedError
        """]),
    # 3. the parent must not crash, hang or grow
    "flood": ("01", [WRITE_TO_CHANNEL + textwrap.dedent("""
        import torch
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            for _ in range(48):
                _to_every_fd(b"x" * (1 << 20))
            return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        """)]),
    "deep_message": ("01", [WRITE_TO_CHANNEL + textwrap.dedent("""
        def cosine_betas(T, s=0.008, max_beta=0.999):
            _to_every_fd(b"[" * 1000000 + b"\\n")
        """)]),
    "trickle": ("01", [WRITE_TO_CHANNEL + textwrap.dedent("""
        import time
        def alpha_bars_from_betas(betas):
            while True:  # a byte at a time, never a whole message: no deadline is extended
                _to_every_fd(b" ")
                time.sleep(0.05)
        """)]),
    "nan_message": ("01", [WRITE_TO_CHANNEL + textwrap.dedent("""
        def alpha_bars_from_betas(betas):
            _to_every_fd(b'{"event": "answer", "check": "alpha_bars_are_cumulative_product", "value": null, '
                         b'"seconds": NaN}\\n')
            raise NotImplementedError
        """)]),
    "pathological": (None, ["x = " + "(" * 100000 + ")" * 100000, "y = " + "1 + " * 200000 + "1",
                            "z = " + "[" * 1000000, "def linear_betas(T:\n    pass"]),
    "odd_metadata": ("01", []),
    "mismatched_lesson": ("01", []),
    # 4. limits
    "shared_memory": ("01", ["""
        import mmap, os
        def alpha_bars_from_betas(betas):
            for folder in ("/dev/shm", "/tmp"):
                with open(os.path.join(folder, "big"), "wb") as f:
                    for _ in range(400):
                        f.write(b"x" * (1 << 20))  # 400 MB: more than the private tmpfs holds
        def posterior_mean_variance(x0, x_t, t, betas, alpha_bars):
            m = mmap.mmap(-1, 64 << 30, flags=mmap.MAP_SHARED)  # 64 GB of shared memory
            m[:1] = b"x"
        """]),
    "many_processes": ("01", [f"""
        import subprocess
        def q_sample(x0, t, alpha_bars, eps):
            for _ in range(40):
                subprocess.Popen(["/bin/sh", "-c", "sleep 60; echo {MARKER}"], start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            raise RuntimeError("started 40 processes")
        """]),
    # 5. misleading output
    "escapes": ("01", ["""
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            raise RuntimeError("\\x1b[2J\\x1b[H\\rlinear_betas_matches_reference  1/1  passed\\ntotal 10/10\\x07")
        """]),
    # 6. honest students must not lose points
    "computed_constant": ("s01", ["""
        import math
        import torch
        SQRT = torch.sqrt                           # computed top-level values the functions use
        HALF_PI = math.pi / 2
        def q_sample(x0, t, alpha_bars, eps):
            a = alpha_bars[t].to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))
            return SQRT(a) * x0 + SQRT(1 - a) * eps
        def cosine_betas(T, s=0.008, max_beta=0.999):
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * HALF_PI) ** 2
            return (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        """]),
    "help_syntax": ("s01", ["torch.acos?\n??torch.cumprod\nimport torch"]),
    "tensor_numbers": ("s01", ["""
        def signal_left(t, T=1000):
            linear = alpha_bars_from_betas(linear_betas(T))[t]       # 0-dim tensors, not .item()
            cosine = alpha_bars_from_betas(cosine_betas(T))[t]
            return {"linear": linear, "cosine": cosine, "more": "linear" if linear > cosine else "cosine"}
        """]),
    "numpy_numbers": ("s06", ["""
        import numpy as np
        def lerp_midpoint_norm(d):
            return np.sqrt(d / 2)                     # a numpy float64
        """]),
    "exact_tails": ("s08", ["""
        import math
        import torch
        def discretized_log_likelihood(x, mean, log_variance):   # exact Phi through erfc, no floor
            Phi = lambda z: 0.5 * torch.special.erfc(-z / math.sqrt(2))
            half = 1.0 / 255
            inv_std = torch.exp(-0.5 * log_variance)
            upper, lower = (x - mean + half) * inv_std, (x - mean - half) * inv_std
            right = lower > 0
            mass = torch.where(right, Phi(-lower) - Phi(-upper), Phi(upper) - Phi(lower))
            middle = torch.log(mass)
            low_edge, high_edge = torch.special.log_ndtr(upper), torch.special.log_ndtr(-lower)
            return torch.where(x < -1 + half, low_edge, torch.where(x > 1 - half, high_edge, middle))
        """]),
    "cell_magic": ("01", ["""
        %%time
        import torch
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        """]),
    "continuation": ("01", ["""
        %matplotlib inline
        import math
        import torch
        def cosine_betas(T, s=0.008, max_beta=0.999):
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
            assert bool((betas
        != 0).all())
            return betas
        """]),
    "parse_errors": (None, ["import torch\ndef linear_betas(T, beta_start=1e-4, beta_end=0.02):\n"
                            "    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)",
                            "def cosine_betas(T:\n    pass", "def q_sample(x0,:\n    pass"]),
    "library_sampler": ("05", ["""
        import torch
        from lesson_lib.diffusion.denoiser import Denoiser
        from lesson_lib.diffusion.guidance import ClassifierGuidance
        from lesson_lib.diffusion.sampling import sample
        from lesson_lib.diffusion.schedules import NoiseSchedule
        from lesson_lib.diffusion.steps import ddim_step
        def guided_ddim_sample(eps_model, classifier, x_T, y, timesteps, alpha_bars, scale):
            # the library's guided sampler, on a schedule rebuilt from the alpha-bars given
            schedule = NoiseSchedule(1 - alpha_bars / torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]]))
            denoise = ClassifierGuidance(Denoiser(eps_model, schedule), classifier, scale)
            return sample(denoise, schedule, x_T, timesteps, ddim_step, stochastic=False, cond={"y": y},
                          progress=False)
        """]),
    "library_inversion": ("06", ["""
        import torch
        from lesson_lib.diffusion.denoiser import Denoiser
        from lesson_lib.diffusion.inversion import ddim_invert
        from lesson_lib.diffusion.schedules import NoiseSchedule
        def ddim_encode(eps_model, x0, timesteps, alpha_bars):
            schedule = NoiseSchedule(1 - alpha_bars / torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]]))
            return ddim_invert(Denoiser(eps_model, schedule), schedule, x0, timesteps)
        """]),
    "float_subclass": ("02", ["""
        import torch
        class Loss(float):
            def __eq__(self, other):
                return True
            def __sub__(self, other):
                return Loss(0.0)
            def __abs__(self):
                return Loss(0.0)
        def training_step(model, optimizer, x0, alpha_bars):
            model(x0, torch.zeros(x0.shape[0], dtype=torch.long))
            return Loss(0.0)
        """]),
}


def BATCH_ONLY(folder):  # noqa: N802  (a table, built when called)
    """Submissions that test the batch itself, by the path they are filed under: names a
    spreadsheet would run, one folder per student, two long near-identical notebooks (300 KB
    of code each, which once stalled the similarity step for hours) and outputs of 33 MB."""
    solution = nbformat.read(str(next((REPO / "solutions").glob("01_*.ipynb"))), as_version=4)
    exercise = nbformat.read(str(next((REPO / "exercises").glob("01_*.ipynb"))), as_version=4)
    long_code = "    _ = " + repr("x" * 300_000) + "\n"
    padded = _notebook("s01", [f"def cosine_betas(T, s=0.008, max_beta=0.999):\n{long_code}    return x\n"], "01")
    outputs = _notebook("s01", [], "01")
    outputs.cells[-1].outputs = [nbformat.v4.new_output("stream", text="y" * (33 << 20))]
    return {"=HYPERLINK(1).ipynb": solution, "@SUM.ipynb": exercise, "alice/01_forward_process.ipynb": solution,
            "01_long_a.ipynb": padded, "01_long_b.ipynb": padded, "01_big_outputs.ipynb": outputs}


def _notebook(base, cells, lesson):
    """The exercise notebook of lesson ``base`` ("s01": the solution notebook; None: an empty one)
    with ``cells`` appended."""
    folder, base = ("solutions", base[1:]) if base and base.startswith("s") else ("exercises", base)
    nb = nbformat.read(str(next((REPO / folder).glob(f"{base}_*.ipynb"))), as_version=4) if base \
        else nbformat.v4.new_notebook(metadata={"lesson_lib": {"lesson": lesson}})
    nb.cells += [nbformat.v4.new_code_cell(textwrap.dedent(source).strip("\n")) for source in cells]
    return nb


def _snapshot(*folders):
    """Every file under ``folders`` with a hash of its content (and the symbolic links)."""
    state = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                path = os.path.join(root, name)
                state[path] = "link" if os.path.islink(path) else hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return state


PACKAGE_FILES = [COURSE / "checks" / "__init__.py", COURSE / "checks" / "lesson01.py", COURSE / "worker.py"]


def _snapshot_files(*paths):
    """The files the package_tamper and patched_checks submissions try to change (and torch's
    own ``__init__.py``), hashed."""
    import torch

    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in [*paths, torch.__file__]}


def _marked_processes():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if MARKER.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the whole class once; returns what the tests look at."""
    root = tmp_path_factory.mktemp("class")
    folder, out, private = root / "submissions", root / "reports", root / "instructor"
    for path in (folder, out, private):
        path.mkdir()
    precious = private / "precious.txt"
    precious.write_text("instructor data")
    solution = next((REPO / "solutions").glob("01_*.ipynb"))
    constants = (f"FOLDER = {str(folder)!r}\nOUT = {str(out)!r}\nPRECIOUS = {str(precious)!r}\n"
                 f"REPO = {str(REPO)!r}\nSOLUTION = {str(solution)!r}")
    for name, (base, cells) in SUBMISSIONS.items():
        lesson = LESSONS[name]
        nb = _notebook(base, [constants] + cells, lesson)
        if name == "odd_metadata":
            nb.metadata["lesson_lib"] = {"lesson": {"nested": [1, 2, {"deep": "9" * 1000}]}}
        if name == "mismatched_lesson":
            nb.metadata["lesson_lib"] = {"lesson": "02"}
        nbformat.write(nb, str(folder / f"{lesson}_{name}.ipynb"))
    (folder / "01_honest.ipynb").write_bytes(next((REPO / "solutions").glob("01_*.ipynb")).read_bytes())
    (folder / "01_copycat.ipynb").write_bytes((folder / "01_honest.ipynb").read_bytes())
    (folder / "01_untouched.ipynb").write_bytes(next((REPO / "exercises").glob("01_*.ipynb")).read_bytes())
    (folder / "01_not_a_notebook.ipynb").write_text('{"cells": "nope"}')
    (folder / "01_huge.ipynb").write_bytes(b'{"cells": [], "padding": "' + b"x" * (33 << 20) + b'"}')
    for name, nb in BATCH_ONLY(folder).items():
        (folder / name).parent.mkdir(exist_ok=True)
        nbformat.write(nb, str(folder / name))
    outside = _snapshot(folder, private) | _snapshot_files(*PACKAGE_FILES)
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    rows = batch.grade_folder(folder, out, timeout=TIMEOUT, seed=12345, sandbox="auto" if SANDBOXED else "off")
    seconds = time.monotonic() - start
    time.sleep(3.5)  # long enough for the daemon to rewrite a report, if it were alive
    reports = {path.stem: json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
               for path in out.glob("*.json")}
    return {"rows": rows, "reports": reports, "out": out, "folder": folder, "precious": precious,
            "outside_before": outside, "outside_after": _snapshot(folder, private) | _snapshot_files(*PACKAGE_FILES),
            "seconds": seconds, "memory_growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before,
            "survivors": _marked_processes()}


LESSONS = {name: "02" if name == "float_subclass" else (base or "01").lstrip("s") for name, (base, _) in
           SUBMISSIONS.items()}


def report(graded, name):
    return graded["reports"][f"{LESSONS.get(name, '01')}_{name}"]


def results(graded, name):
    return {r["name"]: r for r in report(graded, name)["checks"]}


# --- every submission ends with a score and a reason; honest ones keep their score -------

def test_every_submission_has_a_report_with_a_reason(graded):
    assert len(graded["rows"]) == len(graded["reports"]) == len(SUBMISSIONS) + 5 + len(BATCH_ONLY(None)) >= 40
    for name, one in graded["reports"].items():
        assert one["max"] in (10, 12) and 0 <= one["total"] <= one["max"], name
        for result in one["checks"]:
            assert result["status"] == "passed" or result["reason"], (name, result)
    assert (graded["out"] / "summary.csv").read_text().count("\n") == len(graded["rows"]) + 1


def test_honest_students_keep_their_true_scores(graded):
    assert report(graded, "honest")["total"] == report(graded, "copycat")["total"] == 12
    assert report(graded, "untouched")["total"] == 0
    assert all(r["status"] == "not implemented" for r in report(graded, "untouched")["checks"])


def test_points_without_work_score_zero(graded):
    for name in ("forged_messages", "patched_checks", "tensor_subclass", "frame_reader", "gc_scan",
                 "survivor", "vandal", "planter", "flood", "deep_message", "trickle",
                 "nan_message", "shared_memory", "many_processes", "escapes", "odd_metadata",
                 "mismatched_lesson", "float_subclass", "package_tamper", "uses_reference",
                 "references", "nan_answers", "empty_probes", "kills_grader", "daemon", "classmate"):
        assert report(graded, name)["total"] == 0, (name, grader.format_report(report(graded, name)))


def test_forged_messages_crash_the_checks(graded):
    for result in report(graded, "forged_messages")["checks"]:
        assert result["status"] == "crashed" and "malformed message" in result["reason"]


def test_subclasses_are_rejected(graded):
    linear = results(graded, "tensor_subclass")["linear_betas_matches_reference"]
    assert linear["status"] == "failed" and "returned Liar, expected a torch.Tensor" in linear["reason"]
    for name, result in results(graded, "float_subclass").items():
        if name.startswith("training_step"):
            assert result["status"] == "failed" and "returned Loss" in result["reason"], result


def test_fresh_inputs_defeat_a_lookup_table(graded):
    assert results(graded, "lookup_table")["linear_betas_matches_reference"]["status"] == "failed"


def test_the_references_are_out_of_reach(graded):
    """Imported, relabelled, called through a helper, read from their source or from the published
    solution: a reference earns nothing, and the reason says why."""
    assert "not available while grading" in results(graded, "uses_reference")["linear_betas_matches_reference"]["reason"]
    found = results(graded, "references")
    assert "not available while grading" in found["linear_betas_matches_reference"]["reason"]
    assert "not available while grading" in found["cosine_betas_matches_reference"]["reason"]
    for name in ("alpha_bars_are_cumulative_product", "q_sample_matches_equation_4"):
        assert "PermissionError" in found[name]["reason"] and "does not allow" in found[name]["reason"], found[name]


LIBRARY_CHECKS = {"library_sampler": ("guided_ddim_sample", ["guided_sampler_at_scale_0_is_ddim",
                                                              "guided_sampler_follows_the_classifier",
                                                              "guidance_raises_the_class_probability"]),
                  "library_inversion": ("ddim_encode", ["ddim_encode_climbs_the_list"])}


@pytest.mark.parametrize("name", sorted(LIBRARY_CHECKS))
def test_the_library_cannot_do_a_whole_exercise(graded, name):
    """Lessons 5 and 6 ask for a sampler and an encoder the library has: called from a submission, it is
    not there (its module is not loaded in the worker, and the DDIM step is taken away)."""
    found = results(graded, name)
    for check in LIBRARY_CHECKS[name][1]:
        assert found[check]["points"] == 0 and "not available while grading" in found[check]["reason"], found[check]
    assert report(graded, name)["total"] == 0


@pytest.mark.parametrize("name", sorted(LIBRARY_CHECKS))
def test_the_library_submissions_would_pass_without_the_fence(name):
    """The two submissions above are right: only the worker's fence stops them (else their test could not fail)."""
    from grading_helpers import definitions
    from lesson_lib.course.checks import load_checks

    base, cells = SUBMISSIONS[name]
    namespace = definitions("solutions", base)
    exec(textwrap.dedent(cells[0]), namespace)
    for check in load_checks(base):
        if check.name in LIBRARY_CHECKS[name][1]:
            check.fn(namespace, seed=3)


def test_forged_numbers_and_empty_answers_earn_nothing(graded):
    nan = results(graded, "nan_answers")
    assert nan["linear_betas_matches_reference"]["status"] == "failed"
    assert "expected a finite number" in nan["signal_left_measures_both_schedules"]["reason"]
    assert all(r["points"] == 0 and r["reason"] for r in report(graded, "empty_probes")["checks"])


def test_killing_the_grader_or_leaving_a_daemon_changes_nothing(graded):
    assert report(graded, "kills_grader")["total"] == 0 and report(graded, "honest")["total"] == 12
    killers = results(graded, "kills_grader")
    for name in ("linear_betas_matches_reference", "cosine_betas_matches_reference"):
        assert killers[name]["status"] in ("error", "crashed") and killers[name]["reason"], killers[name]
    assert json.loads((graded["out"] / "01_honest.json").read_text())["total"] == 12  # not rewritten


def test_instructor_flags(graded):
    def flags(name):
        return " ".join(report(graded, name)["flags"])
    assert "uses lesson_lib" in flags("uses_reference")
    assert "_helper" in flags("references") and "uses lesson_lib" in flags("references")
    assert "identical to the published solution" in flags("honest")
    assert "call stack" in flags("frame_reader") and "garbage collector" in flags("gc_scan")
    assert "__torch_function__" in flags("tensor_subclass")
    assert "near-identical graded code to 01_copycat.ipynb" in flags("honest")
    assert "near-identical" not in flags("untouched")


# --- harm beyond the submission --------------------------------------------------------

def test_nothing_outside_the_sandbox_changes(graded):
    assert graded["outside_after"] == graded["outside_before"]
    assert graded["precious"].read_text() == "instructor data"
    assert not (COURSE / "checks" / "lesson99.py").exists()
    planted = [p for p in graded["out"].iterdir() if p.suffix == ".py" or p.is_symlink() or p.name.endswith(".tmp")]
    assert planted == []


def test_no_process_survives(graded):
    assert graded["survivors"] == []


def test_a_classmates_notebook_is_out_of_sight(graded):
    """Listing the folder of submissions is refused, in both modes (in the sandbox that folder
    does not even exist: the worker's working folder is its own, and /tmp is an empty tmpfs)."""
    found = results(graded, "classmate")["linear_betas_matches_reference"]
    assert found["status"] == "error" and "does not allow glob.glob" in found["reason"], found


def test_protections_are_reported(graded):
    sandbox_state = report(graded, "honest")["sandbox"]
    assert sandbox_state["bubblewrap sandbox"] is SANDBOXED and sandbox_state["memory limit (RLIMIT_AS)"]
    text = (graded["out"] / "01_honest.txt").read_text()
    assert ("NOT in force" in text) == (not all(sandbox_state.values()))


# --- the parent stays in control -------------------------------------------------------

def test_malformed_messages_cost_only_their_check(graded):
    flood = results(graded, "flood")
    assert flood["linear_betas_matches_reference"]["status"] == "crashed"
    assert "too long" in flood["linear_betas_matches_reference"]["reason"]
    assert flood["cosine_betas_matches_reference"]["status"] == "not implemented"  # a new worker went on
    deep = results(graded, "deep_message")["cosine_betas_matches_reference"]
    assert deep["status"] == "crashed" and "malformed message" in deep["reason"]
    nan = results(graded, "nan_message")["alpha_bars_are_cumulative_product"]
    assert nan["status"] == "crashed" and "malformed message" in nan["reason"]


def test_a_trickle_of_bytes_does_not_extend_the_deadline(graded):
    trickle = results(graded, "trickle")["alpha_bars_are_cumulative_product"]
    assert trickle["status"] == "timeout" and trickle["reason"] == f"timed out after {TIMEOUT}s"


def test_parsing_problems_become_notes(graded):
    notes = report(graded, "pathological")["notes"]
    assert len([n for n in notes if "could not be parsed" in n]) == 4, notes
    assert any("too deeply nested" in n for n in notes)
    assert "the notebook metadata lesson_lib.lesson is not a lesson number; it was ignored" in \
        report(graded, "odd_metadata")["notes"]
    assert "the notebook metadata says lesson 02, but lesson 01 (from the file name) was graded" in \
        report(graded, "mismatched_lesson")["notes"]
    assert any("could not read the notebook" in n for n in report(graded, "not_a_notebook")["notes"])
    assert not any("could not read" in n for n in report(graded, "huge")["notes"])  # 33 MB of outputs are fine


def test_the_grader_stays_bounded(graded):
    # the flood sent 48 MB to every descriptor; notebooks are parsed in the reader's process (see
    # test_a_notebook_that_needs_too_much_memory_to_parse_scores_zero)
    assert graded["memory_growth_kb"] < 600_000
    assert graded["seconds"] < 60 * len(graded["rows"])


def test_limits_hold(graded):
    limits = results(graded, "shared_memory")
    for name in ("alpha_bars_are_cumulative_product", "posterior_matches_equations_6_7"):
        assert limits[name]["status"] == "error", limits[name]
    assert results(graded, "many_processes")["q_sample_matches_equation_4"]["status"] in ("error", "crashed")


# --- honest output ------------------------------------------------------------------------

def test_control_characters_are_escaped(graded):
    reason = results(graded, "escapes")["linear_betas_matches_reference"]["reason"]
    assert "\x1b" not in reason and "\\x1b[2J" in reason and "\\r" in reason
    text = (graded["out"] / "01_escapes.txt").read_text()
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert all(c.isprintable() or c == "\n" for c in text)


def test_honest_but_unusual_notebooks_keep_every_point(graded):
    for name in ("computed_constant", "help_syntax", "tensor_numbers", "cell_magic", "continuation"):
        one = report(graded, name)
        if name in ("cell_magic", "continuation"):
            continue
        assert one["total"] == one["max"], (name, grader.format_report(one))
    assert report(graded, "numpy_numbers")["total"] == 10
    assert report(graded, "exact_tails")["total"] == 10, grader.format_report(report(graded, "exact_tails"))
    assert graded["reports"]["01_big_outputs"]["total"] == 12
    assert any("IPython line" in note for note in report(graded, "help_syntax")["notes"])


def test_the_batch_summary_is_safe_and_complete(graded):
    text = (graded["out"] / "summary.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    by_submission = {row["submission"]: row for row in rows}
    assert by_submission["'=HYPERLINK(1).ipynb"]["total"] == "12"        # shown as text, not run as a formula
    assert by_submission["'@SUM.ipynb"]["total"] == "0"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values() if cell)
    assert by_submission["alice/01_forward_process.ipynb"]["report"] == "alice__01_forward_process"
    assert graded["reports"]["alice__01_forward_process"]["total"] == 12
    honest = by_submission["01_honest.ipynb"]
    assert honest["points: q_sample_matches_equation_4"] == "2" and "sandbox" in honest
    assert "near-identical" in " ".join(graded["reports"]["01_long_a"]["flags"])


def test_honest_notebook_habits_cost_nothing(graded):
    magic = report(graded, "cell_magic")
    assert results(graded, "cell_magic")["linear_betas_matches_reference"]["status"] == "passed"
    assert any("starts with %%time" in n for n in magic["notes"])
    continuation = results(graded, "continuation")
    assert continuation["cosine_betas_matches_reference"]["status"] == "passed"
    assert continuation["cosine_betas_clips_at_max_beta"]["status"] == "passed"
    parse = results(graded, "parse_errors")
    assert parse["linear_betas_matches_reference"]["status"] == "passed"
    assert parse["cosine_betas_matches_reference"]["reason"].endswith("(cell 3 could not be parsed)")
    assert parse["q_sample_matches_equation_4"]["reason"].endswith("(cell 4 could not be parsed)")


# --- without the batch ------------------------------------------------------------------

def test_a_slow_setup_that_kills_every_check_stays_within_the_budget(tmp_path):
    path = tmp_path / "01_slow.ipynb"
    nb = _notebook(None, ["""
        import os, time
        class Slow:
            time.sleep(2)
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            os._exit(1)
        def cosine_betas(T, s=0.008, max_beta=0.999):
            os._exit(1)
        def alpha_bars_from_betas(betas):
            os._exit(1)
        """], "01")
    nbformat.write(nb, str(path))
    start = time.monotonic()
    one = grader.grade(path, timeout=TIMEOUT, budget=12, sandbox="auto" if SANDBOXED else "off")
    assert time.monotonic() - start < 12 + 15
    assert one["total"] == 0
    assert all(r["status"] in ("crashed", "timeout", "missing") and r["reason"] for r in one["checks"])


TORCH_BLOCKED = "import sys; sys.modules['torch'] = None; "


@pytest.mark.parametrize("code, expect", [
    ("import lesson_lib.course.checks as c; print(c.available_lessons())", "'03', '04', '05'"),
    ("from lesson_lib.course import grader; sys.exit(grader.main(['missing.ipynb']))", "no such notebook"),
    ("from lesson_lib.course import grader; sys.exit(grader.main([sys.argv[1], '--lesson', '99']))",
     "unknown lesson 99"),
])
def test_the_grader_needs_no_torch_for_its_usage_errors(tmp_path, code, expect):
    nbformat.write(nbformat.v4.new_notebook(), str(tmp_path / "x.ipynb"))
    done = subprocess.run([sys.executable, "-P", "-c", TORCH_BLOCKED + code, str(tmp_path / "x.ipynb")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert expect in done.stdout + done.stderr, done.stderr
    assert done.returncode == (0 if "available" in code else 2)


def test_a_module_planted_in_the_working_folder_is_not_imported(tmp_path):
    for name in ("json.py", "runpy.py"):
        (tmp_path / name).write_text("raise SystemExit('planted module ran')\n")
    done = subprocess.run([sys.executable, "-m", "lesson_lib.course.grader", "missing.ipynb"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 2 and "no such notebook" in done.stderr, done.stderr


def test_protocol_rejects_what_it_does_not_know():
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_event(b'{"event": "passed", "check": "x"}')
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_event(b'{"event": "start", "check": "x", "extra": 1}')
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_value({"tensor": {"dtype": "float32", "shape": [1000], "data": ""}})
    assert type(protocol.decode_value(protocol.encode_value(1.5))) is float
    assert protocol.printable("a\x1b[2Jb\r\n") == "a\\x1b[2Jb\\r\\n"
    assert protocol.finite({"x": [float("nan"), 1.0, float("inf")]}) == {"x": [None, 1.0, None]}
    assert notebook.parse_error_hint("f", {"failed": {}}) == ""
