"""Checks for lesson 6, fewer steps without retraining (solutions/06_fast_sampling.ipynb).

``ddim_update`` (the warm-up) is compared with :func:`lesson_lib.diffusion.steps.ddim_step` (Song et
al., 2021, Eq. 12) for eta = 0, 0.5 and 1, on images and 2-D points, including the last step to
alpha-bar = 1.

``my_timesteps`` is a timestep spacing of the student's own, given the schedule's alpha-bars, the number
of steps S and the data's standard deviation. It must be a valid list (S distinct timesteps,
descending, from T - 1), and it must beat the library's "linspace" spacing
(:func:`lesson_lib.diffusion.timesteps.spaced`) where the error is known exactly: DDIM (eta = 0) with
the exact denoiser of Gaussian data (:class:`lesson_lib.diffusion.oracles.GaussianData`) against the
exact probability-flow map of those data (``GaussianData.flow``), from the same x_T. The check draws the
schedule (linear or cosine, T from 100 to 1000), S, the data's mean and spread: narrow data (std 0.05
to 0.3, where the path bends near t = 0) and, on the linear schedule, wide data (std 0.7 to 1.5, where
it bends in the middle of the chain), so one fixed list, or one that ignores the data, cannot pass both.

``ddim_encode`` is DDIM inversion of a given denoiser (a small random network the check builds), compared
with :func:`lesson_lib.diffusion.inversion.ddim_invert` on a drawn schedule and timestep list.
``encoding_norm`` answers a question the lesson leaves open (its encodings of digits had norm 16, not
sqrt(784) = 28): the norm of the exact encoding (the probability-flow ODE, S -> infinity) of a point
of norm r for data N(0, s^2 I), compared with ``GaussianData.flow`` at drawn r, s and alpha-bar_T.
Total: 10 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import as_integer, as_number, expect_close, pairs
from lesson_lib.course.protocol import type_name

DDIM_HINT = ("x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t); sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) "
             "sqrt(1 - ab_t / ab_s); x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps + sigma noise, with "
             "each (B,) alpha-bar reshaped to (B, 1, ..., 1).")
VALID_HINT = ("Return S distinct whole-number timesteps in descending order, the first T - 1 (the level of x_T) and "
              "all in 0..T-1, where T = len(alpha_bars): a list of ints or a long tensor.")
NARROW_HINT = ("DDIM errs most where x0_hat changes fastest along the path. For data of standard deviation s that "
               "is where the noise-to-signal ratio sqrt((1 - alpha-bar) / alpha-bar) is comparable to s, which for "
               "small s lies near t = 0, where linspace puts few steps. Spend more steps there, computing the levels "
               "from alpha_bars and data_std (the schedule and s change from run to run).")
WIDE_HINT = ("With data of standard deviation near 1 the path bends where the noise-to-signal ratio is near 1, in the "
             "middle of the chain, not at its end: a spacing that piles its steps near t = 0 loses to linspace here. "
             "Make the spacing depend on data_std.")
ENCODE_HINT = ("Take x0 as the state at the lowest entry of the list and climb it: at each level t, eps = "
               "eps_model(x, t) with t a long tensor (B,), then the eta = 0 update from alpha-bar_t to the alpha-bar "
               "of the next entry up (alpha-bar_s < alpha-bar_t); return the state at timesteps[0]. On a step up "
               "1 - ab_t / ab_s is negative: keep sigma at 0 there (0 * sqrt(a negative number) is NaN).")
NORM_HINT = ("With infinitely many steps, DDIM (eta = 0) follows the probability-flow ODE, which carries q(x_0) onto "
             "q(x_T) point by point. For Gaussian data every q(x_t) is Gaussian and the map is linear: compare the "
             "standard deviation of the data with that of x_T (alpha-bar_T s^2 + 1 - alpha-bar_T is a variance).")

NARROW, WIDE = (0.05, 0.3), (0.7, 1.5)     # the data's standard deviations the two spacing checks draw from
NARROW_FACTOR, WIDE_FACTOR = 0.75, 0.9     # the error must be at most this fraction of linspace's


# --- the warm-up: one DDIM step -------------------------------------------------------------

def _ddim_case():
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule = NoiseSchedule.linear(1000)
    ab = schedule.alpha_bars_with_0
    examples = []
    for shape, dtype, eta, t, s in [((4, 1, 5, 5), torch.float32, 0.0, 999, 899),
                                    ((6, 2), torch.float64, 1.0, 500, 250),
                                    ((3, 3, 4, 4), torch.float32, 0.5, 300, 0), ((5, 2), torch.float64, 0.0, 111, -1)]:
        B = shape[0]
        ts = torch.randint(max(s + 1, 1), 1000, (B,))
        ts[0] = t
        ss = torch.full((B,), s)
        examples.append({"x_t": torch.randn(shape, dtype=dtype), "eps": torch.randn(shape, dtype=dtype),
                         "noise": torch.randn(shape, dtype=dtype), "eta": eta, "t": ts, "s": ss,
                         "alpha_bar_t": ab[ts + 1], "alpha_bar_s": ab[ss + 1]})
    return {"examples": examples}


def _ddim_probe(ns, case):
    return [ns["ddim_update"](e["x_t"].clone(), e["eps"].clone(), e["alpha_bar_t"].clone(), e["alpha_bar_s"].clone(),
                              e["eta"], e["noise"].clone()) for e in case["examples"]]


@check(points=2, uses=["ddim_update"], case=_ddim_case, probe=_ddim_probe)
def ddim_update_is_eq_12(case, answer):
    """ddim_update is Song et al.'s Eq. 12 for eta = 0, 0.5, 1, on images and points, also to alpha-bar = 1."""
    from lesson_lib.diffusion.denoiser import Prediction
    from lesson_lib.diffusion.schedules import NoiseSchedule
    from lesson_lib.diffusion.steps import ddim_step
    schedule = NoiseSchedule.linear(1000)
    for e, got in pairs(case["examples"], answer):
        shape = (-1,) + (1,) * (e["x_t"].ndim - 1)
        ab = e["alpha_bar_t"].reshape(shape).to(e["x_t"].dtype)
        x0 = (e["x_t"] - (1 - ab).sqrt() * e["eps"]) / ab.sqrt()
        expected = ddim_step(schedule, e["x_t"], e["t"], e["s"], Prediction(x0, e["eps"]), e["noise"], eta=e["eta"])
        expect_close(got, expected, f"ddim_update for x_t of shape {tuple(e['x_t'].shape)}, eta = {e['eta']}, "
                     f"alpha-bar_s = {float(e['alpha_bar_s'][0]):.4g}", rtol=1e-4, atol=1e-5, hint=DDIM_HINT)


