"""Checks for lesson 1b, the reverse process (solutions/01b_reverse_process.ipynb).

``posterior_mean_from_eps`` is compared with mu-tilde_t(x_t, x0_hat) of Ho et al. (2020), Eq. 7,
with x0_hat recovered from eps (Eq. 4), i.e. with Eq. 11's mu_theta, on random inputs of several
shapes and timesteps (t = 0 and t = T - 1 included), and on an x_t made from a known x_0 and eps,
where it must give the exact posterior mean. ``vlb_weight`` is compared with
:func:`lesson_lib.diffusion.losses.vlb_weights` (Eq. 12's lambda_t) for both fixed variances,
on the linear and the cosine schedule. ``reverse_process_answers`` must name the variance that is
exact when x_0 is a single point and when x_0 ~ N(0, I), and where lambda_t peaks on each
schedule. Total: 10 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import expect_close, expect_tensor, field, pairs
from lesson_lib.course.protocol import type_name

INDEX_HINT = ("Code index t = 0 is the paper's t = 1: betas[t] is beta_{t+1}, alpha_bars[t] is alpha-bar_{t+1}; "
              "reshape per-example values to (B, 1, ..., 1) so that they broadcast over the other dimensions.")
MEAN_HINT = ("Eq. 11: mu = (x_t - beta_t / sqrt(1 - alpha-bar_t) * eps) / sqrt(alpha_t), with alpha_t = 1 - beta_t "
             "(not alpha-bar_t). " + INDEX_HINT)
WEIGHT_HINT = ("lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t)), with sigma_t^2 = beta_t or "
               "beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t. " + INDEX_HINT)


def _schedule(name):
    from lesson_lib.diffusion.schedules import NoiseSchedule
    return NoiseSchedule.linear(1000) if name == "linear" else NoiseSchedule.cosine(1000)


# --- the mean from eps --------------------------------------------------------------------

def _mean_case():
    examples = []
    for name, shape, dtype in [("linear", (6, 2), torch.float64), ("cosine", (4, 1, 5, 5), torch.float32),
                               ("linear", (3, 3, 4, 4), torch.float32)]:
        t = torch.randint(0, 1000, (shape[0],))
        t[0], t[1] = 0, 999
        s = _schedule(name)
        examples.append({"schedule": name, "betas": s.betas, "alpha_bars": s.alpha_bars,
                         "x_t": torch.randn(shape, dtype=dtype), "t": t, "eps": torch.randn(shape, dtype=dtype)})
    return {"examples": examples}


def _mean_probe(ns, case):
    return [ns["posterior_mean_from_eps"](e["x_t"].clone(), e["t"].clone(), e["eps"].clone(),
                                          e["betas"].clone(), e["alpha_bars"].clone()) for e in case["examples"]]


@check(points=2, uses=["posterior_mean_from_eps"], case=_mean_case, probe=_mean_probe)
def mean_from_eps_is_equation_11(case, answer):
    """posterior_mean_from_eps is mu-tilde_t(x_t, x0_hat(eps)) of Eq. 11 (both schedules, t = 0 and T - 1)."""
    from lesson_lib.diffusion import forward
    for e, got in pairs(case["examples"], answer):
        s = _schedule(e["schedule"])
        x0_hat = forward.x0_from_eps(s, e["x_t"], e["t"], e["eps"])
        expected = forward.q_posterior(s, x0_hat, e["x_t"], e["t"])[0].to(e["x_t"].dtype)
        expect_close(got, expected, f"posterior_mean_from_eps for x_t of shape {tuple(e['x_t'].shape)} "
                     f"({e['schedule']} schedule, t = {e['t'].tolist()})", rtol=1e-4, atol=1e-4, hint=MEAN_HINT)


def _oracle_case():
    from lesson_lib.diffusion import forward
    from lesson_lib.diffusion.schedules import NoiseSchedule
    s = NoiseSchedule.linear(1000)
    x0, eps = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    t = torch.randint(1, 1000, (8,))
    return {"betas": s.betas, "alpha_bars": s.alpha_bars, "x0": x0, "t": t, "eps": eps,
            "x_t": forward.q_sample(s, x0, t, eps)}


def _oracle_probe(ns, case):
    return ns["posterior_mean_from_eps"](case["x_t"].clone(), case["t"].clone(), case["eps"].clone(),
                                         case["betas"].clone(), case["alpha_bars"].clone())


@check(points=1, uses=["posterior_mean_from_eps"], case=_oracle_case, probe=_oracle_probe)
def mean_from_the_true_eps_is_the_posterior_mean(case, answer):
    """With the eps that made x_t from x_0, posterior_mean_from_eps equals mu-tilde_t(x_t, x_0) of Eq. 7."""
    from lesson_lib.diffusion import forward
    from lesson_lib.diffusion.schedules import NoiseSchedule
    s = NoiseSchedule.linear(1000)
    expected = forward.q_posterior(s, case["x0"], case["x_t"], case["t"])[0]
    expect_close(answer, expected, "posterior_mean_from_eps(x_t, t, the true eps)", rtol=1e-6, atol=1e-8,
                 hint="Substituting x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t) into Eq. 7 gives "
                      "Eq. 11 exactly. " + MEAN_HINT)


# --- lambda_t -------------------------------------------------------------------------------

def _weight_case(variance, with_zero):
    examples = []
    for name in ("linear", "cosine"):
        s = _schedule(name)
        t = torch.randint(1, 1000, (12,))
        t[1], t[2] = 1, 999
        if with_zero:
            t[0] = 0
        examples.append({"schedule": name, "betas": s.betas, "alpha_bars": s.alpha_bars, "t": t})
    return {"variance": variance, "examples": examples}


def _weight_probe(ns, case):
    return [ns["vlb_weight"](e["t"].clone(), e["betas"].clone(), e["alpha_bars"].clone(), case["variance"])
            for e in case["examples"]]


def _weight_judge(case, answer):
    from lesson_lib.diffusion.losses import vlb_weights
    for e, got in pairs(case["examples"], answer):
        expected = vlb_weights(_schedule(e["schedule"]), case["variance"])[e["t"]]
        what = f"vlb_weight(t, ..., variance={case['variance']!r}) on the {e['schedule']} schedule"
        expect_tensor(got, what)
        if got.shape != expected.shape:
            got = got.reshape(-1) if got.numel() == expected.numel() else got
        expect_close(got, expected, what, rtol=1e-5, atol=0, hint=WEIGHT_HINT, check_dtype=False)


@check(points=2, uses=["vlb_weight"], case=lambda: _weight_case("beta", with_zero=True), probe=_weight_probe)
def weight_with_sigma_beta(case, answer):
    """vlb_weight with sigma_t^2 = beta_t is Eq. 12's lambda_t (t = 0, where it is 1 / (2 alpha_1), included)."""
    _weight_judge(case, answer)


