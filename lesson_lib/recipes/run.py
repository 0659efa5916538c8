"""What every recipe shares: the :class:`Recipe` record and the :class:`Run` of one in a folder.

A recipe is data and two functions (one module of this package holds one family of them):

    settings              {"full": ..., "ci": ...}: "full" made the shipped weights; "ci" runs the same
                          code in seconds (a few steps of small batches on a few hundred images, and a
                          tiny evaluation), so that a test runs every recipe from end to end
    train(run)            trains in the run's folder, or resumes what is there; returns what export needs
    export(run, trained, weights_dir, overwrite)
                          measures the trained model and ships it with its card (:meth:`Run.save`)

A :class:`Run` is one recipe under one profile in one folder. The folder holds the checkpoints of its
Trainers (so the same command resumes where it stopped) and three small files: ``recipe.json`` (which
recipe and profile it holds: another is refused), ``clock.json`` (the seconds trained so far, over
every resumption: a recipe limited by the clock stops at its limit, and the card records the whole
time) and ``exports.json`` (the files it shipped with their sha256: those it may replace later).
"""

import contextlib
import copy
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from ..arguments import choice
from ..cards import hardware
from ..data.images import load_dataset, uint8_to_float
from ..files import atomic_write, sha256_of
from ..pretrained import WEIGHTS_DIR, check_export_path, save_artifact

UNLIMITED = 10 ** 9
"""The steps of a run that only the clock stops (its ``max_seconds``)."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How shipped models are made: ``ships`` (their names) from ``settings`` by ``train`` and ``export``."""

    name: str
    dataset: str
    ships: tuple
    settings: dict
    train: Callable
    export: Callable
    summary: str


def default_folder(name, profile):
    """Where a run goes without ``--out``: ``runs/NAME-PROFILE``."""
    return Path("runs") / f"{name}-{profile}"


def _read_json(path, default):
    return json.loads(path.read_text()) if path.exists() else default