# --- a spacing of one's own -----------------------------------------------------------------------

def _schedule(name, T):
    from lesson_lib.diffusion.schedules import NoiseSchedule
    return NoiseSchedule.from_name(name, T)


def _setup(names, stds, S_range=(4, 21)):
    """One drawn problem: a schedule, S, Gaussian data and the starting points x_T."""
    name = names[int(torch.randint(0, len(names), ()))]
    T = int(torch.randint(100, 1001, ()))
    return {"schedule": name, "T": T, "alpha_bars": _schedule(name, T).alpha_bars,
            "S": int(torch.randint(*S_range, ())),
            "data_std": float(stds[0] + (stds[1] - stds[0]) * torch.rand(())),
            "data_mean": float(2 * torch.rand(()) - 1), "x_T": torch.randn(64, 2, dtype=torch.float64)}


def _spacing_probe(ns, case):
    return [ns["my_timesteps"](c["alpha_bars"].clone(), c["S"], c["data_std"]) for c in case["calls"]]


def _valid_list(got, c):
    """The answer as a list of ints, after checking it is a valid list for this call."""
    what = f"my_timesteps(alpha_bars of a {c['schedule']} schedule with T = {c['T']}, S = {c['S']}, " \
           f"data_std = {c['data_std']:.3g})"
    if type(got) is torch.Tensor and got.ndim == 1:
        got = [got[i] for i in range(len(got))]
    if not isinstance(got, (list, tuple)):
        raise AssertionError(f"{what} returned {type_name(got)}, expected a list of {c['S']} timesteps. {VALID_HINT}")
    ts = [as_integer(v, f"{what}[{i}]") for i, v in enumerate(got)]
    shown = f"{ts[:6]}{'...' if len(ts) > 6 else ''}"
    if len(ts) != c["S"]:
        raise AssertionError(f"{what} gave {len(ts)} timesteps ({shown}), expected S = {c['S']}. {VALID_HINT}")
    if ts[0] != c["T"] - 1 or not all(a > b for a, b in zip(ts, ts[1:])) or ts[-1] < 0:
        raise AssertionError(f"{what} = {shown} is not a descending list of distinct timesteps from T - 1 = "
                             f"{c['T'] - 1} down to 0 or above. {VALID_HINT}")
    return ts


