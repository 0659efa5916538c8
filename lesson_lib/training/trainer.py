"""One training loop for every model in the course: the 2-D MLP, the image U-Nets, and
whatever a later lesson trains (a noisy classifier, a distilled student, a learned variance).

What is minimised is the *objective*, an argument (see :mod:`lesson_lib.diffusion.losses`).
By default it is L_simple, so each step is Algorithm 1 of Ho et al. (2020):

    x_0 ~ data,  t ~ Uniform{1..T},  eps ~ N(0, I)
    take a gradient step on  || target - model( sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps, t ) ||^2

(:class:`lesson_lib.diffusion.losses.LSimple`). The loop adds what makes any objective work in
practice:

* AdamW with a linear learning-rate warm-up and gradient-norm clipping;
* an EMA of the weights for sampling (:mod:`lesson_lib.training.ema`);
* on CUDA: bfloat16 autocast where the GPU supports it (float32 elsewhere), channels-last
  memory, optionally ``torch.compile``, and the whole dataset on the GPU when it fits
  (:class:`~lesson_lib.data.loader.TensorLoader`), so that loading never starves it;
* label dropout for classifier-free guidance (Ho & Salimans, 2022), in the default
  objective: with probability ``class_dropout`` a label is replaced by the model's null class;
* random horizontal flips for datasets where they preserve meaning (CIFAR-10);
* checkpoints written atomically that resume *exactly*: model, EMA, optimizer, step, every
  random number generator state and the configuration. A loss that turns NaN or inf stops
  training with a clear error, and is never written to disk, so the last good checkpoint
  survives; the one before it is kept too (``checkpoint.prev.pt``), and :meth:`Trainer.resume`
  falls back to it when the newest cannot be read.
* nothing of another run is overwritten: a trainer writes over an existing checkpoint only
  when it resumed from it or wrote it itself (or was told ``overwrite_checkpoint=True``), and
  :meth:`Trainer.run` checks that, and that the folder is writable, before the first step.

Every random number of the loop comes from a generator whose state the checkpoint saves:
the loader's (batches, flips), the objective's (t, eps, label dropout) and the global one
(dropout inside the model).

Why one module of about 450 lines: the loop, its checkpoints and its NaN guard share one state
(model, EMA, optimizer, step, generators); split apart, each part would reach into the others.
"""

import dataclasses
import math
import os
import time

import torch
from tqdm.auto import tqdm

from .checkpoint import (check_config, check_writable, checkpoint_exists, load_latest_checkpoint,
                         previous_path, save_checkpoint)
from ..arguments import float_tensor, integer, number
from ..data.loader import TensorLoader, to_device_if_fits
from .ema import EMA
from ..diffusion.denoiser import bf16_supported
from ..diffusion.losses import LSimple
from ..diffusion.schedules import NoiseSchedule


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of :class:`Trainer`. Defaults suit the 2-D models; see
    :mod:`lesson_lib.train` for the image presets."""

    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0          # linear learning-rate warm-up from 0 to lr
    lr_decay_steps: int = 0        # anneal lr linearly to 0 at this step (0 = constant lr)
    grad_clip: float = 1.0         # clip the global gradient norm to this (0 = off)
    ema_decay: float = 0.995
    class_dropout: float = 0.0     # P(label -> null class), for classifier-free guidance (default objective)
    hflip: bool = False            # random horizontal flips (images only)
    seed: int = 0
    log_every: int = 50            # also how often the loss is checked for NaN/inf
    bf16: bool = None              # autocast to bfloat16; None = where the GPU supports it
    channels_last: bool = None     # None = on CUDA for images only
    compile: bool = False          # torch.compile the model (CUDA, PyTorch >= 2.2)

    def __post_init__(self):
        self.batch_size = integer(self.batch_size, "batch_size", minimum=1)
        self.log_every = integer(self.log_every, "log_every", minimum=1)
        self.warmup_steps = integer(self.warmup_steps, "warmup_steps", minimum=0, hint="0 means no warm-up")
        self.lr_decay_steps = integer(self.lr_decay_steps, "lr_decay_steps", minimum=0,
                                      hint="0 keeps lr constant; N anneals it linearly to 0 at step N")
        self.seed = integer(self.seed, "seed")
        self.lr = number(self.lr, "lr", minimum=0, strict_minimum=True)
        self.weight_decay = number(self.weight_decay, "weight_decay", minimum=0)
        self.grad_clip = number(self.grad_clip, "grad_clip", minimum=0, hint="0 turns clipping off")
        self.ema_decay = number(self.ema_decay, "ema_decay", minimum=0, maximum=1, strict_maximum=True,
                                hint="e.g. 0.999 (an average over about the last 1,000 steps)")
        self.class_dropout = number(self.class_dropout, "class_dropout", minimum=0, maximum=1, strict_maximum=True)
        for name in ("hflip", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {name}={getattr(self, name)!r}")
        for name in ("bf16", "channels_last"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True, False or None (automatic), got {name}={getattr(self, name)!r}")


def learning_rate_factor(config, step):
    """lr / config.lr at (0-based) optimisation step ``step``: a linear warm-up over
    ``warmup_steps``, times a linear anneal 1 - step / lr_decay_steps (never below 0) when
    ``lr_decay_steps`` is set (as each halving of progressive distillation does)."""
    factor = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_decay_steps:
        factor *= max(0.0, 1.0 - step / config.lr_decay_steps)
    return factor


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing from that point on was saved."""


