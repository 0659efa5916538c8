"""Checks for lesson 9, consistency models (solutions/09_consistency.ipynb).

Why one module: these are the checks of one exercise notebook; the grader loads a lesson's checks from
one module, and its parts share the drawn schedules, the random networks and the exact Gaussian models.

Every case draws the course's VP schedule (linear or cosine, T from 200 to 1000) and, where a network
is needed, a small random network built from drawn weights. These networks answer large, finite
nonsense when they are called at the data (t = -1), where a consistency function must not use them.

``boundary_scalings_v`` (the warm-up) is compared with
:func:`lesson_lib.diffusion.consistency.boundary_scalings` for a v network, at drawn alpha-bars with
the data's (alpha-bar = 1) among them. ``consistency_f`` must be that network's x0_hat (the
:class:`~lesson_lib.diffusion.denoiser.Denoiser`'s, through
:func:`~lesson_lib.diffusion.consistency.consistency_function`) at t >= 0 and, a separate check, x_t
itself, bit for bit, at t = -1: the boundary condition f(x, t_min) = x of Song et al. (2023, Sec. 3),
whatever the network says there.

``cd_target`` is the target of consistency distillation (Algorithm 2) for given t, s, x_0 and eps. It is
compared with the library's :class:`~lesson_lib.diffusion.consistency.ConsistencyDistillation` (x_t of
Ho et al.'s Eq. 4, ``ode_step``: one DDIM step of the teacher, eta = 0, unclipped) and
``consistency_function`` of the target network, on a drawn nested grid with rows at s = -1, for flat
float64 and image-shaped float32 inputs. The target network handed over is a live network whose weights
take gradients (the student itself, as with mu = 0), so a second check demands a target that carries no
gradient. A third demands the property on exact Gaussian data N(0, C^2 I) (teacher: the exact denoiser
of :class:`~lesson_lib.diffusion.oracles.GaussianData`; target network: the exact probability-flow map
``GaussianData.flow`` read as a v network): the target is f(x_t, t) up to DDIM's error on one interval,
which must be under a quarter of f's size and shrink at least eightfold on a grid four times finer (a
second-order local error shrinks sixteenfold; a first-order mistake, about fourfold).

``multistep_sample`` is Algorithm 1, driven by the exact consistency function of N(0, C^2 I) data (C in
[0.3, 0.7] and the dimension drawn), which the probe wraps to record every call. It must give the same
samples as :func:`lesson_lib.diffusion.sampling.consistency_sample` from the same x_T and a generator
seeded alike, for one, two and three calls (the exercise says exactly how to draw the noise); at
n = 30,000 points the samples' mean and standard deviation, after one call and after three, must lie
within 6 standard errors of their exact values; and f must be called once per time, in order, first
on x_T, with the sampler returning f's last answer. Total: 10 points.
"""

import math

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import expect_close, expect_finite, expect_tensor, field, pairs
from lesson_lib.course.protocol import type_name
from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.schedules import NoiseSchedule

# What the worker loads besides this module (see lesson_lib/course/box.py): the denoiser, to hand the
# teacher over as a Denoiser, and the Gaussian oracle, for the exact models. The steps the answers are
# compared with are taken away; the references (diffusion/consistency.py, diffusion/sampling.py,
# diffusion/distillation.py) are imported inside the cases and judges only, so the worker never holds them.
WORKER_MODULES = ("lesson_lib.diffusion.denoiser", "lesson_lib.diffusion.oracles")
HIDDEN = ("lesson_lib.diffusion.steps.ddim_step", "lesson_lib.diffusion.steps.consistency_step")

SCALINGS_HINT = ("c_skip multiplies x_t and c_out multiplies v in a v network's x0_hat = sqrt(alpha-bar) x_t - "
                 "sqrt(1 - alpha-bar) v (mind the sign of c_out); return two float64 tensors shaped like alpha_bar.")
F_HINT = ("At t >= 0, f is c_skip x_t + c_out v_net(x_t, t) with the scalings of alpha-bar_t = "
          "alpha_bars_with_0[t + 1] (the entry of code timestep t), each (B,) scaling reshaped to (B, 1, ..., 1) "
          "and cast to x_t's dtype.")
