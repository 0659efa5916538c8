"""One training loop for every model in the course: the 2-D MLP, the image U-Nets, and
whatever a later lesson trains (a noisy classifier, a distilled student, a learned variance, an
autoencoder), on one process or on many.

What is minimised is the *objective*, an argument (an :class:`~lesson_lib.diffusion.losses.Objective`).
For L_simple (:class:`~lesson_lib.diffusion.losses.LSimple`) each step is Algorithm 1 of Ho et al. (2020):

    x_0 ~ data,  t ~ Uniform{1..T},  eps ~ N(0, I)
    take a gradient step on  || target - model( sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps, t ) ||^2

The loop adds what makes any objective work in practice:

* AdamW with a linear learning-rate warm-up (and an optional linear anneal) and gradient-norm
  clipping;
* an EMA of the weights for sampling (:mod:`lesson_lib.training.ema`);
* on CUDA: bfloat16 autocast where the GPU supports it (float32 elsewhere), channels-last
  memory, optionally ``torch.compile``, and the whole dataset on the GPU when it fits
  (:class:`~lesson_lib.data.loader.TensorLoader`), so that loading never starves it;
* conditioning as a dict of per-example tensors (``cond={"y": labels}``), sliced with each batch;
* random horizontal flips for datasets where they preserve meaning (CIFAR-10);
* several processes under ``torchrun`` (:mod:`lesson_lib.training.distributed`): the same global
  batch split between them, gradients averaged, the loss, the NaN guard and a stop request
  combined at each log interval, checkpoints written by the main process only;
* checkpoints written atomically that resume *exactly*: model, EMA, optimizer, the objective's
  state, step, every random number generator state (every process's) and the configuration.
  A loss that turns NaN or inf stops training with a clear error, and is never written to disk,
  so the last good checkpoint survives; a run can also stop after ``max_seconds``.

Every random number of the loop comes from a generator whose state the checkpoint saves:
the loader's (batches, flips), the objective's (t, eps, label dropout) and the global one
(dropout inside the model).

Why one module of about 480 lines: the loop, its checkpoints, its NaN guard and the collectives
between processes share one state (model, EMA, optimizer, objective, step, generators); split
apart, each part would reach into the others.
"""

import dataclasses
import math
import os
import time

import torch
from tqdm.auto import tqdm

from .checkpoint import (check_config, check_writable, checkpoint_exists, load_latest_checkpoint,
                         previous_path, save_checkpoint)
from ..arguments import float_tensor, integer, labels, number
from ..data.loader import TensorLoader, to_device_if_fits
from .distributed import Distributed
from .ema import EMA
from ..diffusion.denoiser import bf16_supported
from ..diffusion.losses import Objective


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
    hflip: bool = False            # random horizontal flips (images only)
    seed: int = 0                  # process r of several draws from seed + r
    log_every: int = 50            # also how often the loss is checked for NaN/inf (and processes agree to stop)
    max_seconds: float = 0.0       # stop (and save) after this much wall-clock time in run() (0 = no limit)
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
        self.max_seconds = number(self.max_seconds, "max_seconds", minimum=0, hint="0 means no time limit")
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


def _check_cond(model, objective, data, cond):
    """``cond`` is a dict of tensors with one entry per example; labels fit the model's classes."""
    if not isinstance(cond, dict):
        raise TypeError(f"cond must be a dict of per-example tensors such as {{'y': labels}}, got "
                        f"{type(cond).__name__}")
    for key, value in cond.items():
        what = "labels" if key == "y" else f"cond[{key!r}]"
        if not isinstance(value, torch.Tensor) or len(value) != len(data):
            raise ValueError(f"{what} must have one entry per example: data has {len(data)}, "
                             f"{what} has {len(value) if hasattr(value, '__len__') else '?'}")
    if "y" in cond:
        if getattr(model, "num_classes", None) is None:
            raise ValueError("labels were given but the model is unconditional; build it with num_classes=...")
        labels(cond["y"], model.num_classes, "labels")
    elif getattr(objective, "class_dropout", 0) > 0:
        raise ValueError("class_dropout > 0 needs class labels: pass cond={'y': labels} to the Trainer")


