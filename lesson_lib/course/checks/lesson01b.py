"""Checks for lesson 1b, the reverse process (solutions/01b_reverse_process.ipynb).

``posterior_mean_from_eps`` (the warm-up) is compared with mu-tilde_t(x_t, x0_hat(eps)) of Ho et al.
(2020), Eq. 11, on random inputs of several shapes and timesteps (t = 0 and t = T - 1 included), and
on an x_t made from a known x_0 and eps, where it must give the exact posterior mean.

``gaussian_reverse_step`` must give the exact reverse step q(x_{t-1} | x_t) when the data are
Gaussian, x_0 ~ N(mu, s^2 I), a derivation the lesson does not carry out: (x_{t-1}, x_t) are then
jointly Gaussian. It is checked on a schedule the check draws (random betas, random T), at random
mu and s (s = 0, one point, where the answer is the posterior of Eqs. 6-7; s = 1, where it is
beta_t; and s drawn), at random timesteps including the first and the last. The reference is the
law of total expectation and variance over p(x_0 | x_t): the posterior of Eq. 7 (its coefficients
from :class:`~lesson_lib.diffusion.schedules.NoiseSchedule`) averaged over x_0 given x_t (Tweedie's
E[x_0 | x_t] from :class:`~lesson_lib.diffusion.oracles.GaussianData`); tests/test_grader_lesson01b.py
checks it against a simulation of the chain.

``vlb_term`` must give the bound's term L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
in closed form, on a drawn schedule, for both fixed variances. Two properties are scored apart: how
it grows with the error ||eps - eps_hat||^2 (Eq. 12's lambda_t, from
:func:`lesson_lib.diffusion.losses.vlb_weights`) and its value when eps_hat = eps (the constant C_t
of Eq. 8, from :func:`lesson_lib.diffusion.likelihood.normal_kl`). Total: 10 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import expect_close, expect_tensor, field, pairs

INDEX_HINT = ("Code index t = 0 is the paper's t = 1: betas[t] is beta_{t+1}, alpha_bars[t] is alpha-bar_{t+1}; "
              "reshape per-example values to (B, 1, ..., 1) so that they broadcast over the other dimensions.")
MEAN_HINT = ("Eq. 11: mu = (x_t - beta_t / sqrt(1 - alpha-bar_t) * eps) / sqrt(alpha_t), with alpha_t = 1 - beta_t "
             "(not alpha-bar_t). " + INDEX_HINT)
SCHEDULE_HINT = ("alpha-bar_t is the cumulative product of 1 - beta over the betas given (not a schedule of the "
                 "lesson), and at code t = 0 the level before is the data itself: alpha-bar = 1.")
VARIANCE_HINT = ("x_{t-1} and x_t are jointly Gaussian: Var(x_{t-1} | x_t) = Var(x_{t-1}) - Cov(x_{t-1}, x_t)^2 / "
                 "Var(x_t), where Var(x_k) = alpha-bar_k s^2 + 1 - alpha-bar_k and x_t = sqrt(alpha_t) x_{t-1} + "
                 "sqrt(beta_t) eps. Test your formula at s = 0 (it must be beta-tilde_t) and s = 1 (beta_t). "
                 + SCHEDULE_HINT)
GAUSS_MEAN_HINT = ("E[x_{t-1} | x_t] = E[x_{t-1}] + Cov(x_{t-1}, x_t) / Var(x_t) (x_t - E[x_t]), where "
                   "E[x_k] = sqrt(alpha-bar_k) mu: the data mean moves the answer too. " + SCHEDULE_HINT)
WEIGHT_HINT = ("L_{t-1} = KL(N(mu-tilde, beta-tilde_t I) || N(mu_theta, sigma_t^2 I)), summed over the dimensions; "
               "its mean part ||mu-tilde - mu_theta||^2 / (2 sigma_t^2) grows with ||eps - eps_hat||^2 by Eq. 12's "
               "lambda_t: mu_theta from eps_hat by Eq. 11, sigma_t^2 = beta_t or beta-tilde_t. " + SCHEDULE_HINT)
CONSTANT_HINT = ("At eps_hat = eps the two means agree and only the variances differ: what is left is the KL of "
                 "N(m, beta-tilde_t I) from N(m, sigma_t^2 I) in D dimensions (Eq. 8's C_t), from the closed form "
                 "of the KL of two Gaussians. " + SCHEDULE_HINT)


def _schedule(name):
    from lesson_lib.diffusion.schedules import NoiseSchedule
    return NoiseSchedule.linear(1000) if name == "linear" else NoiseSchedule.cosine(1000)


def _random_betas():
    """A schedule none of the lessons uses: T from 8 to 300, increasing betas between drawn ends."""
    T = int(torch.randint(8, 301, ()))
    low, high = float(10 ** (-4 + 1.5 * torch.rand(()))), float(0.02 + 0.28 * torch.rand(()))
    return (low + (high - low) * torch.rand(T, dtype=torch.float64)).sort().values


def _timesteps(T, B, first=0):
    """B code timesteps in first..T-1, with both ends included."""
    t = torch.randint(first, T, (B,))
    t[0], t[1] = first, T - 1
    return t


# --- the warm-up: the mean from eps ---------------------------------------------------------

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


@check(points=1, uses=["posterior_mean_from_eps"], case=_mean_case, probe=_mean_probe)
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


# --- the exact reverse step for Gaussian data ------------------------------------------------

def exact_gaussian_reverse(betas, x_t, t, data_mean, data_std):
    """The reference: (mean (B, D), variance (B,)) of q(x_{t-1} | x_t) for x_0 ~ N(data_mean, data_std^2 I).

    q(x_{t-1} | x_t) = E over p(x_0 | x_t) of the posterior q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t,
    beta-tilde_t) (Eq. 7), and p(x_0 | x_t) = N(E[x_0 | x_t], Var[x_0 | x_t]) with Tweedie's mean and
    Var[x_0 | x_t] = s^2 (1 - alpha-bar_t) / v_t (v_t = alpha-bar_t s^2 + 1 - alpha-bar_t): so the mean
    is c0 E[x_0 | x_t] + ct x_t and the variance beta-tilde_t + c0^2 Var[x_0 | x_t]."""
    from lesson_lib.diffusion.oracles import GaussianData
    from lesson_lib.diffusion.schedules import NoiseSchedule, extract
    schedule = NoiseSchedule(betas)
    data = GaussianData(schedule, data_mean, data_std, dim=x_t.shape[1])
    c0 = extract(schedule.posterior_mean_coef_x0, t, x_t)
    ct = extract(schedule.posterior_mean_coef_xt, t, x_t)
    x0_mean = data.denoise(x_t, t).x0
    x0_var = data_std ** 2 * (1 - extract(schedule.alpha_bars, t, x_t)) / data.variance(t, x_t)
    mean = c0 * x0_mean + ct * x_t
    variance = extract(schedule.posterior_variance, t, x_t) + c0 ** 2 * x0_var
    return mean, variance.reshape(-1)


def _gaussian_case():
    """Three drawn schedules: one point (s = 0), standard-normal-like data (s = 1, mean 0) and drawn data."""
    calls = []
    for data_mean, data_std in [(float(4 * torch.rand(()) - 2), 0.0), (0.0, 1.0),
                                (float(4 * torch.rand(()) - 2), float(0.05 + 1.95 * torch.rand(())))]:
        betas = _random_betas()
        B, D = 7, int(torch.randint(1, 4, ()))
        calls.append({"betas": betas, "x_t": 2 * torch.randn(B, D, dtype=torch.float64),
                      "t": _timesteps(len(betas), B), "data_mean": data_mean, "data_std": data_std})
    return {"calls": calls}


def _gaussian_probe(part):
    """A probe that answers with one part of each result, the mean (0) or the variance (1); a result that is
    not a pair is passed on whole, for the judge to reject."""

    def probe(ns, case):
        results = [ns["gaussian_reverse_step"](c["x_t"].clone(), c["t"].clone(), c["betas"].clone(),
                                               c["data_mean"], c["data_std"]) for c in case["calls"]]
        return [r[part] if isinstance(r, (list, tuple)) and len(r) == 2 else r for r in results]

    probe.__name__ = f"gaussian_reverse_step_part_{part}"
    return probe


def _described(c):
    return (f"gaussian_reverse_step on a schedule of T = {len(c['betas'])} drawn betas, data N({c['data_mean']:.3g}, "
            f"{c['data_std']:.3g}^2 I), t = {c['t'].tolist()}")


@check(points=2, uses=["gaussian_reverse_step"], case=_gaussian_case, probe=_gaussian_probe(1))
def gaussian_reverse_variance_is_exact(case, answer):
    """gaussian_reverse_step's variance is Var(x_{t-1} | x_t) for Gaussian data (s = 0, s = 1 and drawn s)."""
    for c, variance in pairs(case["calls"], answer):
        what = _described(c)
        _, expected = exact_gaussian_reverse(c["betas"], c["x_t"], c["t"], c["data_mean"], c["data_std"])
        expect_tensor(variance, f"the variance (the second of the pair (mean, variance)) of {what}")
        if variance.numel() == expected.numel():
            variance = variance.reshape(-1)
        expect_close(variance, expected, f"the variance of {what}", rtol=1e-6, atol=1e-12,
                     hint=VARIANCE_HINT, check_dtype=False)


