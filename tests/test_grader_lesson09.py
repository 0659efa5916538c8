"""The checks of lesson 9 (consistency models), run in this process as tests/test_grader_lesson07.py
runs those of lesson 7: the solution earns every point on any seed, typical wrong answers are rejected,
each by the check of the property it gets wrong while the properties it gets right still score, and
hostile answers (NaN, empty, the inputs echoed, constants) earn nothing. (The untouched exercise
reaching its stub, the end-to-end grading of solution and exercise, and forged answers sent to every
judge are tested for every lesson in tests/test_grader.py and tests/test_grader_judges.py.)"""

import pytest

from grading_helpers import passes_on_seeds, rejected_on_seeds, solution_with
from lesson_lib.course.checks import load_checks

SEEDS = (0, 1, 2)
CHECKS = {check.name: check for check in load_checks("09")}


def rejected(check_name, source, seeds=SEEDS, error=AssertionError):
    return rejected_on_seeds("09", check_name, source, seeds, error)


def passes(check_name, source="", seeds=SEEDS):
    passes_on_seeds("09", check_name, source, seeds)


def test_the_checks_total_10_points_and_the_solution_earns_them_on_any_seed():
    assert sum(check.points for check in CHECKS.values()) == 10
    for name in CHECKS:
        passes(name, seeds=range(8))


# --- 1 · the parameterisation -------------------------------------------------------------------

SCALINGS = "def boundary_scalings_v(alpha_bar):\n    return {body}\n"


@pytest.mark.parametrize("body", [
    "1 / alpha_bar.sqrt(), -(1 - alpha_bar).sqrt() / alpha_bar.sqrt()",       # the scalings of an eps network
    "alpha_bar.sqrt(), (1 - alpha_bar).sqrt()",                                # the sign of c_out
    "alpha_bar, -(1 - alpha_bar)",                                             # no square roots
    "alpha_bar.sqrt().float(), -(1 - alpha_bar).sqrt().float()",               # float32
])
def test_wrong_scalings_are_rejected(body):
    rejected("scalings_are_those_of_a_v_network", SCALINGS.format(body=body))


F = '''
def consistency_f(v_net, x_t, t, alpha_bars_with_0):
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    c_skip, c_out = {scalings}(alpha_bars_with_0[{index}])
    v = v_net(x_t, {t_net})
    f = c_skip{cast}.reshape(shape) * x_t + c_out{cast}.reshape(shape) * v
    return {result}
'''
RIGHT_F = {"scalings": "boundary_scalings_v", "index": "t + 1", "t_net": "t.clamp(min=0)", "cast": ".to(x_t.dtype)",
           "result": "torch.where((t == -1).reshape(shape), x_t, f)"}
EPS_SCALINGS = "def eps_scalings(ab):\n    return 1 / ab.sqrt(), -(1 - ab).sqrt() / ab.sqrt()\n"


def f_source(**change):
    return F.format(**dict(RIGHT_F, **change))


def test_the_f_template_is_right():
    for name in ("consistency_f_is_the_networks_x0_hat", "consistency_f_is_the_identity_at_the_data"):
        passes(name, f_source())


def test_the_formula_alone_is_exact_at_the_data_when_the_network_is_called_at_t_0():
    """Without torch.where, c_skip = 1 and c_out = -0 at alpha-bar = 1 still give x_t exactly for a finite answer."""
    for name in ("consistency_f_is_the_networks_x0_hat", "consistency_f_is_the_identity_at_the_data"):
        passes(name, f_source(result="f"))
        passes(name, f_source(result="f", t_net="t"))          # the check's network answers nonsense at t = -1


def test_an_ignored_boundary_loses_only_the_boundary_check():
    source = f_source(index="t.clamp(min=0) + 1", result="f")          # the data read as t = 0
    messages = rejected("consistency_f_is_the_identity_at_the_data", source)
    assert all("t = -1" in m for m in messages)
    passes("consistency_f_is_the_networks_x0_hat", source)


