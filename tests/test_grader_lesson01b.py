"""The checks of lesson 1b (the reverse process), run in this process as tests/test_grader_lesson05.py
runs those of lesson 5: the solution passes every check, the untouched exercise reaches the
student's ``NotImplementedError`` in every check, and typical wrong answers are rejected, each by
the check of the property it gets wrong (and not by the other one, where the two are scored apart).
The reference of the Gaussian reverse step, which the library does not hold, is checked against a
simulation of the chain and against the joint-Gaussian formula."""

import pytest
import torch

from grading_helpers import definitions, expect_rejected
from lesson_lib.course.checks import load_checks
from lesson_lib.course.checks.lesson01b import exact_gaussian_reverse


def _passes(lesson, check_name, source, seeds=(0, 1, 2)):
    namespace = definitions("solutions", lesson)
    exec(source, namespace)
    check = next(c for c in load_checks(lesson) if c.name == check_name)
    for seed in seeds:
        check.fn(namespace, seed=seed)


# --- the warm-up ------------------------------------------------------------------------------

MEAN = """
def posterior_mean_from_eps(x_t, t, eps, betas, alpha_bars):
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    beta, alpha_bar = betas[t].reshape(shape), alpha_bars[t].reshape(shape)
    return ({body}).to(x_t.dtype)
"""


@pytest.mark.parametrize("body", [
    "(x_t - beta / (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()",          # alpha-bar_t for alpha_t
    "(x_t - beta / (1 - alpha_bar) * eps) / (1 - beta).sqrt()",                # no sqrt on 1 - alpha-bar
    "(x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()",                 # x0_hat, not the mean
    "(x_t - betas[t - 1].reshape(shape) / (1 - alpha_bar).sqrt() * eps) / (1 - beta).sqrt()",  # off by one
])
def test_a_wrong_mean_is_rejected(body):
    source = MEAN.format(body=body)
    expect_rejected("01b", "mean_from_eps_is_equation_11", source)
    expect_rejected("01b", "mean_from_the_true_eps_is_the_posterior_mean", source)


# --- the exact reverse step for Gaussian data ---------------------------------------------------

def test_the_reference_matches_a_simulation_of_the_chain():
    """Draw x_0 ~ N(mu, s^2), x_{t-1} ~ q(x_{t-1} | x_0) and x_t by one step, and compare the mean and
    variance of x_{t-1} among the samples whose x_t fell near 0.3 with the reference."""
    from lesson_lib.diffusion.forward import q_sample, q_step
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule, n, gen = NoiseSchedule.linear(20, 0.01, 0.2), 1_000_000, torch.Generator().manual_seed(0)
    for t, mu, s in [(3, 0.8, 0.4), (0, -0.5, 0.7), (10, 0.0, 1.5)]:
        x0 = mu + s * torch.randn(n, 1, generator=gen, dtype=torch.float64)
        x_prev = x0 if t == 0 else q_sample(schedule, x0, torch.full((n,), t - 1),
                                            torch.randn(n, 1, generator=gen, dtype=torch.float64))
        x_t = q_step(schedule, x_prev, torch.full((n,), t), torch.randn(n, 1, generator=gen, dtype=torch.float64))
        near = (x_t[:, 0] - 0.3).abs() < 0.01
        mean, variance = exact_gaussian_reverse(schedule.betas, torch.tensor([[0.3]], dtype=torch.float64),
                                                torch.tensor([t]), mu, s)
        assert near.sum() > 5000
        assert abs(x_prev[near].mean() - mean.item()) < 0.01
        assert abs(x_prev[near].var() / variance.item() - 1) < 0.05