@check(points=2, uses=["gaussian_reverse_step"], case=_gaussian_case, probe=_gaussian_probe(0))
def gaussian_reverse_mean_is_exact(case, answer):
    """gaussian_reverse_step's mean is E[x_{t-1} | x_t] for Gaussian data of drawn mean and spread."""
    for c, mean in pairs(case["calls"], answer):
        what = _described(c)
        expected, _ = exact_gaussian_reverse(c["betas"], c["x_t"], c["t"], c["data_mean"], c["data_std"])
        expect_close(mean, expected, f"the mean (the first of the pair (mean, variance)) of {what}", rtol=1e-6,
                     atol=1e-9, hint=GAUSS_MEAN_HINT, check_dtype=False)


# --- one term of the bound, in closed form -------------------------------------------------------

def _vlb_case():
    calls = []
    for variance in ("beta", "beta_tilde"):
        betas = _random_betas()
        B, D = 6, int(torch.randint(2, 5, ()))
        calls.append({"variance": variance, "betas": betas, "t": _timesteps(len(betas), B, first=1),
                      "x0": torch.randn(B, D, dtype=torch.float64), "eps": torch.randn(B, D, dtype=torch.float64),
                      "eps_hat": torch.randn(B, D, dtype=torch.float64)})
    return {"calls": calls}