BOUNDARY_HINT = ("At the data (t = -1) f must return x_t exactly, whatever the network answers there: the level of "
                 "t = -1 is alpha_bars_with_0[0] = 1, not the level of t = 0; torch.where on t == -1 makes the "
                 "boundary exact for any network.")
X_T_HINT = ("x_t is Ho et al.'s Eq. 4: sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps, with alpha-bar_t = "
            "alpha_bars_with_0[t + 1].")
TARGET_HINT = ("The target is the target network's consistency function (your consistency_f) at (x^_s, s), where "
               "x^_s is one DDIM step of the teacher from x_t at t to s: eta = 0 (no fresh noise), x0_hat unclipped, "
               "built from the teacher's own x0_hat and eps_hat at x_t. At s = -1 the target is x^_s itself.")
NO_GRAD_HINT = ("The target network may be the student itself (mu = 0): the target is a fixed regression target, "
                "so compute the teacher's step and the target under torch.no_grad() (stop-gradient).")
ORACLE_HINT = ("With the exact teacher, x^_s lies on x_t's probability-flow trajectory up to DDIM's error on one "
               "interval, so the target network's f at (x^_s, s) must be close to f(x_t, t); use the teacher's "
               "deterministic step (eta = 0, unclipped) and the target network's f at time s, not t.")
SAMPLE_HINT = ("Algorithm 1: x0 = f(x_T, times[0]); before each later time s re-noise the last estimate x0 (not f's "
               "input) with Ho et al.'s Eq. 4 at level s, drawing z = torch.randn(x0.shape, generator=generator, "
               "dtype=x0.dtype), one draw per re-noising, in order, and nothing else from the generator.")
SPREAD_HINT = ("f returns an estimate of x_0, so after the last call the samples must have the data's mean and spread: "
               "a sample that is too wide was noised after the last call, or re-noised from f's input instead of "
               "from its estimate x0.")
CALLS_HINT = ("Call f exactly once per entry of times, in their order, the first time on x_T itself, each time with t "
              "a long tensor of shape (B,) (torch.full((B,), time)); return the output of the last call unchanged.")

DATA_STD = (0.3, 0.7)       # the data's standard deviation C for the sampler: far from x_T's 1
STATS_N = 30_000            # points in the statistics check
STATS_SIGMAS = 6.0          # its tolerance, in standard errors
MAX_RECORDED = 64           # calls of f the probe records


def _draw_schedule():
    """A drawn schedule as plain data: its name and T."""
    return {"schedule": ("linear", "cosine")[int(torch.randint(0, 2, ()))], "T": int(torch.randint(200, 1001, ()))}


def _schedule(case):
    return NoiseSchedule.from_name(case["schedule"], case["T"])


def _uniform(low, high):
    return float(low + (high - low) * torch.rand(()))


def _described(case):
    return f"a {case['schedule']} schedule with T = {case['T']}"


class RandomNet(torch.nn.Module):
    """A small network on inputs of any shape (B, ...), built from given weights (float64 parameters that
    take gradients): it mixes the D numbers of each example and depends on t; at t < 0 (the data, where
    no consistency function may use it) it answers large, finite nonsense."""

    def __init__(self, weights, prediction, T):
        super().__init__()
        self.prediction, self.T = prediction, T
        self.W = torch.nn.Parameter(weights["W"].clone())
        self.u = torch.nn.Parameter(weights["u"].clone())

    def forward(self, x, t):
        h = x.double().flatten(1)
        mixed = h @ self.W
        out = torch.tanh(mixed + (t.double() / self.T)[:, None] * self.u) + 0.5 * h
        out = torch.where((t < 0)[:, None], 1e4 * (2 + torch.sin(mixed)), out)
        return out.reshape(x.shape).to(x.dtype)


def _weights(D):
    return {"W": torch.randn(D, D, dtype=torch.float64) / math.sqrt(D), "u": torch.randn(D, dtype=torch.float64)}


class FlowAsV(torch.nn.Module):
    """The exact consistency function of Gaussian data (the probability-flow map from t to the data,
    ``GaussianData.flow``) read as a v network: v = (sqrt(alpha-bar_t) x_t - f(x_t, t)) / sqrt(1 - alpha-bar_t),
    so that x0_hat = f; at t < 0 it answers nonsense, as :class:`RandomNet` does."""

    prediction = "v"

    def __init__(self, data):
        super().__init__()
        self.data = data

    def forward(self, x, t):
        live = t.clamp(min=0)
        ab = self.data.schedule.alpha_bars_with_0[live + 1].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        f = self.data.flow(x, live, torch.full_like(t, -1))
        v = (ab.sqrt() * x - f) / (1 - ab).sqrt()
        return torch.where((t < 0).reshape(ab.shape), 1e4 * (2 + torch.sin(x)), v)


