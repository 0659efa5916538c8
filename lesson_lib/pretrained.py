"""Shipped models: one file format and one verifying loader for everything the course ships.

Every shipped model, a diffusion model or a classifier, is two files in ``lesson_lib/weights/``:

* ``NAME.pt``: a torch file that loads with ``weights_only=True`` (tensors, numbers, strings,
  lists and dicts; never pickled code);
* ``NAME.json``: its model card: ``kind`` ("diffusion", "classifier", "noisy_classifier", the
  time-conditioned guide of lesson 5, or "autoencoder", the first stage of latent diffusion),
  ``file``, the file's ``sha256``, how it was trained (command, hardware, wall time) and what it
  scores, in the one schema of :mod:`lesson_lib.cards`.

:func:`load_artifact` is the one loader: it reads the card, refuses a ``.pt`` whose sha256 differs
from the card's, and loads it safely. :func:`load_pretrained` rebuilds a diffusion model from it,
:func:`load_noisy_classifier` a guide for classifier guidance, :func:`load_autoencoder` an
autoencoder with its latent scale factor, :func:`lesson_lib.evaluation.judges.load_classifier` a
classifier. :func:`save_artifact` writes both files atomically.

A training checkpoint written by :class:`~lesson_lib.training.trainer.Trainer` holds the model's
class and configuration, the noise schedule's betas, and the raw and EMA weights;
:func:`load_model` rebuilds the network (and its ``prediction``) from it, and
:func:`export_model` writes the compact shipped form (fp16 EMA weights, no optimizer).

One writer makes every shipped file: :func:`save_artifact` (the weights, cast to fp16 by
:func:`fp16_weights`, and the card, checked against the one schema of :mod:`lesson_lib.cards`);
the recipes of :mod:`lesson_lib.recipes` call it through :func:`export_model` or directly.
"""

import dataclasses
import json
import os
from pathlib import Path

import torch

from .cards import KINDS, check_card
from .data.latents import latent_decoder
from .diffusion.flow_matching import FlowGrid
from .diffusion.schedules import NoiseSchedule
from .files import atomic_write, sha256_of
from .models import MODEL_CLASSES
from .training.checkpoint import load_checkpoint, previous_path, save_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"


# --- the one format ------------------------------------------------------------------------

def fp16_weights(weights, dtype=torch.float16):
    """A state dict on the CPU with every floating-point tensor in ``dtype`` (fp16: half the size of
    float32, and what every shipped model stores); integer tensors (e.g. BatchNorm's counters) as they are."""
    return {k: v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu() for k, v in weights.items()}


def save_artifact(state, path, card=None, *, owner=None, overwrite=False):
    """The one writer of a shipped model: ``state`` to ``path`` (.pt) and, when given, its model card
    beside it (:func:`write_card`, checked against the schema before anything is written), both
    atomically. Returns the card as written (``path`` without a card).

    With ``owner`` (a Trainer, or a recipe's run: anything with ``checkpoint_path`` and ``own_files``)
    it refuses what :func:`check_export_path` refuses, for both files, and records them as the
    owner's exports, which it may then replace."""
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"the weights file must end in .pt, got path={str(path)!r}")
    if card is not None:
        check_card(dict(card, file=path.name, sha256="0" * 64))
    written = [path] + ([path.with_suffix(".json")] if card is not None else [])
    if owner is not None:
        for file in written:
            check_export_path(owner, file, overwrite)
    save_checkpoint(state, path)
    card = None if card is None else write_card(path, card)
    if owner is not None:
        owner.own_files.update({os.path.realpath(file): "export" for file in written})
    return path if card is None else card


