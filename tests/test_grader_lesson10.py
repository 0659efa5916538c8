"""The checks of lesson 10 (latent diffusion), run in this process as tests/test_grader_lesson09.py runs those of
lesson 9: the solution earns every point on any seed, typical wrong answers are rejected, each by the check of the
property it gets wrong while the properties it gets right still score, other right answers earn every point, and
hostile answers (NaN, empty, the inputs echoed, constants) earn nothing. (The untouched exercise reaching its stub,
the end-to-end grading of solution and exercise, and forged answers sent to every judge are tested for every
lesson in tests/test_grader.py and tests/test_grader_judges.py.)"""

import pytest

from grading_helpers import passes_on_seeds, rejected_on_seeds, solution_with
from lesson_lib.course.checks import load_checks

SEEDS = (0, 1, 2)
CHECKS = {check.name: check for check in load_checks("10")}


def rejected(check_name, source, seeds=SEEDS, error=AssertionError):
    return rejected_on_seeds("10", check_name, source, seeds, error)


def passes(check_name, source="", seeds=SEEDS):
    passes_on_seeds("10", check_name, source, seeds)


def test_the_checks_total_10_points_and_the_solution_earns_them_on_any_seed():
    assert sum(check.points for check in CHECKS.values()) == 10
    for name in CHECKS:
        passes(name, seeds=range(8))


# --- 1 · the KL term ------------------------------------------------------------------------------

KL = '''
def kl_term(mean, logvar):
    per_element = {factor} * ({square} + {variance} {minus_one} - {log_variance})
    return {sign}per_element.flatten(1).{reduce}(1){cast}
'''
RIGHT_KL = {"factor": "0.5", "square": "mean ** 2", "variance": "torch.exp(logvar)", "minus_one": "- 1",
            "log_variance": "logvar", "sign": "", "reduce": "sum", "cast": ""}
KL_CHECKS = ("kl_term_is_the_closed_form", "kl_term_is_zero_at_the_prior_positive_elsewhere_and_adds_up",
             "kl_term_agrees_with_a_monte_carlo_estimate")


def kl_source(**change):
    return KL.format(**dict(RIGHT_KL, **change))


def test_the_kl_template_is_right():
    for name in KL_CHECKS:
        passes(name, kl_source())


@pytest.mark.parametrize("change", [
    {"variance": "torch.exp(2 * logvar)", "log_variance": "2 * logvar"},      # logvar read as log sigma
    {"variance": "torch.exp(0.5 * logvar)", "log_variance": "0.5 * logvar"},  # sigma where sigma^2 belongs
    {"factor": "1.0"},                                                        # the 0.5 missing
])
def test_a_wrong_formula_that_is_still_a_divergence_loses_the_value_checks_only(change):
    """Zero at the prior, positive and additive, but not the KL: the closed form and the definition catch it."""
    source = kl_source(**change)
    rejected("kl_term_is_the_closed_form", source)
    assert all("Monte Carlo" in m for m in rejected("kl_term_agrees_with_a_monte_carlo_estimate", source))
    passes("kl_term_is_zero_at_the_prior_positive_elsewhere_and_adds_up", source)


@pytest.mark.parametrize("change, named", [
    ({"reduce": "mean"}, "joined"),                                # the mean over elements instead of the sum
    ({"minus_one": ""}, "the prior itself"),                       # the -1 missing
    ({"sign": "-"}, "a KL there is positive"),                     # the sign flipped
])
def test_a_wrong_kl_loses_every_check_and_the_property_check_names_it(change, named):
    source = kl_source(**change)
    for name in ("kl_term_is_the_closed_form", "kl_term_agrees_with_a_monte_carlo_estimate"):
        rejected(name, source)
    messages = rejected("kl_term_is_zero_at_the_prior_positive_elsewhere_and_adds_up", source)
    assert all(named in m for m in messages)


def test_a_kl_in_float64_for_float32_latents_loses_the_dtype_checks():
    source = kl_source(cast=".double()")
    for name in ("kl_term_is_the_closed_form", "kl_term_is_zero_at_the_prior_positive_elsewhere_and_adds_up"):
        assert all("dtype" in m for m in rejected(name, source))


def test_a_kl_summed_over_three_dimensions_only_fails_on_flat_latents():
    source = kl_source().replace(".flatten(1).sum(1)", ".sum(dim=(1, 2, 3))")
    rejected("kl_term_is_the_closed_form", source, error=IndexError)


