"""Shipped models: one file format and one verifying loader for everything the course ships.

Every shipped model, a diffusion model or a classifier, is two files in ``lesson_lib/weights/``:

* ``NAME.pt``: a torch file that loads with ``weights_only=True`` (tensors, numbers, strings,
  lists and dicts; never pickled code);
* ``NAME.json``: its model card: ``kind`` ("diffusion", "classifier" or "noisy_classifier",
  the time-conditioned guide of lesson 5), ``file``, the file's
  ``sha256``, how it was trained (command, hardware, wall time) and what it scores.

:func:`load_artifact` is the one loader: it reads the card, refuses a ``.pt`` whose sha256 differs
from the card's, and loads it safely. :func:`load_pretrained` rebuilds a diffusion model from it,
:func:`load_noisy_classifier` a guide for classifier guidance,
:func:`lesson_lib.evaluation.judges.load_classifier` a classifier. :func:`save_artifact` writes
both files atomically.

A training checkpoint written by :class:`~lesson_lib.training.trainer.Trainer` holds the model's
class and configuration, the noise schedule's betas, and the raw and EMA weights;
:func:`load_model` rebuilds the network (and its ``prediction``) from it, and
:func:`export_model` writes the compact shipped form (fp16 EMA weights, no optimizer).
"""

import dataclasses
import json
import os
from pathlib import Path

import torch

from .diffusion.schedules import NoiseSchedule
from .files import atomic_write, sha256_of
from .models import MODEL_CLASSES
from .training.checkpoint import load_checkpoint, previous_path, save_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"
KINDS = ("diffusion", "classifier", "noisy_classifier")


# --- the one format ------------------------------------------------------------------------

def save_artifact(state, path, card):
    """Write ``state`` to ``path`` (.pt) and its model card beside it (:func:`write_card`), both
    atomically. Returns the card as written."""
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"the weights file must end in .pt, got path={str(path)!r}")
    save_checkpoint(state, path)
    return write_card(path, card)


def write_card(path, card):
    """Write ``card`` with the ``file`` name and ``sha256`` of the existing ``path`` (.pt) to the
    .json beside it, atomically. ``card["kind"]`` must be one of :data:`KINDS`."""
    path = Path(path)
    if card.get("kind") not in KINDS:
        raise ValueError(f"a model card needs kind in {KINDS}, got kind={card.get('kind')!r}")
    card = dict(card, file=path.name, sha256=sha256_of(path))
    text = json.dumps(card, indent=2) + "\n"
    atomic_write(path.with_suffix(".json"), lambda f: f.write(text.encode()))
    return card


def model_card(name, weights_dir=None, hint=None):
    """The model card (a dict) of the shipped model ``name``."""
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    path = weights_dir / f"{name}.json"
    if not path.exists() or not (weights_dir / f"{name}.pt").exists():
        raise FileNotFoundError(f"no shipped model named {name!r} in {weights_dir} (need {name}.pt "
                                f"and {name}.json); available: {available(None, weights_dir)}"
                                + (f"; {hint}" if hint else ""))
    return json.loads(path.read_text())


def load_artifact(name, weights_dir=None, hint="reinstall lesson_lib"):
    """``state, card = load_artifact(name)``: the verified contents of ``NAME.pt`` and its card.

    The file's sha256 must match the card; otherwise it was corrupted or replaced, and we refuse
    to load it (``hint`` says how to get a good copy)."""
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    card = model_card(name, weights_dir, hint)
    path = weights_dir / card["file"]
    if not path.exists():
        raise FileNotFoundError(f"the card {name}.json names {card['file']}, which is missing from "
                                f"{weights_dir}; {hint}")
    digest = sha256_of(path)
    if digest != card.get("sha256"):
        raise RuntimeError(f"{path} does not match its model card (sha256 {digest[:12]}... != "
                           f"{str(card.get('sha256'))[:12]}...): the file is corrupted or was "
                           f"replaced; {hint}")
    return torch.load(path, map_location="cpu", weights_only=True), card


def available(kind="diffusion", weights_dir=None):
    """Names of the shipped models of ``kind`` ("diffusion", "classifier" or None for all)."""
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    names = []
    for path in sorted(weights_dir.glob("*.json")):
        if kind is None or json.loads(path.read_text()).get("kind") == kind:
            names.append(path.stem)
    return names


# --- diffusion models ----------------------------------------------------------------------