def test_eps_scalings_lose_only_the_x0_hat_check():
    source = EPS_SCALINGS + f_source(scalings="eps_scalings")
    rejected("consistency_f_is_the_networks_x0_hat", source)
    passes("consistency_f_is_the_identity_at_the_data", source)


@pytest.mark.parametrize("change", [
    {"index": "t", "result": "f"},                   # off by one: alpha_bars_with_0[t] (t = -1 wraps to the end)
    {"cast": ""},                                    # float64 scalings promote a float32 x_t
])
def test_a_wrong_f_is_rejected_by_both_checks(change):
    rejected("consistency_f_is_the_networks_x0_hat", f_source(**change))
    rejected("consistency_f_is_the_identity_at_the_data", f_source(**change))


# --- 2 · one consistency-distillation target -----------------------------------------------------

CD = '''
def cd_target(teacher_denoise, target_net, x0, eps, t, s, alpha_bars_with_0):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    a_t, a_s = alpha_bars_with_0[{t_index}].reshape(shape), alpha_bars_with_0[s + 1].reshape(shape)
    x_t = a_t.sqrt().to(x0.dtype) * x0 + (1 - a_t).sqrt().to(x0.dtype) * eps
    with {context}:
        pred = teacher_denoise(x_t, t)
        x0_hat = {x0_hat}
        x_s = a_s.sqrt().to(x0.dtype) * x0_hat + (1 - a_s).sqrt().to(x0.dtype) * {eps_hat}
        target = {target}
    return {returned}
'''
RIGHT_CD = {"t_index": "t + 1", "context": "torch.no_grad()", "x0_hat": "pred.x0", "eps_hat": "pred.eps",
            "target": "consistency_f(target_net, x_s, s, alpha_bars_with_0)", "returned": "x_t, target"}
CD_CHECKS = ("cd_target_is_algorithm_2", "cd_target_carries_no_gradient",
             "cd_target_of_exact_models_is_f_up_to_the_solvers_error")


def cd_source(**change):
    return CD.format(**dict(RIGHT_CD, **change))


def test_the_cd_template_is_right():
    for name in CD_CHECKS:
        passes(name, cd_source())


def test_a_target_with_gradients_loses_only_the_gradient_check():
    source = cd_source(context="contextlib.nullcontext()")
    messages = rejected("cd_target_carries_no_gradient", "import contextlib\n" + source)
    assert all("requires grad" in m for m in messages)
    for name in ("cd_target_is_algorithm_2", "cd_target_of_exact_models_is_f_up_to_the_solvers_error"):
        passes(name, "import contextlib\n" + source)


@pytest.mark.parametrize("change", [
    {"x0_hat": "pred.x0.clamp(-1, 1)"},                                        # a clipped teacher step
    {"x0_hat": "pred.x0.clamp(-1, 1)",                                         # clipped, eps_hat made consistent
     "eps_hat": "(x_t - a_t.sqrt().to(x0.dtype) * x0_hat) / (1 - a_t).sqrt().to(x0.dtype)"},
    {"eps_hat": "torch.randn_like(x_t)"},                                      # a stochastic step (fresh noise)
    {"target": "consistency_f(target_net, x_s, t, alpha_bars_with_0)"},        # the target network at t, not s
    {"target": "consistency_f(target_net, x_s, s.clamp(min=0), alpha_bars_with_0)"},   # no boundary at s = -1
    {"target": "consistency_f(target_net, x_t, s, alpha_bars_with_0)"},        # no teacher step
    {"target": "x_s"},                                                         # the teacher's point, not f at it
    {"t_index": "t"},                                                          # x_t at the wrong level
    {"returned": "target"},                                                    # only the target
])
def test_a_wrong_target_is_rejected(change):
    for name in ("cd_target_is_algorithm_2", "cd_target_carries_no_gradient"):
        rejected(name, cd_source(**change))


@pytest.mark.parametrize("change", [
    {"eps_hat": "torch.randn_like(x_t)"},
    {"target": "consistency_f(target_net, x_s, t, alpha_bars_with_0)"},        # a first-order mistake
    {"target": "consistency_f(target_net, x_t, s, alpha_bars_with_0)"},
    {"target": "x_s"},
])
def test_a_wrong_target_misses_the_exact_models(change):
    rejected("cd_target_of_exact_models_is_f_up_to_the_solvers_error", cd_source(**change))


