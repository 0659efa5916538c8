"""The checks of lesson 6 (fast sampling), run in this process as tests/test_grader_lesson05.py
runs those of lesson 5: the solution passes every check, the untouched exercise reaches the
student's ``NotImplementedError`` in every check, and typical wrong answers are rejected, each by the
check of the property it gets wrong, while the properties it gets right still score."""

import textwrap

import pytest

from grading_helpers import definitions, expect_rejected
from lesson_lib.course.checks import load_checks


DDIM_PRELUDE = """def ddim_update(x_t, eps, alpha_bar_t, alpha_bar_s, eta, noise):
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    a_t = alpha_bar_t.reshape(shape).to(x_t.dtype)
    a_s = alpha_bar_s.reshape(shape).to(x_t.dtype)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
"""


@pytest.mark.parametrize("last", [
    "return a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps + sigma * noise",               # forgets sigma^2 in the eps term
    "return a_s.sqrt() * x0 + (1 - a_s - sigma ** 2).sqrt() * eps",                  # never adds the noise
    "return a_s.sqrt() * x0 + (1 - a_s - sigma ** 2).sqrt() * eps + sigma ** 2 * noise",  # variance for std
])
def test_a_wrong_ddim_update_is_rejected(last):
    expect_rejected("06", "ddim_update_is_eq_12", DDIM_PRELUDE + f"    {last}\n")


def _passes(check_name, source, seeds=(0, 1, 2)):
    namespace = definitions("solutions", "06")
    exec(textwrap.dedent(source), namespace)
    check = next(c for c in load_checks("06") if c.name == check_name)
    for seed in seeds:
        check.fn(namespace, seed=seed)


def _rejected(check_name, source, seeds=(0, 1, 2)):
    """The check rejects ``source`` on every case it draws from ``seeds``."""
    namespace = definitions("solutions", "06")
    exec(textwrap.dedent(source), namespace)
    check = next(c for c in load_checks("06") if c.name == check_name)
    for seed in seeds:
        with pytest.raises(AssertionError, match="."):
            check.fn(namespace, seed=seed)


SPACING = "def my_timesteps(alpha_bars, S, data_std):\n    T = len(alpha_bars)\n    {body}\n"


@pytest.mark.parametrize("body", [
    "return list(range(T - 1, T - 1 - S, -1))",                                      # valid, but all at the top
    "return [round(T - i * T / S) - 1 for i in range(S)]",                           # "trailing": the lesson's
    "return torch.linspace(T - 1, 0, S).round().long().tolist()",                     # linspace itself
])
def test_a_valid_spacing_that_does_not_beat_linspace_scores_only_validity(body):
    source = SPACING.format(body=body)
    _passes("timesteps_are_a_valid_list", source)
    _rejected("spacing_beats_linspace_on_narrow_data", source)


@pytest.mark.parametrize("std", ["0.1", "1.0"])
def test_a_spacing_that_ignores_the_data_loses_one_of_the_two_checks(std):
    """The solution's rule with the data's spread fixed: right for one kind of data, wrong for the other."""
    source = f"_mine = my_timesteps\ndef my_timesteps(alpha_bars, S, data_std):\n    return _mine(alpha_bars, S, {std})\n"
    _passes("timesteps_are_a_valid_list", source)
    lost = "spacing_beats_linspace_on_wide_data" if std == "0.1" else "spacing_beats_linspace_on_narrow_data"
    _rejected(lost, source)


@pytest.mark.parametrize("body", [
    "return list(range(S))",                                                          # ascending
    "return torch.linspace(T - 1, 0, S).long().tolist()[1:] + [0]",                   # misses T - 1
    "return [T - 1] + [0] * (S - 1)",                                                 # repeats
    "return torch.linspace(T - 1, 0, S + 1).round().long().tolist()",                 # S + 1 timesteps
    "return torch.linspace(T - 1, 0, S)",                                             # floats
])
def test_an_invalid_list_is_rejected(body):
    source = SPACING.format(body=body)
    _rejected("timesteps_are_a_valid_list", source)
    _rejected("spacing_beats_linspace_on_narrow_data", source)


ENCODER = """
def ddim_encode(eps_model, x0, timesteps, alpha_bars):
    up = {up}
    x, B = x0, x0.shape[0]
    for t, s in zip(up[:-1], up[1:]):
        with torch.no_grad():
            eps = eps_model(x, torch.full((B,), {level}, dtype=torch.long))
        x = ddim_update(x, eps, alpha_bars[t].expand(B), alpha_bars[s].expand(B), 0.0, torch.zeros_like(x))
    return x
"""


def test_the_template_of_the_wrong_encoders_is_right():
    _passes("ddim_encode_climbs_the_list", ENCODER.format(up="list(timesteps)[::-1]", level="t"))


@pytest.mark.parametrize("up, level", [
    ("list(timesteps)[::-1]", "s"),                       # the model at the level it climbs to
    ("[-1] + list(timesteps)[::-1][1:]", "t"),            # starts below the list (t = -1 is the last alpha-bar)
    ("list(timesteps)", "t"),                             # walks down the list: decodes instead
])
def test_a_wrong_encoder_is_rejected(up, level):
    _rejected("ddim_encode_climbs_the_list", ENCODER.format(up=up, level=level))


def test_an_encoder_whose_sigma_is_nan_on_a_step_up_is_rejected():
    """sigma = eta * sqrt(negative) is NaN on a step up, even at eta = 0: the inversion needs sigma = 0 there."""
    source = (DDIM_PRELUDE + "    return a_s.sqrt() * x0 + (1 - a_s - sigma ** 2).sqrt() * eps + sigma * noise\n"
              + ENCODER.format(up="list(timesteps)[::-1]", level="t"))   # redefined: it must see this ddim_update
    _rejected("ddim_encode_climbs_the_list", source)


@pytest.mark.parametrize("body", [
    "return x0_norm",                                                                 # the ODE keeps the norm
    "return x0_norm / alpha_bar_T ** 0.5",                                            # undoes the signal scaling
    "return x0_norm * (alpha_bar_T * data_std ** 2 + 1 - alpha_bar_T) ** 0.5",        # forgets to divide by s
    "return x0_norm * (alpha_bar_T * data_std ** 2 + 1 - alpha_bar_T) / data_std",    # variances for deviations
    "return float('nan')",
])
def test_a_wrong_encoding_norm_is_rejected(body):
    _rejected("encoding_norm_follows_the_flow",
              f"def encoding_norm(x0_norm, data_std, alpha_bar_T):\n    {body}\n")