class ExactF(GaussianData):
    """The exact consistency function of N(0, C^2 I) as an x0-predicting model, for the library's sampler."""

    def __init__(self, schedule, std, dim):
        super().__init__(schedule, std=std, prediction="x0", dim=dim)

    def forward(self, x_t, t, **cond):
        return self.flow(x_t, t, torch.full_like(t, -1))


def _pair(got, what):
    """The answer of cd_target as (x_t, target)."""
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        raise AssertionError(f"{what} returned {type_name(got)}, expected the pair (x_t, target)")
    return got


# --- 1 · the parameterisation ------------------------------------------------------------------

def _scalings_case():
    case = _draw_schedule()
    ab = _schedule(case).alpha_bars_with_0
    T, calls = case["T"], []
    for shape in [(7,), (3, 4)]:
        t = torch.randint(-1, T, shape)
        t.view(-1)[:3] = torch.tensor([-1, 0, T - 1])
        calls.append({"t": t, "alpha_bar": ab[t + 1]})
    return dict(case, calls=calls)


def _scalings_probe(ns, case):
    return [ns["boundary_scalings_v"](c["alpha_bar"].clone()) for c in case["calls"]]


@check(points=1, uses=["boundary_scalings_v"], case=_scalings_case, probe=_scalings_probe)
def scalings_are_those_of_a_v_network(case, answer):
    """boundary_scalings_v gives the library's (c_skip, c_out) of a v network, (1, 0) at the data included."""
    from lesson_lib.diffusion.consistency import boundary_scalings
    schedule = _schedule(case)
    for c, got in pairs(case["calls"], answer):
        what = f"boundary_scalings_v(alpha_bar of shape {tuple(c['alpha_bar'].shape)}, {_described(case)})"
        if not isinstance(got, (list, tuple)) or len(got) != 2:
            raise AssertionError(f"{what} returned {type_name(got)}, expected the pair (c_skip, c_out)")
        for name, value, expected in zip(("c_skip", "c_out"), got, boundary_scalings(schedule, c["t"], "v")):
            expect_close(value, expected, f"{name} of {what}", rtol=1e-10, atol=1e-12, hint=SCALINGS_HINT)


def _f_case():
    case = _draw_schedule()
    T, examples = case["T"], []
    for shape, dtype in [((6, 3), torch.float64), ((5, 1, 3, 3), torch.float32), ((4, 2), torch.float32),
                         ((3, 2), torch.float64)]:
        B, D = shape[0], math.prod(shape[1:])
        t = torch.randint(-1, T, (B,))
        t[:2] = torch.tensor([-1, int(torch.randint(0, T, ()))])
        if len(examples) == 3:
            t[:] = -1                                       # a batch entirely at the data
        examples.append({"x_t": 2 * torch.randn(shape, dtype=dtype), "t": t, "weights": _weights(D)})
    return dict(case, alpha_bars_with_0=_schedule(case).alpha_bars_with_0, examples=examples)


def _f_probe(ns, case):
    return [ns["consistency_f"](RandomNet(e["weights"], "v", case["T"]), e["x_t"].clone(), e["t"].clone(),
                                case["alpha_bars_with_0"].clone()) for e in case["examples"]]


def _f_answer(e, got, case):
    what = f"consistency_f for x_t of shape {tuple(e['x_t'].shape)} ({e['x_t'].dtype}) and t = {e['t'].tolist()}"
    expect_tensor(got, what, shape=e["x_t"].shape, dtype=e["x_t"].dtype)
    return what