def test_the_monte_carlo_check_tells_one_nat_per_image_apart():
    """Its tolerance (6 standard errors of 20,000 draws) is well under 1 nat on the drawn latents."""
    source = kl_source(cast=" + 1.0")
    assert all("Monte Carlo" in m for m in rejected("kl_term_agrees_with_a_monte_carlo_estimate", source,
                                                      seeds=range(6)))


OTHER_RIGHT_KL = [
    '''
    def kl_term(mean, logvar):                      # through sigma, as log(sigma^2): exact enough from -30 to 20
        sigma = torch.exp(0.5 * logvar)
        return (0.5 * (mean ** 2 + sigma ** 2 - 1 - torch.log(sigma ** 2))).flatten(1).sum(1)
    ''',
    '''
    def kl_term(mean, logvar):                      # torch.distributions, summed over every dimension but the first
        q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
        p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
        return torch.distributions.kl_divergence(q, p).sum(dim=tuple(range(1, mean.ndim)))
    ''',
    '''
    def kl_term(mean, logvar):                      # in float64 inside, cast back
        m, v = mean.double(), logvar.double()
        return (0.5 * (m * m + v.exp() - 1 - v)).reshape(len(m), -1).sum(-1).to(mean.dtype)
    ''',
]


@pytest.mark.parametrize("source", OTHER_RIGHT_KL)
def test_other_right_kls_earn_every_point(source):
    for name in KL_CHECKS:
        passes(name, source, seeds=range(6))


# --- 2 · the scale factor -------------------------------------------------------------------------

SCALE_CHECKS = ("scale_factor_is_one_over_the_whole_sets_std", "scaled_latents_have_std_one")


@pytest.mark.parametrize("body, named", [
    ("1 / latents[:64].double().std().item()", "first 64 latents"),                  # the first batch only
    ("1 / latents[:500].double().std().item()", "first 500 latents"),
    ("1 / latents.double().pow(2).mean().sqrt().item()", "root mean square"),        # the mean not removed
    ("1 / latents.double().var().item()", "1 / the variance"),                       # 1 / var
    ("latents.double().std().item()", "the standard deviation itself"),              # not inverted
])
def test_a_shortcut_is_rejected_by_both_checks_and_named(body, named):
    source = f"def scale_factor(latents):\n    return {body}\n"
    assert all(named in m for m in rejected("scale_factor_is_one_over_the_whole_sets_std", source))
    rejected("scaled_latents_have_std_one", source)


@pytest.mark.parametrize("body", [
    "1 / latents.double().transpose(0, 1).flatten(1).std(1)",                   # one factor per channel
    "1 / latents.double().std(dim=(0, 2, 3), keepdim=True)",
    "1 / latents.double().flatten(1).std(1)",                                   # one factor per latent
])
def test_several_factors_are_refused_by_both_checks(body):
    source = f"def scale_factor(latents):\n    return {body}\n"
    for name in SCALE_CHECKS:
        assert all("expected one number" in m for m in rejected(name, source))


@pytest.mark.parametrize("body", [
    "1 / latents.std()",                                      # float32 all the way, a 0-d tensor
    "1 / latents.std(correction=0)",                          # divided by n, not n - 1
    "float(1 / latents.numpy().astype('float64').std())",     # numpy
    "1 / ((latents.double() - latents.double().mean()) ** 2).sum().div(latents.numel() - 1).sqrt()",
])
def test_other_right_factors_earn_every_point(body):
    source = f"def scale_factor(latents):\n    return {body}\n"
    for name in SCALE_CHECKS:
        passes(name, source, seeds=range(6))


# --- 3 · one latent training step -----------------------------------------------------------------

LOSS = '''
import contextlib

def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):
    with {context}:
        mean, logvar = autoencoder.encode(x0)
    z0 = {z0}
    a = alpha_bars[t].to(z0.dtype).reshape(-1, *[1] * (z0.ndim - 1))
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
    loss = (({target} - eps_model(z_t, t, y)) ** 2).{reduce}()
    return {returned}
'''
RIGHT_LOSS = {"context": "torch.no_grad()", "z0": "scale * mean", "target": "eps", "reduce": "mean",
              "returned": "loss"}
LOSS_CHECKS = ("latent_loss_is_l_simple_on_the_scaled_posterior_mean", "latent_loss_trains_the_eps_model_only",
               "latent_loss_of_an_exact_eps_model_is_its_planted_error")