def use_bf16(device, requested=None):
    """Whether to train under bfloat16 autocast on ``device``: on a CUDA GPU that supports it
    (:func:`~lesson_lib.diffusion.denoiser.bf16_supported`: Ampere and newer, e.g. A100, H100, not
    Colab's T4, where bfloat16 is only emulated), else
    float32. ``requested`` (TrainConfig.bf16) True forces it and fails clearly where unsupported."""
    device = torch.device(device)
    supported = bf16_supported(device)
    if requested and not supported:
        raise ValueError(f"bf16=True, but {device} does not support bfloat16 "
                         f"({'this GPU predates Ampere' if device.type == 'cuda' else 'only CUDA GPUs do here'}); "
                         f"leave bf16=None to train in float32")
    return supported if requested is None else bool(requested)


def default_device():
    """CUDA when present, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_data(model, data):
    """The training data fit the model: a tensor of float values (finite) or uint8 images, with the
    channels and image size the model was built for."""
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a tensor of training examples, got {type(data).__name__}")
    if data.dtype != torch.uint8:
        float_tensor(data, "data")
    channels, size = getattr(model, "in_channels", None), getattr(model, "image_size", None)
    if data.ndim == 4:
        if channels is not None and data.shape[1] != channels:
            raise ValueError(f"data has {data.shape[1]} channel(s) per image but the model was built for "
                             f"{channels}; build it with in_channels={data.shape[1]}")
        if size is not None and tuple(data.shape[2:]) != (size, size):
            raise ValueError(f"data holds {data.shape[2]}x{data.shape[3]} images but the model was built for "
                             f"{size}x{size}; resize the images or build the model with image_size=...")
    elif data.ndim == 2 and channels is not None and data.shape[1] != channels:
        raise ValueError(f"data has points of dimension {data.shape[1]} but the model was built for "
                         f"{channels}; build it with dim={data.shape[1]}")


class Trainer:
    """Trains ``model`` on ``data`` under ``schedule`` by minimising ``objective``.

    Args:
        model: a :class:`~lesson_lib.models.base.Model`, called by the objective (for
            L_simple as ``model(x_t, t)`` or ``model(x_t, t, y=labels)``), with attributes
            ``prediction`` and ``config`` (a dict).
        schedule: a :class:`~lesson_lib.diffusion.schedules.NoiseSchedule`.
        data: a tensor of training examples, shape ``(N, ...)``: float, or uint8 images in
            0..255 (converted per batch to [-1, 1], which keeps 4x less memory on the GPU).
        config: a :class:`TrainConfig`.
        labels: class labels ``(N,)`` for a class-conditional model.
        device: where to train; defaults to CUDA when present.
        checkpoint_path: where :meth:`save` writes and :meth:`resume` reads (with the previous
            checkpoint kept beside it, e.g. ``checkpoint.prev.pt``).
        objective: what to minimise, ``objective(model, schedule, x0, y, generator) -> loss``
            with a ``config()`` (see :mod:`lesson_lib.diffusion.losses`); default
            ``LSimple(config.class_dropout)``. Its config is saved in checkpoints.
        overwrite_checkpoint: allow :meth:`save` to replace a checkpoint at ``checkpoint_path``
            that this trainer neither resumed from nor wrote (another run's). Off by default: call
            :meth:`resume` to continue that run, or choose another path.

    ``trainer.run(steps)`` trains; ``trainer.model`` holds the raw weights,
    ``trainer.ema.model`` the averaged ones (sample from those), ``trainer.history`` the
    logged ``(step, loss)`` pairs, ``trainer.own_files`` the existing files it may write over
    (the checkpoints it resumed from or wrote, the models it exported).
    """

    def __init__(self, model, schedule, data, config=None, labels=None, device=None,
                 checkpoint_path=None, objective=None, overwrite_checkpoint=False):
        self.config = config or TrainConfig()
        cfg = self.config
        if objective is not None and cfg.class_dropout:
            raise ValueError("class_dropout is a setting of the default objective; with objective= "
                             "given, set it on the objective (e.g. LSimple(class_dropout=0.1))")
        self.objective = objective if objective is not None else LSimple(cfg.class_dropout)
        self.device = torch.device(device) if device is not None else default_device()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}; "
                            f"e.g. NoiseSchedule.from_name('linear', 1000)")
        _check_data(model, data)
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"labels must have one entry per example: data has {len(data)}, "
                             f"labels has {len(labels)}")
        if labels is None and cfg.class_dropout > 0:
            raise ValueError("class_dropout > 0 needs class labels: pass labels=...")
        self.num_classes = getattr(model, "num_classes", None)
        if labels is not None and self.num_classes is None:
            raise ValueError("labels were given but the model is unconditional; build it with num_classes=...")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
                raise TypeError(f"labels must be a 1-D integer tensor, got dtype {labels.dtype} and shape "
                                f"{tuple(labels.shape)}")
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"labels must lie in 0..{self.num_classes - 1} (the model has "
                                 f"{self.num_classes} classes), got {int(labels.min())}..{int(labels.max())}")
        if cfg.batch_size > len(data):
            raise ValueError(f"batch_size={cfg.batch_size} is larger than the dataset ({len(data)} examples)")
        self.is_image = data.ndim == 4
        if cfg.hflip and not self.is_image:
            raise ValueError("hflip=True needs images of shape (N, C, H, W)")
        cuda = self.device.type == "cuda"
        self.bf16 = use_bf16(self.device, cfg.bf16)
        self.channels_last = (cuda and self.is_image) if cfg.channels_last is None else cfg.channels_last

        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model
        self.ema = EMA(self.model, cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay,
                                           **({"fused": True} if cuda else {}))
        self.schedule = schedule.to(self.device)
        if labels is not None:
            labels = labels.long()
        data, labels = to_device_if_fits(data, labels, self.device)   # whole dataset on the GPU when it fits
        self.loader = TensorLoader(data, labels, cfg.batch_size, self.device, hflip=cfg.hflip, seed=cfg.seed)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)    # the objective's draws
        torch.manual_seed(cfg.seed)                                             # dropout
        self.checkpoint_path = checkpoint_path
        if not isinstance(overwrite_checkpoint, bool):
            raise TypeError(f"overwrite_checkpoint must be True or False, got {overwrite_checkpoint!r}")
        self.overwrite_checkpoint = overwrite_checkpoint
        # The existing files this trainer may write over (resolved path -> "checkpoint" or "export"):
        # the checkpoints it resumed from or wrote, and the models it exported (lesson_lib.pretrained).
        self.own_files = {}
        self.step = 0
        self.unusable = False          # set when a non-finite loss stopped training; resume() clears it
        self.stop_requested = False    # set (e.g. by a signal handler) to stop cleanly after this step
        self.history = []
        self.examples_per_second = float("nan")
        self._tick_step = 0

    # --- one step ---------------------------------------------------------------------

    def _batch(self):
        """x_0 (and labels) from the loader, channels-last when the model is."""
        x0, y = next(self.loader)
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        return x0, y

    def train_step(self):
        """One optimisation step; returns the loss as a (device) tensor, without syncing."""
        cfg = self.config
        x0, y = self._batch()
        if cfg.warmup_steps or cfg.lr_decay_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * learning_rate_factor(cfg, self.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.objective(self.forward_model, self.schedule, x0, y, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return loss.detach()

    # --- the loop ---------------------------------------------------------------------

    def run(self, steps, progress=True, checkpoint_every=0, callback_every=0, callback=None):
        """Train until ``self.step == steps`` (so a resumed run continues where it stopped).

        Every ``log_every`` steps the mean loss is logged and checked; every
        ``checkpoint_every`` steps (and at the end) a checkpoint is written when
        ``checkpoint_path`` is set; every ``callback_every`` steps ``callback(trainer)``
        runs (e.g. to save a grid of samples). Setting ``trainer.stop_requested = True`` (a signal
        handler may) stops cleanly after the current step. Returns ``self.history``.

        Before the first step it calls :meth:`check_checkpoint_path`, so that a checkpoint that may
        not be written fails now, not after the work.
        """
        cfg = self.config
        if self.unusable:
            raise NonFiniteLossError("this trainer stopped on a non-finite loss and its weights are not usable; "
                                     "call trainer.resume() to reload the last good checkpoint first")
        steps = integer(steps, "steps", minimum=0, hint="run(steps) trains until trainer.step == steps")
        checkpoint_every = integer(checkpoint_every, "checkpoint_every", minimum=0, hint="0 = only at the end")
        callback_every = integer(callback_every, "callback_every", minimum=0)
        self.check_checkpoint_path()
        self.model.train()
        self._running, self._count = 0.0, 0
        self._tick, self._tick_step = time.perf_counter(), self.step
        self._bar = tqdm(total=steps, initial=self.step, desc="training", disable=not progress,
                         dynamic_ncols=True)
        saved_at = None
        try:
            while self.step < steps and not self.stop_requested:
                self._running = self._running + self.train_step()
                self._count += 1
                self._bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == steps:
                    self._log()
                if checkpoint_every and self.step % checkpoint_every == 0 and self.checkpoint_path:
                    self.save()
                    saved_at = self.step
                if callback is not None and callback_every and self.step % callback_every == 0:
                    callback(self)
        finally:
            self._bar.close()
        if self.checkpoint_path and checkpoint_every and saved_at != self.step:
            self.save()
        return self.history

    def _log(self):
        """Log the mean loss since the last log, and stop if it is NaN or infinite."""
        if self._count == 0:
            return
        mean = (self._running / self._count).item()        # read back once per log interval, not per step
        if not math.isfinite(mean):
            raise NonFiniteLossError(self._nan_message(mean))
        now = time.perf_counter()
        rate = (self.step - self._tick_step) * self.config.batch_size / max(now - self._tick, 1e-9)
        self.history.append((self.step, mean))
        self._bar.set_postfix(loss=f"{mean:.4f}", ex_per_s=f"{rate:,.0f}")
        self.examples_per_second = rate
        self._running, self._count, self._tick, self._tick_step = 0.0, 0, now, self.step

    def _nan_message(self, value):
        self.unusable = True
        if self.checkpoint_path and os.path.exists(self.checkpoint_path):
            where = (f"the last good checkpoint, {self.checkpoint_path}, is intact. The weights in memory "
                     f"(trainer.model, trainer.ema.model) are not usable: call trainer.resume() to reload "
                     f"the last good state")
        else:
            where = ("no checkpoint was written. The weights in memory (trainer.model, trainer.ema.model) "
                     "are not usable: build the model again and start a new Trainer")
        return (f"the training loss became {value} between steps {self._tick_step} and {self.step}; "
                f"stopped without saving, and {where}. Try a lower lr "
                f"(now {self.config.lr}), a longer warm-up, or grad_clip > 0")

    # --- checkpoints --------------------------------------------------------------------

    def state_dict(self):
        rng = {"torch": torch.get_rng_state(), "loop": self.generator.get_state(),
               "loader": self.loader.state_dict()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "history": [list(h) for h in self.history],
            "model_class": type(self.model).__name__,
            "model_config": dict(self.model.config),
            "train_config": dataclasses.asdict(self.config),
            "objective": self.objective.config(),
            "betas": self.schedule.betas.cpu(),
        }

    def load_state_dict(self, state):
        missing = [key for key in _RESUMABLE if key not in state]
        if missing:
            raise ValueError(f"it is not a checkpoint that training can resume: it has no {', '.join(missing)} "
                             f"(a model written by export_model?); resume from the checkpoint that Trainer.save wrote")
        check_config(state["model_config"], dict(self.model.config), "model configuration")
        check_config(_resumable(state["train_config"]), _resumable(dataclasses.asdict(self.config)),
                     "training configuration")
        check_config(state.get("objective", LSimple(state["train_config"].get("class_dropout", 0.0)).config()),
                     self.objective.config(), "training objective")
        if not torch.equal(state["betas"], self.schedule.betas.cpu()):
            raise ValueError("this checkpoint was trained with a different noise schedule (betas differ); "
                             "use the schedule it was trained with")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["loop"])
        self.loader.load_state_dict(state["rng"]["loader"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = state["step"]
        self.history = [tuple(h) for h in state["history"]]
        self.unusable = False

    def may_replace(self, path):
        """Whether this trainer may write a checkpoint over an existing ``path``: it resumed from
        it or wrote it itself, or was built with ``overwrite_checkpoint=True``."""
        return self.overwrite_checkpoint or os.path.realpath(path) in self.own_files

    def _refuse_another_runs_checkpoint(self, path):
        """Raise FileExistsError if a checkpoint this trainer may not replace is at ``path``."""
        if os.path.isdir(path):
            raise IsADirectoryError(f"checkpoint_path {os.fspath(path)!r} is a folder; pass the file to write, "
                                    f"e.g. {os.path.join(path, 'checkpoint.pt')!r}")
        if checkpoint_exists(path) and not self.may_replace(path):
            found = path if os.path.exists(path) else previous_path(path)
            raise FileExistsError(f"{os.fspath(found)!r} holds a checkpoint that this trainer did not write "
                                  f"(another run's?), and training would overwrite it; call trainer.resume() "
                                  f"first to continue that run, or choose another checkpoint_path (or pass "
                                  f"overwrite_checkpoint=True to replace it)")

    def check_checkpoint_path(self, path=None):
        """Fail now if saving to ``path`` (default ``checkpoint_path``; nothing to check without one)
        would later fail or overwrite another run's checkpoint: :meth:`run` calls it before the first
        step. Creates the folder."""
        path = path or self.checkpoint_path
        if path is None:
            return
        self._refuse_another_runs_checkpoint(path)
        check_writable(path)

    def save(self, path=None):
        """Write the full training state atomically to ``path`` (default ``checkpoint_path``),
        keeping the checkpoint it replaces as the previous copy (``checkpoint.prev.pt``).

        Refuses (NonFiniteLossError) when any weight is NaN or infinite, so that a checkpoint
        on disk is always a good one, and (FileExistsError) to replace a checkpoint that this trainer
        neither resumed from nor wrote (see :meth:`may_replace`)."""
        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass checkpoint_path= to Trainer or path= to save()")
        self._refuse_another_runs_checkpoint(path)
        params = list(self.model.parameters()) + list(self.ema.model.parameters())
        if not bool(torch.stack([p.detach().float().isfinite().all() for p in params]).all()):
            raise NonFiniteLossError(self._nan_message("non-finite (NaN or inf weights)"))
        save_checkpoint(self.state_dict(), path, keep_previous=True)
        self.own_files[os.path.realpath(path)] = "checkpoint"

    def resume(self, path=None):
        """Load the state saved at ``path`` (default ``checkpoint_path``); True if one was found.

        When the newest checkpoint is missing or unreadable (e.g. truncated) but the previous copy
        beside it loads, resumes from that one and prints a warning. From then on this trainer may
        write over the checkpoint: it continues that run."""
        path = path or self.checkpoint_path
        if path is None:
            return False
        state = load_latest_checkpoint(path, map_location=self.device)
        if state is None:
            return False
        self.load_state_dict(state)
        self.own_files[os.path.realpath(path)] = "checkpoint"
        return True


# What a checkpoint needs to be resumed (an export, made for sampling, lacks most of it).
_RESUMABLE = ("step", "model", "ema", "optimizer", "rng", "history", "model_config", "train_config", "betas")


# Settings that may change between a run and its resumption without changing its result.
_FREE_TO_CHANGE = ("log_every", "compile")


# Settings added later, with the value that a checkpoint written before them trained with.
_ADDED_DEFAULTS = {"lr_decay_steps": 0}


def _resumable(train_config):
    train_config = {**_ADDED_DEFAULTS, **train_config}
    return {k: v for k, v in train_config.items() if k not in _FREE_TO_CHANGE}
