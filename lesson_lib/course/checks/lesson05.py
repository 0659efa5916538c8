"""Checks for lesson 5, guidance (solutions/05_guidance.ipynb).

``classifier_guided_eps`` is compared with the score form of classifier guidance (Dhariwal &
Nichol, 2021), :func:`lesson_lib.diffusion.guidance.classifier_guided_eps`, on random inputs of
several shapes, and on a 2-D Gaussian mixture, where at scale 1 it must turn the exact
unconditional eps into the exact conditional eps. ``cfg_eps`` is compared with
:func:`lesson_lib.diffusion.guidance.cfg_eps` (Ho & Salimans, 2021) for weights that include the
end points w = 0 and w = -1. ``guidance_conventions`` must name the w and s of the conditional
and the unconditional model. Total: 10 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import as_number, expect_close, field, pairs
from lesson_lib.course.protocol import type_name

GUIDED_HINT = ("eps' = eps - scale * sqrt(1 - alpha_bar) * grad_log_prob, with alpha_bar (one value per "
               "example) reshaped to (B, 1, ..., 1) so that it broadcasts over the other dimensions.")
CFG_HINT = ("eps' = (1 + w) * eps_cond - w * eps_uncond, elementwise, for any number w (w may be 0, negative "
            "or a float; return a tensor shaped like eps_cond).")


def _reference_guided(eps, grad, alpha_bar, scale):
    from lesson_lib.diffusion import guidance
    shape = (-1,) + (1,) * (eps.ndim - 1)
    return guidance.classifier_guided_eps(eps, grad, (1 - alpha_bar).sqrt().reshape(shape).to(eps.dtype), scale)


# --- classifier_guided_eps ----------------------------------------------------------------

def _guided_case():
    from lesson_lib.diffusion.schedules import NoiseSchedule
    alpha_bars = NoiseSchedule.linear(1000).alpha_bars
    examples = []
    for shape, dtype, scale in [((6, 2), torch.float64, 1.0), ((4, 1, 5, 5), torch.float32, 3.5),
                                ((3, 3, 4, 4), torch.float32, 0.0), ((5, 2), torch.float64, float(torch.rand(()) * 10))]:
        t = torch.randint(0, 1000, (shape[0],))
        t[0] = 999
        examples.append({"eps": torch.randn(shape, dtype=dtype), "grad": torch.randn(shape, dtype=dtype),
                         "alpha_bar": alpha_bars[t], "scale": scale})
    return {"examples": examples}


def _guided_probe(ns, case):
    return [ns["classifier_guided_eps"](e["eps"].clone(), e["grad"].clone(), e["alpha_bar"].clone(), e["scale"])
            for e in case["examples"]]


@check(points=2, uses=["classifier_guided_eps"], case=_guided_case, probe=_guided_probe)
def classifier_guided_eps_is_the_score_form(case, answer):
    """classifier_guided_eps is eps - s sqrt(1 - alpha-bar_t) grad (2-D points and images, s = 0 too)."""
    for e, got in pairs(case["examples"], answer):
        expected = _reference_guided(e["eps"], e["grad"], e["alpha_bar"], e["scale"])
        expect_close(got, expected, f"classifier_guided_eps for eps of shape {tuple(e['eps'].shape)} and "
                     f"scale {e['scale']:.3g}", rtol=1e-5, atol=1e-6, hint=GUIDED_HINT)


MEANS = torch.tensor([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]], dtype=torch.float64)
SIGMA = 0.6


def _mixture(x, t, y):
    """Exact eps(x_t), eps(x_t | y) and grad log p_t(y | x_t) of a 2-D Gaussian mixture
    (lesson_lib.diffusion.oracles; the gradient by autograd through its exact classifier)."""
    from lesson_lib.diffusion.oracles import GaussianMixture
    from lesson_lib.diffusion.schedules import NoiseSchedule
    mixture = GaussianMixture(NoiseSchedule.linear(1000), MEANS, SIGMA)
    x = x.detach().requires_grad_()
    log_p = mixture.log_posterior(x, t)[torch.arange(len(x)), y].sum()
    grad, = torch.autograd.grad(log_p, x)
    with torch.no_grad():
        return mixture(x, t), mixture(x, t, y), grad


def _mixture_case():
    from lesson_lib.diffusion.schedules import NoiseSchedule
    x = 2 * torch.randn(8, 2, dtype=torch.float64)
    t = torch.randint(0, 1000, (8,))
    y = torch.randint(0, 3, (8,))
    eps_u, _, grad = _mixture(x, t, y)
    return {"x": x, "t": t, "y": y, "eps": eps_u, "grad": grad,
            "alpha_bar": NoiseSchedule.linear(1000).alpha_bars[t]}


def _mixture_probe(ns, case):
    return ns["classifier_guided_eps"](case["eps"].clone(), case["grad"].clone(), case["alpha_bar"].clone(), 1.0)


@check(points=2, uses=["classifier_guided_eps"], case=_mixture_case, probe=_mixture_probe)
def classifier_guidance_at_scale_1_gives_the_conditional_eps(case, answer):
    """At scale 1, on an exact 2-D mixture, classifier_guided_eps turns eps(x_t) into eps(x_t | y)."""
    _, eps_c, _ = _mixture(case["x"], case["t"], case["y"])
    expect_close(answer, eps_c, "classifier_guided_eps(eps(x_t), grad log p_t(y | x_t), alpha_bar, 1.0)",
                 rtol=1e-8, atol=1e-10, hint="Bayes' rule: eps(x_t | y) = eps(x_t) - sqrt(1 - alpha-bar_t) "
                 "grad log p_t(y | x_t). " + GUIDED_HINT)


# --- cfg_eps ------------------------------------------------------------------------------

def _cfg_case():
    weights = [0.0, -1.0, 0.3, 4.0, float(torch.rand(()) * 8)]
    shapes = [(4, 2), (3, 1, 6, 6), (2, 3, 4, 4), (5, 2), (2, 1, 3, 3)]
    return {"examples": [{"eps_cond": torch.randn(shape), "eps_uncond": torch.randn(shape), "w": w}
                         for shape, w in zip(shapes, weights)]}


def _cfg_probe(ns, case):
    return [ns["cfg_eps"](e["eps_cond"].clone(), e["eps_uncond"].clone(), e["w"]) for e in case["examples"]]


@check(points=3, uses=["cfg_eps"], case=_cfg_case, probe=_cfg_probe)
def cfg_eps_is_the_papers_combination(case, answer):
    """cfg_eps is (1 + w) eps_cond - w eps_uncond, for w = 0, w = -1 and other weights."""
    from lesson_lib.diffusion import guidance
    for e, got in pairs(case["examples"], answer):
        expected = guidance.cfg_eps(e["eps_cond"], e["eps_uncond"], e["w"])
        expect_close(got, expected, f"cfg_eps with w = {e['w']:.3g}", rtol=1e-5, atol=1e-6, hint=CFG_HINT)


# --- the two conventions ------------------------------------------------------------------

CONVENTIONS = {"w_conditional": 0.0, "s_conditional": 1.0, "w_unconditional": -1.0, "s_unconditional": 0.0}



def _conventions_probe(ns, case):
    return ns["guidance_conventions"]()


@check(points=3, uses=["guidance_conventions"], probe=_conventions_probe)
def guidance_conventions_name_both_end_points(case, answer):
    """guidance_conventions gives w and s of the conditional and of the unconditional model."""
    if not isinstance(answer, dict):
        raise AssertionError(f"guidance_conventions() returned {type_name(answer)}, expected a dict with the "
                             f"keys {sorted(CONVENTIONS)}")
    for key, expected in CONVENTIONS.items():
        got = as_number(field(answer, key), f"guidance_conventions()[{key!r}]")
        if abs(got - expected) > 1e-9:
            raise AssertionError(f"guidance_conventions()[{key!r}] = {got!r} is not right: find the value "
                                 f"at which the guided eps equals the model's own (conditional or "
                                 f"unconditional) prediction: write the guided eps in that convention and "
                                 f"ask when the other prediction drops out.")
