"""The checks of lesson 5 (guidance), run in this process as tests/test_grader_lessons34.py
runs those of lessons 3 and 4: the solution passes every check, the untouched exercise reaches
the student's ``NotImplementedError`` in every check, and typical wrong answers are rejected, each
by the check of the property it gets wrong."""

import pytest

from grading_helpers import definitions, expect_rejected
from lesson_lib.course.checks import load_checks


def _passes(check_name, source, seeds=(0, 1, 2)):
    namespace = definitions("solutions", "05")
    exec(source, namespace)
    check = next(c for c in load_checks("05") if c.name == check_name)
    for seed in seeds:
        check.fn(namespace, seed=seed)


def _rejected(check_name, source, seed):
    """expect_rejected at another seed: the check must reject ``source`` on every case it draws."""
    namespace = definitions("solutions", "05")
    exec(source, namespace)
    check = next(c for c in load_checks("05") if c.name == check_name)
    with pytest.raises(AssertionError, match="."):
        check.fn(namespace, seed=seed)


@pytest.mark.parametrize("body", [
    "return w * eps_cond - (w - 1) * eps_uncond",           # the scale convention read as w
    "return eps_cond + w * eps_uncond",
])
def test_a_wrong_cfg_eps_is_rejected(body):
    expect_rejected("05", "cfg_eps_is_the_papers_combination",
                    f"def cfg_eps(eps_cond, eps_uncond, w):\n    {body}\n")


SAMPLER = """
def guided_ddim_sample(eps_model, classifier, x_T, y, timesteps, alpha_bars, scale):
    x = x_T
    steps = {steps}
    for t, s in zip(steps[:-1], steps[1:]):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long)
        ab_t = alpha_bars[t]
        ab_s = {ab_s}
        with torch.no_grad():
            eps = eps_model(x, t_batch)
        if scale != 0:
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                log_probs = {log_probs}
                (grad,) = torch.autograd.grad(log_probs.gather(1, y.reshape(-1, 1)).sum(), x_in)
            eps = {guided}
        x0_hat = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
        x = {update}
    return x
"""
RIGHT = {"steps": "list(timesteps) + [-1]",
         "ab_s": "alpha_bars[s] if s >= 0 else torch.ones((), dtype=x.dtype)",
         "log_probs": "torch.log_softmax(classifier(x_in, t_batch), dim=1)",
         "guided": "eps - scale * (1 - ab_t).sqrt() * grad",
         "update": "ab_s.sqrt() * x0_hat + (1 - ab_s).sqrt() * eps"}


def test_the_template_of_the_wrong_samplers_is_right():
    for check in load_checks("05"):
        if check.uses == ("guided_ddim_sample",):
            _passes(check.name, SAMPLER.format(**RIGHT))


@pytest.mark.parametrize("change", [
    {"steps": "list(timesteps)"},                                       # stops at the last timestep, not the data
    {"ab_s": "alpha_bars[s]"},                                          # the last step to alpha_bars[-1], not to 1
    {"update": "ab_s.sqrt() * x0_hat + (1 - ab_t).sqrt() * eps"},       # the old level's noise scale
    {"update": "x0_hat"},                                               # x0_hat at every step
])
def test_a_wrong_ddim_loop_is_rejected(change):
    source = SAMPLER.format(**{**RIGHT, **change})
    expect_rejected("05", "guided_sampler_at_scale_0_is_ddim", source)
    expect_rejected("05", "guided_sampler_follows_the_classifier", source)


@pytest.mark.parametrize("change", [
    {"log_probs": "classifier(x_in, t_batch)"},                         # the raw logit, not its log-softmax
    {"log_probs": "torch.softmax(classifier(x_in, t_batch), dim=1)"},   # the probability, not its log
    {"guided": "eps - scale * (1 - ab_t) * grad"},                      # no square root
    {"guided": "eps - scale * ab_t.sqrt() * grad"},                     # sqrt(alpha-bar) for sqrt(1 - alpha-bar)
])
def test_a_wrong_guidance_is_rejected_and_scale_0_still_scores(change):
    source = SAMPLER.format(**{**RIGHT, **change})
    expect_rejected("05", "guided_sampler_follows_the_classifier", source)
    _passes("guided_sampler_at_scale_0_is_ddim", source)


def test_guidance_of_the_wrong_sign_loses_the_class_probability_check():
    source = SAMPLER.format(**{**RIGHT, "guided": "eps + scale * (1 - ab_t).sqrt() * grad"})
    expect_rejected("05", "guidance_raises_the_class_probability", source).match("must rise with the scale")
    expect_rejected("05", "guided_sampler_follows_the_classifier", source)
    _passes("guided_sampler_at_scale_0_is_ddim", source)


