"""Checks for lesson 13, the probability-flow ODE, second-order samplers and flow matching
(solutions/13_ode_samplers_flow_matching.ipynb).

Why one module: these are the checks of one exercise notebook; the grader loads a lesson's checks from
one module, and its parts share the course's convention for the flow (t = 1 noise, t = 0 data), the levels
lambda = -ln sigma of the ODE's solvers and the descriptions of their usual mistakes.

``flow_matching_pair(x0, eps, t)`` is the point x_t = (1 - t) x_0 + t eps on the straight path and the regression
target v = eps - x_0 (Lipman et al., 2023; Liu et al., 2023), t a (B,) tensor, one time per example. It is
compared with :func:`lesson_lib.diffusion.flow_matching.path` and
:func:`~lesson_lib.diffusion.flow_matching.velocity_target` on drawn points (B, D) and images (B, C, H, W),
float32 and float64, whose batch size equals no other dimension (a t that is not reshaped raises); the other
convention (time or target flipped) and the noise target v = eps are named. A second check holds the student's
own pair to the path's properties, on images whose width equals the batch size (so that a t multiplied along
the last axis runs and is named): x_t is x_0 where t = 0 and eps where t = 1, example by example, and v is the
derivative of the student's own x_t in t (a central difference at drawn t, float64).

``euler_flow_step(x_t, v, t, s)`` is one Euler step of dx/dt = v from flow time t down to s, x_t + (s - t) v, with
t and s numbers or (B,) tensors. It is compared with :func:`~lesson_lib.diffusion.flow_matching.flow_euler_step`
at drawn times of :class:`~lesson_lib.diffusion.flow_matching.FlowGrid` (1000), the usual wrong steps named. Two
checks demand what the lesson shows about the step. With the exact velocity of Gaussian data N(m, s^2) (built in
the grader from :class:`~lesson_lib.diffusion.oracles.GaussianData` on the grid's VP levels, as
tests/test_flow_matching.py's ExactVelocity does), one step to t = 0 lands on E[x_0 | x_t], so from t = 1 on the
data mean m, whatever x_1 (drawn three times wider than the noise). And the step is DDIM's (Song et al., 2021,
Eq. 12 with eta = 0, :func:`~lesson_lib.diffusion.steps.ddim_step`) between the matching VP levels, once x is
divided by :func:`~lesson_lib.diffusion.flow_matching.vp_scale`: for any velocity, per-example times and steps
to the data included, to 1e-10 in float64.

``dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s)`` is DPM-Solver++(2M)'s update
(Lu et al., 2022, Algorithm 2) in the VP variable: with lambda = ln(sqrt(ab) / sqrt(1 - ab)), h = lambda_s -
lambda_t and r = (lambda_t - lambda_prev) / h, D = (1 + 1/(2r)) x0_hat - (1/(2r)) x0_prev and x_s is DDIM's eta = 0
step from x_t with D for x0_hat and the noise re-derived from (x_t, D), which is the VE form
(sigma_s / sigma_t) x_VE + (1 - sigma_s / sigma_t) D of the library. It is compared with
:func:`lesson_lib.diffusion.ode.dpmpp_2m_step` driven with the state {"x0": x0_prev, "lam": lambda_prev} on
``NoiseSchedule.linear(1000)``, at drawn code timesteps t_prev > t > s >= 0 per example, chosen so that the steps
are unequal (r in [0.3, 0.75] or [1.4, 3]: an inverted r shows), on points and images, float32 and float64; the
usual mistakes are named (r inverted, the extrapolation's sign flipped, x0_hat and x0_prev swapped, the noise of
the original prediction kept, no extrapolation, lambda of the VP noise level sqrt(1 - ab)). A second check: with
x0_prev = x0_hat the update is DDIM's step, the first-order case (the sampler's first step). A third, the order.
Write sigma = sqrt(1 - ab) (the VP noise level) and alpha = sqrt(ab). If x0_hat = A + B lambda along the step, the
exact update is x_s = (sigma_s / sigma_t) x_t + sigma_s [e^lambda (A + B (lambda - 1))] from lambda_t to lambda_s,
and 2M is *not* exact: its D is the line's value at the middle of the step in lambda, while the exact update weighs
the line by e^lambda, and the error of one step is sigma_s e^lambda_t B ((h/2)(e^h - 1) - e^h (h - 1) - 1) =
-alpha_t B h^3 / 12 + O(h^4). So the error must shrink about eightfold each time the step and the previous one are
halved together (the step halved three times; the last two ratios in [6, 10.5]); DDIM and the named mistakes shrink
it about fourfold or twofold (all but lambda of the VP noise level, which extrapolates in another variable and often
passes this check; the first check names it).

Why the student cannot pass by calling the library: the probes need nothing from lesson_lib (the cases hand
them tensors and numbers drawn and computed in the grader), so the worker loads no module of lesson_lib.diffusion
(``WORKER_MODULES`` is empty): importing ``flow_matching``, ``ode``, ``steps`` or ``oracles`` there gives
stand-ins that raise. (In the notebook's own feedback, which shares the student's process, the library is
there; feedback is not grading.)
Total: 10 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import (call_each, expect_close, expect_tensor, field, naming,
                                              pairs, shape_of, tolerance)

# The probes call only the student's functions, on tensors and numbers the cases drew and computed in the grader;
# the references (diffusion/flow_matching.py, ode.py, steps.py, oracles.py) are imported inside cases and judges.
WORKER_MODULES = ()
HIDDEN = ()

PAIR_HINT = ("In the course's convention t = 1 is the noise and t = 0 the data, on the straight path x_t = (1 - t) "
             "x0 + t eps, and the target is that path's derivative in t. Target, time and direction flip together: the "
             "other convention (t = 0 noise) has time 1 - t and target x0 - eps. t holds one time per example: give it "
             "the shape (B, 1, ..., 1) before multiplying.")
ENDS_HINT = ("At t = 0 the path is at the data, at t = 1 at the noise, example by example: each example reads its own "
             "t[b] (t reshaped to (B, 1, ..., 1), not multiplied along the last axis).")
SLOPE_HINT = ("v is the regression target of flow matching: the velocity dx_t/dt of your own path, constant along "
              "each straight line; not the noise, and not its negative (target and time flip together).")
EULER_HINT = ("One Euler step of dx/dt = v from t to s: x_s = x_t + (s - t) v. From t to an earlier s < t the time "
              "decreases, so the step (s - t) is negative; t and s may be numbers or (B,) tensors, one per example "
              "(reshape them to (B, 1, ..., 1)).")
MEAN_HINT = ("With the exact velocity, x_t - t v is E[x_0 | x_t], the denoiser's x0_hat: one step to s = 0 must move "
             "by (0 - t) v and land there (at t = 1 on the data mean, whatever x_1).")
DDIM_HINT = ("An Euler step of the flow is (1 - s) x0_hat + s eps_hat with x0_hat = x_t - t v and eps_hat = x_t + "
             "(1 - t) v, which is DDIM's step between the matching VP levels: take the step x_t + (s - t) v with each "
             "example's own t and s.")
DPM_HINT = ("DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2) extrapolates x0_hat linearly in lambda = "
            "ln(sqrt(ab) / sqrt(1 - ab)) to the middle of the step: D = x0_hat + (x0_hat - x0_prev) h / (2 h_prev) "
            "with h = lambda_s - lambda_t, h_prev = lambda_t - lambda_prev (so 1/(2r) = h / (2 h_prev)); then it takes "
            "DDIM's eta = 0 step with D in place of x0_hat and the noise re-derived from x_t and D. Compute the levels "
            "in float64 and return x_t's dtype.")
FIRST_ORDER_HINT = ("With x0_prev = x0_hat there is nothing to extrapolate (D = x0_hat) and the update is DDIM's "
                    "eta = 0 step from ab_t to ab_s: sqrt(ab_s) D + sqrt(1 - ab_s) times the noise that x_t and D "
                    "imply.")
ORDER_HINT = ("DPM-Solver++(2M) is second order: for an x0_hat linear in lambda, halving the step divides one step's "
              "error by about 8. A plain DDIM step, or D extrapolated to the wrong point of the step (sign, r), "
              "divides it by about 4; keeping the original prediction's noise instead of re-deriving it from D, by "
              "about 2.")

T_FLOW = 1000                 # the flow grid's size: code index k is flow time (k + 1) / 1000
R_RANGES = ((0.3, 0.75), (1.4, 3.0))   # ratios r = h_prev / h of the drawn DPM-Solver steps: never near 1
H_FD = 1e-4                   # the step of the central difference in t (float64; the path is affine in t)


def _pick(choices):
    return choices[int(torch.randint(0, len(choices), ()))]


def _col(t, x):
    """t (a number or a (B,) tensor) as (B, 1, ..., 1), float64, to compute with x (cast to float64)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t