def write_card(path, card):
    """Write ``card`` with the ``file`` name and ``sha256`` of the existing ``path`` (.pt) to the
    .json beside it, atomically, after :func:`~lesson_lib.cards.check_card` (the one schema).
    Returns the card as a reader of the file gets it."""
    path = Path(path)
    card = check_card(dict(card, file=path.name, sha256=sha256_of(path)))
    text = json.dumps(card, indent=2) + "\n"
    atomic_write(path.with_suffix(".json"), lambda f: f.write(text.encode()))
    return json.loads(text)                   # as written: tuples are lists now, as a reader gets them


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
    """Names of the shipped models of ``kind`` (one of :data:`~lesson_lib.cards.KINDS`, or None for all)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None (every model), got kind={kind!r}")
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
    config), so every sampler reads it from the model. A model trained without a noise schedule
    (an autoencoder: its checkpoint's betas are None) comes back with ``schedule`` None, and a
    flow-matching model with the flow's time grid, :class:`~lesson_lib.diffusion.flow_matching.FlowGrid`,
    by which :func:`lesson_lib.sample.generate` knows to integrate its velocity."""
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
    schedule = None if state["betas"] is None else NoiseSchedule(state["betas"])
    objective = state.get("objective") or {}
    if objective.get("name") == "flow_matching":
        schedule = FlowGrid(objective["T"])
    return model.to(device).eval(), schedule


def load_model(path, ema=True, device="cpu"):
    """``model, schedule = load_model("runs/mnist/checkpoint.pt")``: the EMA weights unless ``ema=False``."""
    return model_from_state(load_checkpoint(path), ema=ema, device=device, where=str(path))


def check_export_path(owner, path, overwrite=False):
    """Refuse to export over what cannot be replaced: the run's own checkpoint (or its previous
    copy, or any checkpoint the ``owner``, a Trainer or a recipe's run, resumed from), ever, since
    an export cannot resume training; and any other existing file the owner did not export itself,
    unless ``overwrite=True``."""
    resolved = os.path.realpath(path)
    checkpoint = owner.checkpoint_path
    checkpoints = {os.path.realpath(p) for p in (checkpoint, previous_path(checkpoint))} if checkpoint else set()
    if resolved in checkpoints or owner.own_files.get(resolved) == "checkpoint":
        raise ValueError(f"export: {os.fspath(path)!r} is this run's training checkpoint; an export keeps "
                         f"no optimizer or RNG state, so writing it there would end the run; export to "
                         f"another file, e.g. {os.path.join(os.path.dirname(os.fspath(path)), 'model.pt')!r}")
    if os.path.exists(path) and not overwrite and resolved not in owner.own_files:
        raise FileExistsError(f"export: {os.fspath(path)!r} already exists and this run did not write it; "
                              f"export to another file, or pass overwrite=True (--overwrite) to replace it")


def model_payload(trainer, dtype=torch.float16, ema=True):
    """What a shipped diffusion model, noisy classifier or autoencoder holds: its weights in ``dtype``
    (the EMA weights; the trained ones with ``ema=False``, for a model trained without EMA such as a
    distilled student) with everything :func:`load_model` needs (the model's class and config, the
    betas: None for an objective without a noise schedule) and its provenance (step, training and
    objective config, loss history)."""
    weights = trainer.ema.state_dict() if ema else {"model": trainer.model.state_dict()}
    schedule = trainer.schedule
    return {"model_class": type(trainer.model).__name__,
            "model_config": dict(trainer.model.config),
            "betas": None if schedule is None else schedule.betas.cpu(),
            "ema": {**weights, "model": fp16_weights(weights["model"], dtype)},
            "step": trainer.step,
            "train_config": dataclasses.asdict(trainer.config),
            "objective": trainer.objective.config(),
            "history": [list(h) for h in trainer.history]}


def export_model(trainer, path, dtype=torch.float16, overwrite=False):
    """Save a trained model for sampling and sharing: :func:`model_payload` (its EMA weights in
    ``dtype``, fp16 by default, and what rebuilds it), written by :func:`save_artifact`.

    Unlike :meth:`Trainer.save <lesson_lib.training.trainer.Trainer.save>` it keeps no raw
    weights, optimizer or RNG state, so it cannot resume training; it is what the shipped
    models are (give it a model card with :func:`write_card`, or let a recipe of
    :mod:`lesson_lib.recipes` write both). Written atomically. Returns ``path``.

    It never writes over the run's checkpoint, and over another existing file only when this
    trainer exported it earlier or ``overwrite=True`` (:func:`check_export_path`).
    """
    save_artifact(model_payload(trainer, dtype), path, owner=trainer, overwrite=overwrite)
    return path


