"""Loading trained models: your own checkpoints, and the ones shipped with the course.

A checkpoint written by :class:`~lesson_lib.training.Trainer` holds the model's class and
configuration, the noise schedule's betas, and the raw and EMA weights;
:func:`load_model` rebuilds the network from it. The course also ships small pretrained
models (``lesson_lib/pretrained/NAME.pt`` with a model card ``NAME.json``) so that a
student without a GPU can still see what a well-trained model does; :func:`load_pretrained`
checks each file against the hash on its card before loading it. :func:`export_model` writes
that compact format (fp16 EMA weights, no optimizer) from a trainer, to share your own model.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .mlp import MLPDenoiser
from .schedules import NoiseSchedule
from .unet import UNet

MODEL_CLASSES = {"UNet": UNet, "MLPDenoiser": MLPDenoiser}
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def model_from_state(state, ema=True, device="cpu"):
    """Rebuild ``(model, schedule)`` from a loaded checkpoint dict (EMA weights by default)."""
    cls = MODEL_CLASSES.get(state.get("model_class", "UNet"))
    if cls is None:
        raise ValueError(f"unknown model class {state['model_class']!r} in the checkpoint; "
                         f"known: {sorted(MODEL_CLASSES)}")
    model = cls.from_config(state["model_config"])
    if not ema and "model" not in state:
        raise ValueError("this checkpoint holds only EMA weights (as the shipped models do): use ema=True")
    weights = state["ema"]["model"] if ema else state["model"]
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    return model.to(device).eval(), NoiseSchedule(state["betas"])


def load_model(path, ema=True, device="cpu"):
    """``model, schedule = load_model("runs/mnist/checkpoint.pt")``: the EMA weights unless ``ema=False``."""
    return model_from_state(load_checkpoint(path), ema=ema, device=device)


def export_model(trainer, path, dtype=torch.float16):
    """Save a trained model for sampling and sharing: its EMA weights in ``dtype`` (fp16 by
    default, half the size of float32) with everything :func:`load_model` needs (the model's
    class and config, the betas) and its provenance (step, training config, loss history).

    Unlike :meth:`Trainer.save <lesson_lib.training.Trainer.save>` it keeps no raw weights,
    optimizer or RNG state, so it cannot resume training; it is what the shipped models are.
    Written atomically. Returns ``path``.
    """
    ema = trainer.ema.state_dict()
    weights = {k: v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()
               for k, v in ema["model"].items()}
    save_checkpoint({"model_class": type(trainer.model).__name__,
                     "model_config": dict(trainer.model.config),
                     "betas": trainer.schedule.betas.cpu(),
                     "ema": {**ema, "model": weights},
                     "step": trainer.step,
                     "train_config": dataclasses.asdict(trainer.config),
                     "history": [list(h) for h in trainer.history]}, path)
    return path


def available():
    """Names of the pretrained models shipped with the package."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.json"))


def model_card(name):
    """The model card (a dict) of a shipped pretrained model."""
    path = PRETRAINED_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no pretrained model named {name!r}; available: {available()}")
    return json.loads(path.read_text())


def load_pretrained(name="mnist_cond", device="cpu"):
    """Load a shipped model: ``model, schedule = load_pretrained("mnist_cond")``.

    The file's sha256 must match its model card; otherwise the file was corrupted or
    replaced, and we refuse to load it.
    """
    card = model_card(name)
    path = PRETRAINED_DIR / card["file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != card["sha256"]:
        raise RuntimeError(f"{path} does not match its model card (sha256 {digest[:12]}... != "
                           f"{card['sha256'][:12]}...): the file is corrupted or was replaced; "
                           f"reinstall lesson_lib")
    return load_model(path, ema=True, device=device)
