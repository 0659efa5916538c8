"""The 2-D MLP denoiser and the sinusoidal time embedding it uses."""

import math

import pytest
import torch

from lesson_lib.models.embeddings import sinusoidal_embedding
from lesson_lib.models.mlp import MLPDenoiser


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MLPDenoiser(hidden=32, num_blocks=2, time_dim=16)


def test_output_shape(model):
    x, t = torch.randn(7, 2), torch.randint(0, 1000, (7,))
    out = model(x, t)
    assert out.shape == (7, 2) and out.dtype == torch.float32
    assert MLPDenoiser(dim=3, hidden=8, num_blocks=1)(torch.randn(4, 3), t[:4]).shape == (4, 3)


def test_t_changes_the_output(model):
    x = torch.randn(5, 2)
    a = model(x, torch.full((5,), 10))
    b = model(x, torch.full((5,), 900))
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(model(x, torch.full((5,), 10)), a)   # and is deterministic


def test_examples_are_independent(model):
    """Each row's output depends only on that row (no batch statistics)."""
    x, t = torch.randn(6, 2), torch.randint(0, 1000, (6,))
    torch.testing.assert_close(model(x, t)[2:3], model(x[2:3], t[2:3]))


def test_every_parameter_gets_a_gradient(model):
    model(torch.randn(8, 2), torch.randint(0, 1000, (8,))).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_errors(model):
    x, t = torch.randn(3, 2), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        model(torch.randn(3, 3), t)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        model(torch.randn(3, 2, 1), t)


def test_config_round_trip(model):
    assert model.config == dict(dim=2, hidden=32, num_blocks=2, time_dim=16, prediction="eps")
    assert model.prediction == "eps"
    copy = MLPDenoiser.from_config(model.config)
    copy.load_state_dict(model.state_dict())
    x, t = torch.randn(4, 2), torch.randint(0, 1000, (4,))
    torch.testing.assert_close(copy(x, t), model(x, t))
    assert MLPDenoiser(prediction="v").prediction == "v"


def test_sinusoidal_embedding():
    """Vaswani et al., Sec. 3.5: sin(t w_i) then cos(t w_i), w_i = 10000^(-i / (dim/2))."""
    t = torch.tensor([0, 1, 7, 999])
    emb = sinusoidal_embedding(t, 8)
    assert emb.shape == (4, 8) and emb.dtype == torch.float32
    for row, tv in enumerate(t.tolist()):
        for i in range(4):
            w = 10000 ** (-i / 4)
            assert emb[row, i].item() == pytest.approx(math.sin(tv * w), abs=1e-5)
            assert emb[row, 4 + i].item() == pytest.approx(math.cos(tv * w), abs=1e-5)
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(t, 7)
    with pytest.raises(ValueError, match=r"t must have shape \(batch,\)"):
        sinusoidal_embedding(t[:, None], 8)