@check(points=2, uses=["vlb_weight"], case=lambda: _weight_case("beta_tilde", with_zero=False),
       probe=_weight_probe)
def weight_with_sigma_beta_tilde(case, answer):
    """vlb_weight with sigma_t^2 = beta-tilde_t is Eq. 12's lambda_t (t >= 1, both schedules)."""
    _weight_judge(case, answer)


# --- the conceptual answers -----------------------------------------------------------------

ANSWERS = {"variance_when_x0_is_one_point": "beta_tilde", "variance_when_x0_is_standard_normal": "beta",
           "lambda_peak_t_linear": 1, "lambda_peak_t_cosine": 1000}
WHY = {"variance_when_x0_is_one_point": "when x_0 is known, q(x_{t-1} | x_t) is the posterior of Eqs. 6-7",
       "variance_when_x0_is_standard_normal": "with x_0 ~ N(0, I) every x_t is N(0, I): reverse the step "
                                              "x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps of a stationary chain",
       "lambda_peak_t_linear": "evaluate vlb_weight on every t of NoiseSchedule.linear(1000) (sigma_t^2 = beta_t) "
                               "and give the paper's t (1..1000) of the largest",
       "lambda_peak_t_cosine": "the same on NoiseSchedule.cosine(1000); the paper's t runs from 1 to 1000"}


def _answers_probe(ns, case):
    return ns["reverse_process_answers"]()


def _variance_name(value):
    text = str(value).strip().lower().replace("-", "_").replace(" ", "_").replace("~", "_tilde")
    return {"beta_t": "beta", "beta_tilde_t": "beta_tilde", "tilde_beta": "beta_tilde",
            "tilde_beta_t": "beta_tilde"}.get(text, text)


@check(points=2, uses=["reverse_process_answers"], probe=_answers_probe)
def answers_name_the_right_variance(case, answer):
    """reverse_process_answers names the exact sigma_t^2 for x_0 a single point and for x_0 ~ N(0, I)."""
    if not isinstance(answer, dict):
        raise AssertionError(f"reverse_process_answers() returned {type_name(answer)}, expected a dict")
    for key in ("variance_when_x0_is_one_point", "variance_when_x0_is_standard_normal"):
        got = field(answer, key)
        if not isinstance(got, str):
            raise AssertionError(f"reverse_process_answers()[{key!r}] is {type_name(got)}, expected the string "
                                 f"'beta' or 'beta_tilde'")
        if _variance_name(got) not in ("beta", "beta_tilde"):
            raise AssertionError(f"reverse_process_answers()[{key!r}] = {got!r}: answer 'beta' or 'beta_tilde'")
        if _variance_name(got) != ANSWERS[key]:
            raise AssertionError(f"reverse_process_answers()[{key!r}] = {got!r} is not right: {WHY[key]}.")


@check(points=1, uses=["reverse_process_answers"], probe=_answers_probe)
def answers_find_where_the_weight_peaks(case, answer):
    """reverse_process_answers gives the paper's t at which lambda_t peaks, on the linear and cosine schedules."""
    if not isinstance(answer, dict):
        raise AssertionError(f"reverse_process_answers() returned {type_name(answer)}, expected a dict")
    for key in ("lambda_peak_t_linear", "lambda_peak_t_cosine"):
        got = field(answer, key)
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise AssertionError(f"reverse_process_answers()[{key!r}] is {type_name(got)}, expected a number")
        if got != ANSWERS[key]:
            raise AssertionError(f"reverse_process_answers()[{key!r}] = {got!r} is not right: {WHY[key]}.")
