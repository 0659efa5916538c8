"""The checks of lesson 13 (the probability-flow ODE, second-order samplers and flow matching), run in this process
as tests/test_grader_lesson11.py runs those of lesson 11: the solution earns every point on any seed, typical wrong
answers are rejected, each by the check of the property it gets wrong while the properties it gets right still score,
other right answers earn every point, and hostile answers (NaN, empty, the inputs echoed, constants) earn nothing.
Answers that call the library's own path, Euler step and DPM-Solver++(2M) step pass in this process (as in the
notebook's feedback) and earn nothing when graded, with the sandbox or without. (The untouched exercise reaching its
stub, the end-to-end grading of solution and exercise, and forged answers sent to every judge are tested for every
lesson in tests/test_grader.py and tests/test_grader_judges.py.)"""

import textwrap

import nbformat
import pytest
import torch

from grading_helpers import passes_on_seeds, rejected_on_seeds, solution_with
from lesson_lib.course import grader
from lesson_lib.course.checks import load_checks
from lesson_lib.course.checks import lesson13

SEEDS = (0, 1, 2)
CHECKS = {check.name: check for check in load_checks("13")}


def rejected(check_name, source, seeds=SEEDS, error=AssertionError):
    return rejected_on_seeds("13", check_name, source, seeds, error)


def passes(check_name, source="", seeds=SEEDS):
    passes_on_seeds("13", check_name, source, seeds)


def test_the_checks_total_10_points_and_the_solution_earns_them_on_any_seed():
    assert sum(check.points for check in CHECKS.values()) == 10
    for name in CHECKS:
        passes(name, seeds=range(8))


def test_the_worker_loads_nothing_of_the_diffusion_library():
    """The probes need no reference: every module an answer could be compared with stays out of the worker."""
    from lesson_lib.course.sandbox import worker_files
    assert lesson13.WORKER_MODULES == () and not any("/diffusion/" in path for path in worker_files("13"))


# --- 1 · the straight path and its target -------------------------------------------------------

PAIR = '''
def flow_matching_pair(x0, eps, t):
    t = {t}
    return {x_t}, {v}
'''
RIGHT_PAIR = {"t": "t.reshape(-1, *[1] * (x0.ndim - 1))", "x_t": "(1 - t) * x0 + t * eps", "v": "eps - x0"}
PAIR_CHECKS = ("flow_matching_pair_is_the_straight_path", "flow_matching_pair_ends_and_slope")


def pair_source(**change):
    return PAIR.format(**dict(RIGHT_PAIR, **change))


def test_the_pair_template_is_right():
    for name in PAIR_CHECKS:
        passes(name, pair_source())


def test_the_other_conventions_path_loses_both_checks_and_is_named():
    source = pair_source(x_t="t * x0 + (1 - t) * eps")
    assert all("the other convention's path" in m and "flip together" in m
               for m in rejected("flow_matching_pair_is_the_straight_path", source))
    assert all("the other convention's path" in m for m in rejected("flow_matching_pair_ends_and_slope", source))


def test_the_other_conventions_target_loses_both_checks_and_is_named():
    source = pair_source(v="x0 - eps")
    assert all("the other convention's target" in m and "flip together" in m
               for m in rejected("flow_matching_pair_is_the_straight_path", source))
    assert all("minus the path's derivative" in m for m in rejected("flow_matching_pair_ends_and_slope", source))


def test_the_whole_other_convention_is_consistent_but_not_the_courses():
    """Time and target both flipped: v is the slope of that path, but its ends are the wrong way round."""
    source = pair_source(x_t="t * x0 + (1 - t) * eps", v="x0 - eps")
    rejected("flow_matching_pair_is_the_straight_path", source)
    messages = rejected("flow_matching_pair_ends_and_slope", source)
    assert all("against x0 where t = 0" in m and "the other convention's path" in m for m in messages)


def test_the_noise_as_target_loses_both_checks_and_is_named():
    source = pair_source(v="eps")
    assert all("the noise" in m for m in rejected("flow_matching_pair_is_the_straight_path", source))
    assert all("the noise" in m for m in rejected("flow_matching_pair_ends_and_slope", source))