def load_pretrained(name="mnist_cond", device="cpu", weights_dir=None):
    """Load a shipped diffusion model: ``model, schedule = load_pretrained("mnist_cond")``.

    Verified against the sha256 on its card by :func:`load_artifact`; ``weights_dir`` reads another
    folder of shipped models (e.g. a recipe's ``--export``) than ``lesson_lib/weights``."""
    card = model_card(name, weights_dir)
    if card.get("kind") != "diffusion":
        raise ValueError(f"{name!r} is a shipped {card.get('kind')}, not a diffusion model; "
                         f"diffusion models: {available('diffusion', weights_dir)}")
    state, _ = load_artifact(name, weights_dir)
    return model_from_state(state, ema=True, device=device)


def _load_kind(name, kind, one, plural, device, weights_dir):
    """A shipped model of ``kind`` (its card checked, its weights verified and loaded), in eval mode with
    its card as ``model.card``; returns ``(model, schedule)``."""
    card = model_card(name, weights_dir)
    if card.get("kind") != kind:
        raise ValueError(f"{name!r} is a shipped {card.get('kind')}, not {one}; "
                         f"{plural}: {available(kind, weights_dir)}")
    state, _ = load_artifact(name, weights_dir, hint="reinstall lesson_lib or retrain with: " + card.get("command", ""))
    model, schedule = model_from_state(state, ema=True, device=device)
    model.card = card
    return model, schedule


def load_noisy_classifier(name="mnist_noisy_classifier", device="cpu", weights_dir=None):
    """Load a shipped noisy classifier f_phi(y | x_t, t), the guide of classifier guidance:
    ``classifier, schedule = load_noisy_classifier()``, in eval mode, with the schedule it was
    trained under. Verified against the sha256 on its card by :func:`load_artifact`."""
    return _load_kind(name, "noisy_classifier", "a noisy classifier", "noisy classifiers", device, weights_dir)


def load_autoencoder(name="mnist_autoencoder", device="cpu", weights_dir=None):
    """Load a shipped autoencoder, the first stage of latent diffusion: ``autoencoder, scale_factor =
    load_autoencoder("mnist_autoencoder")``, in eval mode, with the factor its card records (1 / the std of
    its latents over the whole training set: :func:`lesson_lib.data.latents.scale_factor`). Verified
    against the sha256 on its card by :func:`load_artifact`; the card is ``autoencoder.card``."""
    autoencoder, _ = _load_kind(name, "autoencoder", "an autoencoder", "autoencoders", device, weights_dir)
    return autoencoder, autoencoder.card["scale_factor"]


def cascade_base(name, weights_dir=None):
    """The base model a shipped super-resolution model follows (its card's settings name it: ``mnist_sr``
    -> ``mnist_base14``, lesson 12's cascade), or None for a model that is not a cascade's SR stage."""
    return model_card(name, weights_dir).get("settings", {}).get("base")


def latent_decoding(name, device="cpu", weights_dir=None):
    """How to turn the samples of shipped model ``name`` into images, as keyword arguments of
    :func:`lesson_lib.sample.generate` and :func:`lesson_lib.evaluate.evaluate`: ``{}`` for a model
    of pixels; for a latent diffusion model (its card's ``latent`` names the autoencoder and the scale
    factor its latents were multiplied by) ``{"decode": ..., "clip_x0": False}``, the autoencoder's
    :func:`~lesson_lib.data.latents.latent_decoder` (latents are not confined to [-1, 1])."""
    latent = model_card(name, weights_dir).get("latent")
    if latent is None:
        return {}
    return decoding_by(latent["autoencoder"], device, weights_dir, latent["scale_factor"])


def decoding_by(autoencoder_name, device="cpu", weights_dir=None, scale=None):
    """``{"decode": ..., "clip_x0": False}`` for samples of a model trained on the latents of the shipped
    autoencoder ``autoencoder_name``, scaled by ``scale`` (default: the factor its card records, the one
    the recipes scale by)."""
    autoencoder, card_scale = load_autoencoder(autoencoder_name, device=device, weights_dir=weights_dir)
    return {"decode": latent_decoder(autoencoder, card_scale if scale is None else scale), "clip_x0": False}