@check(points=1, uses=["consistency_f"], case=_f_case, probe=_f_probe)
def consistency_f_is_the_networks_x0_hat(case, answer):
    """consistency_f is the v network's x0_hat (the library's Denoiser) at every t >= 0."""
    from lesson_lib.diffusion.consistency import consistency_function
    schedule = _schedule(case)
    for e, got in pairs(case["examples"], answer):
        what = _f_answer(e, got, case)
        live = e["t"] >= 0
        if not live.any():
            continue
        net = RandomNet(e["weights"], "v", case["T"])
        with torch.no_grad():
            expected = consistency_function(Denoiser(net, schedule), e["x_t"], e["t"])
        tol = 1e-5 if e["x_t"].dtype == torch.float32 else 1e-10
        expect_close(got[live], expected[live], f"{what}, at the rows where t >= 0", rtol=tol, atol=tol, hint=F_HINT)


@check(points=1, uses=["consistency_f"], case=_f_case, probe=_f_probe)
def consistency_f_is_the_identity_at_the_data(case, answer):
    """consistency_f returns x_t bit for bit at t = -1, for a network that answers nonsense there."""
    for e, got in pairs(case["examples"], answer):
        what = _f_answer(e, got, case)
        data = e["t"] == -1
        if not torch.equal(got[data], e["x_t"][data]):
            rows = data.nonzero().flatten().tolist()
            raise AssertionError(f"{what} is not x_t at the rows where t = -1 (rows {rows}). {BOUNDARY_HINT}")
        live = ~data
        if live.any():
            expect_finite(got[live], f"{what}, at the rows where t >= 0")
            if torch.equal(got[live], e["x_t"][live]):
                raise AssertionError(f"{what} returned x_t unchanged at t >= 0 as well: the boundary holds at the "
                                     f"data only; at t >= 0, f is the network's x0_hat.")


# --- 2 · one consistency-distillation target ---------------------------------------------------

def _cd_case():
    from lesson_lib.diffusion.distillation import distillation_timesteps
    case = _draw_schedule()
    N = int(torch.randint(4, 17, ()))
    grid = torch.tensor(distillation_timesteps(case["T"], N))
    examples = []
    for shape, dtype in [((7, 3), torch.float64), ((5, 1, 3, 3), torch.float32)]:
        B, D = shape[0], math.prod(shape[1:])
        n = torch.randint(0, N, (B,))
        n[:2] = torch.tensor([0, N - 1])                   # the last interval (s = -1, the data) and the first
        examples.append({"x0": 2 * torch.randn(shape, dtype=dtype), "eps": torch.randn(shape, dtype=dtype),
                         "t": grid[n + 1], "s": grid[n], "teacher": _weights(D), "target": _weights(D),
                         "teacher_prediction": ("eps", "v")[int(torch.randint(0, 2, ()))]})
    return dict(case, N=N, alpha_bars_with_0=_schedule(case).alpha_bars_with_0, examples=examples)


def _cd_probe(ns, case):
    schedule = NoiseSchedule.from_name(case["schedule"], case["T"])
    answers = []
    for e in case["examples"]:
        teacher = Denoiser(RandomNet(e["teacher"], e["teacher_prediction"], case["T"]), schedule)
        target_net = RandomNet(e["target"], "v", case["T"])          # a live network: the student, mu = 0
        got = ns["cd_target"](teacher, target_net, e["x0"].clone(), e["eps"].clone(), e["t"].clone(),
                              e["s"].clone(), case["alpha_bars_with_0"].clone())
        target = got[1] if isinstance(got, (list, tuple)) and len(got) == 2 else None
        answers.append({"returned": got, "target_requires_grad": isinstance(target, torch.Tensor)
                        and bool(target.requires_grad)})
    return answers


def _cd_reference(case, e):
    """(x_t, target) of the library: Ho et al.'s Eq. 4, ConsistencyDistillation.ode_step, consistency_function."""
    from lesson_lib.diffusion.consistency import ConsistencyDistillation, consistency_function
    from lesson_lib.diffusion.forward import q_sample
    schedule = _schedule(case)
    objective = ConsistencyDistillation(schedule, RandomNet(e["target"], "v", case["T"]),
                                        RandomNet(e["teacher"], e["teacher_prediction"], case["T"]),
                                        intervals=case["N"], mu=0.0)
    x_t = q_sample(schedule, e["x0"], e["t"], e["eps"], check=False)
    with torch.no_grad():
        x_s = objective.ode_step(e["x0"], x_t, e["t"], e["s"], e["eps"], {})
        return x_t, consistency_function(Denoiser(objective.target, schedule), x_s, e["s"])