class Trainer:
    """Trains ``model`` on ``data`` by minimising ``objective``.

    Args:
        model: a :class:`~lesson_lib.models.base.Model`, called by the objective.
        data: a tensor of training examples, shape ``(N, ...)``: float, or uint8 images in
            0..255 (converted per batch to [-1, 1], which keeps 4x less memory on the GPU).
        objective: what to minimise, an :class:`~lesson_lib.diffusion.losses.Objective`, e.g.
            ``LSimple(schedule, class_dropout=0.1)``. Its config and state are saved in checkpoints.
        config: a :class:`TrainConfig`.
        cond: the conditioning, a dict of tensors with one entry per example, e.g. ``{"y": labels}``.
        device: where to train; defaults to this process's GPU when there is one, else the CPU
            (with several processes, "cuda" means each process's own GPU, cuda:LOCAL_RANK).
        checkpoint_path: where :meth:`save` writes and :meth:`resume` reads (with the previous
            checkpoint kept beside it, e.g. ``checkpoint.prev.pt``).
        overwrite_checkpoint: allow :meth:`save` to replace a checkpoint at ``checkpoint_path``
            that this trainer neither resumed from nor wrote (another run's). Off by default: call
            :meth:`resume` to continue that run, or choose another path.
        distributed: who this process is among several (:class:`Distributed`); by default read from
            the environment ``torchrun`` sets, else a single process.

    ``trainer.run(steps)`` trains; ``trainer.model`` holds the raw weights,
    ``trainer.ema.model`` the averaged ones (sample from those), ``trainer.history`` the
    logged ``(step, loss)`` pairs, ``trainer.own_files`` the existing files it may write over
    (the checkpoints it resumed from or wrote, the models it exported).
    """

    def __init__(self, model, data, objective, config=None, *, cond=None, device=None, checkpoint_path=None,
                 overwrite_checkpoint=False, distributed=None):
        self.config = config or TrainConfig()
        cfg = self.config
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a training objective such as LSimple(schedule), got "
                            f"{type(objective).__name__}" + (" (wrap the schedule: LSimple(schedule))"
                                                             if type(objective).__name__ == "NoiseSchedule" else ""))
        cond = {} if cond is None else cond
        _check_data(model, data)
        _check_cond(model, objective, data, cond)
        self.distributed = distributed or Distributed.from_env(
            torch.device(device).type if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        dist = self.distributed
        self.device = torch.device(device) if device is not None else dist.device()
        if dist.world > 1 and self.device.type == "cuda" and self.device.index is None:
            self.device = dist.device()                                 # each process its own GPU
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
        self.net = dist.wrap(self.model)                                        # what the objective calls
        self.net = torch.compile(self.net) if cfg.compile else self.net
        self.ema = EMA(self.model, cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay,
                                           **({"fused": True} if cuda else {}))
        self.objective = objective.to(self.device)
        data, cond = to_device_if_fits(data, {k: v.long() if k == "y" else v for k, v in cond.items()},
                                       self.device)       # the whole dataset on the GPU when it fits
        self.loader = TensorLoader(data, cond, cfg.batch_size, self.device, hflip=cfg.hflip, seed=cfg.seed,
                                   rank=dist.rank, world=dist.world)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed + dist.rank)   # the objective's draws
        torch.manual_seed(cfg.seed + dist.rank)                                           # dropout
        self.checkpoint_path = checkpoint_path
        if not isinstance(overwrite_checkpoint, bool):
            raise TypeError(f"overwrite_checkpoint must be True or False, got {overwrite_checkpoint!r}")
        self.overwrite_checkpoint = overwrite_checkpoint
        # The existing files this trainer may write over (resolved path -> "checkpoint" or "export"):
        # the checkpoints it resumed from or wrote, and the models it exported (lesson_lib.pretrained).
        self.own_files = {}
        self.step = 0
        self.unusable = False          # set when a non-finite loss stopped training; resume() clears it
        self.stop_requested = False    # set (e.g. by a signal handler) to stop cleanly
        self.history = []
        self.examples_per_second = float("nan")
        self._tick_step, self._started = 0, time.perf_counter()

    @property
    def schedule(self):
        """The noise schedule the objective trains on (None for an objective without one)."""
        return getattr(self.objective, "schedule", None)

    @property
    def num_classes(self):
        return getattr(self.model, "num_classes", None)

    # --- one step ---------------------------------------------------------------------

    def _batch(self):
        """x_0 and its conditioning from the loader, channels-last when the model is."""
        x0, cond = next(self.loader)
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        return x0, cond

    def train_step(self):
        """One optimisation step; returns the loss as a (device) tensor, without syncing."""
        cfg = self.config
        x0, cond = self._batch()
        if cfg.warmup_steps or cfg.lr_decay_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * learning_rate_factor(cfg, self.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.objective(self.net, self.model, x0, cond, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()                          # several processes: DDP averages the gradients here
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        self.objective.after_step(self)
        return loss.detach()

    # --- the loop ---------------------------------------------------------------------

    def run(self, steps, progress=True, checkpoint_every=0, callback_every=0, callback=None):
        """Train until ``self.step == steps`` (so a resumed run continues where it stopped).

        Every ``log_every`` steps the mean loss is logged and checked; every
        ``checkpoint_every`` steps (and at the end) a checkpoint is written when
        ``checkpoint_path`` is set; every ``callback_every`` steps ``callback(trainer)``
        runs (e.g. to save a grid of samples). Setting ``trainer.stop_requested = True`` (a signal
        handler may), or ``max_seconds`` running out, stops cleanly: after the current step in one
        process, at the next log interval in several (where they agree). Returns ``self.history``.

        Before the first step it calls :meth:`check_checkpoint_path`, so that a checkpoint that may
        not be written fails now, not after the work.
        """
        cfg, single = self.config, self.distributed.world == 1
        if self.unusable:
            raise NonFiniteLossError("this trainer stopped on a non-finite loss and its weights are not usable; "
                                     "call trainer.resume() to reload the last good checkpoint first")
        steps = integer(steps, "steps", minimum=0, hint="run(steps) trains until trainer.step == steps")
        checkpoint_every = integer(checkpoint_every, "checkpoint_every", minimum=0, hint="0 = only at the end")
        callback_every = integer(callback_every, "callback_every", minimum=0)
        self.check_checkpoint_path()
        self.model.train()
        self._running, self._count = 0.0, 0
        self._tick, self._tick_step, self._started = time.perf_counter(), self.step, time.perf_counter()
        self._bar = tqdm(total=steps, initial=self.step, desc="training", dynamic_ncols=True,
                         disable=not progress or not self.distributed.is_main)
        saved_at = None
        try:
            while self.step < steps and not (single and self._stopping()):
                self._running = self._running + self.train_step()
                self._count += 1
                self._bar.update(1)
                stop = False
                if self.step % cfg.log_every == 0 or self.step == steps:
                    stop = self._log()
                if checkpoint_every and self.step % checkpoint_every == 0 and self.checkpoint_path:
                    self.save()
                    saved_at = self.step
                if callback is not None and callback_every and self.step % callback_every == 0:
                    callback(self)
                if stop:
                    break
        finally:
            self._bar.close()
        if self.checkpoint_path and checkpoint_every and saved_at != self.step:
            self.save()
        return self.history

    def _stopping(self):
        """Whether this process was asked to stop, or its time is up."""
        limit = self.config.max_seconds
        return self.stop_requested or bool(limit and time.perf_counter() - self._started >= limit)

    def _log(self):
        """Log the mean loss since the last log (over every process), stop if it is NaN or
        infinite, and return whether any process asks to stop (one collective per log interval)."""
        if self._count == 0:
            return False
        mean = self.distributed.mean(self._running / self._count).item()   # read once per log interval
        if not math.isfinite(mean):
            raise NonFiniteLossError(self._nan_message(mean))
        now = time.perf_counter()
        rate = (self.step - self._tick_step) * self.config.batch_size / max(now - self._tick, 1e-9)
        self.history.append((self.step, mean))
        self._bar.set_postfix(loss=f"{mean:.4f}", ex_per_s=f"{rate:,.0f}")
        self.examples_per_second = rate
        self._running, self._count, self._tick, self._tick_step = 0.0, 0, now, self.step
        return self.distributed.any(self._stopping(), self.device)

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
        """The whole training state. With several processes every process must call it (it
        gathers each one's random generators): each resumes with its own."""
        own = {"torch": torch.get_rng_state(), "loop": self.generator.get_state()}
        if torch.cuda.is_available():
            own["cuda"] = torch.cuda.get_rng_state_all()
        every = self.distributed.gather_objects(own)
        rng = {key: [state[key] for state in every] for key in own}
        rng["loader"] = self.loader.state_dict()
        schedule = self.schedule
        return {
            "step": self.step,
            "world": self.distributed.world,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "history": [list(h) for h in self.history],
            "model_class": type(self.model).__name__,
            "model_config": dict(self.model.config),
            "train_config": dataclasses.asdict(self.config),
            "objective": self.objective.config(),
            "objective_state": self.objective.state_dict(),
            "betas": None if schedule is None else schedule.betas.cpu(),
        }

    def load_state_dict(self, state):
        missing = [key for key in _RESUMABLE if key not in state]
        if missing:
            raise ValueError(f"it is not a checkpoint that training can resume: it has no {', '.join(missing)} "
                             f"(a model written by export_model?); resume from the checkpoint that Trainer.save wrote")
        world = state.get("world", 1)
        if world != self.distributed.world:
            raise ValueError(f"this checkpoint was written by {world} process(es) and this run has "
                             f"{self.distributed.world}; resume it with the same number "
                             f"(torchrun --nproc_per_node {world}), or start a fresh run")
        check_config(state["model_config"], dict(self.model.config), "model configuration")
        check_config(_resumable(state["train_config"]), _resumable(dataclasses.asdict(self.config)),
                     "training configuration")
        written_before_objectives = {"name": "l_simple", "class_dropout": state["train_config"].get("class_dropout", 0.0)}
        check_config(state.get("objective", written_before_objectives), self.objective.config(), "training objective")
        schedule = self.schedule
        if (state["betas"] is None) != (schedule is None) or \
                (schedule is not None and not torch.equal(state["betas"], schedule.betas.cpu())):
            raise ValueError("this checkpoint was trained with a different noise schedule (betas differ); "
                             "use the schedule it was trained with")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.objective.load_state_dict(state.get("objective_state", {}))
        rank, rng = self.distributed.rank, state["rng"]
        mine = {key: value if isinstance(value, torch.Tensor) else value[rank]   # one process's: a tensor
                for key, value in rng.items() if key != "loader"}
        torch.set_rng_state(mine["torch"])
        self.generator.set_state(mine["loop"])
        self.loader.load_state_dict(rng["loader"])
        if "cuda" in mine and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(mine["cuda"])
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
        step. Creates the folder (the main process)."""
        path = path or self.checkpoint_path
        if path is None:
            return
        self._refuse_another_runs_checkpoint(path)
        if self.distributed.is_main:
            check_writable(path)

    def save(self, path=None):
        """Write the full training state atomically to ``path`` (default ``checkpoint_path``),
        keeping the checkpoint it replaces as the previous copy (``checkpoint.prev.pt``). With
        several processes, every one calls it, the main one writes, and all wait for it.

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
        state = self.state_dict()
        if self.distributed.is_main:
            save_checkpoint(state, path, keep_previous=True)
        self.distributed.barrier()
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


# Settings that may change between a run and its resumption without changing its result
# (class_dropout moved from the TrainConfig to the objective, whose config is compared instead).
_FREE_TO_CHANGE = ("log_every", "compile", "max_seconds", "class_dropout")


# Settings added later, with the value that a checkpoint written before them trained with.
_ADDED_DEFAULTS = {"lr_decay_steps": 0}


def _resumable(train_config):
    train_config = {**_ADDED_DEFAULTS, **train_config}
    return {k: v for k, v in train_config.items() if k not in _FREE_TO_CHANGE}
