"""Checks for lesson 2, sampling and training on the swiss roll (solutions/02_swiss_roll.ipynb).

``reverse_step`` is compared with lesson_lib's reverse process (Algorithm 2 of Ho et al.,
sigma_t^2 = beta_t) for a fixed toy "network". ``training_step`` draws its own t and eps, so
the checks record what the model was called with, recover eps from x_t by inverting Eq. 4,
and compare the loss and the SGD update with :func:`lesson_lib.diffusion.losses.l_simple` for that same
t and eps. Total: 10 points.
"""

import copy

import torch

from lesson_lib.diffusion import losses, sampling
from lesson_lib.course.checks import (check, expect_close, expect_fresh_t_and_eps, expect_sgd_step,
                                      expect_tensor)
from lesson_lib.diffusion.schedules import NoiseSchedule

INDEX_HINT = "Code index t is the paper's t+1: betas[t] is beta_{t+1}."
ALGORITHM_2 = ("Algorithm 2: x_{t-1} = (x_t - beta_t / sqrt(1 - alpha-bar_t) * eps_model(x_t, t)) "
               "/ sqrt(alpha_t) + sigma_t * z with alpha_t = 1 - beta_t and sigma_t = sqrt(beta_t).")


def _toy_eps_model(x_t, t):
    """A fixed stand-in for a trained network; it depends on t so that a wrong t shows."""
    return 0.5 * torch.tanh(x_t) + (t.float() / 1000).reshape(-1, *[1] * (x_t.ndim - 1))


class _Recording(torch.nn.Module):
    """Wraps a model and remembers every (x_t, t) it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = []

    def forward(self, x_t, t):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (x_t.shape[0],):
            described = (f"a {t.dtype} tensor of shape {tuple(t.shape)}"
                         if isinstance(t, torch.Tensor) else repr(t))
            raise AssertionError(f"the model must be called as model(x_t, t) with t a long tensor of "
                                 f"shape (B,) = ({x_t.shape[0]},), one timestep per example; got {described}")
        self.calls.append((x_t.detach().clone(), t.detach().clone()))
        return self.model(x_t, t)


class _TinyDenoiser(torch.nn.Module):
    """A two-layer network eps_theta(x_t, t) for 2-D data."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def forward(self, x_t, t):
        return self.net(torch.cat([x_t, (t.float() / self.T)[:, None]], dim=1))


def _reference_step(x_t, t, schedule, z):
    t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long)
    mean, variance, _ = sampling.p_mean_variance(_toy_eps_model, schedule, x_t, t_batch, variance="beta")
    return mean if t == 0 else mean + variance.sqrt() * z


def _student_step(ns, model, x_t, t, schedule, z):
    x_prev = ns["reverse_step"](model, x_t.clone(), t, schedule.betas.clone(),
                                schedule.alpha_bars.clone(), z.clone())
    expect_tensor(x_prev, f"reverse_step at t = {t}", shape=x_t.shape, dtype=x_t.dtype)
    return x_prev


@check(points=3, uses=["reverse_step"])
def reverse_step_matches_algorithm_2(ns):
    """reverse_step computes one step of Algorithm 2 (sigma_t^2 = beta_t) at t = T-1, T/2, 1."""
    schedule = NoiseSchedule.linear(1000)
    for t in (999, 500, 1):
        x_t, z = torch.randn(5, 2), torch.randn(5, 2)
        got = _student_step(ns, _toy_eps_model, x_t, t, schedule, z)
        expect_close(got, _reference_step(x_t, t, schedule, z), f"reverse_step at t = {t}",
                     rtol=1e-4, atol=1e-5, hint=f"{ALGORITHM_2} {INDEX_HINT}")


@check(points=1, uses=["reverse_step"])
def reverse_step_last_step_adds_no_noise(ns):
    """At t = 0 (the paper's t = 1) reverse_step returns the mean and ignores z."""
    schedule = NoiseSchedule.linear(1000)
    x_t, z = torch.randn(5, 2), 10 * torch.randn(5, 2)
    got = _student_step(ns, _toy_eps_model, x_t, 0, schedule, z)
    expect_close(got, _reference_step(x_t, 0, schedule, z), "reverse_step at t = 0", rtol=1e-4, atol=1e-5,
                 hint="Algorithm 2 sets z = 0 at the last step: at code t = 0 return the mean, no noise.")


