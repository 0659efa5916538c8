"""Every command line the README documents runs as typed, in its smallest form.

The test reads the README's ``bash`` blocks, so a command added there without a smallest form
here fails the test. Each command runs in a fresh folder (the README's relative paths such as
``runs/mnist-cpu/checkpoint.pt`` land there) with the flags below appended: later flags win in
argparse, so the documented flags are all parsed and only sizes shrink.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("DDPM_DATA_DIR")

# documented command (after "python") -> extra arguments that make it small, or a special case
SMALLEST = {
    "-m lesson_lib.train --config mnist": ["--profile", "ci", "--steps", "2", "--sample-every", "0",
                                           "--checkpoint-every", "0", "--out", "runs/mnist-cpu", "--device", "cpu"],
    "-m lesson_lib.train --config cifar10 --profile gpu --out runs/cifar10": "refused without CUDA",
    "-m lesson_lib.sample --checkpoint runs/mnist-cpu/checkpoint.pt --out samples.png": ["--n", "10", "--steps", "2"],
    "-m lesson_lib.sample --pretrained mnist_cond --sampler ddim --steps 50 --out digits.png": ["--n", "10", "--steps", "2"],
    "-m lesson_lib.sample --pretrained mnist_consistency --steps 2 --out two_calls.png": ["--n", "10"],
    "-m lesson_lib.sample --pretrained mnist_latent --guidance 2 --out latent.png": ["--n", "10", "--steps", "2"],
    "-m lesson_lib.sample --pretrained cifar10_latent --guidance 4 --out cifar10.png": ["--n", "10", "--steps", "2"],
    "-m lesson_lib.sample --pretrained mnist_cond --sampler dpmpp2m --steps 10 --out ode.png": ["--n", "10", "--steps", "2"],
    "-m lesson_lib.sample --pretrained mnist_dit --guidance 2 --out dit.png": ["--n", "10", "--steps", "2"],
    "-m lesson_lib.sample --pretrained mnist_sr --out cascade.png": ["--n", "10", "--steps", "2"],
    "-m lesson_lib.sample --pretrained mnist_latent_flow --sampler heun --steps 8 --out flow.png": ["--n", "10", "--steps", "2"],
    "-m lesson_lib.evaluate --pretrained mnist_cond --n 1000 --steps 20": ["--n", "20", "--steps", "2"],
    "-m lesson_lib.train --recipe mnist_noisy_classifier --export lesson_lib/weights": [
        "--profile", "ci", "--out", "runs/recipe", "--export", "weights", "--device", "cpu"],
    "-m lesson_lib.train --recipe mnist_cond --profile ci --out runs/try --export weights": ["--device", "cpu"],
    "-m lesson_lib.course.assignments generate": ["--solutions", str(ROOT / "solutions"), "--exercises", "exercises"],
    "-m lesson_lib.course.assignments check": ["--solutions", str(ROOT / "solutions"), "--exercises", "exercises"],
    "-m lesson_lib.course.pairing sync": ["--help"],
    "-m lesson_lib.course.assignments start 01": ["--help"],
    "-m lesson_lib.course.pairing check": [str(ROOT / "notebooks")],
    "benchmarks/throughput.py": ["--help"],
    "benchmarks/swiss_roll.py": ["--help"],
    "benchmarks/loop_overhead.py": ["--help"],
    "benchmarks/pretrained_quality.py": ["--help"],
    "benchmarks/guidance.py --n 200 --steps 25": ["--help"],
    "benchmarks/fast_sampling.py --table ddim --n 500 --steps 10 20 50": ["--help"],
    "benchmarks/gpu_session.py --dataset cifar10 --data DIR --out OUT": ["--help"],
}


def documented_commands():
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("python ") or line.startswith("python -P "):
                commands.append(line)
    return commands


def _key(command):
    return re.sub(r"^python (-P )?", "", command)


def test_every_documented_command_has_a_smallest_form():
    commands = documented_commands()
    assert len(commands) >= 8
    grading = [c for c in commands if "lesson_lib.course.grader" in c or "lesson_lib.course.batch" in c]
    missing = [c for c in commands if _key(c) not in SMALLEST and c not in grading]
    assert not missing, f"README commands without a smallest form in this test: {missing}"


@pytest.mark.slow
@pytest.mark.skipif(not DATA, reason="set DDPM_DATA_DIR to the prepared datasets")
def test_the_documented_commands_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DDPM_DATA_DIR": DATA}
    env.pop("DDPM_PROFILE", None)
    order = sorted(documented_commands(), key=lambda c: "lesson_lib.sample --checkpoint" in c)  # train first
    for command in order:
        key = _key(command)
        if key not in SMALLEST:
            continue                                     # the grader commands: tests/test_grader*.py
        argv = command.split()[1:]
        extra = SMALLEST[key]
        if extra == "refused without CUDA":
            if torch.cuda.is_available():
                continue
            done = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert done.returncode == 2 and "no CUDA GPU" in done.stderr, done.stderr[-2000:]
            assert "Traceback" not in done.stderr
            continue
        argv = [str(ROOT / a) if a.startswith("benchmarks/") else a for a in argv]
        done = subprocess.run([sys.executable, *argv, *extra], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "samples.png").exists() and (tmp_path / "digits.png").exists()
    assert len(list((tmp_path / "exercises").glob("*.ipynb"))) == len(list((ROOT / "solutions").glob("*.ipynb")))


@pytest.mark.parametrize("argv, message", [
    (["sample", "--pretrained", "mnist_cond", "--n", "0"], "--n: must be a whole number >= 1"),
    (["sample", "--pretrained", "mnist_cond", "--n", "64"], "not a multiple of the model's 10"),
    (["sample", "--pretrained", "mnist_cond", "--raw"], "--raw needs --checkpoint"),
    (["sample", "--pretrained", "mnist_cond", "--out", "grid.gif"], "--out must end in .png"),
    (["sample", "--checkpoint", "missing.pt"], "no checkpoint at"),
    (["sample", "--checkpoint", "README.md"], "is not a checkpoint of lesson_lib"),
    (["train", "--config", "mnist", "--steps", "0"], "--steps: must be a whole number >= 1"),
    (["train", "--config", "mnist", "--steps", "-5"], "--steps: must be a whole number >= 1"),
    (["train", "--config", "mnist", "--checkpoint-every", "-1"], "--checkpoint-every"),
    (["evaluate", "--pretrained", "mnist_cond", "--n", "1"], "--n must be at least 2"),
    (["evaluate", "--checkpoint", "x.pt"], "--dataset is required"),
])
def test_user_errors_are_one_line_not_a_traceback(argv, message, capsys, monkeypatch):
    import importlib

    from lesson_lib.cli import run

    monkeypatch.chdir(ROOT)
    command = importlib.import_module(f"lesson_lib.{argv[0]}")
    with pytest.raises(SystemExit) as stop:
        run(command.main, argv[1:], f"python -m lesson_lib.{argv[0]}")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err, err


def test_a_user_error_from_the_shell_prints_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lesson_lib.sample", "--checkpoint", "missing.pt"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 2 and "no checkpoint at" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(not DATA, reason="set DDPM_DATA_DIR to the prepared datasets")
def test_evaluate_checks_n_against_the_test_set_before_sampling(tmp_path):
    from lesson_lib import evaluate

    sampled = []
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(evaluate, "generate", lambda *a, **k: sampled.append(1))
    try:
        with pytest.raises(ValueError, match="larger than the 10000 mnist test images"):
            evaluate.main(["--pretrained", "mnist_cond", "--n", "20000", "--data-dir", DATA])
    finally:
        monkeypatch.undo()
    assert not sampled                             # failed before any sampling started
