"""The checks of lesson 7 (progressive distillation), run in this process as
tests/test_grader_lesson05.py runs those of lesson 5: the solution passes every check, the
untouched exercise reaches the student's ``NotImplementedError`` in every check, and typical
wrong answers are rejected."""

import pytest

from grading_helpers import definitions, expect_rejected
from lesson_lib.course.checks import load_checks

TARGET = '''
def distillation_target(z_t, z_pp, alpha_t, sigma_t, alpha_pp, sigma_pp):
    shape = (-1,) + (1,) * (z_t.ndim - 1)
    ratio = (sigma_pp.double() / sigma_t.double()).reshape(shape)
    alpha_t, alpha_pp = alpha_t.double().reshape(shape), alpha_pp.double().reshape(shape)
    return {body}
'''


@pytest.mark.parametrize("body", [
    "(z_pp.double() - ratio * z_t.double()) / (alpha_pp + ratio * alpha_t)",      # sign of the denominator
    "(z_pp.double() - z_t.double()) / (alpha_pp - ratio * alpha_t)",              # no sigma ratio on z_t
    "z_pp.double() / alpha_pp",                                                   # the teacher's z'' read as x
])
def test_a_wrong_target_is_rejected(body):
    source = TARGET.format(body=body)
    expect_rejected("07", "distillation_target_is_algorithm_2", source)
    expect_rejected("07", "one_student_step_from_the_target_is_two_teacher_steps", source)


def test_a_float32_target_is_rejected():
    source = TARGET.format(body="((z_pp.double() - ratio * z_t.double()) / (alpha_pp - ratio * alpha_t)).float()")
    failure = expect_rejected("07", "distillation_target_is_algorithm_2", source)
    assert "float64" in str(failure.value)


STEP = '''
def distillation_step(student, teacher, schedule, z_t, t, t_mid, s, y, optimizer):
    ab = schedule.alpha_bars_with_0
    with torch.no_grad():
        denoise = Denoiser(teacher, schedule{clip})
        z_mid = ddim_step(schedule, z_t, t, {mid}, denoise(z_t, t, y=y))
        z_pp = ddim_step(schedule, z_mid, {mid}, s, denoise(z_mid, {mid}, y=y))
        x_tilde = distillation_target(z_t, z_pp, ab[t + 1].sqrt(), (1 - ab[t + 1]).sqrt(),
                                      ab[s + 1].sqrt(), (1 - ab[s + 1]).sqrt())
    x_hat = Denoiser(student, schedule)(z_t, t, y=y).x0
    weight = {weight}
    loss = (weight * ((x_hat - x_tilde.to(x_hat.dtype)) ** 2).flatten(1).mean(1)).mean()
    {zero}
    loss.backward()
    optimizer.step()
    return loss.item()
'''
RIGHT = {"clip": "", "mid": "t_mid", "weight": "(ab[t + 1] / (1 - ab[t + 1])).clamp(min=1.0)",
         "zero": "optimizer.zero_grad()"}


def test_the_step_template_is_right():
    namespace = definitions("solutions", "07")
    exec(STEP.format(**RIGHT), namespace)
    for check in load_checks("07"):
        if "distillation_step" in check.uses:
            check.fn(namespace)


@pytest.mark.parametrize("change", [
    {"clip": ", clip_x0=True"},                                   # the paper's target is unclipped
    {"mid": "(t + 3 * s) // 4"},                                  # not the teacher's mid-point
    {"weight": "1.0"},                                            # no truncated-SNR weight
    {"weight": "ab[t + 1] / (1 - ab[t + 1])"},                    # SNR, not max(SNR, 1)
])
def test_a_wrong_step_is_rejected(change):
    source = STEP.format(**dict(RIGHT, **change))
    expect_rejected("07", "distillation_step_returns_the_weighted_loss", source)
    expect_rejected("07", "distillation_step_updates_the_student", source)


def test_a_step_without_zero_grad_is_rejected():
    expect_rejected("07", "distillation_step_updates_the_student", STEP.format(**dict(RIGHT, zero="pass")))