def test_a_t_that_is_not_reshaped_raises_or_is_named():
    """Where no dimension equals the batch size the shapes clash; where the width does, it runs and is named."""
    source = pair_source(t="t")
    rejected("flow_matching_pair_is_the_straight_path", source, error=RuntimeError)
    assert all("t multiplied along the last axis" in m for m in rejected("flow_matching_pair_ends_and_slope", source))


@pytest.mark.parametrize("source", [
    pair_source(x_t="torch.lerp(x0, eps, t)"),
    pair_source(x_t="x0 + t * (eps - x0)"),
    '''
    def flow_matching_pair(x0, eps, t):                  # t as a view with trailing axes, the target first
        v = eps - x0
        t = t[(...,) + (None,) * (x0.dim() - 1)]
        return x0 + t * v, v
    ''',
])
def test_other_right_pairs_earn_every_point(source):
    for name in PAIR_CHECKS:
        passes(name, source, seeds=range(6))


# --- 2 · one Euler step of the flow ----------------------------------------------------------------

EULER = '''
def euler_flow_step(x_t, v, t, s):
    t, s = (torch.as_tensor(u, dtype=x_t.dtype) for u in (t, s))
    if t.ndim:
        t, s = (u.reshape(-1, *[1] * (x_t.ndim - 1)) for u in (t, s))
    return {step}
'''
EULER_CHECKS = ("euler_flow_step_matches_the_library", "euler_flow_step_lands_on_the_posterior_mean",
                "euler_flow_step_is_ddim")


def euler_source(step):
    return EULER.format(step=step)


def test_the_euler_template_is_right():
    for name in EULER_CHECKS:
        passes(name, euler_source("x_t + (s - t) * v"))


@pytest.mark.parametrize("step, named", [
    ("x_t + (t - s) * v", "a step the wrong way"),
    ("x_t - s * v", "a step of length s that ignores t"),
    ("x_t + s * v", "ignores t"),                         # at s = 0 it is x_t - s v too
])
def test_a_wrong_step_loses_every_euler_check_and_is_named(step, named):
    source = euler_source(step)
    for name in EULER_CHECKS:
        assert all(named in m for m in rejected(name, source)), name


def test_the_jump_to_x0_hat_is_right_only_for_a_step_to_the_data():
    """x_t - t v ignores s: it is the Euler step when s = 0 (the posterior-mean property holds) and wrong elsewhere."""
    source = euler_source("x_t - t * v")
    passes("euler_flow_step_lands_on_the_posterior_mean", source)
    for name in ("euler_flow_step_matches_the_library", "euler_flow_step_is_ddim"):
        assert all("the jump to x0_hat that ignores s" in m for m in rejected(name, source))


def test_times_that_are_not_reshaped_raise():
    source = "def euler_flow_step(x_t, v, t, s):\n    return x_t + (s - t) * v\n"
    for name in EULER_CHECKS:
        rejected(name, source, error=RuntimeError)


@pytest.mark.parametrize("source", [
    euler_source("(1 - s) * (x_t - t * v) + s * (x_t + (1 - t) * v)"),     # through x0_hat and eps_hat
    '''
    def euler_flow_step(x_t, v, t, s):                   # the step as a (B, 1, ..., 1) view, addcmul
        step = torch.as_tensor(s, dtype=x_t.dtype) - torch.as_tensor(t, dtype=x_t.dtype)
        return torch.addcmul(x_t, step.view(-1, *[1] * (x_t.dim() - 1)) if step.dim() else step, v)
    ''',
])
def test_other_right_steps_earn_every_point(source):
    for name in EULER_CHECKS:
        passes(name, source, seeds=range(6))


# --- 3 · DPM-Solver++(2M) --------------------------------------------------------------------------

DPM = '''
def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):
    lam = {lam}
    lam_prev, lam_t, lam_s = lam(alpha_bar_prev), lam(alpha_bar_t), lam(alpha_bar_s)
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    c = ({c}).reshape(shape).to(x_t.dtype)
    d = {d}
    a_t, a_s = (a.reshape(shape).to(x_t.dtype) for a in (alpha_bar_t, alpha_bar_s))
    eps = (x_t - a_t.sqrt() * {eps_from}) / (1 - a_t).sqrt()
    return a_s.sqrt() * d + (1 - a_s).sqrt() * eps
'''
RIGHT_DPM = {"lam": "lambda a: torch.log(a.sqrt() / (1 - a).sqrt())", "c": "(lam_s - lam_t) / (2 * (lam_t - lam_prev))",
             "d": "(1 + c) * x0_hat - c * x0_prev", "eps_from": "d"}
