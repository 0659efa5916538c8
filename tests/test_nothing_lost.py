"""Nothing lost: no command overwrites a file it did not create for this run without an explicit
flag, and what it will write is checked before the work starts.

One test per case the issue found, (a) to (g), and a sweep of the train command line's wrong
arguments. Each test keeps the bytes of the file at risk and asserts that they survived, and that
the message names the fix.
"""

import contextlib
import hashlib
import io
import os
import shutil
import traceback
from pathlib import Path

import nbformat
import pytest
import torch

from lesson_lib import pretrained, train
from lesson_lib.cli import run
from lesson_lib.course import assignments, pairing
from lesson_lib.course.assignments import STUB
from lesson_lib.data.toy import swiss_roll
from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.training.checkpoint import load_checkpoint, previous_path
from lesson_lib.training.distill import progressive_distillation
from lesson_lib.training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = NoiseSchedule.linear(20)
DATA = swiss_roll(256, seed=0)


def tiny_model(seed=0, **config):
    torch.manual_seed(seed)
    return MLPDenoiser(**{"hidden": 16, "num_blocks": 1, "time_dim": 8, **config})


def tiny_trainer(path=None, seed=0, **kwargs):
    return Trainer(tiny_model(seed), DATA, LSimple(SCHEDULE), TrainConfig(batch_size=32, log_every=5, seed=seed),
                   device="cpu", checkpoint_path=path, **kwargs)


def unwritable_checkpoint_path(tmp_path):
    """A checkpoint path whose folder cannot be written: under a file for root (whom chmod does not
    stop), in a read-only folder for everyone else."""
    if os.geteuid() == 0:
        (tmp_path / "notes.txt").write_text("mine\n")
        return tmp_path / "notes.txt" / "run" / "checkpoint.pt"
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "checkpoint.pt"


# --- (a) generate into the solutions folder ------------------------------------------------------

def copy_solutions(folder, names=("01_forward_process",)):
    folder.mkdir(parents=True)
    for name in names:
        for suffix in (".ipynb", ".py"):
            shutil.copy(ROOT / "solutions" / f"{name}{suffix}", folder)
    return folder


def snapshot(folder):
    """Every file under ``folder`` (and every folder) with the sha256 of its bytes."""
    files = {}
    for path in sorted(Path(folder).rglob("*")):
        files[str(path)] = "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@pytest.mark.parametrize("exercises", ["solutions", "solutions/", "copy_of_solutions"])
@pytest.mark.parametrize("force", [False, True])
def test_a_generate_refuses_a_folder_of_solutions(tmp_path, monkeypatch, capsys, exercises, force):
    copy_solutions(tmp_path / "solutions")
    shutil.copytree(tmp_path / "solutions", tmp_path / "copy_of_solutions")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code = assignments.main(["generate", "--exercises", exercises] + (["--force"] if force else []))
    err = capsys.readouterr().err
    assert code == 1
    assert snapshot(tmp_path) == before                                  # every solution survived
    assert "--exercises" in err and "solution" in err and "pass the exercises folder" in err, err


# --- (b) a Trainer given another run's checkpoint ------------------------------------------------

def test_b_a_trainer_never_overwrites_another_runs_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    first = tiny_trainer(path)
    first.run(5, progress=False, checkpoint_every=5)
    theirs = path.read_bytes()

    other = tiny_trainer(path, seed=1)                   # another run, same path, no resume()
    with pytest.raises(FileExistsError) as error:
        other.run(10, progress=False, checkpoint_every=5)
    message = str(error.value)
    assert str(path) in message and "trainer.resume()" in message
    assert "another checkpoint_path" in message and "overwrite_checkpoint=True" in message
    assert other.step == 0, "refused before the first step"
    with pytest.raises(FileExistsError):
        other.save()
    assert path.read_bytes() == theirs and not os.path.exists(previous_path(path))

    resumed = tiny_trainer(path)                         # rule 2: it resumed from the file
    assert resumed.resume() and resumed.step == 5
    resumed.run(10, progress=False, checkpoint_every=5)
    assert load_checkpoint(path)["step"] == 10

    forced = tiny_trainer(path, seed=1, overwrite_checkpoint=True)        # rule 4: the flag
    ours = path.read_bytes()
    forced.run(3, progress=False, checkpoint_every=3)
    assert load_checkpoint(path)["step"] == 3
    assert Path(previous_path(path)).read_bytes() == ours, "even with the flag, the replaced one is kept"


