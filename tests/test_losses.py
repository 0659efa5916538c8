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