def _valid_case():
    calls = [_setup(("linear", "cosine"), (0.05, 2.0), (2, 41)) for _ in range(4)]
    calls.append(dict(_setup(("linear",), (0.05, 2.0)), S=1))                   # one step: [T - 1]
    T = int(torch.randint(10, 30, ()))
    calls.append(dict(_setup(("cosine",), (0.05, 2.0)), T=T, S=T, alpha_bars=_schedule("cosine", T).alpha_bars))
    return {"calls": calls}


@check(points=1, uses=["my_timesteps"], case=_valid_case, probe=_spacing_probe)
def timesteps_are_a_valid_list(case, answer):
    """my_timesteps gives S distinct timesteps, descending from T - 1 (drawn T and S, S = 1 and S = T too)."""
    for c, got in pairs(case["calls"], answer):
        _valid_list(got, c)


def ddim_error(c, timesteps):
    """The RMS distance between DDIM (eta = 0, exact Gaussian denoiser) from x_T on ``timesteps`` and the
    exact probability-flow map of the data from T - 1 to the data."""
    from lesson_lib.diffusion.denoiser import Denoiser
    from lesson_lib.diffusion.oracles import GaussianData
    from lesson_lib.diffusion.sampling import sample
    from lesson_lib.diffusion.steps import ddim_step
    schedule = _schedule(c["schedule"], c["T"])
    data = GaussianData(schedule, c["data_mean"], c["data_std"], dim=c["x_T"].shape[1])
    x_T = c["x_T"]
    x0 = sample(Denoiser(data, schedule), schedule, x_T, timesteps, ddim_step, stochastic=False, progress=False)
    exact = data.flow(x_T, torch.full((len(x_T),), c["T"] - 1), torch.full((len(x_T),), -1))
    return ((x0 - exact) ** 2).mean().sqrt().item()


def _judge_spacing(case, answer, factor, hint):
    from lesson_lib.diffusion.timesteps import spaced
    for c, got in pairs(case["calls"], answer):
        ts = _valid_list(got, c)
        mine, linspace = ddim_error(c, ts), ddim_error(c, spaced(c["T"], c["S"]))
        if not mine <= factor * linspace:
            raise AssertionError(
                f"on data N({c['data_mean']:.2f}, {c['data_std']:.3g}^2) with a {c['schedule']} schedule of T = "
                f"{c['T']} and S = {c['S']}, DDIM on your timesteps misses the exact flow map by {mine:.4g} (RMS), "
                f"linspace by {linspace:.4g}; yours must be at most {factor} times linspace's. {hint}")


@check(points=2, uses=["my_timesteps"], probe=_spacing_probe,
       case=lambda: {"calls": [_setup(("linear", "cosine"), NARROW) for _ in range(3)]})
def spacing_beats_linspace_on_narrow_data(case, answer):
    """On Gaussian data of std 0.05 to 0.3, DDIM on my_timesteps errs at most 0.75 times as much as on linspace."""
    _judge_spacing(case, answer, NARROW_FACTOR, NARROW_HINT)


@check(points=1, uses=["my_timesteps"], probe=_spacing_probe,
       case=lambda: {"calls": [_setup(("linear",), WIDE) for _ in range(2)]})
def spacing_beats_linspace_on_wide_data(case, answer):
    """On Gaussian data of std 0.7 to 1.5 (linear schedule), my_timesteps errs at most 0.9 times as much as linspace."""
    _judge_spacing(case, answer, WIDE_FACTOR, WIDE_HINT)


# --- DDIM inversion -------------------------------------------------------------------------

class TinyEps(torch.nn.Module):
    """A small eps-prediction network on tensors (B, ...) of D numbers each, built from given weights."""

    prediction, num_classes = "eps", None

    def __init__(self, weights, T):
        super().__init__()
        self.W, self.u, self.T = weights["W"], weights["u"], T

    def forward(self, x, t, **cond):
        flat = x.flatten(1)
        h = flat @ self.W + (t.to(x.dtype) / self.T)[:, None] * self.u
        return (torch.tanh(h) + 0.5 * flat).reshape(x.shape)