# --- (c) export_model over the run's own checkpoint ----------------------------------------------

def test_c_export_model_never_replaces_the_checkpoint_or_a_file_it_did_not_write(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    trainer = tiny_trainer(path)
    trainer.run(10, progress=False, checkpoint_every=5)
    checkpoint, previous = path.read_bytes(), Path(previous_path(path)).read_bytes()
    for same in (path, str(path), tmp_path / "run" / ".." / "run" / "checkpoint.pt", previous_path(path)):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="this run's training checkpoint.*export to another file"):
                pretrained.export_model(trainer, same, overwrite=overwrite)
    assert path.read_bytes() == checkpoint and Path(previous_path(path)).read_bytes() == previous

    notes = tmp_path / "model.pt"
    notes.write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError, match="did not write it.*another file, or pass overwrite=True"):
        pretrained.export_model(trainer, notes)
    assert notes.read_bytes() == b"someone else's file"

    exported = pretrained.export_model(trainer, tmp_path / "export.pt")
    trainer.run(15, progress=False)
    pretrained.export_model(trainer, exported)           # its own export: replaced without a flag
    assert load_checkpoint(exported)["step"] == 15
    pretrained.export_model(trainer, notes, overwrite=True)
    assert load_checkpoint(notes)["step"] == 15
    assert path.read_bytes() == checkpoint


# --- (d) an unwritable folder fails before the work --------------------------------------------------

def test_d_an_unwritable_checkpoint_folder_fails_before_the_first_step(tmp_path):
    path = unwritable_checkpoint_path(tmp_path)
    trainer = tiny_trainer(path)
    with pytest.raises(OSError, match="cannot write the checkpoint.*choose a folder you can write to"):
        trainer.run(50, progress=False, checkpoint_every=10)
    assert trainer.step == 0, "no work was done before the failure"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder; pass the file to write"):
        tiny_trainer(folder).run(5, progress=False)


# --- (e) a truncated checkpoint ---------------------------------------------------------------------

def same_weights(a, b):
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
    for (name, p), q in zip(a.ema.model.state_dict().items(), b.ema.model.state_dict().values()):
        assert torch.equal(p, q), "ema " + name


def test_e_a_truncated_checkpoint_falls_back_to_the_previous_one_exactly(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    tiny_trainer(path).run(20, progress=False, checkpoint_every=10)
    assert load_checkpoint(path)["step"] == 20 and load_checkpoint(previous_path(path))["step"] == 10
    good_previous = Path(previous_path(path)).read_bytes()
    path.write_bytes(path.read_bytes()[:1000])           # a copy cut short

    resumed = tiny_trainer(path)
    assert resumed.resume() and resumed.step == 10
    err = capsys.readouterr().err
    assert "warning:" in err and f"resuming from the previous checkpoint {previous_path(path)}" in err
    assert "truncated" in err
    resumed.run(20, progress=False, checkpoint_every=10)
    reference = tiny_trainer()
    reference.run(20, progress=False)
    same_weights(resumed, reference)                     # exact, as from any checkpoint
    assert load_checkpoint(path)["step"] == 20
    assert Path(previous_path(path)).read_bytes() == good_previous, "the truncated file was not kept over it"

    path.unlink()                                        # a missing newest one falls back too
    assert tiny_trainer(path).resume()
    assert "is missing" in capsys.readouterr().err
    Path(previous_path(path)).write_bytes(b"")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="previous copy cannot be read either.*start a fresh run"):
        tiny_trainer(path).resume()


# --- (f) distillation under another teacher --------------------------------------------------------

