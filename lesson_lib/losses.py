"""The training objective of Ho et al. (2020).

L_simple (Eq. 14) = E_{t, x_0, eps} || eps - eps_theta( sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps, t ) ||^2

with t uniform over the T steps. Predicting x_0 or v instead of eps (Salimans & Ho, 2022)
only changes the regression target; the sampler converts back (see :mod:`lesson_lib.forward`).
"""

import torch
import torch.nn.functional as F

from .forward import check_prediction, q_sample, v_from_x0_eps


def l_simple(model, schedule, x0, t=None, eps=None, prediction="eps", **model_kwargs):
    """The mean squared error between the network's prediction and its target (Eq. 14).

    ``t`` (shape ``(B,)``) and ``eps`` are drawn when not given: t uniformly from 0..T-1,
    eps from N(0, I). Extra keyword arguments (e.g. class labels ``y``) go to the model.
    Returns a scalar tensor, averaged over the batch and every dimension.
    """
    check_prediction(prediction)
    if t is None:
        t = torch.randint(0, schedule.T, (x0.shape[0],), device=x0.device)
    if eps is None:
        eps = torch.randn_like(x0)
    x_t = q_sample(schedule, x0, t, eps)
    target = {"eps": eps, "x0": x0}.get(prediction)
    if target is None:
        target = v_from_x0_eps(schedule, x0, eps, t)
    output = model(x_t, t, **model_kwargs)
    if output.shape != target.shape:
        raise ValueError(f"the model returned shape {tuple(output.shape)} but the {prediction} "
                         f"target has shape {tuple(target.shape)}; the model must map x_t to "
                         f"a tensor of the same shape")
    return F.mse_loss(output.float(), target.float())