def _judge_cd(case, e, got):
    """Fail unless the returned pair is the library's (x_t, target); return the target."""
    x0 = e["x0"]
    what = f"cd_target for x0 of shape {tuple(x0.shape)} ({x0.dtype}), t = {e['t'].tolist()}, s = {e['s'].tolist()}"
    x_t, target = _pair(field(got, "returned"), what)
    expected_x_t, expected = _cd_reference(case, e)
    tol = 1e-5 if x0.dtype == torch.float32 else 1e-9
    expect_close(x_t, expected_x_t, f"x_t of {what}", rtol=tol, atol=tol, hint=X_T_HINT)
    expect_close(target, expected, f"the target of {what}", rtol=tol, atol=tol, hint=TARGET_HINT)
    return target


@check(points=2, uses=["cd_target"], case=_cd_case, probe=_cd_probe)
def cd_target_is_algorithm_2(case, answer):
    """cd_target gives Eq. 4's x_t and the library's target (an unclipped teacher DDIM step, then f), s = -1 too."""
    for e, got in pairs(case["examples"], answer):
        _judge_cd(case, e, got)


@check(points=1, uses=["cd_target"], case=_cd_case, probe=_cd_probe)
def cd_target_carries_no_gradient(case, answer):
    """cd_target's target is the library's and carries no gradient into the (live) target network."""
    for e, got in pairs(case["examples"], answer):
        _judge_cd(case, e, got)
        if field(got, "target_requires_grad") is not False:
            raise AssertionError(f"the target of cd_target for x0 of shape {tuple(e['x0'].shape)} requires grad: "
                                 f"gradients would flow into the target network. {NO_GRAD_HINT}")


def _oracle_case():
    from lesson_lib.diffusion.distillation import distillation_timesteps
    case = _draw_schedule()
    N, B = int(torch.randint(8, 17, ())), 512
    coarse, fine = (torch.tensor(distillation_timesteps(case["T"], k)) for k in (N, 4 * N))
    n = torch.randint(0, N, (B,))
    n[0] = 0
    dim, C = int(torch.randint(1, 4, ())), _uniform(0.3, 1.5)
    return dict(case, N=N, C=C, teacher_prediction=("eps", "v", "x0")[int(torch.randint(0, 3, ()))],
                alpha_bars_with_0=_schedule(case).alpha_bars_with_0, t=coarse[n + 1],
                s=[coarse[n], fine[4 * n + 3]], x0=C * torch.randn(B, dim, dtype=torch.float64),
                eps=torch.randn(B, dim, dtype=torch.float64))


def _oracle_probe(ns, case):
    schedule = NoiseSchedule.from_name(case["schedule"], case["T"])
    dim = case["x0"].shape[1]
    teacher = Denoiser(GaussianData(schedule, std=case["C"], prediction=case["teacher_prediction"], dim=dim), schedule)
    target_net = FlowAsV(GaussianData(schedule, std=case["C"], dim=dim))
    return [ns["cd_target"](teacher, target_net, case["x0"].clone(), case["eps"].clone(), case["t"].clone(),
                            s.clone(), case["alpha_bars_with_0"].clone()) for s in case["s"]]


@check(points=1, uses=["cd_target"], case=_oracle_case, probe=_oracle_probe)
def cd_target_of_exact_models_is_f_up_to_the_solvers_error(case, answer):
    """On exact Gaussian models the target is f(x_t, t) up to DDIM's error, which shrinks on a 4x finer grid."""
    from lesson_lib.diffusion.forward import q_sample
    schedule = _schedule(case)
    data = GaussianData(schedule, std=case["C"], dim=case["x0"].shape[1])
    x_t = q_sample(schedule, case["x0"], case["t"], case["eps"], check=False)
    f = data.flow(x_t, case["t"], torch.full_like(case["t"], -1))
    scale = f.pow(2).mean().sqrt().item()
    errors = []
    for k, got in pairs(("the coarse grid", "the fine grid"), answer):
        what = (f"the target of cd_target on {k} ({case['N'] * (1 if k == 'the coarse grid' else 4)} intervals, "
                f"{_described(case)}, data N(0, {case['C']:.3g}^2 I), an exact {case['teacher_prediction']} teacher)")
        _, target = _pair(got, what)
        expect_tensor(target, what, shape=f.shape, dtype=f.dtype)
        expect_finite(target, what, ORACLE_HINT)
        errors.append((target - f).pow(2).mean().sqrt().item())
    coarse, fine = errors
    if not coarse <= 0.25 * scale:
        raise AssertionError(f"on {case['N']} intervals the target is {coarse:.3g} (RMS) from f(x_t, t), whose RMS "
                             f"size is {scale:.3g}: more than a quarter of it. {ORACLE_HINT}")
    if not fine <= coarse / 8:
        raise AssertionError(f"the target's RMS distance from f(x_t, t) is {coarse:.3g} on {case['N']} intervals and "
                             f"{fine:.3g} on {4 * case['N']}: it must shrink at least eightfold on the finer grid, as "
                             f"DDIM's error on one interval does (about sixteenfold). {ORACLE_HINT}")


