"""The model card: one schema for every shipped model, checked before it is written.

Every shipped model has a card, ``lesson_lib/weights/NAME.json`` (see :mod:`lesson_lib.pretrained`).
Whatever made it, its card answers the same questions under the same keys (:data:`COMMON`): what it
is, which file it describes and its sha256, what it was trained on, with how many parameters, with
which torch, on what hardware and for how long, which command makes it now (``command``, a recipe of
:mod:`lesson_lib.recipes`, named in ``recipe``) and what was measured (``evaluation``, a dict of
figures). Each kind adds what its loader and its lessons read (:data:`PER_KIND`). A card may hold
more (its settings, the loss history, ``made_with``: the command that actually made older weights).

:func:`check_card` enforces this; :func:`lesson_lib.pretrained.write_card` calls it, so a card that
breaks the schema is never written. :func:`hardware` describes the machine a run is measured on, so
that no card carries a hand-written hardware string.
"""

import numbers
import os
import platform
import re

import torch

COMMON = {
    "name": "the shipped name: NAME.pt and NAME.json",
    "kind": "diffusion, classifier, noisy_classifier or autoencoder",
    "file": "the weights file beside the card (NAME.pt)",
    "sha256": "the weights file's sha256 (load_artifact refuses a file that differs)",
    "description": "what the model is, in a sentence or two",
    "dataset": "what it was trained on: mnist or cifar10",
    "parameters": "how many weights the network has",
    "torch": "the torch version that trained it",
    "hardware": "what it was trained on, as hardware() describes it",
    "wall_time_s": "seconds of training",
    "command": "the command that makes it now: python -m lesson_lib.train --recipe ...",
    "recipe": "the recipe of lesson_lib.recipes that makes it",
    "evaluation": "a dict of the figures measured on it",
}

PER_KIND = {
    "diffusion": {
        "model_config": "the network's config (model_from_state rebuilds it)",
        "prediction": "what the network predicts: eps, x0 or v",
        "schedule": "the noise schedule, in words",
        "sampling": "the defaults of lesson_lib.sample: {sampler, steps, grid}",
    },
    "classifier": {
        "architecture": "the class of models.classifiers (load_classifier names the judge with it)",
        "feature_dim": "the width of the features FID reads",
        "dtype": "the dtype of the stored weights",
    },
    "noisy_classifier": {
        "architecture": "the class of models.noisy_classifier",
        "model_config": "the network's config (model_from_state rebuilds it)",
        "schedule": "the noise schedule it was trained under (that of the model it guides)",
    },
    "autoencoder": {
        "architecture": "the class of models.autoencoder",
        "model_config": "the network's config (model_from_state rebuilds it)",
        "latent_shape": "the shape [c, h, w] of one image's latent",
        "scale_factor": "1 / the std of the posterior means over the whole training set (data.latents.scale_factor): "
                        "latents times it have unit variance",
    },
}
KINDS = tuple(PER_KIND)

LATENT = {"autoencoder": "the shipped autoencoder whose latents the model was trained on",
          "scale_factor": "the factor those latents were multiplied by (the autoencoder card's)"}
"""What a latent diffusion model's card adds under ``latent`` (a diffusion card without it makes pixels):
:func:`lesson_lib.pretrained.latent_decoding` decodes its samples with them."""

_TYPES = {"parameters": numbers.Integral, "wall_time_s": numbers.Real, "evaluation": dict, "model_config": dict,
          "sampling": dict, "feature_dim": numbers.Integral, "latent_shape": list, "scale_factor": numbers.Real}
_WORDS = {numbers.Integral: "a whole number", numbers.Real: "a number", dict: "a dict", list: "a list"}


def check_card(card):
    """Raise ValueError naming every key of ``card`` that is missing or of the wrong type; return the card."""
    if not isinstance(card, dict):
        raise TypeError(f"a model card is a dict, got {type(card).__name__}")
    kind = card.get("kind")
    if kind not in KINDS:
        raise ValueError(f"a model card needs kind in {KINDS}, got kind={kind!r}")
    required = {**COMMON, **PER_KIND[kind]}
    name = card.get("name", "?")
    missing = [key for key in required if card.get(key) is None]
    if missing:
        raise ValueError(f"the model card of {name!r} lacks {', '.join(missing)}: "
                         + "; ".join(f"{key} is {required[key]}" for key in missing))
    wrong = [f"{key} must be {_WORDS[kind_of]}, got {card[key]!r}" for key, kind_of in _TYPES.items()
             if key in required and (not isinstance(card[key], kind_of) or isinstance(card[key], bool))]
    wrong += [f"{key} must be text, got {card[key]!r}" for key in required
              if key not in _TYPES and key != "kind" and not isinstance(card[key], str)]
    if isinstance(card["sha256"], str) and not re.fullmatch(r"[0-9a-f]{64}", card["sha256"]):
        wrong.append(f"sha256 must be 64 hex digits, got {card['sha256']!r}")
    if isinstance(card["file"], str) and not card["file"].endswith(".pt"):
        wrong.append(f"file must name a .pt file, got {card['file']!r}")
    if kind == "diffusion" and isinstance(card["sampling"], dict):
        absent = [key for key in ("sampler", "steps", "grid") if key not in card["sampling"]]
        if absent:
            wrong.append(f"sampling must hold sampler, steps and grid; it lacks {', '.join(absent)}")
    latent = card.get("latent")
    if kind == "diffusion" and latent is not None and not (
            isinstance(latent, dict) and isinstance(latent.get("autoencoder"), str)
            and isinstance(latent.get("scale_factor"), numbers.Real) and latent["scale_factor"] > 0):
        wrong.append("latent must be a dict of " + "; ".join(f"{key}: {what}" for key, what in LATENT.items())
                     + f", got {latent!r}")
    if wrong:
        raise ValueError(f"the model card of {name!r} does not fit the schema of lesson_lib.cards: " + "; ".join(wrong))
    return card


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device=None):
    """What a run on ``device`` (default: CUDA when present, else the CPU) is measured on, for a
    model card: the GPU's name, or the CPU's model, with torch's thread count and the cores."""
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    threads = f"{torch.get_num_threads()} torch thread(s) of {os.cpu_count()} cores"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (one GPU), {threads}"
    return f"CPU {cpu_model()}, {threads}"