def test_f_progressive_distillation_refuses_another_teachers_students(tmp_path):
    def distil(teacher):
        return progressive_distillation(teacher, SCHEDULE, DATA, start_steps=4, end_steps=2, train_steps=2,
                                        config=TrainConfig(batch_size=16, lr=1e-3, log_every=1),
                                        checkpoint_dir=tmp_path, device="cpu")
    teacher_a, teacher_b = tiny_model(0, prediction="v"), tiny_model(1, prediction="v")
    (steps, first), = distil(teacher_a)
    saved = (tmp_path / "student_2.pt").read_bytes()
    assert len(first.objective.config()["teacher_sha256"]) == 64
    assert load_checkpoint(tmp_path / "student_2.pt")["objective"]["teacher_sha256"] == \
        first.objective.config()["teacher_sha256"]
    with pytest.raises(ValueError) as error:
        distil(teacher_b)
    message = str(error.value)
    assert "student_2.pt" in message and "another teacher" in message
    assert "the teacher it was distilled from" in message and "fresh checkpoint_dir" in message
    assert (tmp_path / "student_2.pt").read_bytes() == saved
    (_, again), = distil(tiny_model(0, prediction="v"))          # the same teacher, rebuilt: resumes
    assert again.step == 2


# --- (g) students lose their answers ------------------------------------------------------------------

@pytest.fixture
def course(tmp_path, monkeypatch):
    """A course folder (solutions/ and generated exercises/) as the working directory."""
    copy_solutions(tmp_path / "solutions")
    monkeypatch.chdir(tmp_path)
    assert assignments.main(["generate"]) == 0
    return tmp_path


