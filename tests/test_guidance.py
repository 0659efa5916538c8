"""Guidance, tested against a model that is exact.

For a class-conditional 2-D Gaussian mixture, x_0 | y = k ~ N(mu_k, sigma^2 I) with equal class
weights, every noisy distribution is known in closed form:

    p_t(x | y = k) = N(sqrt(ab) mu_k, v_t I),   v_t = ab sigma^2 + 1 - ab,
    eps(x_t | k)   = sqrt(1 - ab) (x_t - sqrt(ab) mu_k) / v_t,
    p_t(y = k | x) = softmax_k( -|x - sqrt(ab) mu_k|^2 / (2 v_t) ),
    eps(x_t)       = sum_k p_t(k | x_t) eps(x_t | k).

So guidance can be checked to float64 precision: classifier guidance at scale 1 on the exact
unconditional eps gives the exact conditional eps; CFG with scale s is classifier guidance with
scale s on the unconditional model; and sampling with the guided score reproduces each class.
"""

import functools

import pytest
import torch

from lesson_lib.diffusion.denoiser import ClipX0, Denoiser
from lesson_lib.diffusion.oracles import GaussianMixture
from lesson_lib.diffusion.guidance import (ClassifierFreeGuidance, ClassifierGuidance, ClassifierGuidedStep,
                                           cfg_eps, classifier_gradient, classifier_guided_eps,
                                           classifier_guided_mean, rescale_cfg, scale_from_w, w_from_scale)
from lesson_lib.diffusion.losses import NoisyCrossEntropy
from lesson_lib.diffusion.sampling import ddim_sample, ddpm_sample
from lesson_lib.diffusion.schedules import NoiseSchedule, extract
from lesson_lib.diffusion.steps import ddpm_step
from lesson_lib.diffusion.timesteps import all_steps, spaced
from lesson_lib.evaluation.metrics import sample_quality_2d
from lesson_lib.models.noisy_classifier import NoisyClassifier, noisy_classifier_preset
from lesson_lib.models.unet import UNet

# Three classes on a circle of radius 1 with sigma 0.6: they overlap, so p(y | x) is not 0 or 1
# almost everywhere and a larger guidance scale has something to sharpen.
MEANS = torch.tensor([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]], dtype=torch.float64)
SIGMA = 0.6
K = len(MEANS)


