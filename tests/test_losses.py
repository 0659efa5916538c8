"""L_simple (Ho et al., Eq. 14) and its x0 / v variants."""

import pytest
import torch

from lesson_lib.diffusion.forward import q_sample, v_from_x0_eps
from lesson_lib.diffusion.losses import l_simple
from lesson_lib.diffusion.schedules import NoiseSchedule


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.linear(100)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    t = torch.randint(0, 100, (16,), generator=g)
    return x0, eps, t


def zero_model(x_t, t, **kwargs):
    return torch.zeros_like(x_t)


def test_true_eps_gives_zero(schedule, batch):
    x0, eps, t = batch
    calls = []

    def oracle(x_t, t_in):
        calls.append((x_t, t_in))
        return eps                                       # the noise that made x_t
    assert l_simple(oracle, schedule, x0, t, eps).item() == 0.0
    x_t, t_in = calls[0]
    assert torch.equal(t_in, t)
    torch.testing.assert_close(x_t, q_sample(schedule, x0, t, eps))


def test_zero_model_gives_mean_squared_target(schedule, batch):
    x0, eps, t = batch
    v = v_from_x0_eps(schedule, x0, eps, t)
    torch.testing.assert_close(l_simple(zero_model, schedule, x0, t, eps), (eps ** 2).mean())
    torch.testing.assert_close(l_simple(zero_model, schedule, x0, t, eps, prediction="x0"), (x0 ** 2).mean())
    torch.testing.assert_close(l_simple(zero_model, schedule, x0, t, eps, prediction="v"), (v ** 2).mean())


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_targets_for_x0_and_v(schedule, batch, prediction):
    """A model that outputs the right target has loss 0, and 2 * target has loss mean(target^2)."""
    x0, eps, t = batch
    target = x0 if prediction == "x0" else v_from_x0_eps(schedule, x0, eps, t)
    exact = l_simple(lambda x_t, t: target, schedule, x0, t, eps, prediction=prediction)
    assert exact.item() == pytest.approx(0, abs=1e-12)
    torch.testing.assert_close(l_simple(lambda x_t, t: 2 * target, schedule, x0, t, eps, prediction=prediction),
                               (target ** 2).mean())
    # the eps target would give a different loss for the same output: the target really changed
    assert l_simple(lambda x_t, t: target, schedule, x0, t, eps, prediction="eps").item() > 0.1


def test_draws_t_and_eps_when_not_given(schedule):
    seen = []

    def model(x_t, t):
        seen.append(t)
        return torch.zeros_like(x_t)
    torch.manual_seed(0)
    x0 = torch.zeros(4000, 2)
    loss = l_simple(model, schedule, x0)
    t = seen[0]
    assert t.dtype == torch.long and t.shape == (4000,)
    assert t.min().item() == 0 and t.max().item() == 99             # uniform over all T steps
    assert abs(t.float().mean().item() - 49.5) < 4 * 28.9 / 4000 ** 0.5
    # with x0 = 0, x_t = sqrt(1 - alpha-bar) eps and the zero model's loss is E[eps^2] = 1
    assert abs(loss.item() - 1.0) < 4 * (2 / 8000) ** 0.5


def test_model_kwargs_are_passed(schedule, batch):
    x0, eps, t = batch
    y = torch.arange(16)

    def conditional(x_t, t, y=None):
        assert y is not None and torch.equal(y, torch.arange(16))
        return torch.zeros_like(x_t)
    l_simple(conditional, schedule, x0, t, eps, y=y)


def test_returns_a_differentiable_scalar(schedule, batch):
    x0, eps, t = batch
    w = torch.zeros(3, requires_grad=True)
    loss = l_simple(lambda x_t, t: x_t * w, schedule, x0, t, eps)
    assert loss.ndim == 0
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_wrong_shape_output(schedule, batch):
    x0, eps, t = batch
    with pytest.raises(ValueError, match=r"returned shape \(16, 1\) but the eps target has shape \(16, 3\)"):
        l_simple(lambda x_t, t: x_t[:, :1], schedule, x0, t, eps)
    with pytest.raises(ValueError, match="same shape"):
        l_simple(lambda x_t, t: x_t.flatten(), schedule, x0, t, eps, prediction="v")