DPM_CHECKS = ("dpmpp_2m_update_matches_the_library", "dpmpp_2m_update_is_ddim_without_history",
              "dpmpp_2m_update_is_second_order")


def dpm_source(**change):
    return DPM.format(**dict(RIGHT_DPM, **change))


def test_the_dpm_template_is_right():
    for name in DPM_CHECKS:
        passes(name, dpm_source())


@pytest.mark.parametrize("change, named, ratio", [
    ({"c": "(lam_t - lam_prev) / (2 * (lam_s - lam_t))"}, "r inverted", 4),
    ({"d": "(1 - c) * x0_hat + c * x0_prev"}, "sign flipped", 4),
    ({"d": "(1 + c) * x0_prev - c * x0_hat"}, "x0_hat and x0_prev swapped", 4),
    ({"eps_from": "x0_hat"}, "the noise of the original prediction", 2),
    ({"d": "x0_hat"}, "a plain DDIM step", 4),
])
def test_a_usual_mistake_loses_the_value_and_order_checks_and_is_named_but_is_ddim_without_history(change, named,
                                                                                                   ratio):
    """Each listed mistake reduces to DDIM when x0_prev = x0_hat (that check's point stays); its error shrinks about
    fourfold (or twofold) a halving, not eightfold."""
    source = dpm_source(**change)
    assert all(named in m for m in rejected("dpmpp_2m_update_matches_the_library", source))
    messages = rejected("dpmpp_2m_update_is_second_order", source)
    assert all(named in m and "expected about 8" in m for m in messages)
    shown = [m.split("divides the error by ")[1].split(", expected")[0] for m in messages]
    shrinks = [float(v) for ratios in shown for v in ratios.split(", ")]
    assert all(abs(v / ratio - 1) < 0.25 for v in shrinks), shrinks
    passes("dpmpp_2m_update_is_ddim_without_history", source)


def test_lambda_of_the_vp_noise_level_loses_the_value_check_and_is_named():
    source = dpm_source(lam="lambda a: -0.5 * torch.log(1 - a)")
    assert all("the VP noise level" in m for m in rejected("dpmpp_2m_update_matches_the_library", source))
    passes("dpmpp_2m_update_is_ddim_without_history", source)


def test_a_wrong_ddim_step_loses_the_first_order_check():
    source = dpm_source().replace("return a_s.sqrt() * d + (1 - a_s).sqrt() * eps", "return a_s * d + (1 - a_s) * eps")
    for name in DPM_CHECKS:
        rejected(name, source)


def test_an_answer_left_in_float64_loses_the_value_check_on_float32():
    """(1 + c) with c in float64 promotes a float32 x_t: the answer must keep x_t's dtype."""
    source = dpm_source().replace(".reshape(shape).to(x_t.dtype)\n    d", ".reshape(shape)\n    d")
    assert all("dtype torch.float64, expected torch.float32" in m
               for m in rejected("dpmpp_2m_update_matches_the_library", source))
    passes("dpmpp_2m_update_is_second_order", source)


def test_the_drawn_steps_are_unequal():
    """An inverted r shows only where r != 1: every drawn example has r in [0.3, 0.75] or [1.4, 3]."""
    for seed in range(6):
        for example in CHECKS["dpmpp_2m_update_matches_the_library"].make_case(seed)["examples"]:
            lam = [lesson13._lambda(example[k]) for k in ("alpha_bar_prev", "alpha_bar_t", "alpha_bar_s")]
            r = (lam[1] - lam[0]) / (lam[2] - lam[1])
            assert bool((((r >= 0.3) & (r <= 0.75)) | ((r >= 1.4) & (r <= 3))).all()), r
            assert bool((example["t_prev"] > example["t"]).all() and (example["t"] > example["s"]).all())
            assert bool((example["s"] >= 0).all())