def class_data(k, n, seed):
    g = torch.Generator().manual_seed(seed)
    return MEANS[k] + SIGMA * torch.randn(n, 2, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.from_name("linear", 200)


@pytest.fixture(scope="module")
def mixture(schedule):
    return GaussianMixture(schedule, MEANS, SIGMA)


def _exact_classifier(mixture):
    f = lambda x, t: mixture.log_posterior(x, t)      # noqa: E731
    f.num_classes = K
    return f


def _batch(schedule, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.randint(0, schedule.T, (n,), generator=g)
    y = torch.randint(0, K, (n,), generator=g)
    return x, t, y


# --- exact identities --------------------------------------------------------------------

def test_classifier_guidance_at_scale_1_on_the_unconditional_eps_is_the_conditional_eps(schedule, mixture):
    x, t, y = _batch(schedule)
    guided = ClassifierGuidance(Denoiser(mixture, schedule), _exact_classifier(mixture), 1.0)(x, t, y=y)
    exact = mixture(x, t, y)
    assert torch.allclose(guided.eps, exact, atol=1e-12, rtol=0)
    assert torch.allclose(guided.x0, Denoiser(mixture, schedule)(x, t, y=y).x0, atol=1e-10, rtol=0)


@pytest.mark.parametrize("s", [0.0, 0.5, 1.0, 3.0, 7.5])
def test_cfg_with_scale_s_is_classifier_guidance_with_scale_s_on_the_unconditional_model(schedule, mixture, s):
    x, t, y = _batch(schedule, seed=1)
    denoise = Denoiser(mixture, schedule)
    cfg = ClassifierFreeGuidance(denoise, scale=s)(x, t, y=y)
    cg = ClassifierGuidance(denoise, _exact_classifier(mixture), s)(x, t, y=y)
    assert torch.allclose(cfg.eps, cg.eps, atol=1e-12, rtol=0)
    # ... and classifier guidance with w = s - 1 on the conditional model
    if s >= 1:
        cg_cond = ClassifierGuidance(denoise, _exact_classifier(mixture), w_from_scale(s), condition_model=True)
        assert torch.allclose(cfg.eps, cg_cond(x, t, y=y).eps, atol=1e-12, rtol=0)


def test_both_cfg_conventions_and_their_end_points(schedule, mixture):
    x, t, y = _batch(schedule, seed=2)
    denoise = Denoiser(mixture, schedule)
    assert scale_from_w(0.5) == 1.5 and w_from_scale(1.5) == 0.5 and w_from_scale(scale_from_w(2.0)) == 2.0
    by_w = ClassifierFreeGuidance(denoise, 0.7)(x, t, y=y).eps
    by_s = ClassifierFreeGuidance(denoise, scale=1.7)(x, t, y=y).eps
    assert torch.allclose(by_w, by_s, atol=1e-12, rtol=0)
    assert ClassifierFreeGuidance(denoise, scale=1.7).w == pytest.approx(0.7)
    conditional = ClassifierFreeGuidance(denoise, 0.0)(x, t, y=y).eps           # w = 0
    unconditional = ClassifierFreeGuidance(denoise, scale=0.0)(x, t, y=y).eps   # s = 0
    assert torch.allclose(conditional, mixture(x, t, y), atol=1e-12, rtol=0)
    assert torch.allclose(unconditional, mixture(x, t), atol=1e-12, rtol=0)
    eps_c, eps_u = mixture(x, t, y), mixture(x, t)
    assert torch.allclose(cfg_eps(eps_c, eps_u, 2.0), eps_u + 3.0 * (eps_c - eps_u), atol=1e-12, rtol=0)


def test_the_score_form_is_eps_minus_s_sqrt_one_minus_ab_times_the_gradient(schedule, mixture):
    x, t, y = _batch(schedule, seed=3)
    clf = _exact_classifier(mixture)
    g = classifier_gradient(clf, x, t, y)
    eps = mixture(x, t)
    sq = extract(schedule.sqrt_one_minus_alpha_bars, t, x)
    guided = ClassifierGuidance(Denoiser(mixture, schedule), clf, 2.5)(x, t, y=y)
    assert torch.allclose(guided.eps, eps - 2.5 * sq * g, atol=1e-12, rtol=0)
    assert torch.allclose(classifier_guided_eps(eps, g, sq, 2.5), guided.eps, atol=1e-12, rtol=0)
    # x0 is derived again from the guided eps (Eq. 4)
    ab = extract(schedule.alpha_bars, t, x)
    assert torch.allclose(guided.x0, (x - sq * guided.eps) / ab.sqrt(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("strided", [False, True])
def test_the_mean_form_shifts_the_ancestral_mean_by_s_sigma_g(schedule, mixture, variance, strided):
    timesteps = spaced(schedule.T, 20) if strided else list(range(schedule.T - 1, -1, -1))
    nxt = {t: (timesteps[i + 1] if i + 1 < len(timesteps) else -1) for i, t in enumerate(timesteps)}
    x, _, y = _batch(schedule, n=len(timesteps), seed=4)
    t = torch.tensor(timesteps)
    s = torch.tensor([nxt[v] for v in timesteps])
    clf = _exact_classifier(mixture)
    denoise = Denoiser(mixture, schedule)
    guide = ClassifierGuidedStep(clf, 3.0, y)             # a step: no timestep list, the pair t -> s is given
    mu = ddpm_step(schedule, x, t, s, denoise(x, t))
    mu_guided = guide(schedule, x, t, s, denoise(x, t), variance=variance)
    a = schedule.alpha_bars_with_0
    beta = 1 - a[t + 1] / a[s + 1]
    sigma2 = beta if variance == "beta" else (1 - a[s + 1]) / (1 - a[t + 1]) * beta
    expected = mu + 3.0 * sigma2[:, None] * classifier_gradient(clf, x, t, y)
    assert torch.allclose(mu_guided, expected, atol=1e-10, rtol=0)
    assert torch.allclose(classifier_guided_mean(mu, sigma2[:, None], classifier_gradient(clf, x, t, y), 3.0),
                          expected, atol=1e-12, rtol=0)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    with_noise = guide(schedule, x, t, s, denoise(x, t), z, variance=variance)
    assert torch.allclose(with_noise, expected + sigma2[:, None].sqrt() * z, atol=1e-10, rtol=0)


def test_the_mean_form_can_take_the_gradient_at_the_mean(schedule, mixture):
    x, _, y = _batch(schedule, n=8, seed=5)
    t = torch.full((8,), 50)
    clf = _exact_classifier(mixture)
    denoise = Denoiser(mixture, schedule)
    guide = ClassifierGuidedStep(clf, 2.0, y, gradient_at="mean")
    mu = ddpm_step(schedule, x, t, t - 1, denoise(x, t))
    expected = mu + 2.0 * extract(schedule.betas, t, x) * classifier_gradient(clf, mu, t - 1, y)
    assert torch.allclose(guide(schedule, x, t, t - 1, denoise(x, t)), expected, atol=1e-10, rtol=0)


def test_in_one_ddpm_step_the_score_form_moves_the_mean_by_the_mean_forms_shift_over_sqrt_alpha(schedule, mixture):
    """The module's claim: s beta_t / sqrt(alpha_t) g (score form) against s beta_t g (mean form)."""
    x, t, y = _batch(schedule, seed=9)
    clf, denoise = _exact_classifier(mixture), Denoiser(mixture, schedule)
    mu = ddpm_step(schedule, x, t, t - 1, denoise(x, t))
    by_score = ddpm_step(schedule, x, t, t - 1, ClassifierGuidance(denoise, clf, 2.0)(x, t, y=y)) - mu
    by_mean = ClassifierGuidedStep(clf, 2.0, y)(schedule, x, t, t - 1, denoise(x, t)) - mu
    assert torch.allclose(by_score, by_mean / extract(schedule.alphas, t, x).sqrt(), atol=1e-10, rtol=0)


def test_the_mean_form_shifts_by_the_steps_own_learned_variance(schedule, mixture):
    """With a learned variance, Sigma is the step's interpolation between beta_{t->s} and beta-tilde_{t->s}."""
    x, _, y = _batch(schedule, n=4, seed=10)
    t, s = torch.full((4,), 150), torch.full((4,), 100)
    clf = _exact_classifier(mixture)
    pred = Denoiser(mixture, schedule)(x, t)._replace(frac=torch.full_like(x, 0.5))
    a = schedule.alpha_bars_with_0
    beta = 1 - a[151] / a[101]
    sigma2 = (beta * (1 - a[101]) / (1 - a[151]) * beta).sqrt()          # frac 1/2: the geometric mean
    expected = ddpm_step(schedule, x, t, s, pred) + 2.0 * sigma2 * classifier_gradient(clf, x, t, y)
    assert torch.allclose(ClassifierGuidedStep(clf, 2.0, y)(schedule, x, t, s, pred), expected, atol=1e-10, rtol=0)


def test_rescale_with_phi_1_gives_the_conditional_std_and_phi_0_changes_nothing(schedule, mixture):
    g = torch.Generator().manual_seed(6)
    eps_c, eps_u = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    guided = cfg_eps(eps_c, eps_u, 3.0)
    full = rescale_cfg(guided, eps_c, 1.0)
    assert torch.allclose(full.std(dim=(1, 2, 3)), eps_c.std(dim=(1, 2, 3)), atol=1e-12, rtol=0)
    assert torch.equal(rescale_cfg(guided, eps_c, 0.0), guided)
    x, t, y = _batch(schedule, seed=6)
    denoise = Denoiser(mixture, schedule)
    plain = ClassifierFreeGuidance(denoise, 3.0)(x, t, y=y).eps
    rescaled = ClassifierFreeGuidance(denoise, 3.0, rescale=0.7)(x, t, y=y).eps
    assert torch.allclose(rescaled, rescale_cfg(plain, mixture(x, t, y), 0.7), atol=1e-12, rtol=0)


def test_the_guidance_interval_guides_only_inside_the_band(schedule, mixture):
    x, t, y = _batch(schedule, n=200, seed=7)
    denoise = Denoiser(mixture, schedule)
    inside = (t >= 50) & (t <= 120)
    cfg = ClassifierFreeGuidance(denoise, 2.0, interval=(50, 120))(x, t, y=y).eps
    assert torch.allclose(cfg[inside], ClassifierFreeGuidance(denoise, 2.0)(x, t, y=y).eps[inside], atol=1e-12)
    assert torch.allclose(cfg[~inside], mixture(x, t, y)[~inside], atol=1e-12)       # conditional outside
    cg = ClassifierGuidance(denoise, _exact_classifier(mixture), 2.0, interval=(50, 120))(x, t, y=y).eps
    assert torch.allclose(cg[~inside], mixture(x, t)[~inside], atol=1e-12)             # unguided outside
    assert not torch.allclose(cg[inside], mixture(x, t)[inside], atol=1e-6)
    pred, clf = denoise(x, t), _exact_classifier(mixture)
    banded = ClassifierGuidedStep(clf, 2.0, y, interval=(50, 120))(schedule, x, t, t - 1, pred)
    everywhere = ClassifierGuidedStep(clf, 2.0, y)(schedule, x, t, t - 1, pred)
    assert torch.equal(banded[inside], everywhere[inside])
    assert torch.equal(banded[~inside], ddpm_step(schedule, x, t, t - 1, pred)[~inside])


def test_clipping_after_guidance_is_what_the_denoiser_does_without_guidance(schedule, mixture):
    x, t, y = _batch(schedule, seed=8)
    a = Denoiser(mixture, schedule, clip_x0=1.0)(x, t, y=y)
    b = ClipX0(Denoiser(mixture, schedule), schedule, 1.0)(x, t, y=y)
    assert torch.equal(a.x0, b.x0) and torch.allclose(a.eps, b.eps, atol=1e-12, rtol=0)


# --- sampling with the exact guided score -----------------------------------------------

def _spread(samples):
    return samples.std(dim=0).mean().item()


def test_sampling_with_the_exact_guided_score_reproduces_each_class_and_a_larger_scale_shrinks_it(schedule, mixture):
    clf = _exact_classifier(mixture)
    n = 1000
    for k in range(K):
        y = torch.full((n,), k)
        x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(10 + k), dtype=torch.float64)
        run = lambda s: ddpm_sample(mixture, schedule, x_T=x_T, model_kwargs={"y": y}, progress=False,   # noqa: E731
                                    generator=torch.Generator().manual_seed(20 + k),
                                    guidance=lambda d: ClassifierGuidance(d, clf, s))
        at_1 = run(1.0)
        quality = sample_quality_2d(at_1, functools.partial(class_data, k))
        assert quality["ratio"] < 1.5, (k, quality)
        assert abs(_spread(at_1) - SIGMA) < 0.04
        if k == 0:                                   # same noise, larger scales: tighter classes
            at_2, at_4 = run(2.0), run(4.0)
            assert _spread(at_4) < _spread(at_2) < _spread(at_1)
            assert _spread(at_4) < 0.9 * SIGMA


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_one_guided_step_is_algorithm_1_on_every_timestep_list_the_sampler_visits(schedule, mixture, variance):
    """The mean form as ddpm_sample's step equals Algorithm 1 by hand with each jump's own Sigma_{t->s}, on
    every step and on spaced(T, 50) alike: the step holds no timestep list, so it cannot disagree with one
    (the old ClassifierGuidance(form="mean") kept its own and, left on every step, used beta_t on a jump)."""
    clf, denoise = _exact_classifier(mixture), Denoiser(mixture, schedule)
    n = 12
    y = torch.arange(n) % K
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    guided = ClassifierGuidedStep(clf, 3.0, y)
    a = schedule.alpha_bars_with_0
    for timesteps in (all_steps(schedule.T), spaced(schedule.T, 50)):
        got = ddpm_sample(mixture, schedule, x_T=x_T, timesteps=timesteps, variance=variance, step=guided,
                          generator=torch.Generator().manual_seed(12), progress=False)
        g, x = torch.Generator().manual_seed(12), x_T
        for i, t in enumerate(timesteps):
            s = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            tb, sb = torch.full((n,), t), torch.full((n,), s)
            beta = 1 - a[t + 1] / a[s + 1]                              # the jump's beta_{t->s}
            sigma2 = beta if variance == "beta" else (1 - a[s + 1]) / (1 - a[t + 1]) * beta
            mu = ddpm_step(schedule, x, tb, sb, denoise(x, tb)) + 3.0 * sigma2 * classifier_gradient(clf, x, tb, y)
            x = mu + sigma2.sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype) if s >= 0 else mu
        assert torch.allclose(got, x, atol=1e-10, rtol=0), len(timesteps)


def test_guided_ddim_reproduces_a_class_too(schedule, mixture):
    n = 1000
    y = torch.full((n,), 1)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0 = ddim_sample(mixture, schedule, x_T=x_T, steps=100, model_kwargs={"y": y}, progress=False,
                     guidance=lambda d: ClassifierFreeGuidance(d, 0.0))
    assert sample_quality_2d(x0, functools.partial(class_data, 1))["ratio"] < 1.5


def test_the_classifier_sees_the_original_timesteps_when_sampling_on_fewer_steps(schedule, mixture):
    seen = []

    def recording(x, t):
        seen.append(t.tolist())
        return mixture.log_posterior(x, t)
    recording.num_classes = K
    ddim_sample(mixture, schedule, (4, 2), steps=10, model_kwargs={"y": torch.zeros(4, dtype=torch.long)},
                progress=False, guidance=lambda d: ClassifierGuidance(d, recording, 1.0))
    assert [ts[0] for ts in seen] == spaced(schedule.T, 10)
    assert all(len(set(ts)) == 1 for ts in seen)


# --- per-example gradients ---------------------------------------------------------------

class BatchNormClassifier(torch.nn.Module):
    """A classifier whose BatchNorm would mix the batch in train mode."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                       torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 28 * 28, 10))
        self.time = torch.nn.Embedding(1000, 10)

    def forward(self, x, t):
        return self.net(x) + self.time(t)


@pytest.mark.parametrize("make", [lambda: noisy_classifier_preset("mnist_ci"), BatchNormClassifier])
def test_one_examples_gradient_does_not_depend_on_the_rest_of_the_batch(make):
    torch.manual_seed(0)
    classifier = make()
    for p in classifier.parameters():           # non-zero everywhere (the ResBlocks start at zero)
        torch.nn.init.normal_(p, std=0.1)
    classifier.train()                           # guidance must switch it to eval itself
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 28, 28, generator=g)
    t = torch.tensor([10, 200, 400, 600, 800, 999])
    y = torch.tensor([3, 1, 4, 1, 5, 9])
    first = classifier_gradient(classifier, x, t, y)
    other = x.clone()
    other[1:] = torch.randn(5, 1, 28, 28, generator=g)
    second = classifier_gradient(classifier, other, torch.tensor([10, 5, 5, 5, 5, 5]), torch.tensor([3, 0, 0, 0, 0, 0]))
    assert torch.allclose(first[0], second[0], atol=1e-6, rtol=1e-5)
    assert first[0].abs().sum() > 0
    alone = classifier_gradient(classifier, x[:1], t[:1], y[:1])
    assert torch.allclose(first[0], alone[0], atol=1e-6, rtol=1e-5)
    assert classifier.training                   # its mode is restored


# --- errors ------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_error(schedule, mixture):
    denoise = Denoiser(mixture, schedule)
    clf = _exact_classifier(mixture)
    x, t, _ = _batch(schedule, n=4)
    with pytest.raises(ValueError, match="must lie in 0..2"):
        ClassifierGuidance(denoise, clf, 1.0)(x, t, y=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="must lie in 0..2"):
        ClassifierFreeGuidance(denoise, 1.0)(x, t, y=torch.tensor([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="must lie in 0..2"):       # the null class is not a target
        ClassifierFreeGuidance(denoise, 1.0)(x, t, y=torch.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="needs the target classes"):
        ClassifierFreeGuidance(denoise, 1.0)(x, t)
    with pytest.raises(ValueError, match="negative scale"):
        ClassifierGuidance(denoise, clf, -1.0)
    with pytest.raises(ValueError, match="below it CFG means nothing"):
        ClassifierFreeGuidance(denoise, -1.5)
    with pytest.raises(ValueError, match="below it CFG means nothing"):
        ClassifierFreeGuidance(denoise, scale=-0.5)
    with pytest.raises(ValueError, match="once"):
        ClassifierFreeGuidance(denoise, 1.0, scale=2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ClassifierFreeGuidance(denoise, 1.0, rescale=1.5)
    with pytest.raises(ValueError, match="interval"):
        ClassifierFreeGuidance(denoise, 1.0, interval=(150, 100))
    with pytest.raises(TypeError, match="form"):                  # the wrapper is the score form only ...
        ClassifierGuidance(denoise, clf, 1.0, form="mean")
    with pytest.raises(TypeError, match="gradient_at"):           # ... which takes the gradient at x_t
        ClassifierGuidance(denoise, clf, 1.0, gradient_at="mean")
    with pytest.raises(ValueError, match="gradient_at"):          # the mean form is a step
        ClassifierGuidedStep(clf, 1.0, torch.tensor([0, 1, 2, 0]), gradient_at="x0")
    with pytest.raises(ValueError, match="needs the target classes"):
        ClassifierGuidedStep(clf, 1.0, None)
    with pytest.raises(ValueError, match="must lie in 0..2"):
        ClassifierGuidedStep(clf, 1.0, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="negative scale"):
        ClassifierGuidedStep(clf, -1.0, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        ClassifierGuidedStep(clf, 1.0, torch.tensor([0, 1]))(schedule, x, t, t - 1, denoise(x, t))
    with pytest.raises(TypeError, match="step must be an ancestral step"):
        ddpm_sample(mixture, schedule, (4, 2), step="mean", progress=False)
    unconditional = UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                         attention_resolutions=(), image_size=28)
    with pytest.raises(ValueError, match="null class"):
        ClassifierFreeGuidance(Denoiser(unconditional, schedule), 1.0)
    cifar_sized = UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                       attention_resolutions=(), image_size=32, num_classes=10)
    mnist_guide = noisy_classifier_preset("mnist_ci")
    with pytest.raises(ValueError, match="another image size or dataset"):
        ClassifierGuidance(Denoiser(cifar_sized, schedule), mnist_guide, 1.0)
    with pytest.raises(ValueError, match="trained on 'mnist', not 'cifar10'"):
        ClassifierGuidance(Denoiser(unconditional, schedule), mnist_guide, 1.0, dataset="cifar10")
    with pytest.raises(ValueError, match=r"shape \(B, 1, 28, 28\)"):
        mnist_guide(torch.zeros(2, 1, 32, 32), torch.zeros(2, dtype=torch.long))


# --- the noisy classifier and its objective ----------------------------------------------

def test_the_noisy_classifier_maps_noisy_images_and_t_to_logits_and_rebuilds_from_its_config():
    model = noisy_classifier_preset("mnist_ci")
    logits = model(torch.randn(3, 1, 28, 28), torch.tensor([0, 500, 999]))
    assert logits.shape == (3, 10) and model.prediction is None and model.num_classes == 10
    again = NoisyClassifier.from_config(model.config)
    assert again.config == model.config


def test_the_noisy_cross_entropy_is_cross_entropy_on_q_sample_with_t_uniform():
    schedule = NoiseSchedule.linear(1000)
    model = noisy_classifier_preset("mnist_ci").eval()
    x0 = torch.rand(16, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (16,))
    loss = NoisyCrossEntropy(schedule)(model, model, x0, {"y": y}, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (16,), generator=g)
    eps = torch.empty_like(x0).normal_(generator=g)
    x_t = extract(schedule.sqrt_alpha_bars, t, x0) * x0 + extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * eps
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(model(x_t, t), y))
    assert NoisyCrossEntropy(schedule).config() == {"name": "noisy_cross_entropy"}
    with pytest.raises(ValueError, match="labels"):
        NoisyCrossEntropy(schedule)(model, model, x0, {}, torch.Generator())


def test_the_trainer_trains_a_noisy_classifier_with_this_objective(tmp_path):
    from lesson_lib.training.trainer import TrainConfig, Trainer
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (64,), generator=g)
    images = (labels.float()[:, None, None, None] / 4.5 - 1).expand(64, 1, 28, 28).contiguous()
    trainer = Trainer(noisy_classifier_preset("mnist_ci"), images, NoisyCrossEntropy(NoiseSchedule.linear(1000)),
                      TrainConfig(batch_size=16, lr=3e-3, log_every=10), cond={"y": labels}, device="cpu",
                      checkpoint_path=tmp_path / "c.pt")
    trainer.run(30, progress=False, checkpoint_every=30)
    assert trainer.history[-1][1] < trainer.history[0][1]
    assert torch.load(tmp_path / "c.pt", weights_only=True)["objective"] == {"name": "noisy_cross_entropy"}


def test_within_class_spread_is_the_mean_distance_between_two_samples_of_a_class():
    from lesson_lib.evaluation.metrics import within_class_spread
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert within_class_spread(features, labels) == pytest.approx((5.0 + 0.0) / 2)
    with pytest.raises(ValueError, match="at least two"):
        within_class_spread(features[:3], labels[:3])


# --- the shipped guide -------------------------------------------------------------------

def test_the_shipped_noisy_classifier_loads_verified_and_its_card_shows_accuracy_falling_with_t():
    from lesson_lib.pretrained import load_noisy_classifier
    guide, guide_schedule = load_noisy_classifier("mnist_noisy_classifier")
    assert isinstance(guide, NoisyClassifier) and not guide.training and guide.dataset == "mnist"
    assert torch.equal(guide_schedule.betas, NoiseSchedule.linear(1000).betas)
    curve = guide.card["evaluation"]["accuracy_against_t"]
    accuracy = dict(zip(curve["timesteps"], curve["accuracy"]))
    assert accuracy[0] > 0.95 and accuracy[100] > 0.95 and accuracy[999] < 0.2
    assert all(a >= b - 0.02 for a, b in zip(curve["accuracy"], curve["accuracy"][1:]))
    assert "--recipe mnist_noisy_classifier" in guide.card["command"]


@pytest.mark.skipif(not __import__("os").environ.get("DDPM_DATA_DIR"), reason="set DDPM_DATA_DIR to the prepared datasets")
def test_the_shipped_noisy_classifier_is_right_on_slightly_noisy_test_digits():
    from lesson_lib.data.images import load_mnist
    from lesson_lib.evaluation.judges import accuracy_against_t
    from lesson_lib.pretrained import load_noisy_classifier
    guide, guide_schedule = load_noisy_classifier("mnist_noisy_classifier")
    x, y = load_mnist("test")
    near_0, at_999 = accuracy_against_t(guide, guide_schedule, x[-300:], y[-300:], [20, 999], seed=1)
    assert near_0 > 0.95 and at_999 < 0.3


def test_both_methods_run_on_the_shipped_model_with_the_shipped_guide_through_the_presets():
    from lesson_lib.pretrained import load_noisy_classifier, load_pretrained
    model, schedule = load_pretrained("mnist_cond")
    guide, _ = load_noisy_classifier("mnist_noisy_classifier")
    guide.train()
    y = torch.tensor([3, 7])
    for guidance in (lambda d: ClassifierGuidance(d, guide, 2.0, dataset="mnist"),
                     lambda d: ClassifierFreeGuidance(d, 1.0, interval=(100, 999), rescale=0.7)):
        x = ddim_sample(model, schedule, (2, 1, 28, 28), steps=2, clip_x0=True, model_kwargs={"y": y},
                        progress=False, generator=torch.Generator().manual_seed(0), guidance=guidance)
        assert x.shape == (2, 1, 28, 28) and x.abs().max() <= 1 and not x.requires_grad
    assert guide.training                                   # the guide's mode is restored
    with pytest.raises(ValueError, match="must lie in 0..9"):
        ddim_sample(model, schedule, (1, 1, 28, 28), steps=2, model_kwargs={"y": torch.tensor([10])},
                    progress=False, guidance=lambda d: ClassifierFreeGuidance(d, 1.0))


def test_a_learned_variance_passes_through_both_guidances(schedule, mixture):
    """Guidance moves the mean; a learned variance (log Sigma and frac) is the conditional model's."""
    base = Denoiser(mixture, schedule)

    def with_variance(x_t, t, y=None):
        pred = base(x_t, t, y=y)
        label = torch.full_like(t, K) if y is None else y            # None: the unconditional model
        frac = (label.to(x_t.dtype) / K).unsqueeze(-1).expand_as(x_t)  # differs between y and the null class
        return pred._replace(log_variance=-frac, frac=frac)

    with_variance.schedule = schedule

    x, t, y = _batch(schedule)
    cfg = ClassifierFreeGuidance(with_variance, 2.0, null_class=K)(x, t, y=y)
    cg = ClassifierGuidance(with_variance, _exact_classifier(mixture), 2.0)(x, t, y=y)
    for guided, own in ((cfg, with_variance(x, t, y=y)), (cg, with_variance(x, t))):   # CG guides p(x_t)
        torch.testing.assert_close(guided.frac, own.frac)
        torch.testing.assert_close(guided.log_variance, own.log_variance)
        assert not torch.allclose(guided.eps, own.eps)