def test_bad_prediction(schedule, batch):
    x0, eps, t = batch
    with pytest.raises(ValueError, match="prediction must be one of"):
        l_simple(zero_model, schedule, x0, t, eps, prediction="epsilon")


# --- lambda_t (Ho et al., Eq. 12) and the weighted objective ---------------------------------

from lesson_lib.diffusion.forward import q_posterior                      # noqa: E402
from lesson_lib.diffusion.losses import WeightedEps, vlb_weights         # noqa: E402


def gaussian_kl(mean_q, var_q, mean_p, var_p):
    """KL( N(mean_q, var_q I) || N(mean_p, var_p I) ), summed over the last dimension (Eq. 8's closed form)."""
    return (0.5 * (torch.log(var_p / var_q) + var_q / var_p - 1) + (mean_q - mean_p) ** 2 / (2 * var_p)).sum(-1)


def p_theta_mean(schedule, x_t, t, eps_hat):
    """mu_theta = (x_t - beta_t / sqrt(1 - alpha-bar_t) eps_hat) / sqrt(alpha_t) (Eq. 11), written out here."""
    b, a, ab = (v[t][:, None] for v in (schedule.betas, schedule.alphas, schedule.alpha_bars))
    return (x_t - b / (1 - ab).sqrt() * eps_hat) / a.sqrt()


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_weight_is_the_kl_per_squared_eps_error(name, variance):
    """For t >= 1: KL(q(x_{t-1}|x_t,x_0) || p_theta) - (its value at eps_hat = eps) = lambda_t ||eps - eps_hat||^2."""
    schedule = NoiseSchedule.from_name(name, 50)
    g = torch.Generator().manual_seed(1)
    t = torch.arange(1, 50)
    x0, eps, eps_hat = (torch.randn(49, 3, generator=g, dtype=torch.float64) for _ in range(3))
    x_t = q_sample(schedule, x0, t, eps)
    mean_q, var_q, _ = q_posterior(schedule, x0, x_t, t)
    var_p = (schedule.betas if variance == "beta" else schedule.posterior_variance)[t][:, None]
    kl = gaussian_kl(mean_q, var_q, p_theta_mean(schedule, x_t, t, eps_hat), var_p)
    floor = gaussian_kl(mean_q, var_q, p_theta_mean(schedule, x_t, t, eps), var_p)
    torch.testing.assert_close((kl - floor) / ((eps - eps_hat) ** 2).sum(-1), vlb_weights(schedule, variance)[t],
                               rtol=1e-7, atol=0)
    if variance == "beta_tilde":
        torch.testing.assert_close(floor, torch.zeros_like(floor), atol=1e-9, rtol=0)  # C_t = 0
    else:
        assert (floor > 0).all()


def test_closed_forms():
    s = NoiseSchedule.linear(20)
    torch.testing.assert_close(vlb_weights(s, "beta"), s.betas / (2 * s.alphas * (1 - s.alpha_bars)))
    torch.testing.assert_close(vlb_weights(s, "beta_tilde")[1:],
                               s.betas[1:] / (2 * s.alphas[1:] * (1 - s.alpha_bars_prev[1:])))
    assert vlb_weights(s).dtype == torch.float64 and vlb_weights(s).shape == (20,)


