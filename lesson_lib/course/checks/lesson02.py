"""Checks for lesson 2, sampling and training on the swiss roll (solutions/02_swiss_roll.ipynb).

``reverse_step`` is compared with lesson_lib's reverse process (Algorithm 2 of Ho et al.,
sigma_t^2 = beta_t) for a fixed toy "network". ``training_step`` draws its own t and eps, so
the probe records what the model was called with and the parameters after each step; the
judge recovers eps from x_t by inverting Eq. 4 and compares the loss and the SGD update with
:func:`lesson_lib.diffusion.losses.l_simple` for that same t and eps, on a copy of the model
rebuilt in the grader from the weights it drew. ``sigma_squared`` answers which reverse
variance is optimal for two kinds of data (Ho et al., Sec. 3.2). Total: 12 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import (as_number, expect_close, expect_finite, expect_fresh_t_and_eps,
                                              expect_number, expect_sgd_step, expect_tensor, field, pairs)
from lesson_lib.course.protocol import type_name
from lesson_lib.diffusion.schedules import NoiseSchedule

# What the worker loads besides this module (see lesson_lib/course/box.py): the schedule builds the
# probes' alpha-bars; the references (losses, sampling) are imported inside the judges only.
WORKER_MODULES = ("lesson_lib.diffusion.schedules",)

INDEX_HINT = "Code index t is the paper's t+1: betas[t] is beta_{t+1}."
ALGORITHM_2 = ("Algorithm 2: x_{t-1} = (x_t - beta_t / sqrt(1 - alpha-bar_t) * eps_model(x_t, t)) "
               "/ sqrt(alpha_t) + sigma_t * z with alpha_t = 1 - beta_t and sigma_t = sqrt(beta_t).")


def _toy_eps_model(x_t, t):
    """A fixed stand-in for a trained network; it depends on t so that a wrong t shows."""
    return 0.5 * torch.tanh(x_t) + (t.float() / 1000).reshape(-1, *[1] * (x_t.ndim - 1))


class _Recording(torch.nn.Module):
    """Wraps a model and remembers every (x_t, t) it is called with (in the worker)."""

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


# --- reverse_step -------------------------------------------------------------------------

def _reverse_case(shape, ts, z_scale=1.0):
    schedule = NoiseSchedule.linear(1000)
    steps = [{"t": t, "x_t": torch.randn(shape), "z": z_scale * torch.randn(shape)} for t in ts]
    return {"betas": schedule.betas, "alpha_bars": schedule.alpha_bars, "steps": steps}


def _reverse_probe(ns, case, record=False):
    answers = []
    for step in case["steps"]:
        model = _Recording(_toy_eps_model) if record else _toy_eps_model
        x_prev = ns["reverse_step"](model, step["x_t"].clone(), step["t"], case["betas"].clone(),
                                    case["alpha_bars"].clone(), step["z"].clone())
        answers.append({"x_prev": x_prev, "calls": [list(c) for c in model.calls]} if record else x_prev)
    return answers


def _reference_step(x_t, t, z):
    from lesson_lib.diffusion import sampling
    schedule = NoiseSchedule.linear(1000)
    t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long)
    mean, variance, _ = sampling.p_mean_variance(_toy_eps_model, schedule, x_t, t_batch, variance="beta")
    return mean if t == 0 else mean + variance.sqrt() * z


def _judge_steps(case, answer, hint, record=False):
    for step, got in pairs(case["steps"], answer):
        x_t, t = step["x_t"], step["t"]
        if record:
            calls = field(got, "calls")
            if not isinstance(calls, list) or len(calls) != 1:
                raise AssertionError(f"reverse_step should call eps_model once per step, it called it "
                                     f"{len(calls) if isinstance(calls, list) else '?'} times")
            seen_x, seen_t = calls[0]
            expect_tensor(seen_t, "the t given to eps_model", shape=(x_t.shape[0],))
            if not torch.equal(seen_t, torch.full((x_t.shape[0],), t)):
                raise AssertionError(f"reverse_step at t = {t} called eps_model with t = {seen_t.tolist()}, "
                                     f"expected {[t] * x_t.shape[0]}. {INDEX_HINT}")
            expect_tensor(seen_x, "the x_t given to eps_model", shape=x_t.shape)
            if not torch.equal(seen_x, x_t):
                raise AssertionError("reverse_step must give eps_model the current x_t unchanged")
            got = field(got, "x_prev")
        expect_tensor(got, f"reverse_step at t = {t}", shape=x_t.shape, dtype=x_t.dtype)
        expect_close(got, _reference_step(x_t, t, step["z"]), f"reverse_step at t = {t}"
                     + (f" for x_t of shape {tuple(x_t.shape)}" if record else ""),
                     rtol=1e-4, atol=1e-5, hint=hint)


@check(points=3, uses=["reverse_step"], probe=_reverse_probe,
       case=lambda: _reverse_case((5, 2), [999, 500, 1, int(torch.randint(2, 999, ()))]))
def reverse_step_matches_algorithm_2(case, answer):
    """reverse_step computes one step of Algorithm 2 (sigma_t^2 = beta_t) at t = T-1, T/2, 1."""
    _judge_steps(case, answer, f"{ALGORITHM_2} {INDEX_HINT}")


@check(points=1, uses=["reverse_step"], probe=_reverse_probe,
       case=lambda: _reverse_case((5, 2), [0], z_scale=10.0))
def reverse_step_last_step_adds_no_noise(case, answer):
    """At t = 0 (the paper's t = 1) reverse_step returns the mean and ignores z."""
    _judge_steps(case, answer, "Algorithm 2 sets z = 0 at the last step: at code t = 0 return the mean, no noise.")


@check(points=1, uses=["reverse_step"], probe=lambda ns, case: _reverse_probe(ns, case, record=True),
       case=lambda: _reverse_case((3, 1, 4, 4), [7]))
def reverse_step_handles_images_and_timesteps(case, answer):
    """reverse_step calls eps_model(x_t, t) with t a long tensor (B,) and works for images."""
    _judge_steps(case, answer, "Use per-step scalars (betas[t] is one number) so that they broadcast "
                 "over any shape of x_t.", record=True)


# --- training_step ----------------------------------------------------------------------

def _training_case(T, B, lr, steps, scale=0.8):
    return {"T": T, "lr": lr, "steps": steps, "weights": dict(_TinyDenoiser(T).state_dict()),
            "x0": scale * torch.randn(B, 2)}


def _training_probe(ns, case):
    """Run ``steps`` training steps; answer with, per step, the loss, the number of model calls,
    the last (x_t, t) the model saw and the parameters afterwards."""
    model = _Recording(_TinyDenoiser(case["T"]))
    model.model.load_state_dict(case["weights"])
    optimizer = torch.optim.SGD(model.parameters(), lr=case["lr"])
    schedule, answers = NoiseSchedule.linear(case["T"]), []
    for _ in range(case["steps"]):
        n_before = len(model.calls)
        loss = ns["training_step"](model, optimizer, case["x0"].clone(), schedule.alpha_bars.clone())
        x_t, t = model.calls[-1] if model.calls else (None, None)
        answers.append({"loss": loss, "calls": len(model.calls) - n_before, "x_t": x_t, "t": t,
                        "after": {k: v.detach().clone() for k, v in model.model.named_parameters()}})
    return answers


def _steps(case, answer):
    """Check the form of every step's answer; yields (loss, t, eps, parameters after), with eps
    recovered from x_t by inverting Eq. 4 in float64."""
    schedule, x0 = NoiseSchedule.linear(case["T"]), case["x0"]
    for _, step in pairs(range(case["steps"]), answer):
        if field(step, "calls") != 1:
            raise AssertionError(f"training_step should call the model exactly once, it called it "
                                 f"{step['calls']} times")
        loss = field(step, "loss")
        if type(loss) is not float:
            raise AssertionError(f"training_step returned {type_name(loss)}; return loss.item(), "
                                 f"a Python float (so that no graph is kept alive)")
        as_number(loss, "the loss training_step returned")
        x_t, t = field(step, "x_t"), field(step, "t")
        expect_tensor(t, "the t the model was called with", shape=(x0.shape[0],), dtype=torch.long)
        expect_tensor(x_t, "the x_t the model was called with", shape=x0.shape)
        expect_finite(x_t, "the x_t the model was called with")
        if t.min() < 0 or t.max() >= schedule.T:
            raise AssertionError(f"training_step drew timesteps from {int(t.min())} to {int(t.max())}; "
                                 f"they must lie in 0..T-1 = 0..{schedule.T - 1}")
        a = schedule.alpha_bars[t].view(-1, 1)
        eps = (x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
        yield loss, t, eps.float(), field(step, "after")


def _model(case, weights):
    model = _TinyDenoiser(case["T"])
    model.load_state_dict({**case["weights"], **weights})
    return model


@check(points=2, uses=["training_step"], probe=_training_probe,
       case=lambda: _training_case(1000, 64, 0.05, 1))
def training_step_returns_l_simple(case, answer):
    """training_step returns L_simple (Ho Eq. 14) for the t and eps it drew, before the update."""
    from lesson_lib.diffusion import losses
    (loss, t, eps, _), = _steps(case, answer)
    before = _model(case, {})
    expected = losses.l_simple(before, NoiseSchedule.linear(case["T"]), case["x0"], t=t, eps=eps).item()
    expect_number(loss, expected, "the loss training_step returned", rtol=1e-4, atol=1e-4,
                  hint="It must be L_simple for the t and eps it used: mean((eps - model(x_t, t))^2) over "
                       "every entry, with x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps, computed "
                       "before optimizer.step()")


@check(points=2, uses=["training_step"], probe=_training_probe,
       case=lambda: _training_case(1000, 64, 0.1, 2))
def training_step_updates_parameters(case, answer):
    """Two steps with SGD move the parameters by -lr * grad L_simple each (zero_grad, step)."""
    from lesson_lib.diffusion import losses
    schedule, previous_grads, weights = NoiseSchedule.linear(case["T"]), None, {}
    for step, (_, t, eps, after) in enumerate(_steps(case, answer), start=1):
        before = _model(case, weights)
        grads = torch.autograd.grad(losses.l_simple(before, schedule, case["x0"], t=t, eps=eps),
                                    list(before.parameters()))
        expect_sgd_step(before, after, grads, previous_grads, case["lr"], step)
        previous_grads, weights = grads, after


@check(points=1, uses=["training_step"], probe=_training_probe,
       case=lambda: _training_case(10, 4000, 0.0, 2, scale=1.0))
def training_step_draws_t_and_eps(case, answer):
    """training_step draws t uniformly from 0..T-1 and fresh eps ~ N(0, I) at every call."""
    (_, t, eps, _), (_, t2, eps2, _) = _steps(case, answer)
    expect_fresh_t_and_eps(t, eps, t2, eps2, case["T"])


# --- a question: which sigma_t^2 --------------------------------------------------------------

DATA_KINDS = ("single point", "standard normal")


def _sigma_case():
    T = int(torch.randint(50, 1001, ()))
    order = list(DATA_KINDS) if torch.rand(()) < 0.5 else list(reversed(DATA_KINDS))
    return {"betas": NoiseSchedule.linear(T, beta_start=1e-4 * 1000 / T, beta_end=0.02 * 1000 / T).betas,
            "questions": [[int(torch.randint(1, T, ())), kind] for kind in order] + [[T - 1, "single point"]]}


def _sigma_probe(ns, case):
    alpha_bars = torch.cumprod(1 - case["betas"], dim=0)
    return [ns["sigma_squared"](t, case["betas"].clone(), alpha_bars.clone(), kind) for t, kind in case["questions"]]


@check(points=2, uses=["sigma_squared"], case=_sigma_case, probe=_sigma_probe)
def sigma_squared_fits_the_data(case, answer):
    """sigma_squared gives beta-tilde_t when x0 is a single point and beta_t when x0 ~ N(0, I) (Ho Sec. 3.2)."""
    schedule = NoiseSchedule(case["betas"])
    for (t, kind), got in pairs(case["questions"], answer):
        what = f"sigma_squared({t}, betas, alpha_bars, {kind!r})"
        expected = (schedule.posterior_variance if kind == "single point" else schedule.betas)[t].item()
        expect_number(got, expected, what, rtol=1e-6, atol=1e-12, hint=(
            f"Ho et al. (Sec. 3.2): sigma_t^2 = beta_t is optimal for x0 ~ N(0, I), sigma_t^2 = "
            f"beta-tilde_t = (1 - alpha-bar_{{t-1}}) / (1 - alpha-bar_t) beta_t for x0 fixed to one point "
            f"(then p(x_{{t-1}} | x_t) is the posterior of lesson 1). {INDEX_HINT}"))