def _write_json(path, value):
    text = json.dumps(value, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


class Run:
    """One recipe under one profile in ``folder``; see the module docstring for what the folder holds.

    ``own_files`` maps the resolved paths this run may write over to "checkpoint" (never exported
    over) or "export", as a Trainer's does, so that :func:`lesson_lib.pretrained.check_export_path`
    judges a run's exports as it judges a Trainer's."""

    checkpoint_path = None          # a run has several checkpoints: they are all in own_files

    def __init__(self, recipe, profile="full", folder=None, data_dir=None, device=None, progress=True, log=print):
        self.recipe = recipe
        self.profile = choice(profile, "profile", tuple(recipe.settings),
                              hint="a recipe runs in full (what made the shipped weights) or ci (seconds)")
        self.settings = copy.deepcopy(recipe.settings[profile])
        self.folder = Path(folder) if folder is not None else default_folder(recipe.name, profile)
        self.data_dir, self.device, self.progress, self.log = data_dir, device, progress, log
        self.own_files = {}

    def path(self, name):
        return self.folder / name

    # --- the folder ---------------------------------------------------------------------

    def check(self):
        """Refuse a folder that holds something other than this recipe's run under this profile, and
        read back the files an earlier export of this run wrote (still unchanged). Writes nothing."""
        folder, marker = self.folder, self.path("recipe.json")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--out {folder} is a file, not a folder; choose a folder for the run")
        if marker.exists():
            held = json.loads(marker.read_text())
            if (held.get("recipe"), held.get("profile")) != (self.recipe.name, self.profile):
                raise ValueError(f"--out {folder} holds a run of recipe {held.get('recipe')} (profile "
                                 f"{held.get('profile')}), not {self.recipe.name} (profile {self.profile}); "
                                 f"choose another --out, or repeat that run's command to resume it")
        elif folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
            raise ValueError(f"--out {folder} holds other files but no recipe.json of a run to resume, and a "
                             f"fresh run could overwrite them; choose a new or empty folder")
        for path, digest in _read_json(self.path("exports.json"), {}).items():
            if os.path.exists(path) and sha256_of(path) == digest:
                self.own_files[path] = "export"

    def check_exports(self, weights_dir, overwrite=False):
        """Refuse, before any training, an export that would replace files this run did not write."""
        weights_dir = Path(weights_dir)
        if weights_dir.exists() and not weights_dir.is_dir():
            raise ValueError(f"--export {weights_dir} is a file; name the folder the weights go to")
        for name in self.recipe.ships:
            for suffix in (".pt", ".json"):
                check_export_path(self, weights_dir / f"{name}{suffix}", overwrite)

    def start(self):
        """Create the folder and mark it as this recipe's run; apply the profile's thread count."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.path("recipe.json").exists():
            _write_json(self.path("recipe.json"), {"recipe": self.recipe.name, "profile": self.profile,
                                                   "settings": self.settings})
        if "threads" in self.settings:
            torch.set_num_threads(self.settings["threads"])

    # --- training -----------------------------------------------------------------------

    def images(self, split="train", as_uint8=True):
        """The recipe's dataset split, ``(images, labels)``, cut to the profile's ``n_train`` / ``n_test``."""
        images, labels, _ = load_dataset(self.recipe.dataset, split, data_dir=self.data_dir, as_uint8=True)
        n = self.settings.get(f"n_{split}")
        images, labels = (images, labels) if n is None else (images[:n], labels[:n])
        return (images if as_uint8 else uint8_to_float(images)), labels

    def seconds(self):
        """Seconds trained so far in this folder, over every resumption."""
        return _read_json(self.path("clock.json"), {"seconds": 0.0})["seconds"]

    @contextlib.contextmanager
    def clock(self):
        """Add the time spent inside to the run's clock, at the end (also when training is interrupted)
        and whenever the ``tick`` it yields is called: :meth:`train` ticks at every checkpoint, so a run
        killed outright (no ``finally``) loses from its clock only the steps it will redo."""
        start, before = time.perf_counter(), self.seconds()

        def tick(*_):
            _write_json(self.path("clock.json"), {"seconds": before + time.perf_counter() - start})

        try:
            yield tick
        finally:
            tick()

    def resume(self, trainer, what="training"):
        """Resume ``trainer`` from its checkpoint when there is one, and say so."""
        if trainer.resume():
            self.log(f"{what}: resumed from {trainer.checkpoint_path} at step {trainer.step}")
        self.own_files.update(trainer.own_files)

    def train(self, trainer, steps=None, max_seconds=0, checkpoint_every=0):
        """Train until ``steps`` or, with ``max_seconds``, until the run's clock reaches them (the
        Trainer's own limit, set to what is left of them). A finished run trains nothing more."""
        steps = UNLIMITED if steps is None else steps
        if max_seconds:
            left = max_seconds - self.seconds()
            if left <= 0:
                return
            trainer.config.max_seconds = left        # free to change between resumptions
        if trainer.step >= steps:
            return
        with self.clock() as tick:
            trainer.run(steps, progress=self.progress, checkpoint_every=checkpoint_every,
                        callback_every=checkpoint_every, callback=tick)
        self.own_files.update(trainer.own_files)

    # --- shipping -----------------------------------------------------------------------

    def command(self, weights_dir):
        """The command that makes this run's models, for their cards."""
        weights_dir = Path(weights_dir)
        shown = "lesson_lib/weights" if weights_dir.resolve() == WEIGHTS_DIR.resolve() else str(weights_dir)
        profile = "" if self.profile == "full" else f" --profile {self.profile}"
        return f"python -m lesson_lib.train --recipe {self.recipe.name}{profile} --export {shown}"

    def card(self, name, kind, description, model, evaluation, weights_dir, **fields):
        """A model card with the fields every card shares (:data:`lesson_lib.cards.COMMON`) filled in
        from this run, and the kind's own ``fields``."""
        device = next(model.parameters()).device if self.device is None else self.device
        return {"name": name, "kind": kind, "description": description, "dataset": self.recipe.dataset,
                "parameters": sum(p.numel() for p in model.parameters()), **fields,
                "torch": torch.__version__, "hardware": hardware(device), "wall_time_s": round(self.seconds(), 1),
                "command": self.command(weights_dir), "recipe": self.recipe.name, "evaluation": evaluation}

    def save(self, state, weights_dir, name, card, overwrite=False):
        """Ship ``state`` as ``weights_dir/NAME.pt`` with its card (:func:`~lesson_lib.pretrained.save_artifact`),
        and note both files as this run's exports. Returns the card."""
        path = Path(weights_dir) / f"{name}.pt"
        card = save_artifact(state, path, card, owner=self, overwrite=overwrite)
        exports = _read_json(self.path("exports.json"), {})
        for file in (path, path.with_suffix(".json")):
            exports[os.path.realpath(file)] = sha256_of(file)
        _write_json(self.path("exports.json"), exports)
        self.log(f"exported {path} (sha256 {card['sha256'][:12]}...) and its card")
        return card