def answer(exercise):
    """What a student does: write an answer in place of every stub, run the notebook (outputs)."""
    nb = nbformat.read(str(exercise), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and STUB in cell.source:
            cell.source = cell.source.replace("# YOUR CODE HERE", "# my answer").replace(STUB, "return 42")
            cell.outputs = [nbformat.v4.new_output("stream", text="ran\n")]
            cell.execution_count = 1
    nbformat.write(nb, str(exercise))
    return exercise.read_bytes()


def test_g_answers_in_an_exercise_pass_the_checks_and_generate_keeps_them(course, capsys):
    exercise = course / "exercises" / "01_forward_process.ipynb"
    mine = answer(exercise)

    assert assignments.main(["check"]) == 0, "the suite passes on a student's clone"
    err = capsys.readouterr().err
    assert f"{Path('exercises/01_forward_process.ipynb')} holds answers: copy them to" in err
    assert "python -m lesson_lib.course.assignments start 01" in err
    assert assignments.main(["check", "--strict"]) == 1               # the course's own CI
    assert pairing.problems(exercise) == [], "the pairing check accepts an exercise holding answers"
    script = pairing.script_path(exercise).read_bytes()
    assert pairing.main(["sync", "exercises"]) == 0
    assert pairing.script_path(exercise).read_bytes() == script

    capsys.readouterr()
    assert assignments.main(["generate"]) == 1                       # the fix check prints: refused
    err = capsys.readouterr().err
    assert "exercises/01_forward_process.ipynb" in err and "--force" in err and "start 01" in err
    assert exercise.read_bytes() == mine

    assert assignments.main(["start", "01"]) == 0
    copy = course / "exercises" / "my_work" / "01_forward_process.ipynb"
    assert copy.read_bytes() == mine and "your copy; work here" in capsys.readouterr().out
    assert (course / "exercises" / "my_work" / "01_forward_process.py").exists()
    assert assignments.main(["start", "99"]) == 1 and "the lessons are 01" in capsys.readouterr().err
    assert assignments.main(["generate", "--force"]) == 0
    assert exercise.read_bytes() != mine and assignments.check("solutions", "exercises") == []
    answer(exercise)
    assert assignments.main(["start", "1"]) == 0                     # never over an existing copy
    assert "already there, left untouched" in capsys.readouterr().out
    assert copy.read_bytes() == mine
    assert "my_work" in assignments.make_exercise(nbformat.read(str(course / "solutions" / exercise.name), 4),
                                                  "solutions/01_forward_process.ipynb").cells[0].source


def test_g_check_still_fails_on_structural_drift_and_generate_on_any_edit(course, capsys):
    exercise = course / "exercises" / "01_forward_process.ipynb"
    nb = nbformat.read(str(exercise), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("scratch = 1"))
    nbformat.write(nb, str(exercise))
    mine = exercise.read_bytes()
    assert assignments.main(["check"]) == 1
    assert "holds edits that generate did not write" in capsys.readouterr().err
    assert pairing.problems(exercise), "a changed notebook with a stale script is still caught"
    assert assignments.main(["generate"]) == 1 and exercise.read_bytes() == mine

    assignments.main(["generate", "--force"])
    script = pairing.script_path(exercise)                           # answers written in the script
    script.write_text(script.read_text().replace(STUB, "return 42"))
    mine = script.read_bytes()
    assert assignments.main(["generate"]) == 1
    assert "01_forward_process.py" in capsys.readouterr().err and script.read_bytes() == mine


def test_g_generate_replaces_exercises_of_an_earlier_solution_without_a_flag(course, capsys):
    solution = course / "solutions" / "01_forward_process.ipynb"
    nb = nbformat.read(str(solution), as_version=4)
    nb.cells[0].source += "\n\nA sentence added by the course."
    nbformat.write(nb, str(solution))
    exercise = course / "exercises" / "01_forward_process.ipynb"
    nb = nbformat.read(str(exercise), as_version=4)
    code = next(cell for cell in nb.cells if cell.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", text="ran, answered nothing\n")]
    nbformat.write(nb, str(exercise))
    assert assignments.main(["generate"]) == 0, capsys.readouterr().err
    assert assignments.check("solutions", "exercises") == []
    assert "A sentence added by the course." in exercise.read_text()


def test_g_my_work_is_ignored_by_git_and_by_the_checks():
    assert "/exercises/my_work/" in (ROOT / ".gitignore").read_text().splitlines()
    assert assignments.MY_WORK == "my_work"


# --- the train command line: wrong arguments -----------------------------------------------------------

PROG = "python -m lesson_lib.train"
SMALL = ["--config", "mnist", "--profile", "ci", "--steps", "1", "--checkpoint-every", "0",
         "--sample-every", "0", "--device", "cpu"]


def fake_dataset(name, split="train", data_dir=None, as_uint8=False, **kwargs):
    """64 blank images: build() needs data, and none of the refused cases gets as far as training."""
    shape = (1, 28, 28) if name == "mnist" else (3, 32, 32)
    return torch.zeros(64, *shape, dtype=torch.uint8), torch.arange(64) % 10, [str(k) for k in range(10)]


def another_runs_checkpoint(folder):
    (folder / "run").mkdir()
    trainer, _ = train.build("cifar10", "ci", checkpoint_path=folder / "run" / "checkpoint.pt", device="cpu")
    trainer.save()


def an_export(folder):
    (folder / "run").mkdir()
    trainer, _ = train.build("mnist", "ci", checkpoint_path=folder / "run" / "full.pt", device="cpu")
    pretrained.export_model(trainer, folder / "run" / "checkpoint.pt")


def a_file(folder):
    (folder / "notes.txt").write_text("mine\n")


def read_only_folder(folder):
    (folder / "run").mkdir()
    (folder / "run").chmod(0o500)


# name: (arguments, setup, environment, the argument the message names, the fix it names)
CASES = {
    "unknown --config": (["--config", "imagenet"], None, {}, "--config", "choose from"),
    "missing --config": ([], None, {}, "--config", "required"),
    "--steps 0": (SMALL + ["--steps", "0"], None, {}, "--steps", "whole number >= 1"),
    "--steps ten": (SMALL + ["--steps", "ten"], None, {}, "--steps", "whole number >= 1"),
    "--checkpoint-every -1": (SMALL + ["--checkpoint-every", "-1"], None, {}, "--checkpoint-every", ">= 0"),
    "--sample-every -1": (SMALL + ["--sample-every", "-1"], None, {}, "--sample-every", ">= 0"),
    "--profile laptop": (SMALL + ["--profile", "laptop"], None, {}, "--profile", "choose from"),
    "DDPM_PROFILE=laptop": (["--config", "mnist", "--steps", "1", "--device", "cpu"], None,
                            {"DDPM_PROFILE": "laptop"}, "DDPM_PROFILE", "must be one of"),
    "--profile gpu without a GPU": (["--config", "mnist", "--profile", "gpu"], None, {}, "--profile",
                                    "Use --profile cpu"),
    "--device cuda without a GPU": (SMALL + ["--device", "cuda"], None, {}, "--device", "use --device cpu"),
    "--device tpu": (SMALL + ["--device", "tpu"], None, {}, "--device", "must be cpu, cuda"),
    "--data-dir missing": (SMALL + ["--data-dir", "no_such_folder"], None, {}, "--data-dir",
                           "pass the folder of the dataset mirror"),
    "--out ''": (SMALL + ["--out", ""], None, {}, "--out", "name the run folder"),
    "--out a file": (SMALL + ["--out", "notes.txt"], a_file, {}, "--out", "choose a folder for the run"),
    "--out under a file": (SMALL + ["--out", "notes.txt/run"], a_file, {}, "--out",
                           "choose a folder you can write to"),
    "--out read-only": (SMALL + ["--out", "run"], read_only_folder, {}, "--out", "choose a folder you can write to"),
    "--out another run's checkpoint": (SMALL + ["--out", "run"], another_runs_checkpoint, {}, "--out",
                                       "choose another --out"),
    "--out holds an export": (SMALL + ["--out", "run"], an_export, {}, "--out", "choose another --out"),
    "--out holds a text file as checkpoint.pt": (
        SMALL + ["--out", "run"], lambda d: ((d / "run").mkdir(), (d / "run" / "checkpoint.pt").write_text("x\n")),
        {}, "--out", "choose another --out"),
    "--out holds another run's files": (
        SMALL + ["--out", "run"], lambda d: ((d / "run").mkdir(), (d / "run" / "samples_step1.png").write_bytes(b"x")),
        {}, "--out", "choose a new or empty folder"),
}


def try_train(argv, folder, env, monkeypatch):
    """Run the train command in-process in ``folder``: (exit status, stderr, traceback?, wrote?)."""
    monkeypatch.chdir(folder)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = snapshot(folder)
    err, code, escaped = io.StringIO(), 0, False
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run(train.main, argv, PROG)
        except SystemExit as stop:
            code = stop.code
        except Exception:                                  # what the command line must never show
            escaped = True
            traceback.print_exc(file=err)
    return code, err.getvalue(), escaped or "Traceback" in err.getvalue(), snapshot(folder) != before


@pytest.mark.parametrize("case", list(CASES))
def test_train_command_line_refuses_each_wrong_argument_in_one_line_before_any_write(case, tmp_path, monkeypatch):
    argv, setup, env, argument, fix = CASES[case]
    if "without a GPU" in case and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if case == "--out read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders (see '--out under a file')")
    monkeypatch.delenv("DDPM_PROFILE", raising=False)
    monkeypatch.setattr(train, "load_dataset", fake_dataset)
    if setup:
        setup(tmp_path)
    code, err, escaped, wrote = try_train(argv, tmp_path, env, monkeypatch)
    lines = [line for line in err.splitlines() if line.startswith(f"{PROG}: error:")]
    others = [line for line in err.splitlines() if line and not line.startswith((f"{PROG}: error:", "usage:", " "))]
    assert code == 2 and not escaped, err
    assert len(lines) == 1 and not others, err                     # one line, and nothing but usage besides
    assert argument in lines[0] and fix in lines[0], lines[0]
    assert not wrote, "no file written, none changed"


def test_train_command_line_still_trains_and_resumes_in_its_own_folder(tmp_path, monkeypatch, capsys):
    """The checks above refuse only what they should: a new folder trains, the same command resumes
    it, and the previous checkpoint is kept beside the newest."""
    monkeypatch.delenv("DDPM_PROFILE", raising=False)
    monkeypatch.setattr(train, "load_dataset", fake_dataset)
    monkeypatch.setattr(train, "sample_grid", lambda trainer, path, **kw: Path(path).write_bytes(b"grid"))
    monkeypatch.chdir(tmp_path)
    train.main(SMALL + ["--out", "run", "--checkpoint-every", "1"])
    train.main(SMALL + ["--out", "run", "--checkpoint-every", "1", "--steps", "2"])
    assert "resumed from" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoint.prev.pt")["step"] == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == \
        ["checkpoint.prev.pt", "checkpoint.pt", "samples_step1.png", "samples_step2.png"]
