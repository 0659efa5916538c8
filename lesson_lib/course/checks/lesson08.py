"""Checks for lesson 8, learned variances and the bound in bits per dimension (solutions/08_likelihood.ipynb).

``gaussian_kl`` is compared with :func:`lesson_lib.diffusion.likelihood.normal_kl` on random
Gaussians (broadcast shapes, log variances from -60 to about 10). ``discretized_log_likelihood`` is
compared with :func:`lesson_lib.diffusion.likelihood.discretized_gaussian_log_likelihood`
(Ho et al. 2020, Eq. 13) on random pixels of the 256-level grid, then on the two open edge bins
with the mean far away (hundreds of standard deviations, where a naive log(Phi(b) - Phi(a)) is log 0 and a floor
at 1e-12 is far from the truth); its probabilities must sum to one over the 256 levels.
``learned_log_variance`` is compared with :func:`lesson_lib.diffusion.steps.learned_range` at
frac = (v + 1) / 2 (Nichol & Dhariwal 2021, Eq. 15), v = -1 and 1 included. ``decoder_std_for_bits``
must give, for drawn b, the decoder std at which an interior pixel whose mean sits exactly on
its level costs b bits: sigma = (1/255) / Phi^-1((1 + 2^-b) / 2). Total: 10 points.
"""

import math

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import expect_close, expect_tensor, pairs
from lesson_lib.course.protocol import type_name

HALF = 1.0 / 255
KL_HINT = ("KL = 0.5 (-1 + log_var2 - log_var1 + exp(log_var1 - log_var2) + (mean1 - mean2)^2 exp(-log_var2)), "
           "per element, in nats; stay in log variances (never take log of exp(log_var)).")
DECODER_HINT = ("P(x) = Phi((x + 1/255 - mean) / sigma) - Phi((x - 1/255 - mean) / sigma) in the middle; at x = -1 the "
                "bin reaches down to -inf (log Phi(upper)), at x = 1 up to +inf (log Phi(-lower)); compute the edge "
                "bins with torch.special.log_ndtr so that a far tail is a large negative number, not log 0 and not "
                "a floor.")
LEARNED_HINT = "frac = (v + 1) / 2; log Sigma = frac * log_beta + (1 - frac) * log_beta_tilde (broadcasting)."


# --- the Gaussian KL ----------------------------------------------------------------------

def _kl_case():
    calls = []
    for shape, other in [((5, 7), (5, 7)), ((3, 1, 4, 4), (3, 1, 1, 1)), ((64,), (64,))]:
        calls.append([torch.randn(shape, dtype=torch.float64), 3 * torch.randn(shape, dtype=torch.float64),
                      torch.randn(other, dtype=torch.float64), 3 * torch.randn(other, dtype=torch.float64)])
    # tiny and huge variances: exp(-60) is 1e-26; equal Gaussians have KL 0
    m = torch.randn(6, dtype=torch.float64)
    calls.append([m, torch.full((6,), -60.0, dtype=torch.float64), m + 1e-13, torch.full((6,), -55.0, dtype=torch.float64)])
    calls.append([m, torch.full((6,), 5.0, dtype=torch.float64), m.clone(), torch.full((6,), 5.0, dtype=torch.float64)])
    return {"calls": calls}


def _kl_probe(ns, case):
    return [ns["gaussian_kl"](*[a.clone() for a in args]) for args in case["calls"]]


@check(points=2, uses=["gaussian_kl"], case=_kl_case, probe=_kl_probe)
def gaussian_kl_is_the_closed_form(case, answer):
    """gaussian_kl is KL(N1 || N2) per element in nats, broadcasting, for log variances from -60 to about 10."""
    from lesson_lib.diffusion.likelihood import normal_kl
    for args, got in pairs(case["calls"], answer):
        expected = normal_kl(*args)
        expect_close(got, expected, f"gaussian_kl for mean1 of shape {tuple(args[0].shape)} and mean2 of shape "
                     f"{tuple(args[2].shape)}", rtol=1e-9, atol=1e-10, hint=KL_HINT)


# --- the discretised decoder --------------------------------------------------------------

def _grid(n):
    return torch.randint(0, 256, (n,)).double() / 127.5 - 1