# --- 3 · multistep consistency sampling --------------------------------------------------------------

SAMPLER = '''
def multistep_sample(f, x_T, times, alpha_bars_with_0, generator):
    B = x_T.shape[0]
    x = x_T
    x0 = f(x, torch.full((B,), times[0], dtype=torch.long))
    for s in times[1:]:
        a_s = alpha_bars_with_0[s + 1]
        z = {noise}
        x = a_s.sqrt() * {renoised} + (1 - a_s).sqrt() * z
        x0 = f(x, torch.full((B,), s, dtype=torch.long))
    {last}
    return {returned}
'''
RIGHT_SAMPLER = {"noise": "torch.randn(x0.shape, generator=generator, dtype=x0.dtype)", "renoised": "x0",
                 "last": "pass", "returned": "x0"}
SAMPLER_CHECKS = ("multistep_sample_is_algorithm_1", "multistep_samples_have_the_datas_spread",
                  "multistep_sample_calls_f_once_per_time")


def sampler_source(**change):
    return SAMPLER.format(**dict(RIGHT_SAMPLER, **change))


def test_the_sampler_template_is_right():
    for name in SAMPLER_CHECKS:
        passes(name, sampler_source())


def test_re_noising_from_x_t_loses_the_algorithm_and_the_spread():
    source = sampler_source(renoised="x")
    rejected("multistep_sample_is_algorithm_1", source)
    assert all("standard deviation" in m for m in rejected("multistep_samples_have_the_datas_spread", source))
    passes("multistep_sample_calls_f_once_per_time", source)


def test_noise_after_the_last_call_is_rejected():
    last = ("a = alpha_bars_with_0[times[-1] + 1]\n"
            "    x0 = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=generator, dtype=x0.dtype)")
    source = sampler_source(last=last)
    for name in SAMPLER_CHECKS:
        rejected(name, source)


@pytest.mark.parametrize("noise", [
    "torch.randn_like(x0)",                                                    # not from the generator
    "torch.randn(x0.shape, generator=generator, dtype=torch.float32).double()",   # another draw
])
def test_other_noise_loses_only_the_exact_comparison(noise):
    source = sampler_source(noise=noise)
    messages = rejected("multistep_sample_is_algorithm_1", source)
    assert all("torch.randn(x0.shape, generator=generator, dtype=x0.dtype)" in m for m in messages)
    for name in ("multistep_samples_have_the_datas_spread", "multistep_sample_calls_f_once_per_time"):
        passes(name, source)


def test_an_extra_draw_before_the_first_call_is_rejected():
    source = sampler_source().replace("    x = x_T\n", "    x = x_T\n    torch.randn(1, generator=generator)\n")
    rejected("multistep_sample_is_algorithm_1", source)


def test_two_calls_per_time_lose_the_call_count():
    source = sampler_source(last="x0 = f(x, torch.full((B,), times[-1], dtype=torch.long))")
    messages = rejected("multistep_sample_calls_f_once_per_time", source)
    assert all("called f" in m for m in messages)


def test_a_time_given_as_an_int_is_an_error_that_says_how_to_call_f():
    source = sampler_source().replace("torch.full((B,), times[0], dtype=torch.long)", "times[0]")
    messages = rejected("multistep_sample_calls_f_once_per_time", source, error=TypeError)
    assert all("long tensor of shape (B,)" in m for m in messages)


# --- hostile answers earn nothing -----------------------------------------------------------------