def test_the_reference_is_the_conditional_of_the_joint_gaussian():
    """Var(x_{t-1} | x_t) = beta_t v_{t-1} / v_t and E[x_{t-1} | x_t] = sqrt(ab_{t-1}) mu + sqrt(alpha_t) v_{t-1} / v_t
    (x_t - sqrt(ab_t) mu), with v_k = ab_k s^2 + 1 - ab_k, and the two limits of the lesson: beta-tilde_t for one
    point (s = 0), beta_t for x_0 ~ N(0, I)."""
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule = NoiseSchedule.cosine(300)
    t = torch.tensor([0, 1, 7, 150, 299])
    x_t = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ab, ab_prev, beta = schedule.alpha_bars[t], schedule.alpha_bars_prev[t], schedule.betas[t]
    for mu, s in [(0.4, 0.0), (0.0, 1.0), (-1.2, 0.3), (2.0, 1.7)]:
        v, v_prev = ab * s ** 2 + 1 - ab, ab_prev * s ** 2 + 1 - ab_prev
        mean, variance = exact_gaussian_reverse(schedule.betas, x_t, t, mu, s)
        torch.testing.assert_close(variance, beta * v_prev / v, rtol=1e-12, atol=1e-15)
        expected = ab_prev.sqrt()[:, None] * mu + ((1 - beta).sqrt() * v_prev / v)[:, None] * (x_t - ab.sqrt()[:, None] * mu)
        torch.testing.assert_close(mean, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(exact_gaussian_reverse(schedule.betas, x_t, t, 0.4, 0.0)[1], schedule.posterior_variance[t])
    torch.testing.assert_close(exact_gaussian_reverse(schedule.betas, x_t, t, 0.0, 1.0)[1], beta)


REVERSE = """
def gaussian_reverse_step(x_t, t, betas, data_mean, data_std):
    alpha_bars = torch.cumprod(1 - betas, dim=0)
    alpha_bars_prev = {prev}
    beta, ab, ab_prev = betas[t, None], alpha_bars[t, None], alpha_bars_prev[t, None]
    s = data_std
    v_prev = ab_prev * s ** 2 + 1 - ab_prev
    v = ab * s ** 2 + 1 - ab
    cov = (1 - beta).sqrt() * v_prev
    mean = {mean}
    variance = {variance}
    return mean, variance[:, 0]
"""
RIGHT = {"prev": "torch.cat([torch.ones(1, dtype=betas.dtype), alpha_bars[:-1]])",
         "mean": "ab_prev.sqrt() * data_mean + cov / v * (x_t - ab.sqrt() * data_mean)",
         "variance": "v_prev - cov ** 2 / v"}


def test_the_template_of_the_wrong_answers_is_right():
    _passes("01b", "gaussian_reverse_variance_is_exact", REVERSE.format(**RIGHT))
    _passes("01b", "gaussian_reverse_mean_is_exact", REVERSE.format(**RIGHT))


@pytest.mark.parametrize("change", [
    {"variance": "(1 - ab_prev) / (1 - ab) * beta"},                  # beta-tilde whatever the data
    {"variance": "beta.expand_as(v)"},                                # beta whatever the data
    {"variance": "v_prev - cov / v"},                                 # Cov / Var instead of Cov^2 / Var
    {"variance": "beta * v_prev / v * data_std ** 2"},                # scaled by the data's variance
    {"prev": "torch.roll(alpha_bars, 1)"},                            # wraps to alpha-bar_T at t = 0, not 1
    {"prev": "alpha_bars"},                                           # alpha-bar_t for alpha-bar_{t-1}
])
def test_a_wrong_reverse_variance_is_rejected(change):
    expect_rejected("01b", "gaussian_reverse_variance_is_exact", REVERSE.format(**{**RIGHT, **change}))


@pytest.mark.parametrize("mean", [
    "cov / v * x_t",                                                   # the data mean forgotten
    "ab_prev.sqrt() * data_mean + cov / v * x_t",                      # x_t not centred
    "(ab_prev.sqrt() * beta * data_mean + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab)",  # Eq. 7 at x_0 = mu
    "ab_prev.sqrt() * data_mean + (1 - beta).sqrt() * (x_t - ab.sqrt() * data_mean)",  # Cov / Var taken as 1
])
def test_a_wrong_reverse_mean_is_rejected_and_the_variance_still_scores(mean):
    source = REVERSE.format(**{**RIGHT, "mean": mean})
    expect_rejected("01b", "gaussian_reverse_mean_is_exact", source)
    _passes("01b", "gaussian_reverse_variance_is_exact", source)


def test_an_answer_that_is_not_a_pair_is_rejected_by_both():
    source = "def gaussian_reverse_step(x_t, t, betas, data_mean, data_std):\n    return x_t\n"
    expect_rejected("01b", "gaussian_reverse_variance_is_exact", source).match("expected a torch.Tensor|shape")
    expect_rejected("01b", "gaussian_reverse_mean_is_exact", source)


# --- one term of the bound ---------------------------------------------------------------------

VLB = """
def vlb_term(x0, eps, eps_hat, t, betas, variance="beta"):
    alpha_bars = torch.cumprod(1 - betas, dim=0)
    alpha_bars_prev = torch.cat([torch.ones(1, dtype=betas.dtype), alpha_bars[:-1]])
    beta, ab, ab_prev = betas[t, None], alpha_bars[t, None], alpha_bars_prev[t, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    mean_q = posterior_mean_from_eps(x_t, t, eps, betas, alpha_bars)
    mean_p = posterior_mean_from_eps(x_t, t, eps_hat, betas, alpha_bars)
    var_q = (1 - ab_prev) / (1 - ab) * beta
    var_p = beta if variance == "beta" else var_q
    constant = {constant}
    kl = constant + {mean_term}
    return kl.{reduce}(-1)
"""
VLB_RIGHT = {"constant": "0.5 * (torch.log(var_p / var_q) + var_q / var_p - 1)",
             "mean_term": "(mean_q - mean_p) ** 2 / (2 * var_p)", "reduce": "sum"}


def test_the_template_of_the_wrong_bounds_is_right():
    _passes("01b", "vlb_term_weighs_the_error_by_lambda", VLB.format(**VLB_RIGHT))
    _passes("01b", "vlb_term_has_the_constant_of_equation_8", VLB.format(**VLB_RIGHT))


@pytest.mark.parametrize("change", [
    {"mean_term": "(mean_q - mean_p) ** 2 / var_p"},                  # no 1/2
    {"mean_term": "(mean_q - mean_p) ** 2 / (2 * var_q)"},            # q's variance in the mean term
    {"mean_term": "(mean_q - mean_p).abs() / (2 * var_p)"},           # not squared
    {"mean_term": "(mean_q - mean_p) ** 2 / (2 * beta)"},             # beta_t in the mean term whatever sigma_t^2
])
def test_a_wrong_growth_is_rejected_and_the_constant_still_scores(change):
    source = VLB.format(**{**VLB_RIGHT, **change})
    expect_rejected("01b", "vlb_term_weighs_the_error_by_lambda", source)
    _passes("01b", "vlb_term_has_the_constant_of_equation_8", source)


@pytest.mark.parametrize("constant", [
    "0.0",                                                              # C_t dropped (right only for beta-tilde)
    "0.5 * (torch.log(var_q / var_p) + var_q / var_p - 1)",           # the log ratio upside down
    "0.5 * (torch.log(var_p / var_q) + var_p / var_q - 1)",           # the KL the other way round
])
def test_a_wrong_constant_is_rejected_and_the_growth_still_scores(constant):
    source = VLB.format(**{**VLB_RIGHT, "constant": constant})
    expect_rejected("01b", "vlb_term_has_the_constant_of_equation_8", source)
    _passes("01b", "vlb_term_weighs_the_error_by_lambda", source)


def test_a_mean_over_the_dimensions_is_rejected_by_both():
    source = VLB.format(**{**VLB_RIGHT, "reduce": "mean"})
    expect_rejected("01b", "vlb_term_weighs_the_error_by_lambda", source)
    expect_rejected("01b", "vlb_term_has_the_constant_of_equation_8", source)