@check(points=1, uses=["reverse_step"])
def reverse_step_handles_images_and_timesteps(ns):
    """reverse_step calls eps_model(x_t, t) with t a long tensor (B,) and works for images."""
    schedule = NoiseSchedule.linear(1000)
    x_t, z = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    model = _Recording(_toy_eps_model)
    got = _student_step(ns, model, x_t, 7, schedule, z)
    if len(model.calls) != 1:
        raise AssertionError(f"reverse_step should call eps_model once per step, it called it "
                             f"{len(model.calls)} times")
    seen_x, seen_t = model.calls[0]
    if not torch.equal(seen_t, torch.full((3,), 7)):
        raise AssertionError(f"reverse_step at t = 7 called eps_model with t = {seen_t.tolist()}, "
                             f"expected [7, 7, 7]. {INDEX_HINT}")
    if not torch.equal(seen_x, x_t):
        raise AssertionError("reverse_step must give eps_model the current x_t unchanged")
    expect_close(got, _reference_step(x_t, 7, schedule, z), "reverse_step for x_t of shape (3, 1, 4, 4)",
                 rtol=1e-4, atol=1e-5, hint="Use per-step scalars (betas[t] is one number) so that "
                 "they broadcast over any shape of x_t.")


# --- training_step ----------------------------------------------------------------------

def _one_training_step(ns, model, optimizer, x0, schedule):
    """Call the student's training_step and return (loss, x_t, t, eps) of that call, with eps
    recovered from x_t by inverting Eq. 4 in float64."""
    n_before = len(model.calls)
    loss = ns["training_step"](model, optimizer, x0.clone(), schedule.alpha_bars.clone())
    if len(model.calls) != n_before + 1:
        raise AssertionError(f"training_step should call the model exactly once, it called it "
                             f"{len(model.calls) - n_before} times")
    if isinstance(loss, torch.Tensor) or not isinstance(loss, float):
        raise AssertionError(f"training_step returned {type(loss).__name__}; return loss.item(), "
                             f"a Python float (so that no graph is kept alive)")
    x_t, t = model.calls[-1]
    if t.min() < 0 or t.max() >= schedule.T:
        raise AssertionError(f"training_step drew timesteps from {int(t.min())} to {int(t.max())}; "
                             f"they must lie in 0..T-1 = 0..{schedule.T - 1}")
    a = schedule.alpha_bars[t].view(-1, 1)
    eps = (x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
    return loss, x_t, t, eps.float()


def _setup(T, seed=0):
    torch.manual_seed(seed)
    model = _Recording(_TinyDenoiser(T))
    return model, NoiseSchedule.linear(T), 0.8 * torch.randn(64, 2)


@check(points=2, uses=["training_step"])
def training_step_returns_l_simple(ns):
    """training_step returns L_simple (Ho Eq. 14) for the t and eps it drew, before the update."""
    model, schedule, x0 = _setup(1000)
    before = copy.deepcopy(model.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss, _, t, eps = _one_training_step(ns, model, optimizer, x0, schedule)
    expected = losses.l_simple(before, schedule, x0, t=t, eps=eps).item()
    if abs(loss - expected) > 1e-4 * max(1.0, abs(expected)):
        raise AssertionError(
            f"training_step returned {loss:.6g}, but L_simple for the t and eps it used is "
            f"{expected:.6g}: the loss is mean((eps - model(x_t, t))^2) over every entry, with "
            f"x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps, computed before optimizer.step()")


@check(points=2, uses=["training_step"])
def training_step_updates_parameters(ns):
    """Two steps with SGD move the parameters by -lr * grad L_simple each (zero_grad, step)."""
    lr = 0.1
    model, schedule, x0 = _setup(1000, seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    previous_grads = None
    for step in (1, 2):
        before = copy.deepcopy(model.model)
        _, _, t, eps = _one_training_step(ns, model, optimizer, x0, schedule)
        grads = torch.autograd.grad(losses.l_simple(before, schedule, x0, t=t, eps=eps),
                                    list(before.parameters()))
        expect_sgd_step(before, model.model, grads, previous_grads, lr, step)
        previous_grads = grads


@check(points=1, uses=["training_step"])
def training_step_draws_t_and_eps(ns):
    """training_step draws t uniformly from 0..T-1 and fresh eps ~ N(0, I) at every call."""
    torch.manual_seed(2)
    T, B = 10, 4000
    model, schedule = _Recording(_TinyDenoiser(T)), NoiseSchedule.linear(T)
    x0 = torch.randn(B, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    _, _, t, eps = _one_training_step(ns, model, optimizer, x0, schedule)
    _, _, t2, eps2 = _one_training_step(ns, model, optimizer, x0, schedule)
    expect_fresh_t_and_eps(t, eps, t2, eps2, T)