HOSTILE = {
    "NaN": '''
        def boundary_scalings_v(alpha_bar):
            return torch.full_like(alpha_bar, float("nan")), torch.full_like(alpha_bar, float("nan"))
        def consistency_f(v_net, x_t, t, alpha_bars_with_0):
            return torch.full_like(x_t, float("nan"))
        def cd_target(teacher_denoise, target_net, x0, eps, t, s, alpha_bars_with_0):
            return torch.full_like(x0, float("nan")), torch.full_like(x0, float("nan"))
        def multistep_sample(f, x_T, times, alpha_bars_with_0, generator):
            return torch.full_like(x_T, float("nan"))
    ''',
    "empty": '''
        def boundary_scalings_v(alpha_bar):
            return ()
        def consistency_f(v_net, x_t, t, alpha_bars_with_0):
            return torch.empty(0)
        def cd_target(teacher_denoise, target_net, x0, eps, t, s, alpha_bars_with_0):
            return ()
        def multistep_sample(f, x_T, times, alpha_bars_with_0, generator):
            return torch.empty(0)
    ''',
    "echo": '''
        def boundary_scalings_v(alpha_bar):
            return alpha_bar, alpha_bar
        def consistency_f(v_net, x_t, t, alpha_bars_with_0):
            return x_t
        def cd_target(teacher_denoise, target_net, x0, eps, t, s, alpha_bars_with_0):
            return x0, eps
        def multistep_sample(f, x_T, times, alpha_bars_with_0, generator):
            return x_T
    ''',
    "constants": '''
        def boundary_scalings_v(alpha_bar):
            return torch.ones_like(alpha_bar), torch.zeros_like(alpha_bar)
        def consistency_f(v_net, x_t, t, alpha_bars_with_0):
            return torch.zeros_like(x_t)
        def cd_target(teacher_denoise, target_net, x0, eps, t, s, alpha_bars_with_0):
            return torch.zeros_like(x0), torch.zeros_like(x0)
        def multistep_sample(f, x_T, times, alpha_bars_with_0, generator):
            return torch.zeros_like(x_T)
    ''',
    "echo after calling f as asked": '''
        def multistep_sample(f, x_T, times, alpha_bars_with_0, generator):
            for time in times:
                f(x_T, torch.full((x_T.shape[0],), time))
            return x_T
    ''',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answers_earn_nothing(name):
    namespace = solution_with("09", HOSTILE[name])
    defined = {fn for fn in ("boundary_scalings_v", "consistency_f", "cd_target", "multistep_sample")
               if f"def {fn}(" in HOSTILE[name]}
    for check in CHECKS.values():
        if not set(check.uses) & defined:
            continue
        with pytest.raises(AssertionError, match="."):
            check.fn(namespace, seed=0)


# --- other right answers score too ------------------------------------------------------------------

OTHER_RIGHT = '''
import math

def consistency_f(v_net, x_t, t, alpha_bars_with_0):          # in float64 inside, no boundary_scalings_v
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    ab = alpha_bars_with_0[t + 1].reshape(shape)
    f = ab.sqrt() * x_t.double() - (1 - ab).sqrt() * v_net(x_t, t.clamp(min=0)).double()
    return torch.where((t == -1).reshape(shape), x_t, f.to(x_t.dtype))

def cd_target(teacher_denoise, target_net, x0, eps, t, s, alpha_bars_with_0):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    a_t, a_s = alpha_bars_with_0[t + 1].reshape(shape), alpha_bars_with_0[s + 1].reshape(shape)
    x_t = (a_t.sqrt() * x0.double() + (1 - a_t).sqrt() * eps.double()).to(x0.dtype)
    pred = teacher_denoise(x_t, t)
    x_s = (a_s.sqrt() * pred.x0.double() + (1 - a_s).sqrt() * pred.eps.double()).to(x0.dtype)
    return x_t, consistency_f(target_net, x_s, s, alpha_bars_with_0).detach()

def multistep_sample(f, x_T, times, alpha_bars_with_0, generator):   # Python floats, t built from ints
    x0 = f(x_T, torch.full((len(x_T),), times[0]))
    for s in times[1:]:
        a = float(alpha_bars_with_0[s + 1])
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x0 = f(math.sqrt(a) * x0 + math.sqrt(1 - a) * z, torch.full((len(x_T),), s))
    return x0
'''


def test_other_right_answers_earn_every_point():
    """Computing in float64 inside, detaching instead of torch.no_grad(), Python-float scalings: all right."""
    for name in CHECKS:
        if name != "scalings_are_those_of_a_v_network":
            passes(name, OTHER_RIGHT, seeds=range(6))