def _named(mistakes, got):
    """The first name in ``mistakes`` (name -> value) that ``got`` equals (to float32 rounding), or None."""
    if type(got) is not torch.Tensor or not got.is_floating_point() or not bool(torch.isfinite(got).all()):
        return None
    rtol, atol = (1e-4, 1e-5) if got.dtype == torch.float32 else (1e-8, 1e-10)
    for name, value in mistakes.items():
        if value.shape == got.shape and torch.allclose(got.double(), value.double(), rtol=rtol, atol=atol):
            return name
    return None


# --- 1 · the straight path and its target -------------------------------------------------------

def _image_shape(B):
    """(B, C, H, W) with C, H and W all different from B (a (B,) t multiplied without reshaping raises)."""
    C = _pick([c for c in (1, 3, 4) if c != B])
    H, W = (int(v) for v in torch.randint(7, 11, (2,)))
    return (B, C, H, W)


def _pair_inputs(shape, dtype=torch.float32):
    x0 = 0.5 + torch.randn(shape, dtype=dtype)
    return [x0, torch.randn(shape, dtype=dtype), torch.rand(shape[0], dtype=dtype)]


def _pair_case():
    B = int(torch.randint(2, 7, ()))
    shapes = [((5, 3), torch.float32), ((3, 2, 6, 7), torch.float32), ((4, 1, 5, 5), torch.float64),
              (_image_shape(B), torch.float32)]
    return {"calls": [[_pair_inputs(shape, dtype), {}] for shape, dtype in shapes]}