def test_weight_at_t0_is_the_gaussian_decoder():
    """Entry 0 weighs L_0 = -log N(x_0; mu_theta(x_1), sigma_1^2): mu-tilde_1 = x_0, lambda = 1 / (2 alpha_1)
    for sigma_1^2 = beta_1; beta_tilde uses the clipped beta-tilde_2 (beta-tilde_1 = 0)."""
    s = NoiseSchedule.linear(30)
    g = torch.Generator().manual_seed(2)
    x0, eps, eps_hat = (torch.randn(8, 4, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.zeros(8, dtype=torch.long)
    x_1 = q_sample(s, x0, t, eps)
    assert s.posterior_variance[0] == 0
    torch.testing.assert_close(q_posterior(s, x0, x_1, t)[0], x0)
    for variance, sigma2 in (("beta", s.betas[0]), ("beta_tilde", s.posterior_variance[1])):
        mu = p_theta_mean(s, x_1, t, eps_hat)
        nll = ((x0 - mu) ** 2).sum(-1) / (2 * sigma2)                 # -log N(x0; mu, sigma2) minus its constant
        torch.testing.assert_close(nll / ((eps - eps_hat) ** 2).sum(-1),
                                   torch.full((8,), vlb_weights(s, variance)[0].item(), dtype=torch.float64))
    assert vlb_weights(s, "beta")[0].item() == pytest.approx(1 / (2 * s.alphas[0].item()))
    assert torch.isfinite(vlb_weights(NoiseSchedule.linear(1), "beta_tilde")).all()


def test_where_the_weight_is_largest():
    """Linear schedule: lambda_t falls over the first steps and is largest at t = 1; cosine: the clipped
    last beta makes it largest at t = T."""
    lin, cos = vlb_weights(NoiseSchedule.linear(1000)), vlb_weights(NoiseSchedule.cosine(1000))
    assert int(lin.argmax()) == 0 and lin[0] > 40 * lin[-1] and (lin[1:100] < lin[:99]).all()
    assert int(cos.argmax()) == 999 and cos[-1] / cos[500] > 100


def test_bad_variance():
    with pytest.raises(ValueError, match="variance must be one of"):
        vlb_weights(NoiseSchedule.linear(10), "fixedlarge")
    with pytest.raises(ValueError, match="variance must be one of"):
        WeightedEps(NoiseSchedule.linear(10), variance="learned")
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        vlb_weights(torch.ones(10))


class _Eps(torch.nn.Module):
    prediction = "eps"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x_t, t):
        return self.w * x_t + 0.01 * t[:, None].float()


@pytest.mark.parametrize("normalize", [True, False])
def test_weighted_objective_is_the_weighted_sum_of_per_example_losses(normalize):
    schedule, model = NoiseSchedule.linear(40), _Eps()
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    objective = WeightedEps(schedule, "beta", normalize=normalize)
    loss = objective(model, model, x0, {}, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)                                   # the same draws, in the same order
    t = torch.randint(0, 40, (64,), generator=g)
    eps = torch.empty_like(x0).normal_(generator=g)
    weights = vlb_weights(schedule)
    weights = weights / weights.mean() if normalize else weights
    per_example = torch.stack([l_simple(model, schedule, x0[i:i + 1], t[i:i + 1], eps[i:i + 1]) for i in range(64)])
    torch.testing.assert_close(loss, (weights[t].float() * per_example).mean())
    assert not torch.allclose(loss, per_example.mean())                    # the weights did something
    loss.backward()
    assert model.w.grad is not None


def test_weighted_objective_with_unit_weights_is_l_simple():
    """A schedule whose lambda_t is the same for every t: the normalised objective is L_simple itself."""
    schedule, model = NoiseSchedule.linear(1), _Eps()
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(4))
    from lesson_lib.diffusion.losses import LSimple
    a = WeightedEps(schedule)(model, model, x0, {}, torch.Generator().manual_seed(6))
    b = LSimple(schedule)(model, model, x0, {}, torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b)


def test_weighted_objective_config_and_checks():
    ten = NoiseSchedule.linear(10)
    assert WeightedEps(ten, "beta_tilde", normalize=False).config() == {"name": "weighted_eps",
                                                                        "variance": "beta_tilde", "normalize": False}
    with pytest.raises(ValueError, match="unconditional"):
        model = _Eps()
        WeightedEps(ten)(model, model, torch.zeros(4, 2), {"y": torch.zeros(4, dtype=torch.long)}, torch.Generator())
    bad = _Eps()
    bad.forward = lambda x_t, t: x_t[:, :1]
    with pytest.raises(ValueError, match="the model returned shape"):
        WeightedEps(ten)(bad, bad, torch.zeros(4, 2), {}, torch.Generator())