def test_a_sampler_that_ignores_the_scale_loses_the_class_probability_check():
    source = SAMPLER.format(**{**RIGHT, "guided": "eps - (1 - ab_t).sqrt() * grad"}).replace("if scale != 0:", "if True:")
    expect_rejected("05", "guidance_raises_the_class_probability", source)


SWEEP = """
def cfg_sweep(eps_model, judge, x_T, y, null_class, timesteps, alpha_bars, weights, target):
    null = torch.full_like(y, null_class)
    accuracy, spread = [], []
    for w in weights:
        guided = lambda x, t: {guided}
        x0 = guided_ddim_sample(guided, None, x_T, y, timesteps, alpha_bars, 0.0)
        accuracy.append({accuracy})
        centres = torch.zeros(null_class, x0.shape[1], dtype=x0.dtype)
        for k in y.unique():
            centres[k] = x0[y == k].mean(0)
        spread.append({spread})
    reached = [w for w, a in zip(weights, accuracy) if a >= target]
    return {{"accuracy": accuracy, "spread": spread, "smallest_w": {smallest}}}
"""
SWEEP_RIGHT = {"guided": "cfg_eps(eps_model(x, t, y), eps_model(x, t, null), w)",
               "accuracy": "(judge(x0).argmax(1) == y).double().mean().item()",
               "spread": "((x0 - centres[y]) ** 2).sum(1).mean().item()",
               "smallest": "min(reached) if reached else None"}
SWEEP_CHECKS = ("sweep_measures_the_accuracy", "sweep_measures_the_spread", "sweep_finds_the_smallest_w")


def test_the_template_of_the_wrong_sweeps_is_right():
    for name in SWEEP_CHECKS:
        _passes(name, SWEEP.format(**SWEEP_RIGHT))


@pytest.mark.parametrize("guided", [
    "cfg_eps(eps_model(x, t, null), eps_model(x, t, y), w)",           # the two predictions swapped
    "cfg_eps(eps_model(x, t, y), eps_model(x, t, y), w)",              # no null class: no guidance at all
    "cfg_eps(eps_model(x, t, y), eps_model(x, t, null), w - 1)",       # the libraries' scale read as the paper's w
])
def test_a_wrong_guided_prediction_is_rejected(guided):
    source = SWEEP.format(**{**SWEEP_RIGHT, "guided": guided})
    expect_rejected("05", "sweep_measures_the_accuracy", source)
    expect_rejected("05", "sweep_measures_the_spread", source)


def test_a_wrong_spread_is_rejected_and_the_accuracy_still_scores():
    source = SWEEP.format(**{**SWEEP_RIGHT, "spread": "((x0 - x0.mean(0)) ** 2).sum(1).mean().item()"})  # all classes
    expect_rejected("05", "sweep_measures_the_spread", source)
    _passes("sweep_measures_the_accuracy", source)


@pytest.mark.parametrize("smallest", [
    "reached[0] if reached else None",                   # the first in the list, not the smallest
    "max(reached) if reached else None",
    "min((w for w, a in zip(weights, accuracy) if a > target), default=None)",   # strictly above the target
    "min(reached) if reached else 0.0",                  # 0 (no guidance), not None, when no w reaches it
])
def test_a_wrong_search_is_rejected_and_the_measurements_still_score(smallest):
    source = SWEEP.format(**{**SWEEP_RIGHT, "smallest": smallest})
    for seed in (0, 1, 2):
        _rejected("sweep_finds_the_smallest_w", source, seed)
    _passes("sweep_measures_the_accuracy", source)


def test_a_search_that_cannot_answer_none_is_rejected():
    source = SWEEP.format(**{**SWEEP_RIGHT, "smallest": "min(reached)"})
    expect_rejected("05", "sweep_finds_the_smallest_w", source, error=ValueError)


@pytest.mark.parametrize("answer", [
    '{"accuracy": [0.0] * len(weights), "spread": [0.0] * len(weights), "smallest_w": None}',
    '{"accuracy": [1.0] * len(weights), "spread": [0.0] * len(weights), "smallest_w": min(weights)}',
])
def test_made_up_accuracies_earn_no_search_point(answer):
    """The search is judged on the measured accuracies, not on any the answer invents."""
    source = (f"def cfg_sweep(eps_model, judge, x_T, y, null_class, timesteps, alpha_bars, weights, target):\n"
              f"    return {answer}\n")
    for seed in (0, 1, 2):
        _rejected("sweep_finds_the_smallest_w", source, seed)