def model_from_state(state, ema=True, device="cpu", where="this checkpoint"):
    """Rebuild ``(model, schedule)`` from a loaded checkpoint dict (EMA weights by default).

    The model comes back with the ``prediction`` it was trained with (it is part of its
    config), so every sampler reads it from the model."""
    missing = [k for k in ("model_config", "betas", "ema") if k not in state]
    if missing:
        raise ValueError(f"{where} is not a checkpoint of lesson_lib: it has no {', '.join(missing)} "
                         f"(it was not written by Trainer.save or export_model)")
    cls = MODEL_CLASSES.get(state.get("model_class", "UNet"))
    if cls is None:
        raise ValueError(f"unknown model class {state['model_class']!r} in the checkpoint; "
                         f"known: {sorted(MODEL_CLASSES)}")
    model = cls.from_config(state["model_config"])
    if not ema and "model" not in state:
        raise ValueError("this checkpoint holds only EMA weights (as the shipped models do): use ema=True")
    weights = state["ema"]["model"] if ema else state["model"]
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    except RuntimeError as error:
        raise ValueError(f"{where} is not a checkpoint of lesson_lib: its weights do not fit the model its "
                         f"config describes ({str(error).splitlines()[0][:200]}); the file was edited or "
                         f"mixed from two runs") from error
    return model.to(device).eval(), NoiseSchedule(state["betas"])


def load_model(path, ema=True, device="cpu"):
    """``model, schedule = load_model("runs/mnist/checkpoint.pt")``: the EMA weights unless ``ema=False``."""
    return model_from_state(load_checkpoint(path), ema=ema, device=device, where=str(path))


def check_export_path(trainer, path, overwrite=False):
    """Refuse to export over what cannot be replaced: the run's own checkpoint (or its previous
    copy, or any checkpoint the trainer resumed from), ever, since an export cannot resume training;
    and any other existing file the trainer did not export itself, unless ``overwrite=True``."""
    resolved = os.path.realpath(path)
    checkpoints = {os.path.realpath(p) for p in (trainer.checkpoint_path, previous_path(trainer.checkpoint_path))} \
        if trainer.checkpoint_path else set()
    if resolved in checkpoints or trainer.own_files.get(resolved) == "checkpoint":
        raise ValueError(f"export_model: {os.fspath(path)!r} is this run's training checkpoint; an export keeps "
                         f"no optimizer or RNG state, so writing it there would end the run; export to "
                         f"another file, e.g. {os.path.join(os.path.dirname(os.fspath(path)), 'model.pt')!r}")
    if os.path.exists(path) and not overwrite and resolved not in trainer.own_files:
        raise FileExistsError(f"export_model: {os.fspath(path)!r} already exists and this run did not write it; "
                              f"export to another file, or pass overwrite=True to replace it")


def export_model(trainer, path, dtype=torch.float16, overwrite=False):
    """Save a trained model for sampling and sharing: its EMA weights in ``dtype`` (fp16 by
    default, half the size of float32) with everything :func:`load_model` needs (the model's
    class and config, the betas) and its provenance (step, training and objective config,
    loss history).

    Unlike :meth:`Trainer.save <lesson_lib.training.trainer.Trainer.save>` it keeps no raw
    weights, optimizer or RNG state, so it cannot resume training; it is what the shipped
    models are (give it a model card with :func:`write_card`). Written
    atomically. Returns ``path``.

    It never writes over the run's checkpoint, and over another existing file only when this
    trainer exported it earlier or ``overwrite=True`` (:func:`check_export_path`).
    """
    check_export_path(trainer, path, overwrite)
    ema = trainer.ema.state_dict()
    weights = {k: v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()
               for k, v in ema["model"].items()}
    save_checkpoint({"model_class": type(trainer.model).__name__,
                     "model_config": dict(trainer.model.config),
                     "betas": trainer.schedule.betas.cpu(),
                     "ema": {**ema, "model": weights},
                     "step": trainer.step,
                     "train_config": dataclasses.asdict(trainer.config),
                     "objective": trainer.objective.config(),
                     "history": [list(h) for h in trainer.history]}, path)
    trainer.own_files[os.path.realpath(path)] = "export"
    return path


def load_pretrained(name="mnist_cond", device="cpu"):
    """Load a shipped diffusion model: ``model, schedule = load_pretrained("mnist_cond")``.

    Verified against the sha256 on its card by :func:`load_artifact`."""
    card = model_card(name)
    if card.get("kind") != "diffusion":
        raise ValueError(f"{name!r} is a shipped {card.get('kind')}, not a diffusion model; "
                         f"diffusion models: {available('diffusion')}")
    state, _ = load_artifact(name)
    return model_from_state(state, ema=True, device=device)


def load_noisy_classifier(name="mnist_noisy_classifier", device="cpu"):
    """Load a shipped noisy classifier f_phi(y | x_t, t), the guide of classifier guidance:
    ``classifier, schedule = load_noisy_classifier()``, in eval mode, with the schedule it was
    trained under. Verified against the sha256 on its card by :func:`load_artifact`."""
    card = model_card(name)
    if card.get("kind") != "noisy_classifier":
        raise ValueError(f"{name!r} is a shipped {card.get('kind')}, not a noisy classifier; "
                         f"noisy classifiers: {available('noisy_classifier')}")
    state, _ = load_artifact(name, hint="reinstall lesson_lib or retrain with: " + card.get("command", ""))
    classifier, schedule = model_from_state(state, ema=True, device=device)
    classifier.card = card
    return classifier, schedule