def _interior_case():
    examples = []
    for n in (200, 50):
        x = _grid(n)
        sigma = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(1e-3), math.log(1.0)))
        mean = x + sigma * torch.empty(n, dtype=torch.float64).uniform_(-5, 5)   # every bin keeps mass > 1e-9
        examples.append({"x": x, "mean": mean, "log_variance": 2 * sigma.log()})
    examples.append({"x": _grid(1).reshape(1, 1, 1, 1).repeat(2, 1, 3, 3), "mean": torch.zeros(2, 1, 3, 3, dtype=torch.float64),
                     "log_variance": torch.full((2, 1, 1, 1), 2 * math.log(0.01), dtype=torch.float64)})
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    sums = []
    for mean, sigma in ((float(torch.empty(()).uniform_(-1.3, 1.3)), 0.01), (0.97, 0.05), (-0.4, 2.0)):
        sums.append({"x": levels, "mean": torch.full_like(levels, mean), "log_variance": torch.full_like(levels, 2 * math.log(sigma))})
    return {"examples": examples, "sums": sums}


def _decoder_probe(ns, case):
    out = {}
    for key in ("examples", "sums"):
        out[key] = [ns["discretized_log_likelihood"](e["x"].clone(), e["mean"].clone(), e["log_variance"].clone())
                    for e in case.get(key, [])]
    return out


def _answers(answer, key, expected):
    if not isinstance(answer, dict) or key not in answer:
        raise AssertionError("discretized_log_likelihood did not answer every call")
    return pairs(expected, answer[key])


TINY = 1e-9   # below this mass a bin's log-probability depends on how it is computed


def _expect_log_mass(got, expected, what):
    """Compare log-probabilities where the reference's mass is at least :data:`TINY`; below it,
    correct answers differ (the reference floors a bin's mass at 1e-12 like improved-diffusion,
    Phi loses digits far in its tail, erfc gives the exact tiny number, a plain log gives -inf),
    so there the answer must only be a tiny probability, not NaN."""
    import torch

    expect_tensor(got, what, shape=expected.shape, dtype=expected.dtype)
    clear = expected >= math.log(TINY)
    expect_close(got[clear], expected[clear], what, rtol=1e-7, atol=1e-8, hint=DECODER_HINT)
    rest = got[~clear].double()
    if torch.isnan(rest).any() or (rest > math.log(10 * TINY)).any():
        raise AssertionError(f"{what} gives a bin whose probability is below {TINY:g} a log-probability of "
                             f"{rest.max().item():.4g}. {DECODER_HINT}")


@check(points=2, uses=["discretized_log_likelihood"], case=_interior_case, probe=_decoder_probe)
def discretized_log_likelihood_is_eq_13(case, answer):
    """discretized_log_likelihood is log of the Gaussian mass of x's bin (Eq. 13), and sums to one over the 256 levels."""
    from lesson_lib.diffusion.likelihood import discretized_gaussian_log_likelihood
    for e, got in _answers(answer, "examples", case["examples"]):
        expected = discretized_gaussian_log_likelihood(e["x"], e["mean"], e["log_variance"].expand_as(e["x"]))
        _expect_log_mass(got, expected, f"discretized_log_likelihood for x of shape {tuple(e['x'].shape)}")
    for e, got in _answers(answer, "sums", case["sums"]):
        what = f"discretized_log_likelihood over the 256 levels, mean {float(e['mean'][0]):.3g}, sigma " \
               f"{math.exp(0.5 * float(e['log_variance'][0])):.3g}"
        _expect_log_mass(got, discretized_gaussian_log_likelihood(e["x"], e["mean"], e["log_variance"]), what)
        total = got.double().exp().sum().item()
        if abs(total - 1) > 1e-9:
            raise AssertionError(f"the probabilities of the 256 levels sum to {total:.9g}, not 1 ({what}): "
                                 f"the edge bins must be open, (-inf, -1 + 1/255] and [1 - 1/255, inf).")


def _edge_case():
    examples = []
    for edge in (-1.0, 1.0):
        n = 40
        x = torch.full((n,), edge, dtype=torch.float64)
        sigma = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(0.005), math.log(0.5)))
        # the mean from just outside the edge to the far side: z from about +3 to several hundred standard deviations away
        mean = edge - edge * torch.empty(n, dtype=torch.float64).uniform_(-0.05, 2.0)
        mean[:3] = torch.tensor([edge, edge, -edge], dtype=torch.float64)
        sigma[:3] = torch.tensor([0.01, 0.0074, 0.02], dtype=torch.float64)
        examples.append({"x": x, "mean": mean, "log_variance": 2 * sigma.log()})
    return {"examples": examples}