def _pair_mistakes(x0, eps, t):
    x0, eps, t = x0.double(), eps.double(), _col(t, x0)
    return {"x_t": {"t x0 + (1 - t) eps, the other convention's path (there t = 0 is the noise)":
                        t * x0 + (1 - t) * eps,
                    "sqrt(1 - t) x0 + sqrt(t) eps, a variance-preserving path, not the straight one":
                        (1 - t).sqrt() * x0 + t.sqrt() * eps},
            "v": {"x0 - eps, the other convention's target": x0 - eps,
                  "eps, the noise (a DDPM's target), not the velocity": eps,
                  "eps - x_t, not the path's derivative": eps - ((1 - t) * x0 + t * eps)}}


def _expect_pair(got, what):
    """The answer as (x_t, v), after checking it is a pair."""
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        raise AssertionError(f"{what} should return a pair (x_t, v), got "
                             f"{type(got).__name__}{'' if not isinstance(got, (list, tuple)) else f' of {len(got)}'}")
    return got


@check(points=2, uses=["flow_matching_pair"], case=_pair_case, probe=call_each("flow_matching_pair"))
def flow_matching_pair_is_the_straight_path(case, answer):
    """flow_matching_pair is the library's path (1 - t) x0 + t eps and target eps - x0, on points and images."""
    from lesson_lib.diffusion.flow_matching import path, velocity_target
    for ((x0, eps, t), _), got in pairs(case["calls"], answer):
        what = f"flow_matching_pair(x0 and eps of {shape_of(x0)}, t of shape ({t.shape[0]},))"
        x_t, v = _expect_pair(got, what)
        mistakes = _pair_mistakes(x0, eps, t)
        rtol, atol = tolerance(x0)
        expect_close(x_t, path(x0, eps, t), what + "[0], x_t", rtol=rtol, atol=atol,
                     hint=naming(_named(mistakes["x_t"], x_t), PAIR_HINT))
        expect_close(v, velocity_target(x0, eps), what + "[1], v", rtol=rtol, atol=atol,
                     hint=naming(_named(mistakes["v"], v), PAIR_HINT))


