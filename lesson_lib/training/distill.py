"""Progressive distillation as a sequence of ordinary training runs (Salimans & Ho, 2022, Algorithm 2).

Each halving is one :class:`~lesson_lib.training.trainer.Trainer` with the objective
:class:`~lesson_lib.diffusion.distillation.Distillation`: the student starts as a copy of its
teacher (dropout off), has its own optimiser, a learning rate annealed linearly to 0 within
the halving (``lr_decay_steps``) and no EMA (``ema_decay = 0``: the sampled weights are the
trained ones); when it is done it becomes the next teacher. Every halving writes its own
checkpoint, so an interrupted run resumes where it stopped (finished halvings are only reloaded).

A student is only as good as its teacher's targets, so each checkpoint records which teacher it
was distilled from (the sha256 of the teacher's weights, in the objective's config): a
``checkpoint_dir`` of one teacher's students is refused, not resumed, under another teacher.
"""

import copy
import dataclasses
from pathlib import Path

import torch

from ..arguments import choice, integer
from ..diffusion.distillation import WEIGHTINGS, Distillation
from .checkpoint import ConfigMismatchError, weights_sha256
from .trainer import TrainConfig, Trainer


def student_from(teacher):
    """A copy of ``teacher`` with dropout switched off (the paper's students train without it),
    rebuilt from its config so that the config says so too, with the teacher's weights."""
    config = dict(teacher.config)
    if "dropout" in config:
        config["dropout"] = 0.0
    student = type(teacher).from_config(config)
    student.load_state_dict(copy.deepcopy(teacher.state_dict()))
    return student


class DistillationFrom(Distillation):
    """:class:`~lesson_lib.diffusion.distillation.Distillation` whose config also names the
    teacher, by the sha256 of its weights (:func:`~lesson_lib.training.checkpoint.weights_sha256`).
    The config is saved in every checkpoint and compared on resume, so a student is never resumed
    under a teacher other than its own."""

    def __init__(self, schedule, teacher, student_steps, weighting="snr_trunc"):
        super().__init__(schedule, teacher, student_steps, weighting)
        self.teacher_sha256 = weights_sha256(teacher)

    def config(self):
        return {**super().config(), "teacher_sha256": self.teacher_sha256}


def halving_config(config, train_steps, student_steps):
    """The TrainConfig of one halving: ``config`` with no EMA, no warm-up, the lr annealed
    linearly to 0 over ``train_steps``, and a seed of its own."""
    return dataclasses.replace(config, ema_decay=0.0, warmup_steps=0, lr_decay_steps=train_steps,
                               seed=config.seed + student_steps)


def progressive_distillation(teacher, schedule, data, cond=None, *, start_steps=64, end_steps=1,
                             train_steps=200, config=None, weighting="snr_trunc", checkpoint_dir=None,
                             device=None, progress=False, on_student=None):
    """Halve ``teacher`` (sampled with DDIM on ``start_steps`` steps of the nested grid of
    :func:`~lesson_lib.diffusion.distillation.distillation_timesteps`) down to ``end_steps``.

    Args:
        teacher: the first teacher (a :class:`~lesson_lib.models.base.Model`; v or x0 prediction
            is advised, see :func:`~lesson_lib.diffusion.distillation.eps_error_gain`).
        cond: the conditioning of ``data`` (e.g. ``{"y": labels}``), as for the Trainer.
        start_steps, end_steps: the teacher's steps and the last student's; their ratio is a power of 2.
        train_steps: optimisation steps per halving (an int, or a dict {student_steps: int}).
        config: the :class:`TrainConfig` each halving starts from (lr, batch size, seed);
            see :func:`halving_config` for what is overridden.
        checkpoint_dir: where ``student_{N}.pt`` of each halving is written (and resumed from,
            unless it was distilled from another teacher: then ValueError).
        on_student: ``on_student(N, trainer)`` after each halving (e.g. to export it).

    Returns a list of ``(N, trainer)`` from the first student (start_steps / 2) to the last;
    ``trainer.model`` is the student, ``trainer.history`` its logged losses.
    """
    start_steps = integer(start_steps, "start_steps", minimum=2)
    end_steps = integer(end_steps, "end_steps", minimum=1, maximum=start_steps // 2)
    ratio = start_steps // end_steps
    if start_steps % end_steps or ratio & (ratio - 1):
        raise ValueError(f"start_steps / end_steps must be a power of 2, got {start_steps} / {end_steps}")
    choice(weighting, "weighting", WEIGHTINGS)
    config = config or TrainConfig(batch_size=min(64, len(data)), lr=1e-4)
    results, student_steps = [], start_steps // 2
    while student_steps >= end_steps:
        steps = train_steps[student_steps] if isinstance(train_steps, dict) else train_steps
        steps = integer(steps, "train_steps", minimum=1)
        path = None if checkpoint_dir is None else Path(checkpoint_dir) / f"student_{student_steps}.pt"
        trainer = Trainer(student_from(teacher), data, DistillationFrom(schedule, teacher, student_steps, weighting),
                          halving_config(config, steps, student_steps), cond=cond, device=device,
                          checkpoint_path=path)
        try:
            trainer.resume()
        except ConfigMismatchError as error:
            if "teacher_sha256" not in error.keys:
                raise
            raise ValueError(f"{path} holds a student distilled from another teacher (its weights' sha256 "
                             f"differs from this teacher's), so it cannot be resumed; pass the teacher it was "
                             f"distilled from, or a fresh checkpoint_dir for this teacher") from error
        trainer.run(steps, progress=progress, checkpoint_every=max(1, steps // 4) if path else 0)
        results.append((student_steps, trainer))
        if on_student is not None:
            on_student(student_steps, trainer)
        teacher = trainer.model.eval()
        student_steps //= 2
    return results


@torch.no_grad()
def sample_student(model, schedule, steps, shape, labels=None, generator=None, clip_x0=True):
    """Sample ``model`` with DDIM (eta = 0) on ``steps`` steps of the nested distillation grid
    (x0_hat clipped at every step when ``clip_x0``, as :mod:`lesson_lib.sample` does). Returns
    images in [-1, 1]."""
    from ..diffusion.distillation import sampler_timesteps
    from ..diffusion.sampling import ddim_sample
    device = next(model.parameters()).device
    return ddim_sample(model, schedule, shape, timesteps=sampler_timesteps(schedule.T, steps), clip_x0=clip_x0,
                       model_kwargs=None if labels is None else {"y": labels.to(device)}, device=device,
                       generator=generator, progress=False)