def _encode_case():
    examples = []
    for shape in [(6, 3), (4, 1, 3, 3)]:
        D = int(torch.tensor(shape[1:]).prod())
        T = int(torch.randint(50, 1001, ()))
        S = int(torch.randint(3, 11, ()))
        rest = (torch.randperm(T - 2)[:S - 2] + 1).sort(descending=True).values.tolist()
        name = ("linear", "cosine")[int(torch.randint(0, 2, ()))]
        examples.append({"schedule": name, "T": T, "alpha_bars": _schedule(name, T).alpha_bars,
                         "timesteps": [T - 1] + rest + [0], "x0": torch.randn(shape, dtype=torch.float64),
                         "weights": {"W": torch.randn(D, D, dtype=torch.float64) / D ** 0.5,
                                     "u": torch.randn(D, dtype=torch.float64)}})
    return {"examples": examples}


def _encode_probe(ns, case):
    results = []
    for e in case["examples"]:
        results.append(ns["ddim_encode"](TinyEps(e["weights"], e["T"]), e["x0"].clone(), list(e["timesteps"]),
                                         e["alpha_bars"].clone()))
    return results


@check(points=2, uses=["ddim_encode"], case=_encode_case, probe=_encode_probe)
def ddim_encode_climbs_the_list(case, answer):
    """ddim_encode is DDIM inversion (eta = 0, climbing the drawn list) of a given network, points and images."""
    from lesson_lib.diffusion.denoiser import Denoiser
    from lesson_lib.diffusion.inversion import ddim_invert
    for e, got in pairs(case["examples"], answer):
        schedule = _schedule(e["schedule"], e["T"])
        expected = ddim_invert(Denoiser(TinyEps(e["weights"], e["T"]), schedule), schedule, e["x0"], e["timesteps"])
        expect_close(got, expected, f"ddim_encode of x0 of shape {tuple(e['x0'].shape)} on the list "
                     f"{e['timesteps']} ({e['schedule']} schedule, T = {e['T']})", rtol=1e-6, atol=1e-8,
                     hint=ENCODE_HINT, check_dtype=False)


# --- a question: the norm of an exact encoding -----------------------------------------------------

def _norm_case():
    calls = []
    for low, high in [(1e-5, 1e-3), (0.01, 0.5), (1e-4, 0.2)]:
        alpha_bar = float(low + (high - low) * torch.rand(()))
        calls.append({"x0_norm": float(0.1 + 30 * torch.rand(())), "data_std": float(0.05 + 1.95 * torch.rand(())),
                      "alpha_bar_T": alpha_bar})
    return {"calls": calls}


def _norm_probe(ns, case):
    return [ns["encoding_norm"](c["x0_norm"], c["data_std"], c["alpha_bar_T"]) for c in case["calls"]]


@check(points=2, uses=["encoding_norm"], case=_norm_case, probe=_norm_probe)
def encoding_norm_follows_the_flow(case, answer):
    """encoding_norm is the norm of the exact DDIM encoding (probability-flow ODE) of a point, Gaussian data."""
    from lesson_lib.diffusion.oracles import GaussianData
    from lesson_lib.diffusion.schedules import NoiseSchedule
    for c, got in pairs(case["calls"], answer):
        what = f"encoding_norm({c['x0_norm']:.4g}, data_std={c['data_std']:.4g}, alpha_bar_T={c['alpha_bar_T']:.4g})"
        value = as_number(got, what, NORM_HINT)
        one_step = NoiseSchedule(torch.tensor([1 - c["alpha_bar_T"]], dtype=torch.float64))   # alpha-bar_T, T = 1
        data = GaussianData(one_step, 0.0, c["data_std"], dim=1)
        point = torch.tensor([[c["x0_norm"]]], dtype=torch.float64)
        expected = data.flow(point, torch.tensor([-1]), torch.tensor([0])).abs().item()
        if not abs(value - expected) <= 1e-4 * expected:
            raise AssertionError(f"{what} = {value:.6g}, expected {expected:.6g}. {NORM_HINT}")
