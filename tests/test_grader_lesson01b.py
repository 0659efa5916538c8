"""The checks of lesson 1b (the reverse process), run in this process as tests/test_grader_lesson05.py
runs those of lesson 5: the solution passes every check, the untouched exercise reaches the
student's ``NotImplementedError`` in every check, and typical wrong answers are rejected."""

import pytest

from grading_helpers import definitions, expect_rejected
from lesson_lib.course.checks import load_checks


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


WEIGHT = """
def vlb_weight(t, betas, alpha_bars, variance="beta"):
    prev = torch.cat([torch.ones(1, dtype=alpha_bars.dtype), alpha_bars[:-1]])
    beta, alpha_bar, alpha_bar_prev = betas[t], alpha_bars[t], {prev}
    sigma2 = beta if variance == "beta" else (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
    return {body}
"""
RIGHT = "beta ** 2 / (2 * sigma2 * (1 - beta) * (1 - alpha_bar))"


@pytest.mark.parametrize("prev, body, checks", [
    ("prev[t]", "beta ** 2 / (sigma2 * (1 - beta) * (1 - alpha_bar))", ["beta", "beta_tilde"]),    # no 1/2
    ("prev[t]", "beta ** 2 / (2 * sigma2 * alpha_bar * (1 - alpha_bar))", ["beta", "beta_tilde"]),  # alpha-bar for alpha
    ("prev[t]", "beta / (2 * sigma2 * (1 - beta) * (1 - alpha_bar))", ["beta", "beta_tilde"]),      # beta, not squared
    ("alpha_bars[t]", RIGHT, ["beta_tilde"]),                         # alpha-bar_t for alpha-bar_{t-1}
    ("prev[t]", "torch.ones_like(beta)", ["beta", "beta_tilde"]),     # L_simple's weight
])
def test_a_wrong_weight_is_rejected(prev, body, checks):
    source = WEIGHT.format(prev=prev, body=body)
    for variance in checks:
        expect_rejected("01b", f"weight_with_sigma_{variance}", source)


def test_the_right_weight_passes_with_alpha_bars_shifted_by_hand():
    """alpha_bars[t - 1] is right for t >= 1, the only timesteps the beta_tilde check uses."""
    namespace = definitions("solutions", "01b")
    exec(WEIGHT.format(prev="alpha_bars[t - 1]", body=RIGHT), namespace)
    next(c for c in load_checks("01b") if c.name == "weight_with_sigma_beta_tilde").fn(namespace)


@pytest.mark.parametrize("answer, check", [
    ('{"variance_when_x0_is_one_point": "beta", "variance_when_x0_is_standard_normal": "beta_tilde", '
     '"lambda_peak_t_linear": 1, "lambda_peak_t_cosine": 1000}', "answers_name_the_right_variance"),
    ('{"variance_when_x0_is_one_point": "beta_tilde", "variance_when_x0_is_standard_normal": "beta_tilde", '
     '"lambda_peak_t_linear": 1, "lambda_peak_t_cosine": 1000}', "answers_name_the_right_variance"),
    ('{"variance_when_x0_is_one_point": "sigma", "variance_when_x0_is_standard_normal": "beta", '
     '"lambda_peak_t_linear": 1, "lambda_peak_t_cosine": 1000}', "answers_name_the_right_variance"),
    ('{"variance_when_x0_is_one_point": "beta_tilde", "variance_when_x0_is_standard_normal": "beta", '
     '"lambda_peak_t_linear": 0, "lambda_peak_t_cosine": 999}', "answers_find_where_the_weight_peaks"),   # code index
    ('{"variance_when_x0_is_one_point": "beta_tilde", "variance_when_x0_is_standard_normal": "beta", '
     '"lambda_peak_t_linear": 1000, "lambda_peak_t_cosine": 1}', "answers_find_where_the_weight_peaks"),
    ('{"variance_when_x0_is_one_point": "beta_tilde"}', "answers_find_where_the_weight_peaks"),
    ('["beta_tilde", "beta", 1, 1000]', "answers_name_the_right_variance"),
])
def test_wrong_answers_are_rejected(answer, check):
    expect_rejected("01b", check, f"def reverse_process_answers():\n    return {answer}\n")


@pytest.mark.parametrize("spelling", ["beta-tilde", "Beta_Tilde", "beta_tilde_t", "tilde_beta"])
def test_spellings_of_beta_tilde_are_accepted(spelling):
    namespace = definitions("solutions", "01b")
    exec(f'def reverse_process_answers():\n    return {{"variance_when_x0_is_one_point": "{spelling}", '
         f'"variance_when_x0_is_standard_normal": "beta_t", "lambda_peak_t_linear": 1, '
         f'"lambda_peak_t_cosine": 1000.0}}\n', namespace)
    for check in load_checks("01b"):
        if check.uses == ("reverse_process_answers",):
            check.fn(namespace)