def _ends_case():
    B = int(torch.randint(3, 6, ()))
    shape = (B, 2, 3, B)                                      # the width equals the batch size: see the docstring
    ends = torch.zeros(B, dtype=torch.float64)
    ends[torch.randperm(B)[:B // 2 + 1]] = 1.0                # some examples at t = 1, the others at t = 0
    return {"x0": 0.5 + torch.randn(shape, dtype=torch.float64), "eps": torch.randn(shape, dtype=torch.float64),
            "ends": ends, "t": 0.1 + 0.8 * torch.rand(B, dtype=torch.float64), "h": H_FD}


def _ends_probe(ns, case):
    f, x0, eps, t, h = ns["flow_matching_pair"], case["x0"], case["eps"], case["t"], case["h"]
    return {"ends": f(x0.clone(), eps.clone(), case["ends"].clone()), "at": f(x0.clone(), eps.clone(), t.clone()),
            "after": f(x0.clone(), eps.clone(), t + h), "before": f(x0.clone(), eps.clone(), t - h)}


@check(points=1, uses=["flow_matching_pair"], case=_ends_case, probe=_ends_probe)
def flow_matching_pair_ends_and_slope(case, answer):
    """x_t is x0 where t = 0 and eps where t = 1, example by example, and v is dx_t/dt of the student's own path."""
    x0, eps, ends, t, h = case["x0"], case["eps"], case["ends"], case["t"], case["h"]
    what = f"flow_matching_pair(x0 and eps of {shape_of(x0)}, t = {[int(v) for v in ends.tolist()]})"
    x_t, _ = _expect_pair(field(answer, "ends"), what)
    expect_tensor(x_t, what + "[0]", shape=x0.shape, dtype=x0.dtype)
    expected = torch.where(_col(ends, x0) == 1, eps, x0)
    across = (1 - ends) * x0 + ends * eps                      # t multiplied along the last axis (width = B)
    mistake = "t multiplied along the last axis of x0 (a (B,) t broadcast against the width)" \
        if torch.allclose(x_t, across, rtol=1e-10, atol=1e-12) else None
    if mistake is None and torch.allclose(x_t, torch.where(_col(ends, x0) == 1, x0, eps), rtol=1e-10, atol=1e-12):
        mistake = "the other convention's path: there t = 0 is the noise and t = 1 the data"
    expect_close(x_t, expected, what + "[0], x_t, against x0 where t = 0 and eps where t = 1", rtol=1e-12, atol=1e-12,
                 hint=naming(mistake, ENDS_HINT))
    at, after, before = (_expect_pair(field(answer, key), f"flow_matching_pair at t {sign}")
                         for key, sign in (("at", ""), ("after", "+ h"), ("before", "- h")))
    for value, name in ((at[1], "v"), (after[0], "x_t at t + h"), (before[0], "x_t at t - h")):
        expect_tensor(value, f"flow_matching_pair(...)[{name}]", shape=x0.shape, dtype=x0.dtype)
        if not bool(torch.isfinite(value).all()):
            raise AssertionError(f"flow_matching_pair's {name} contains NaN or inf. {SLOPE_HINT}")
    slope = (after[0] - before[0]) / (2 * h)
    mistake = _named({"eps, the noise (a DDPM's target)": eps, "x0 - eps, minus the path's derivative": -slope}, at[1])
    expect_close(at[1], slope, f"flow_matching_pair(x0, eps, t = {[round(v, 3) for v in t.tolist()]})[1], v, against "
                 f"(x_t(t + h) - x_t(t - h)) / 2h of your path, h = {h:g}", rtol=1e-6, atol=1e-7,
                 hint=naming(mistake, SLOPE_HINT))


# --- 2 · one Euler step of the flow ----------------------------------------------------------------

def _grid_times(B, to_data=False):
    """Code indices k_t > k_s >= -1 on the flow grid (B,) (k_s = -1 is the data, t = 0), and their flow times."""
    k_t = torch.randint(1, T_FLOW, (B,))
    k_s = (torch.rand(B) * (k_t + 1)).long() - 1              # uniform on -1..k_t - 1
    if to_data:
        k_s[0] = -1
    return k_t, k_s


def _euler_case():
    from lesson_lib.diffusion.flow_matching import FlowGrid
    times = FlowGrid(T_FLOW).times_with_0
    calls = []
    B = int(torch.randint(2, 7, ()))
    for index, (shape, dtype) in enumerate([((5, 3), torch.float32), ((3, 2, 6, 7), torch.float32),
                                            ((4, 1, 5, 5), torch.float64), (_image_shape(B), torch.float32)]):
        k_t, k_s = _grid_times(shape[0], to_data=index == 2)
        if index == 0:                                       # numbers: one t and one s for the whole batch
            k_t, k_s = k_t[:1].expand(shape[0]), k_s[:1].expand(shape[0])
            t, s = float(times[k_t[0] + 1]), float(times[k_s[0] + 1])
        else:
            t, s = times[k_t + 1].to(dtype), times[k_s + 1].to(dtype)
        calls.append({"args": [torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype), t, s],
                      "k_t": k_t, "k_s": k_s})
    return {"calls": calls}


def _euler_probe(ns, case):
    return [ns["euler_flow_step"](*[a.clone() if hasattr(a, "clone") else a for a in c["args"]]) for c in case["calls"]]


def _euler_mistakes(x, v, t, s):
    x, v, t, s = x.double(), v.double(), _col(t, x), _col(s, x)
    return {"x_t + (t - s) v, a step the wrong way (from t to s < t the time decreases)": x + (t - s) * v,
            "x_t - s v, a step of length s that ignores t": x - s * v,
            "x_t + s v, a step that ignores t": x + s * v,
            "x_t - t v, the jump to x0_hat that ignores s": x - t * v}


def _times(t):
    return f"{t:.3f}" if isinstance(t, float) else f"({t.shape[0]},) tensor"


@check(points=1, uses=["euler_flow_step"], case=_euler_case, probe=_euler_probe)
def euler_flow_step_matches_the_library(case, answer):
    """euler_flow_step is the library's x_t + (s - t) v, for numbers and per-example (B,) times, points and images."""
    from lesson_lib.diffusion.denoiser import Prediction
    from lesson_lib.diffusion.flow_matching import FlowGrid, flow_euler_step, to_x0_eps
    grid = FlowGrid(T_FLOW)
    for c, got in pairs(case["calls"], answer):
        x, v, t, s = c["args"]
        pred = Prediction(*to_x0_eps(x.double(), _col(t, x), v.double()))
        expected = flow_euler_step(grid, x.double(), c["k_t"], c["k_s"], pred)[0].to(x.dtype)
        what = f"euler_flow_step(x_t and v of {shape_of(x)}, t = {_times(t)}, s = {_times(s)})"
        rtol, atol = (1e-5, 1e-5) if x.dtype == torch.float32 else (1e-10, 1e-12)
        expect_close(got, expected, what, rtol=rtol, atol=atol, hint=naming(_named(_euler_mistakes(x, v, t, s), got),
                                                                            EULER_HINT))


def _exact_velocity(data, grid, x_t, k):
    """The exact velocity E[eps - x_0 | x_t] of ``data`` at code indices k of the flow grid: the VP oracle at the
    matching level, read at x_t / c_t (tests/test_flow_matching.py's ExactVelocity), and its x0_hat."""
    from lesson_lib.diffusion.flow_matching import vp_scale
    c = vp_scale(grid.times[k]).reshape(-1, *([1] * (x_t.ndim - 1)))
    x0, eps = data.denoise(x_t / c, k)[:2]
    return eps - x0, x0


def _mean_case():
    from lesson_lib.diffusion.flow_matching import FlowGrid
    from lesson_lib.diffusion.oracles import GaussianData
    grid = FlowGrid(T_FLOW)
    m = _pick((-1.0, 1.0)) * float(0.3 + 0.9 * torch.rand(()))
    sd = float(0.2 + 1.3 * torch.rand(()))
    data = GaussianData(grid, m, sd)
    B, D = int(torch.randint(5, 9, ())), int(torch.randint(2, 5, ()))
    x_1 = 3 * torch.randn(B, D, dtype=torch.float64)         # whatever x_1: three times wider than the noise
    k_1 = torch.full((B,), T_FLOW - 1)                       # t = 1
    v_1, _ = _exact_velocity(data, grid, x_1, k_1)
    k = torch.randint(50, T_FLOW - 50, (B,))                 # per-example times inside (0, 1)
    t = grid.times[k]
    x_t = (1 - t)[:, None] * (m + sd * torch.randn(B, D, dtype=torch.float64)) + \
        t[:, None] * torch.randn(B, D, dtype=torch.float64)
    v_t, _ = _exact_velocity(data, grid, x_t, k)
    return {"m": m, "sd": sd, "x_1": x_1, "v_1": v_1, "x_t": x_t, "v_t": v_t, "k": k, "t": t}


def _mean_probe(ns, case):
    f, B = ns["euler_flow_step"], case["x_1"].shape[0]
    ones, zeros = torch.ones(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
    return {"from_1": f(case["x_1"].clone(), case["v_1"].clone(), 1.0, 0.0),
            "from_1_tensors": f(case["x_1"].clone(), case["v_1"].clone(), ones, zeros),
            "from_t": f(case["x_t"].clone(), case["v_t"].clone(), case["t"].clone(), zeros)}


@check(points=1, uses=["euler_flow_step"], case=_mean_case, probe=_mean_probe)
def euler_flow_step_lands_on_the_posterior_mean(case, answer):
    """With the exact velocity of N(m, s^2) data, one step to t = 0 gives E[x_0 | x_t]: from t = 1, m whatever x_1."""
    from lesson_lib.diffusion.flow_matching import FlowGrid
    from lesson_lib.diffusion.oracles import GaussianData
    m, sd, x_1, k = case["m"], case["sd"], case["x_1"], case["k"]
    grid = FlowGrid(T_FLOW)
    mean = torch.full_like(x_1, m)
    for key, times in (("from_1", "t = 1.0, s = 0.0"), ("from_1_tensors", "t = ones(B), s = zeros(B)")):
        got = field(answer, key)
        what = (f"euler_flow_step(x_1 of {shape_of(x_1)} drawn 3 times wider than the noise, the exact velocity of "
                f"N({m:.3f}, {sd:.3f}^2) data, {times})")
        mistake = _named(_euler_mistakes(x_1, case["v_1"], 1.0, 0.0), got)
        expect_close(got, mean, what + ", against the data mean", rtol=1e-10, atol=1e-10,
                     hint=naming(mistake, MEAN_HINT))
    _, x0_hat = _exact_velocity(GaussianData(grid, m, sd), grid, case["x_t"], k)
    got = field(answer, "from_t")
    what = (f"euler_flow_step(x_t, the exact velocity of N({m:.3f}, {sd:.3f}^2) data, t = "
            f"{[round(v, 3) for v in case['t'].tolist()]}, s = 0)")
    mistake = _named(_euler_mistakes(case["x_t"], case["v_t"], case["t"], 0.0), got)
    expect_close(got, x0_hat, what + ", against E[x_0 | x_t]", rtol=1e-10, atol=1e-10, hint=naming(mistake, MEAN_HINT))


def _ddim_case():
    from lesson_lib.diffusion.flow_matching import FlowGrid
    times = FlowGrid(T_FLOW).times_with_0
    B = int(torch.randint(5, 9, ()))
    k_t, k_s = _grid_times(B, to_data=True)
    k_t[1] = T_FLOW - 1                                      # one example from the noise, t = 1
    shape = (B, int(torch.randint(2, 5, ())))
    return {"x_t": torch.randn(shape, dtype=torch.float64), "v": 1.5 * torch.randn(shape, dtype=torch.float64),
            "t": times[k_t + 1], "s": times[k_s + 1], "k_t": k_t, "k_s": k_s}


@check(points=1, uses=["euler_flow_step"], case=_ddim_case,
       probe=lambda ns, c: ns["euler_flow_step"](c["x_t"].clone(), c["v"].clone(), c["t"].clone(), c["s"].clone()))
def euler_flow_step_is_ddim(case, answer):
    """euler_flow_step, divided by vp_scale(s), is DDIM's eta = 0 step between the matching VP levels (any velocity)."""
    from lesson_lib.diffusion.denoiser import Prediction
    from lesson_lib.diffusion.flow_matching import FlowGrid, to_x0_eps, vp_scale
    from lesson_lib.diffusion.steps import ddim_step
    x_t, v, t, s = case["x_t"], case["v"], case["t"], case["s"]
    what = (f"euler_flow_step(x_t of {shape_of(x_t)}, any v, t = {[round(x, 3) for x in t.tolist()]}, "
            f"s = {[round(x, 3) for x in s.tolist()]}) / vp_scale(s)")
    expect_tensor(answer, what, shape=x_t.shape, dtype=x_t.dtype)
    pred = Prediction(*to_x0_eps(x_t, _col(t, x_t), v))
    ddim = ddim_step(FlowGrid(T_FLOW), x_t / _col(vp_scale(t), x_t), case["k_t"], case["k_s"], pred)
    mistake = _named(_euler_mistakes(x_t, v, t, s), answer)
    expect_close(answer / _col(vp_scale(s), x_t), ddim, what + ", against DDIM from alpha-bar(t) to alpha-bar(s)",
                 rtol=1e-10, atol=1e-10, hint=naming(mistake, DDIM_HINT))


# --- 3 · DPM-Solver++(2M) --------------------------------------------------------------------------

def _lambda(alpha_bar):
    """lambda = -ln sigma = ln(sqrt(ab) / sqrt(1 - ab)), EDM's sigma = sqrt((1 - ab) / ab) (float64)."""
    from lesson_lib.diffusion.ode import sigma_of
    return -sigma_of(alpha_bar.double()).log()


def _draw_step(lam, s_min=0, s=None):
    """One step of a sampler on the linear schedule: code timesteps t_prev > t > s >= s_min (or the given s) whose
    ratio r = h_prev / h lies in one of R_RANGES (``lam`` holds lambda at every code timestep)."""
    while True:
        t = int(torch.randint(250, 900, ()))
        s_k = t - int(torch.randint(20, 251, ())) if s is None else s
        if s_k < s_min:
            continue
        h = lam[s_k] - lam[t]
        r = (lam[t] - lam[t + 1:]) / h                         # for every t_prev above t
        low, high = R_RANGES[int(torch.randint(0, 2, ()))]
        candidates = ((r >= low) & (r <= high)).nonzero().flatten()
        if len(candidates):
            return t + 1 + int(candidates[int(torch.randint(0, len(candidates), ()))]), t, s_k


def _dpm_example(shape, dtype, s_min=0, to_zero=False):
    """Inputs of dpmpp_2m_update for a batch of ``shape``: one drawn step per example (with ``to_zero``, example 0
    steps to s = 0, the last step before the data), x_t, x0_hat and an x0_prev near x0_hat."""
    from lesson_lib.diffusion.schedules import NoiseSchedule
    alpha_bars = NoiseSchedule.linear(1000).alpha_bars
    lam = _lambda(alpha_bars)
    steps = [_draw_step(lam, s_min, s=0 if to_zero and b == 0 else None) for b in range(shape[0])]
    t_prev, t, s = (torch.tensor(k) for k in zip(*steps))
    x0_hat = torch.randn(shape, dtype=dtype)
    return {"x_t": 1.5 * torch.randn(shape, dtype=dtype), "x0_hat": x0_hat,
            "x0_prev": x0_hat + 0.5 * torch.randn(shape, dtype=dtype),
            "alpha_bar_prev": alpha_bars[t_prev], "alpha_bar_t": alpha_bars[t], "alpha_bar_s": alpha_bars[s],
            "t_prev": t_prev, "t": t, "s": s}


ARGUMENTS = ("x_t", "x0_hat", "x0_prev", "alpha_bar_prev", "alpha_bar_t", "alpha_bar_s")


def _dpm_call(ns, e, x0_prev="x0_prev"):
    return ns["dpmpp_2m_update"](*[e[x0_prev if name == "x0_prev" else name].clone() for name in ARGUMENTS])


def _dpm_case():
    B = int(torch.randint(2, 7, ()))
    return {"examples": [_dpm_example(_image_shape(B), torch.float32, s_min=20),
                         _dpm_example((5, 3), torch.float64, to_zero=True),
                         _dpm_example((4, 1, 6, 6), torch.float64)]}


def _ddim(x_t, x0, a_t, a_s):
    """DDIM's eta = 0 step with x0 and the noise re-derived from (x_t, x0), float64."""
    eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    return a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps


def _dpm_variants(e):
    """The usual wrong updates (float64): name -> x_s."""
    x_t, x0, prev = (e[k].double() for k in ("x_t", "x0_hat", "x0_prev"))
    a_prev, a_t, a_s = (_col(e[k], x_t) for k in ("alpha_bar_prev", "alpha_bar_t", "alpha_bar_s"))
    lam_prev, lam_t, lam_s = _lambda(a_prev), _lambda(a_t), _lambda(a_s)
    c = (lam_s - lam_t) / (2 * (lam_t - lam_prev))            # 1 / (2r)
    d = (1 + c) * x0 - c * prev
    vp = lambda a: -0.5 * (1 - a).log()                       # noqa: E731  lambda of the VP sigma sqrt(1 - ab)
    c_vp = (vp(a_s) - vp(a_t)) / (2 * (vp(a_t) - vp(a_prev)))
    c_inverted = (lam_t - lam_prev) / (2 * (lam_s - lam_t))
    return {"r inverted: 1/(2r) taken as h_prev / (2h) instead of h / (2 h_prev)":
                _ddim(x_t, (1 + c_inverted) * x0 - c_inverted * prev, a_t, a_s),
            "the extrapolation's sign flipped: D = (1 - 1/(2r)) x0_hat + (1/(2r)) x0_prev":
                _ddim(x_t, (1 - c) * x0 + c * prev, a_t, a_s),
            "x0_hat and x0_prev swapped: D = (1 + 1/(2r)) x0_prev - (1/(2r)) x0_hat":
                _ddim(x_t, (1 + c) * prev - c * x0, a_t, a_s),
            "D used with the noise of the original prediction (derived from x_t and x0_hat, not from x_t and D)":
                a_s.sqrt() * d + (1 - a_s).sqrt() * (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt(),
            "a plain DDIM step, without the extrapolation": _ddim(x_t, x0, a_t, a_s),
            "lambda taken as -ln sqrt(1 - alpha-bar), the VP noise level, not EDM's sigma":
                _ddim(x_t, (1 + c_vp) * x0 - c_vp * prev, a_t, a_s)}


def _dpm_what(e):
    def levels(key):
        return [int(k) for k in e[key].tolist()]
    return (f"dpmpp_2m_update(x_t of {shape_of(e['x_t'])}, the levels of the linear schedule at "
            f"t_prev = {levels('t_prev')}, t = {levels('t')}, s = {levels('s')})")


@check(points=2, uses=["dpmpp_2m_update"], case=_dpm_case,
       probe=lambda ns, case: [_dpm_call(ns, e) for e in case["examples"]])
def dpmpp_2m_update_matches_the_library(case, answer):
    """dpmpp_2m_update is the library's DPM-Solver++(2M) step, at unequal steps t_prev > t > s, float32 and float64."""
    from lesson_lib.diffusion.denoiser import Prediction
    from lesson_lib.diffusion.forward import eps_from_x0
    from lesson_lib.diffusion.ode import dpmpp_2m_step
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule = NoiseSchedule.linear(1000)
    for e, got in pairs(case["examples"], answer):
        x_t, x0_hat, t, s = e["x_t"], e["x0_hat"], e["t"], e["s"]
        pred = Prediction(x0_hat, eps_from_x0(schedule, x_t, t, x0_hat))
        state = {"x0": e["x0_prev"], "lam": _lambda(e["alpha_bar_prev"])}
        expected, _ = dpmpp_2m_step(schedule, x_t, t, s, pred, None, state)
        rtol, atol = (1e-4, 1e-5) if x_t.dtype == torch.float32 else (1e-8, 1e-9)
        expect_close(got, expected, _dpm_what(e), rtol=rtol, atol=atol, hint=naming(_named(_dpm_variants(e), got),
                                                                                    DPM_HINT))


def _first_order_case():
    return {"example": _dpm_example((4, 2, 5, 5), torch.float64)}


@check(points=1, uses=["dpmpp_2m_update"], case=_first_order_case,
       probe=lambda ns, case: _dpm_call(ns, case["example"], x0_prev="x0_hat"))
def dpmpp_2m_update_is_ddim_without_history(case, answer):
    """With x0_prev = x0_hat (nothing to extrapolate) dpmpp_2m_update is DDIM's eta = 0 step: the first-order case."""
    from lesson_lib.diffusion.denoiser import Prediction
    from lesson_lib.diffusion.forward import eps_from_x0
    from lesson_lib.diffusion.schedules import NoiseSchedule
    from lesson_lib.diffusion.steps import ddim_step
    schedule = NoiseSchedule.linear(1000)
    e = case["example"]
    x_t, x0_hat, t, s = e["x_t"], e["x0_hat"], e["t"], e["s"]
    expected = ddim_step(schedule, x_t, t, s, Prediction(x0_hat, eps_from_x0(schedule, x_t, t, x0_hat)))
    expect_close(answer, expected, _dpm_what(e).replace("dpmpp_2m_update(", "dpmpp_2m_update(x0_prev = x0_hat, "),
                 rtol=1e-8, atol=1e-9, hint=FIRST_ORDER_HINT)


REFINEMENTS = 4               # the step h, h/2, h/4, h/8 (and the previous step with it)


def _order_case():
    """x0_hat = A + B lambda along one step from lambda_t (drawn in [-3, 2]) of length h (in [0.3, 0.8]), the previous
    step r h (r in [0.3, 0.45] or [1.4, 2.1]), refined three times; the levels of each (alpha-bar =
    sigmoid(2 lambda))."""
    B, D = int(torch.randint(3, 6, ())), int(torch.randint(2, 5, ()))
    lam_t = -3 + 5 * torch.rand(B, dtype=torch.float64)
    h = 0.3 + 0.5 * torch.rand(B, dtype=torch.float64)
    low = torch.tensor([R_RANGES[int(i)][0] for i in torch.randint(0, 2, (B,))], dtype=torch.float64)
    r = low * (1 + 0.5 * torch.rand(B, dtype=torch.float64))  # in [0.3, 0.45] .. [1.4, 2.1]
    A, slope = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    x_t = torch.randn(B, D, dtype=torch.float64)
    steps = []
    for k in range(REFINEMENTS):
        h_k = h / 2 ** k
        lam_prev, lam_s = lam_t - r * h_k, lam_t + h_k
        steps.append({"x_t": x_t, "x0_hat": A + slope * lam_t[:, None], "x0_prev": A + slope * lam_prev[:, None],
                      "alpha_bar_prev": torch.sigmoid(2 * lam_prev), "alpha_bar_t": torch.sigmoid(2 * lam_t),
                      "alpha_bar_s": torch.sigmoid(2 * lam_s)})
    return {"A": A, "B": slope, "lam_t": lam_t, "h": h, "r": r, "steps": steps}


def _exact_linear(x_t, A, B, lam_t, lam_s):
    """The exact update of the probability-flow ODE when x0_hat(lambda) = A + B lambda along the step (Lu et al., 2022:
    x_s = (sigma_s / sigma_t) x_t + sigma_s int e^lambda x0_hat dlambda in the VP variable, sigma = sqrt(1 - ab) =
    sigmoid(-2 lambda)^(1/2)), in closed form: the integral of e^lambda (A + B lambda) is
    e^lambda (A + B (lambda - 1))."""
    sigma_t, sigma_s = (torch.sigmoid(-2 * lam).sqrt()[:, None] for lam in (lam_t, lam_s))
    primitive = lambda lam: lam.exp()[:, None] * (A + B * (lam[:, None] - 1))   # noqa: E731
    return sigma_s / sigma_t * x_t + sigma_s * (primitive(lam_s) - primitive(lam_t))


@check(points=1, uses=["dpmpp_2m_update"], case=_order_case,
       probe=lambda ns, case: [_dpm_call(ns, step) for step in case["steps"]])
def dpmpp_2m_update_is_second_order(case, answer):
    """On an x0_hat linear in lambda, the error of one step shrinks about 8-fold when the steps are halved (order 2)."""
    A, B, lam_t, h = case["A"], case["B"], case["lam_t"], case["h"]
    x_t = case["steps"][0]["x_t"]
    errors = []
    for k, (step, got) in enumerate(pairs(case["steps"], answer)):
        what = f"dpmpp_2m_update(x_t of {shape_of(x_t)}, an x0_hat linear in lambda, steps h / {2 ** k})"
        expect_tensor(got, what, shape=x_t.shape, dtype=x_t.dtype)
        if not bool(torch.isfinite(got).all()):
            raise AssertionError(f"{what} contains NaN or inf. {ORDER_HINT}")
        exact = _exact_linear(x_t, A, B, lam_t, lam_t + h / 2 ** k)
        errors.append((got - exact).abs().amax(dim=1))
    errors = torch.stack(errors, dim=1)                                # (B, REFINEMENTS)
    mistake = _named(_dpm_variants(case["steps"][0]), answer[0])       # on the longest step, where they differ most
    for b in range(errors.shape[0]):
        shown = ", ".join(f"{e:.3g}" for e in errors[b].tolist())
        what = (f"dpmpp_2m_update on an x0_hat linear in lambda, example {b} (lambda_t = {float(lam_t[b]):.3f}, "
                f"h = {float(h[b]):.3f}, r = {float(case['r'][b]):.3f}): the errors at h, h/2, h/4, h/8 are {shown}")
        if float(errors[b, -1]) < 1e-13:
            raise AssertionError(f"{what}, exact: DPM-Solver++(2M) reads the line at the middle of the step, which is "
                                 f"not exact for the e^lambda-weighted integral. {ORDER_HINT}")
        ratios = errors[b, 1:-1] / errors[b, 2:]
        if not bool(((ratios >= 6) & (ratios <= 10.5)).all()):
            raise AssertionError(f"{what}: each halving divides the error by "
                                 f"{', '.join(f'{v:.2f}' for v in ratios.tolist())}, expected about 8. "
                                 f"{naming(mistake, ORDER_HINT)}")