def test_the_exact_update_for_a_linear_x0_hat_is_the_ode_solution():
    """The order check's reference: for x0_hat(lambda) = A + B lambda the closed form solves the probability-flow ODE
    in lambda (checked against RK4), and DPM-Solver++(2M)'s error against it is sigma_s e^lambda_t B ((h/2)(e^h - 1) -
    e^h (h - 1) - 1), as the check module's docstring derives: not zero, and -alpha_t B h^3 / 12 to leading order."""
    A, B = torch.tensor([[0.3, -1.2]], dtype=torch.float64), torch.tensor([[0.8, 0.5]], dtype=torch.float64)
    x_t, lam_t, h = torch.tensor([[0.7, -0.4]], dtype=torch.float64), torch.tensor([-0.6], dtype=torch.float64), 0.5
    exact = lesson13._exact_linear(x_t, A, B, lam_t, lam_t + h)
    # In the VP variable, with alpha^2 = sigmoid(2 lambda) and sigma^2 = 1 - alpha^2, the ODE is Lu et al.'s
    # x(lambda) = (sigma / sigma_t) x_t + sigma int e^u x0_hat(u) du differentiated: d ln sigma / dlambda = -alpha^2 and
    # sigma e^lambda = alpha, so dx/dlambda = -alpha^2 x + alpha x0_hat(lambda).
    def f(lam, x):
        alpha2 = torch.sigmoid(2 * lam)
        return -alpha2 * x + alpha2.sqrt() * (A + B * lam)
    x, lam, n = x_t.clone(), lam_t.clone(), 2000
    dl = h / n
    for _ in range(n):
        k1 = f(lam, x)
        k2 = f(lam + dl / 2, x + dl / 2 * k1)
        k3 = f(lam + dl / 2, x + dl / 2 * k2)
        k4 = f(lam + dl, x + dl * k3)
        x, lam = x + dl / 6 * (k1 + 2 * k2 + 2 * k3 + k4), lam + dl
    assert torch.allclose(x, exact, rtol=0, atol=1e-12)
    ab = lambda lam: torch.sigmoid(2 * lam)                                    # noqa: E731
    lam_prev = lam_t - 0.7 * h
    got = solution_with("13", "")["dpmpp_2m_update"](x_t, A + B * lam_t, A + B * lam_prev, ab(lam_prev), ab(lam_t),
                                                      ab(lam_t + h))
    sigma_s = torch.sigmoid(-2 * (lam_t + h)).sqrt()
    e = torch.tensor(h, dtype=torch.float64).exp()
    error = sigma_s * lam_t.exp() * B * ((h / 2) * (e - 1) - e * (h - 1) - 1)
    assert torch.allclose(got - exact, error, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("source", [
    '''
    def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):   # EDM's VE variable
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        sigma = lambda a: ((1 - a) / a).sqrt().reshape(shape)
        lam = lambda a: -torch.log(sigma(a))
        h, h_prev = lam(alpha_bar_s) - lam(alpha_bar_t), lam(alpha_bar_t) - lam(alpha_bar_prev)
        d = x0_hat + (h / (2 * h_prev)).to(x_t.dtype) * (x0_hat - x0_prev)
        ratio = (sigma(alpha_bar_s) / sigma(alpha_bar_t)).to(x_t.dtype)
        x_ve = x_t / alpha_bar_t.sqrt().reshape(shape).to(x_t.dtype)
        return alpha_bar_s.sqrt().reshape(shape).to(x_t.dtype) * (ratio * x_ve + (1 - ratio) * d)
    ''',
    '''
    def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):   # Algorithm 2 as printed
        col = lambda a: a.reshape(-1, *[1] * (x_t.ndim - 1))
        alpha, sigma = (lambda a: col(a.sqrt())), (lambda a: col((1 - a).sqrt()))
        lam = lambda a: torch.log(alpha(a) / sigma(a))
        h = lam(alpha_bar_s) - lam(alpha_bar_t)
        r = (lam(alpha_bar_t) - lam(alpha_bar_prev)) / h
        d = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_prev
        x_s = sigma(alpha_bar_s) / sigma(alpha_bar_t) * x_t - alpha(alpha_bar_s) * torch.expm1(-h) * d
        return x_s.to(x_t.dtype)
    ''',
])
def test_other_right_updates_earn_every_point(source):
    for name in DPM_CHECKS:
        passes(name, source, seeds=range(6))


# --- hostile answers earn nothing -----------------------------------------------------------------

HOSTILE = {
    "NaN": '''
        def flow_matching_pair(x0, eps, t):
            return torch.full_like(x0, float("nan")), torch.full_like(x0, float("nan"))
        def euler_flow_step(x_t, v, t, s):
            return torch.full_like(x_t, float("nan"))
        def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):
            return torch.full_like(x_t, float("nan"))
    ''',
    "empty": '''
        def flow_matching_pair(x0, eps, t):
            return torch.empty(0, dtype=x0.dtype), torch.empty(0, dtype=x0.dtype)
        def euler_flow_step(x_t, v, t, s):
            return torch.empty(0, dtype=x_t.dtype)
        def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):
            return torch.empty(0, dtype=x_t.dtype)
    ''',
    "echo": '''
        def flow_matching_pair(x0, eps, t):
            return x0, eps
        def euler_flow_step(x_t, v, t, s):
            return x_t
        def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):
            return x_t
    ''',
    "other inputs": '''
        def flow_matching_pair(x0, eps, t):
            return eps, x0
        def euler_flow_step(x_t, v, t, s):
            return v
        def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):
            return x0_hat
    ''',
    "constants": '''
        def flow_matching_pair(x0, eps, t):
            return torch.zeros_like(x0), torch.ones_like(x0)
        def euler_flow_step(x_t, v, t, s):
            return torch.zeros_like(x_t)
        def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):
            return torch.ones_like(x_t)
    ''',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answers_earn_nothing(name):
    namespace = solution_with("13", HOSTILE[name])
    for check in CHECKS.values():
        with pytest.raises(AssertionError, match="."):
            check.fn(namespace, seed=0)


CHEAT = '''
import torch
from lesson_lib.diffusion.denoiser import Prediction
from lesson_lib.diffusion.flow_matching import path, to_x0_eps, velocity_target
from lesson_lib.diffusion.forward import eps_from_x0
from lesson_lib.diffusion.ode import dpmpp_2m_step, sigma_of

def flow_matching_pair(x0, eps, t):            # the library's path and target
    return path(x0, eps, t), velocity_target(x0, eps)

def euler_flow_step(x_t, v, t, s):              # both ends from the library, then DDIM on the path
    x0_hat, eps_hat = to_x0_eps(x_t, t, v)
    s = torch.as_tensor(s, dtype=x_t.dtype)
    s = s.reshape(-1, *[1] * (x_t.ndim - 1)) if s.ndim else s
    return (1 - s) * x0_hat + s * eps_hat

class Levels:                                   # a schedule of the two levels of each example, for the library's step
    def __init__(self, alpha_bar_t, alpha_bar_s):
        levels = torch.stack([alpha_bar_s, alpha_bar_t], 1).flatten()
        self.alpha_bars_with_0 = torch.cat([torch.ones(1, dtype=levels.dtype), levels])
        self.sqrt_alpha_bars, self.sqrt_one_minus_alpha_bars = levels.sqrt(), (1 - levels).sqrt()

def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):
    schedule, s = Levels(alpha_bar_t, alpha_bar_s), 2 * torch.arange(len(x_t))
    pred = Prediction(x0_hat, eps_from_x0(schedule, x_t, s + 1, x0_hat))
    state = {"x0": x0_prev, "lam": -sigma_of(alpha_bar_prev).log()}
    return dpmpp_2m_step(schedule, x_t, s + 1, s, pred, None, state)[0]
'''


def test_the_library_called_would_pass_without_the_fence():
    """In this process (as in the notebook's own feedback) the library is there and the cheat passes: only the
    worker's fence stops it below (else that test could not fail)."""
    for name in CHECKS:
        passes(name, CHEAT, seeds=(3,))


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_in_the_grader_the_library_cannot_be_called(tmp_path, sandbox):
    """The worker loads no module of lesson_lib.diffusion: the library's path, Euler step and DPM-Solver++(2M) step
    import as stand-ins that raise, so the cheat earns nothing when graded, with bubblewrap or without."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["lesson_lib"] = {"lesson": "13"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(CHEAT).strip("\n"))]
    path = tmp_path / "13_cheat.ipynb"
    nbformat.write(nb, str(path))
    report = grader.grade(path, seed=3, sandbox=sandbox)
    results = {result["name"]: result for result in report["checks"]}
    assert set(results) == set(CHECKS)
    for name in CHECKS:
        assert results[name]["points"] == 0, grader.format_report(report)
        assert "not available while grading" in results[name]["reason"], results[name]["reason"]