NOISED_IMAGE = '''
def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):   # the image noised, then encoded
    a = alpha_bars[t].to(x0.dtype).reshape(-1, 1, 1, 1)
    with torch.no_grad():
        z_t = scale * autoencoder.encode(a.sqrt() * x0 + (1 - a).sqrt() * torch.randn_like(x0))[0]
    return ((eps - eps_model(z_t, t, y)) ** 2).mean()
'''


def loss_source(**change):
    return LOSS.format(**dict(RIGHT_LOSS, **change))


def test_the_loss_template_is_right():
    for name in LOSS_CHECKS:
        passes(name, loss_source())


@pytest.mark.parametrize("source", [
    loss_source(z0="mean"),                                                              # the scale forgotten
    loss_source(z0="mean / scale"),                                                      # divided, not multiplied
    loss_source(z0="scale * (mean + torch.exp(0.5 * logvar) * torch.randn_like(mean))"),  # a posterior sample
    loss_source(z0="scale * autoencoder.encode(autoencoder.decode(mean))[0]"),           # a decoding round trip
    loss_source(target="z0"),                                                            # the x0 (z0) target
    loss_source(reduce="sum"),                                                           # sum, not mean
    NOISED_IMAGE,                                                                        # noise before encoding
])
def test_a_wrong_loss_is_rejected_by_every_check(source):
    for name in LOSS_CHECKS:
        rejected(name, source)


@pytest.mark.parametrize("change, named", [
    ({"context": "contextlib.nullcontext()"}, "reached the autoencoder"),          # gradients into the encoder
    ({"returned": "loss.item()"}, "carries no graph"),                             # a float, not a tensor
    ({"returned": "loss.detach()"}, "carries no graph"),
])
def test_a_loss_with_the_wrong_gradients_loses_only_the_gradient_check(change, named):
    source = loss_source(**change)
    assert all(named in m for m in rejected("latent_loss_trains_the_eps_model_only", source))
    for name in ("latent_loss_is_l_simple_on_the_scaled_posterior_mean",
                 "latent_loss_of_an_exact_eps_model_is_its_planted_error"):
        passes(name, source)


def test_an_eps_model_called_without_labels_is_an_error_that_says_how_to_call_it():
    source = loss_source().replace("eps_model(z_t, t, y)", "eps_model(z_t, t)")
    messages = rejected("latent_loss_is_l_simple_on_the_scaled_posterior_mean", source, error=TypeError)
    assert all("eps_model(z_t, t, y)" in m for m in messages)


OTHER_RIGHT_LOSS = '''
import torch.nn.functional as F

def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):
    z0 = scale * autoencoder.encode(x0)[0].detach()                 # detach instead of torch.no_grad()
    a = alpha_bars[t][:, None, None, None]                          # float64: z_t in float64
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
    return F.mse_loss(eps_model(z_t, t, y=y), eps)                  # the labels by name
'''


def test_other_right_losses_earn_every_point():
    for name in LOSS_CHECKS:
        passes(name, OTHER_RIGHT_LOSS, seeds=range(6))


# --- hostile answers earn nothing -----------------------------------------------------------------

HOSTILE = {
    "NaN": '''
        def kl_term(mean, logvar):
            return torch.full((mean.shape[0],), float("nan"), dtype=mean.dtype)
        def scale_factor(latents):
            return float("nan")
        def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):
            return torch.tensor(float("nan"), requires_grad=True)
    ''',
    "empty": '''
        def kl_term(mean, logvar):
            return torch.empty(0, dtype=mean.dtype)
        def scale_factor(latents):
            return ()
        def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):
            return torch.empty(0)
    ''',
    "echo": '''
        def kl_term(mean, logvar):
            return mean
        def scale_factor(latents):
            return latents
        def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):
            return eps
    ''',
    "echo, one number each": '''
        def kl_term(mean, logvar):
            return logvar.flatten(1)[:, -1]
        def scale_factor(latents):
            return float(latents.flatten()[0])
        def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):
            return torch.tensor(float(scale), requires_grad=True)
    ''',
    "constants": '''
        def kl_term(mean, logvar):
            return torch.zeros(mean.shape[0], dtype=mean.dtype)
        def scale_factor(latents):
            return 1.0
        def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):
            return (eps ** 2).mean().requires_grad_()               # the loss of a network that answers 0
    ''',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answers_earn_nothing(name):
    namespace = solution_with("10", HOSTILE[name])
    for check in CHECKS.values():
        with pytest.raises(AssertionError, match="."):
            check.fn(namespace, seed=0)