# --- 3 · multistep consistency sampling ----------------------------------------------------------

def _times(T, calls):
    """Descending times for ``calls`` calls: T - 1, then one in [0.4 T, 0.6 T), then one in [0.15 T, 0.35 T)."""
    ranges = [(0.4, 0.6), (0.15, 0.35)][:calls - 1]
    return [T - 1] + [int(torch.randint(int(lo * T), int(hi * T), ())) for lo, hi in ranges]


def _sampler_setup(n, calls):
    """A drawn schedule and C, and one run per entry of ``calls`` (that many calls of f), each in its own
    dimension (1 to 3), so that no run's answer fits another's."""
    case = _draw_schedule()
    dims = (torch.randperm(3)[:len(calls)] + 1).tolist()
    return dict(case, C=_uniform(*DATA_STD), alpha_bars_with_0=_schedule(case).alpha_bars_with_0,
                runs=[{"times": _times(case["T"], k), "seed": int(torch.randint(0, 2 ** 31 - 1, ())),
                       "x_T": torch.randn(n, dim, dtype=torch.float64)} for k, dim in zip(calls, dims)])


def _recorded_f(case, dim, calls):
    """The exact consistency function of N(0, C^2 I), recording what it is called with."""
    schedule = NoiseSchedule.from_name(case["schedule"], case["T"])
    data = GaussianData(schedule, std=case["C"], dim=dim)

    def f(x, t):
        if type(x) is not torch.Tensor or type(t) is not torch.Tensor or t.dtype != torch.long \
                or tuple(t.shape) != (x.shape[0],):
            raise TypeError(f"f takes (x, t) with t a long tensor of shape (B,) = ({getattr(x, 'shape', [0])[0]},), "
                            f"e.g. torch.full((B,), time); got t = {t!r}")
        if len(calls) < MAX_RECORDED:
            calls.append({"x": x.detach().clone(), "t": t.clone()})
        return data.flow(x, t, torch.full_like(t, -1))
    return f


def _sampler_probe(ns, case, record=True):
    answers = []
    for run in case["runs"]:
        calls = []
        f = _recorded_f(case, run["x_T"].shape[1], calls)
        sample = ns["multistep_sample"](f, run["x_T"].clone(), list(run["times"]), case["alpha_bars_with_0"].clone(),
                                        torch.Generator().manual_seed(run["seed"]))
        answers.append({"sample": sample, "calls": calls} if record else sample)
    return answers


def _what(case, run):
    return (f"multistep_sample on times {run['times']} ({_described(case)}, data N(0, {case['C']:.3g}^2 I) in "
            f"{run['x_T'].shape[1]} dimensions, {run['x_T'].shape[0]} points)")


def _sample(got, run, what):
    expect_tensor(got, what, shape=run["x_T"].shape, dtype=run["x_T"].dtype)
    expect_finite(got, what)
    return got


@check(points=1, uses=["multistep_sample"], case=lambda: _sampler_setup(6, (1, 2, 3)), probe=_sampler_probe)
def multistep_sample_is_algorithm_1(case, answer):
    """multistep_sample gives the library's samples from the same x_T and noise, on 1, 2 and 3 calls."""
    from lesson_lib.diffusion.sampling import consistency_sample
    schedule = _schedule(case)
    for run, got in pairs(case["runs"], answer):
        what = _what(case, run)
        sample = _sample(field(got, "sample"), run, what)
        model = ExactF(schedule, case["C"], run["x_T"].shape[1])
        expected = consistency_sample(model, schedule, x_T=run["x_T"], timesteps=run["times"], progress=False,
                                      generator=torch.Generator().manual_seed(run["seed"]))
        expect_close(sample, expected, what, rtol=1e-9, atol=1e-12, hint=SAMPLE_HINT)


