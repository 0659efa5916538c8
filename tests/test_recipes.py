"""Every shipped model has a recipe (lesson_lib.recipes), run by one command, shipped by one writer with
one card schema (lesson_lib.cards): each recipe runs its ci profile from end to end, its export loads
back, every shipped card fits the schema and names its recipe, a run resumes, and wrong commands get
one clear line."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lesson_lib import pretrained, train
from lesson_lib.cards import check_card
from lesson_lib.evaluation.judges import load_classifier
from lesson_lib.recipes import RECIPES, recipe_of, run_recipe
from lesson_lib.recipes import cascade, noisy_classifier

DATA_DIR = os.environ.get("DDPM_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="set DDPM_DATA_DIR to the prepared datasets")


def load_back(card, weights_dir):
    """Load a shipped model as its users do; returns the network."""
    state, loaded = pretrained.load_artifact(card["name"], weights_dir)
    assert loaded == card
    if card["kind"] == "diffusion":
        return pretrained.load_pretrained(card["name"], weights_dir=weights_dir)[0]
    if card["kind"] == "noisy_classifier":
        return pretrained.load_noisy_classifier(card["name"], weights_dir=weights_dir)[0]
    if card["kind"] == "autoencoder":
        return pretrained.load_autoencoder(card["name"], weights_dir=weights_dir)[0]
    return load_classifier(card["dataset"], weights_dir=weights_dir)


# --- every recipe, from end to end ----------------------------------------------------------

@needs_data
@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_runs_its_ci_profile_and_its_export_loads_back(name, tmp_path):
    weights, made = tmp_path / "weights", RECIPES[name]
    run, _, cards = run_recipe(made, "ci", tmp_path / "run", weights, data_dir=DATA_DIR, device="cpu",
                               progress=False, log=lambda line: None)
    assert [card["name"] for card in cards] == list(made.ships)
    assert sorted(p.name for p in weights.iterdir()) == sorted(f"{n}{s}" for n in made.ships
                                                               for s in (".pt", ".json"))
    for card in cards:
        check_card(card)
        assert card["recipe"] == name and f"--recipe {name} --profile ci --export {weights}" in card["command"]
        assert card["wall_time_s"] == round(run.seconds(), 1) and card["evaluation"]
        model = load_back(card, weights)
        assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
        assert sum(p.numel() for p in model.parameters()) == card["parameters"]
        state = torch.load(weights / card["file"], weights_only=True)
        weights_of = state["ema"]["model"] if card["kind"] != "classifier" else state
        assert all(v.dtype == torch.float16 for v in weights_of.values() if v.is_floating_point())


@needs_data
def test_the_cascade_recipes_run_as_a_pair_and_the_sr_export_runs_the_base_beside_it(tmp_path):
    """mnist_sr's export samples the whole cascade: with the base exported into the same folder, the SR card's
    cascade figures name that base (by its hash, not the shipped one's), and both cards load back."""
    weights = tmp_path / "weights"
    for made in (cascade.BASE, cascade.SR):
        run_recipe(made, "ci", tmp_path / made.name, weights, data_dir=DATA_DIR, device="cpu", progress=False,
                   log=lambda line: None)
    for name in ("mnist_base14", "mnist_sr"):
        card = json.loads((weights / f"{name}.json").read_text())
        check_card(card)
        model = load_back(card, weights)
        assert model.data_shape == ((1, 14, 14) if name == "mnist_base14" else (1, 28, 28))
    evaluation = json.loads((weights / "mnist_sr.json").read_text())["evaluation"]
    for row in ("sr_of_real_14px", "cascade_level_0.2"):
        assert 0 <= evaluation[row]["class_accuracy"] <= 1 and evaluation[row]["consistency_mse"] > 0
    fresh = json.loads((weights / "mnist_base14.json").read_text())["sha256"]
    assert evaluation["cascade_base"] == {"name": "mnist_base14", "sha256": fresh}
    assert fresh != pretrained.model_card("mnist_base14")["sha256"]


# --- the shipped cards ----------------------------------------------------------------------

def test_every_shipped_card_fits_the_schema_and_names_the_recipe_that_makes_it():
    names = pretrained.available(None)
    assert len(names) == 20
    for name in names:
        card = json.loads((pretrained.WEIGHTS_DIR / f"{name}.json").read_text())
        check_card(card)
        assert card["name"] == name and recipe_of(name).name == card["recipe"]
        assert card["command"] == f"python -m lesson_lib.train --recipe {card['recipe']} --export lesson_lib/weights"
    assert {name for r in RECIPES.values() for name in r.ships} == set(names)


def test_a_card_that_breaks_the_schema_is_named_and_never_written(tmp_path):
    card = pretrained.model_card("mnist_noisy_classifier")
    with pytest.raises(ValueError, match="lacks recipe, evaluation: recipe is the recipe"):
        check_card({k: v for k, v in card.items() if k not in ("recipe", "evaluation")})
    with pytest.raises(ValueError, match="parameters must be a whole number, got '239k'"):
        check_card(dict(card, parameters="239k"))
    with pytest.raises(ValueError, match="kind in"):
        check_card(dict(card, kind="gan"))
    with pytest.raises(ValueError, match="lacks recipe"):
        pretrained.save_artifact({"x": torch.zeros(1)}, tmp_path / "m.pt", dict(card, recipe=None))
    assert not list(tmp_path.iterdir())


# --- resuming, refusing ---------------------------------------------------------------------

@needs_data
def test_running_a_recipe_again_resumes_its_run(tmp_path, monkeypatch):
    lines = []
    ci = noisy_classifier.SETTINGS["ci"]
    monkeypatch.setitem(ci, "steps", 2)                    # a run cut short at step 2 ...
    _, first, _ = run_recipe("mnist_noisy_classifier", "ci", tmp_path, data_dir=DATA_DIR, device="cpu",
                             progress=False, log=lines.append)
    monkeypatch.setitem(ci, "steps", 4)                    # ... and the same command again
    _, second, _ = run_recipe("mnist_noisy_classifier", "ci", tmp_path, data_dir=DATA_DIR, device="cpu",
                              progress=False, log=lines.append)
    assert lines == [f"training: resumed from {tmp_path / 'checkpoint.pt'} at step 2"]
    assert second.step == 4 and second.history[:len(first.history)] == first.history
    checkpoint = (tmp_path / "checkpoint.pt").read_bytes()
    _, third, _ = run_recipe("mnist_noisy_classifier", "ci", tmp_path, data_dir=DATA_DIR, device="cpu",
                             progress=False, log=lines.append)
    assert third.step == 4 and (tmp_path / "checkpoint.pt").read_bytes() == checkpoint   # finished: nothing more


@needs_data
def test_a_run_killed_outright_keeps_its_clock_up_to_its_last_checkpoint(tmp_path):
    """A process killed without unwinding (SIGKILL, a closed session) runs no ``finally``: the run's clock is
    written at every checkpoint, so the card's wall time still counts the steps that were kept."""
    script = (
        "import os, sys, time\n"
        "from lesson_lib.recipes import cascade, run_recipe\n"
        "from lesson_lib.training.trainer import Trainer\n"
        "save = Trainer.save\n"
        "def save_then_die(self, *args, **kwargs):\n"
        "    save(self, *args, **kwargs)\n"
        "    if self.step == 4: os._exit(3)\n"          # killed at the second checkpoint (every 2 steps)
        "    time.sleep(0.2)\n"
        "Trainer.save = save_then_die\n"
        "run_recipe(cascade.SR, 'ci', sys.argv[1], data_dir=sys.argv[2], device='cpu', progress=False)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), DATA_DIR], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 3, done.stderr
    assert json.loads((tmp_path / "clock.json").read_text())["seconds"] >= 0.2


@needs_data
def test_the_v_teacher_conversion_can_stop_before_its_learning_rate_schedule_ends_and_resumes(tmp_path):
    from lesson_lib.recipes.distilled import TEACHER_RECIPE, convert
    from lesson_lib.recipes.run import Run
    run = Run(TEACHER_RECIPE, "ci", tmp_path, DATA_DIR, "cpu", progress=False, log=lambda line: None)
    run.check()
    run.start()
    run.settings["convert_steps"] = 3
    with pytest.raises(ValueError, match=r"convert_steps must lie in 1\.\.lr_decay_steps \(2\), got convert_steps=3"):
        convert(run)
    run.settings["convert_steps"] = 1
    cut = convert(run)
    assert cut.step == 1 and cut.config.lr_decay_steps == 2          # cut short, on the 2-step schedule
    run.settings["convert_steps"] = 2
    finished = convert(run)                                           # the same folder goes on from step 1
    assert finished.step == 2 and finished.config.lr_decay_steps == 2


def test_the_students_are_distilled_from_the_shipped_teacher_that_lesson_9_distils_from_too():
    from lesson_lib.recipes import consistency, distilled
    for profile in ("full", "ci"):
        assert distilled.SETTINGS[profile]["teacher"] == consistency.SETTINGS[profile]["teacher"] == distilled.TEACHER
    card = pretrained.model_card(distilled.TEACHER)
    assert card["settings"]["convert_steps"] == 750 and card["settings"]["lr_decay_steps"] == 1000
    assert card["settings"] == json.loads(json.dumps(distilled.TEACHER_SETTINGS["full"]))


@needs_data
def test_the_ladder_of_a_students_run_reads_its_students_and_samples_the_shipped_teacher(tmp_path):
    from lesson_lib.recipes.distilled import ladder
    with pytest.raises(FileNotFoundError, match="holds no student_N.pt: run the recipe first"):
        ladder(tmp_path, n=10)
    run_recipe("mnist_distilled", "ci", tmp_path, data_dir=DATA_DIR, device="cpu", progress=False, log=lambda line: None)
    shutil.copy(tmp_path / "student_1.pt", tmp_path / "student_1.prev.pt")     # a checkpoint's previous copy: not a student
    table = ladder(tmp_path, n=10, calls=(1, 32), shipped_calls=(1,), data_dir=DATA_DIR, log=lambda line: None)
    one, teacher_only = table["rows"]
    assert one["calls"] == 1 and one["student"] and one["ddim"] and one["ddim_mnist_cond"]
    assert teacher_only["calls"] == 32 and teacher_only["student"] is None and teacher_only["ddim_mnist_cond"] is None
    assert teacher_only["ddim"]["steps"] == 32 and table["n"] == 10


@needs_data
def test_export_refuses_files_it_did_not_write_before_training(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(pretrained.WEIGHTS_DIR / "mnist_noisy_classifier.json", weights)
    with pytest.raises(FileExistsError, match="did not write it.*--overwrite"):
        run_recipe("mnist_noisy_classifier", "ci", tmp_path / "run", weights, data_dir=DATA_DIR, device="cpu")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="holds a run of recipe mnist_noisy_classifier"):
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "recipe.json").write_text(json.dumps({"recipe": "mnist_noisy_classifier",
                                                                  "profile": "ci"}))
        run_recipe("mnist_vlb", "ci", tmp_path / "run", data_dir=DATA_DIR)


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "mnist_gan"], "--recipe 'mnist_gan' is not a recipe; the recipes are: mnist_cond, "),
    (["--recipe", "mnist_cond", "--config", "mnist"], "--config and --recipe are two kinds of run"),
    (["--recipe", "mnist_cond", "--profile", "gpu"], "--recipe runs under --profile full"),
    (["--recipe", "mnist_cond", "--steps", "5"], "--steps goes with --config"),
    (["--config", "mnist", "--export", "w"], "--export goes with --recipe"),
    ([], "--config or --recipe is required"),
])
def test_wrong_recipe_commands_get_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())
