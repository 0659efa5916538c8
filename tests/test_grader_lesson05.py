"""The checks of lesson 5 (guidance), run in this process as tests/test_grader_lessons34.py
runs those of lessons 3 and 4: the solution passes every check, the untouched exercise reaches
the student's ``NotImplementedError`` in every check, and typical wrong answers are rejected."""

import pytest

from grading_helpers import expect_rejected


@pytest.mark.parametrize("body", [
    "return eps - scale * (1 - alpha_bar).reshape(-1, *[1] * (eps.ndim - 1)).to(eps.dtype) * grad_log_prob",  # no sqrt
    "return eps - scale * alpha_bar.sqrt().reshape(-1, *[1] * (eps.ndim - 1)).to(eps.dtype) * grad_log_prob",  # sqrt(ab)
    "return eps + scale * (1 - alpha_bar).sqrt().reshape(-1, *[1] * (eps.ndim - 1)).to(eps.dtype) * grad_log_prob",  # sign
])
def test_a_wrong_classifier_guided_eps_is_rejected(body):
    source = f"def classifier_guided_eps(eps, grad_log_prob, alpha_bar, scale):\n    {body}\n"
    expect_rejected("05", "classifier_guided_eps_is_the_score_form", source)
    expect_rejected("05", "classifier_guidance_at_scale_1_gives_the_conditional_eps", source)


@pytest.mark.parametrize("body", [
    "return w * eps_cond - (w - 1) * eps_uncond",           # the scale convention read as w
    "return eps_cond + w * eps_uncond",
])
def test_a_wrong_cfg_eps_is_rejected(body):
    expect_rejected("05", "cfg_eps_is_the_papers_combination",
                    f"def cfg_eps(eps_cond, eps_uncond, w):\n    {body}\n")


@pytest.mark.parametrize("answer", [
    '{"w_conditional": 1.0, "s_conditional": 1.0, "w_unconditional": -1.0, "s_unconditional": 0.0}',
    '{"w_conditional": 0.0, "s_conditional": 1.0, "w_unconditional": 0.0, "s_unconditional": -1.0}',
    '{"w_conditional": 0.0, "s_conditional": 1.0}',
    '[0.0, 1.0, -1.0, 0.0]',
])
def test_wrong_conventions_are_rejected(answer):
    expect_rejected("05", "guidance_conventions_name_both_end_points",
                    f"def guidance_conventions():\n    return {answer}\n")