@check(points=2, uses=["discretized_log_likelihood"], case=_edge_case, probe=_decoder_probe)
def edge_bins_are_open_and_exact_in_the_tails(case, answer):
    """At x = -1 and x = 1 the bins are open, and a mean far on the other side gives log Phi(z), not log 0 or a floor."""
    from lesson_lib.diffusion.likelihood import discretized_gaussian_log_likelihood
    for e, got in _answers(answer, "examples", case["examples"]):
        edge = int(e["x"][0].item())
        expected = discretized_gaussian_log_likelihood(e["x"], e["mean"], e["log_variance"])
        expect_close(got, expected, f"discretized_log_likelihood at the edge level x = {edge} (means "
                     f"{float(e['mean'].min()):.3g} to {float(e['mean'].max()):.3g})", rtol=1e-7, atol=1e-8,
                     hint=DECODER_HINT)


# --- the learned variance -----------------------------------------------------------------

def _learned_case():
    from lesson_lib.diffusion.schedules import NoiseSchedule

    schedule = NoiseSchedule.linear(1000)
    calls = []
    for B, shape in ((4, (4, 1, 5, 5)), (6, (6, 3))):
        t = torch.randint(1, 1000, (B,))
        bshape = (B,) + (1,) * (len(shape) - 1)
        v = torch.empty(shape, dtype=torch.float64).uniform_(-1, 1)
        v.view(-1)[:2] = torch.tensor([-1.0, 1.0], dtype=torch.float64)
        calls.append([v, schedule.betas.log()[t].reshape(bshape), schedule.posterior_log_variance[t].reshape(bshape)])
    return {"calls": calls}


def _learned_probe(ns, case):
    return [ns["learned_log_variance"](*[a.clone() for a in args]) for args in case["calls"]]


@check(points=2, uses=["learned_log_variance"], case=_learned_case, probe=_learned_probe)
def learned_log_variance_is_eq_15(case, answer):
    """learned_log_variance interpolates log beta and log beta-tilde at frac = (v + 1) / 2 (v = -1: beta-tilde)."""
    from lesson_lib.diffusion.steps import learned_range
    for (v, log_beta, log_beta_tilde), got in pairs(case["calls"], answer):
        expected = learned_range((v + 1) / 2, log_beta, log_beta_tilde)
        expect_close(got, expected, f"learned_log_variance for v of shape {tuple(v.shape)}", rtol=1e-9,
                     atol=1e-10, hint=LEARNED_HINT)


# --- a question: how sharp must the decoder be? ----------------------------------------------

def _bits_case():
    return {"bits": [1.7, 0.1] + [round(float(b), 3) for b in torch.empty(3, dtype=torch.float64).uniform_(0.02, 4.0)]}


def _bits_probe(ns, case):
    return [ns["decoder_std_for_bits"](b) for b in case["bits"]]


def std_for_bits(bits):
    """The std at which an interior pixel with its mean on its own level costs ``bits`` bits."""
    mass = torch.tensor((1 + 2.0 ** -bits) / 2, dtype=torch.float64)
    return HALF / torch.special.ndtri(mass).item()


@check(points=2, uses=["decoder_std_for_bits"], case=_bits_case, probe=_bits_probe)
def decoder_std_for_bits_inverts_the_bin_mass(case, answer):
    """decoder_std_for_bits(b) is the std at which a perfectly predicted interior pixel costs b bits."""
    for b, got in pairs(case["bits"], answer):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise AssertionError(f"decoder_std_for_bits({b}) returned {type_name(got)}, expected a number")
        expected = std_for_bits(b)
        if not abs(got - expected) <= 1e-3 * expected:
            raise AssertionError(f"decoder_std_for_bits({b}) = {got!r} is not right: with the mean exactly on the "
                                 f"level, the pixel's bin holds 2 Phi(h / sigma) - 1 of the mass (h = 1/255); set "
                                 f"-log2 of that to b and solve for sigma (torch.special.ndtri is Phi^-1).")
