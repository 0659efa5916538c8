"""2-D toy datasets and the sliced Wasserstein metric."""

import math

import pytest
import torch

from lesson_lib.evaluation.metrics import sample_quality_2d, sliced_wasserstein
from lesson_lib.data.toy import DATASETS, checkerboard, eight_gaussians, make_2d, swiss_roll


# --- datasets ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shape_dtype_scale(name):
    x = make_2d(name, 5000, seed=0)
    assert x.shape == (5000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    std = x.std(dim=0)
    assert ((std > 0.8) & (std < 1.2)).all(), std                # roughly unit scale per coordinate
    assert x.mean(dim=0).abs().max() < 0.5
    assert x.abs().max() < 4


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_seeds_reproduce(name):
    assert torch.equal(make_2d(name, 100, seed=3), make_2d(name, 100, seed=3))
    assert not torch.equal(make_2d(name, 100, seed=3), make_2d(name, 100, seed=4))
    torch.manual_seed(0)
    a = make_2d(name, 100)
    b = make_2d(name, 100)                                       # no seed: the global RNG moves on
    assert not torch.equal(a, b)


def test_dataset_errors():
    with pytest.raises(ValueError, match="unknown 2-D dataset 'spiral'"):
        make_2d("spiral", 10)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n must be a positive"):
            swiss_roll(bad)


def test_checkerboard_lies_on_black_squares():
    x = checkerboard(5000, seed=0) * 1.15
    assert (x >= -2).all() and (x < 2).all()
    parity = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2
    assert (parity == 0).all()


def test_eight_gaussians_has_eight_modes():
    x = eight_gaussians(4000, seed=0)
    angle = torch.atan2(x[:, 1], x[:, 0])
    mode = torch.round(angle / (2 * math.pi / 8)) % 8
    counts = torch.bincount(mode.long(), minlength=8)
    assert (counts > 400).all()                                  # each mode holds ~1/8 of the points
    radius = x.norm(dim=1)
    assert abs(radius.mean().item() - 2 / math.sqrt(2 + 0.01)) < 0.02


def test_swiss_roll_noise_free_is_the_spiral():
    x = swiss_roll(1000, noise=0.0, seed=0) * 7
    u = x.norm(dim=1)                                            # |(u cos u, u sin u)| = u
    assert (u >= 1.5 * math.pi - 1e-4).all() and (u <= 4.5 * math.pi + 1e-4).all()
    torch.testing.assert_close(x, torch.stack([u * torch.cos(u), u * torch.sin(u)], dim=1), atol=1e-4, rtol=1e-4)


# --- sliced Wasserstein ----------------------------------------------------------------------

def test_sliced_wasserstein_zero_and_symmetric():
    x, y = swiss_roll(300, seed=0), swiss_roll(300, seed=1)
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, x[torch.randperm(300)]) == pytest.approx(0, abs=1e-12)   # order does not matter
    assert sliced_wasserstein(x, y) == pytest.approx(sliced_wasserstein(y, x), rel=1e-12)
    assert sliced_wasserstein(x, y) > 0
    assert sliced_wasserstein(x, y, seed=5) == sliced_wasserstein(x, y, seed=5)


@pytest.mark.parametrize("d, expected_abs_theta1", [(2, 2 / math.pi), (3, 0.5)])
def test_sliced_wasserstein_of_a_shift(d, expected_abs_theta1):
    """Shifting a cloud by c shifts every projection by theta^T c, so W_1 = |theta^T c| per
    direction and SW_1 = E|theta^T c| = |c| E|theta_1| by symmetry: 2/pi in 2-D (E|cos phi|
    for uniform phi), 1/2 in 3-D (theta_1 is uniform on [-1, 1], Archimedes)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, d, generator=g)
    c = torch.zeros(d)
    c[0], c[-1] = 0.3, -0.4                                      # |c| = 0.5
    k = 20_000
    sw = sliced_wasserstein(x + c, x, num_projections=k)
    std_abs_theta1 = math.sqrt(1 / d - expected_abs_theta1 ** 2)  # E theta_1^2 = 1/d
    assert abs(sw - 0.5 * expected_abs_theta1) < 4.5 * 0.5 * std_abs_theta1 / math.sqrt(k)
    # and it grows linearly with the shift
    assert sliced_wasserstein(x + 2 * c, x, num_projections=k) == pytest.approx(2 * sw, rel=1e-6)


def test_sliced_wasserstein_errors():
    with pytest.raises(ValueError, match="same number of points"):
        sliced_wasserstein(torch.zeros(10, 2), torch.zeros(11, 2))
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        sliced_wasserstein(torch.zeros(10), torch.zeros(10))


def test_sample_quality_2d():
    def data(n, seed):
        return swiss_roll(n, seed=seed)
    # Fresh data is as close to the data as data is: the ratio is 1 on average. One ratio of
    # two noisy distances varies a lot (0.45 to 2.6 over 30 seeds at n = 2000), so average.
    ratios = []
    for seed in range(6):
        fresh = sample_quality_2d(swiss_roll(500, seed=100 + seed), data, seed=seed)
        assert fresh["floor"] > 0
        assert fresh["ratio"] == pytest.approx(fresh["sw"] / fresh["floor"])
        assert 0.3 < fresh["ratio"] < 3
        ratios.append(fresh["ratio"])
    assert 0.6 < sum(ratios) / len(ratios) < 1.5
    noise = sample_quality_2d(torch.randn(500, 2, generator=torch.Generator().manual_seed(0)), data, seed=5)
    assert noise["ratio"] > 2.5                                 # Gaussian noise is far from a swiss roll
    assert noise["floor"] == fresh["floor"]                    # the floor depends only on n and seed


def test_out_of_range_fraction_and_median_nn_distance():
    from lesson_lib.evaluation.metrics import median_nn_distance, out_of_range_fraction
    data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    samples = torch.tensor([[0.5, 0.5], [0.0, 0.0], [2.0, 0.5], [0.5, -3.0]])
    assert out_of_range_fraction(samples, data) == 0.5
    assert out_of_range_fraction(samples, data, margin=1.0) == 0.25
    # nearest distances: sqrt(0.5), 0, sqrt(1.25), 3 -> median of the middle two
    expected = (0.5 ** 0.5 + 1.25 ** 0.5) / 2
    assert abs(median_nn_distance(samples, data) - expected) < 1e-6
    # one exploded point moves the median not at all
    far = samples.clone(); far[3] = torch.tensor([1e6, 1e6])
    assert abs(median_nn_distance(far, data) - expected) < 1e-6
    with pytest.raises(ValueError, match="margin"):
        out_of_range_fraction(samples, data, margin=-1)