def _propagated_std(case, times):
    """The exact standard deviation of each coordinate after Algorithm 1 with the exact f from x_T ~ N(0, I):
    f scales x_t by C / sqrt(v_t) (v_t = alpha-bar_t C^2 + 1 - alpha-bar_t), re-noising at s gives
    alpha-bar_s var + 1 - alpha-bar_s."""
    ab, C2, var = _schedule(case).alpha_bars_with_0, case["C"] ** 2, 1.0
    for k, t in enumerate(times):
        a = float(ab[t + 1])
        var *= C2 / (a * C2 + 1 - a)
        if k + 1 < len(times):
            a_s = float(ab[times[k + 1] + 1])
            var = a_s * var + 1 - a_s
    return math.sqrt(var)


@check(points=1, uses=["multistep_sample"], case=lambda: _sampler_setup(STATS_N, (1, 3)),
       probe=lambda ns, case: _sampler_probe(ns, case, record=False))
def multistep_samples_have_the_datas_spread(case, answer):
    """After 1 and after 3 calls of the exact f the samples have the data's mean and std (n = 30,000)."""
    for run, got in pairs(case["runs"], answer):
        what = _what(case, run)
        sample = _sample(got, run, what)
        std, n = _propagated_std(case, run["times"]), sample.shape[0]
        for i, (m, s) in enumerate(zip(sample.mean(0).tolist(), sample.std(0).tolist())):
            if not abs(m) <= STATS_SIGMAS * std / math.sqrt(n):
                raise AssertionError(f"coordinate {i} of the samples of {what} has mean {m:.4f}, expected 0 within "
                                     f"{STATS_SIGMAS * std / math.sqrt(n):.4f}. {SPREAD_HINT}")
            if not abs(s - std) <= STATS_SIGMAS * std / math.sqrt(2 * n):
                raise AssertionError(f"coordinate {i} of the samples of {what} has standard deviation {s:.4f}, "
                                     f"expected {std:.4f} within {STATS_SIGMAS * std / math.sqrt(2 * n):.4f}. "
                                     f"{SPREAD_HINT}")


@check(points=1, uses=["multistep_sample"], case=lambda: _sampler_setup(6, (1, 2, 3)), probe=_sampler_probe)
def multistep_sample_calls_f_once_per_time(case, answer):
    """multistep_sample calls f once per time, in order, first on x_T, and returns f's last answer."""
    schedule = _schedule(case)
    for run, got in pairs(case["runs"], answer):
        what, times, x_T = _what(case, run), run["times"], run["x_T"]
        calls = field(got, "calls")
        if not isinstance(calls, list) or len(calls) != len(times) or not all(isinstance(c, dict) for c in calls):
            count = len(calls) if isinstance(calls, list) else type_name(calls)
            raise AssertionError(f"{what} called f {count} times, expected {len(times)}. {CALLS_HINT}")
        for k, (time, call) in enumerate(zip(times, calls)):
            t, x = field(call, "t"), field(call, "x")
            expect_tensor(t, f"t of call {k + 1} of f in {what}", shape=(x_T.shape[0],), dtype=torch.long)
            expect_tensor(x, f"x of call {k + 1} of f in {what}", shape=x_T.shape, dtype=x_T.dtype)
            expect_finite(x, f"x of call {k + 1} of f in {what}")
            if not bool((t == time).all()):
                raise AssertionError(f"call {k + 1} of f in {what} was at t = {t.tolist()}, expected {time} "
                                     f"(times[{k}]). {CALLS_HINT}")
        if not torch.equal(calls[0]["x"], x_T):
            raise AssertionError(f"the first call of f in {what} was not on x_T itself. {CALLS_HINT}")
        data = GaussianData(schedule, std=case["C"], dim=x_T.shape[1])
        last = data.flow(calls[-1]["x"], calls[-1]["t"], torch.full_like(calls[-1]["t"], -1))
        expect_close(_sample(field(got, "sample"), run, what), last, f"{what}, against f's answer at its last call",
                     rtol=1e-12, atol=1e-12, hint=CALLS_HINT)