def _vlb_probe(ns, case):
    f = ns["vlb_term"]
    return [{"kl": f(c["x0"].clone(), c["eps"].clone(), c["eps_hat"].clone(), c["t"].clone(), c["betas"].clone(),
                     c["variance"]),
             "kl_at_the_true_eps": f(c["x0"].clone(), c["eps"].clone(), c["eps"].clone(), c["t"].clone(),
                                     c["betas"].clone(), c["variance"])} for c in case["calls"]]


def _vlb_reference(c, eps_hat):
    """L_{t-1} from the library: q_posterior for q, Eq. 11's mean for p, normal_kl summed over dimensions."""
    from lesson_lib.diffusion import forward
    from lesson_lib.diffusion.likelihood import normal_kl
    from lesson_lib.diffusion.schedules import NoiseSchedule
    s = NoiseSchedule(c["betas"])
    x_t = forward.q_sample(s, c["x0"], c["t"], c["eps"])
    mean_q, var_q, _ = forward.q_posterior(s, c["x0"], x_t, c["t"])
    mean_p = forward.q_posterior(s, forward.x0_from_eps(s, x_t, c["t"], eps_hat), x_t, c["t"])[0]
    var_p = s.betas[c["t"], None] if c["variance"] == "beta" else var_q
    return normal_kl(mean_q, var_q.log(), mean_p, var_p.log()).expand_as(mean_q).sum(-1)


def _kl_values(c, got):
    what = f"vlb_term(..., variance={c['variance']!r}) on a schedule of T = {len(c['betas'])} drawn betas"
    kl, kl0 = field(got, "kl"), field(got, "kl_at_the_true_eps")
    for value, which in ((kl, "eps_hat"), (kl0, "eps_hat = eps")):
        expect_tensor(value, f"{what} with {which}")
        if value.numel() != len(c["t"]):
            raise AssertionError(f"{what} with {which} has shape {tuple(value.shape)}, expected one value per "
                                 f"example, shape ({len(c['t'])},): sum the KL over the dimensions")
    return what, kl.reshape(-1).double(), kl0.reshape(-1).double()


@check(points=2, uses=["vlb_term"], case=_vlb_case, probe=_vlb_probe)
def vlb_term_weighs_the_error_by_lambda(case, answer):
    """vlb_term(eps_hat) - vlb_term(eps) is Eq. 12's lambda_t ||eps - eps_hat||^2 (both variances, drawn betas)."""
    from lesson_lib.diffusion.losses import vlb_weights
    from lesson_lib.diffusion.schedules import NoiseSchedule
    for c, got in pairs(case["calls"], answer):
        what, kl, kl0 = _kl_values(c, got)
        lam = vlb_weights(NoiseSchedule(c["betas"]), c["variance"])[c["t"]]
        expected = lam * ((c["eps"] - c["eps_hat"]) ** 2).sum(-1)
        expect_close(kl - kl0, expected, f"{what}: the growth with the error, L(eps_hat) - L(eps), for t = "
                     f"{c['t'].tolist()}", rtol=1e-6, atol=1e-9, hint=WEIGHT_HINT)


@check(points=2, uses=["vlb_term"], case=_vlb_case, probe=_vlb_probe)
def vlb_term_has_the_constant_of_equation_8(case, answer):
    """vlb_term at eps_hat = eps is Eq. 8's constant C_t: 0 for sigma^2 = beta-tilde, positive for beta."""
    for c, got in pairs(case["calls"], answer):
        what, kl, kl0 = _kl_values(c, got)
        expect_close(kl0, _vlb_reference(c, c["eps"]), f"{what} at eps_hat = eps (t = {c['t'].tolist()})",
                     rtol=1e-6, atol=1e-10, hint=CONSTANT_HINT)
