"""Tests for lesson_lib.evaluation.fid: FID (Heusel et al., 2017) and KID (Binkowski et al., 2018)."""

import os
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from lesson_lib.evaluation import fid
from lesson_lib.evaluation.fid import (InceptionExtractor, compute_metrics, extract_features,
                                       extrapolate_to_infinite_n, feature_statistics, fid_against_n,
                                       fid_from_features, fid_infinity, frechet_distance,
                                       inception_extractor, kid, mmd2, polynomial_kernel, real_floor)

DATA_DIR = os.environ.get("DDPM_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="set DDPM_DATA_DIR to the prepared datasets "
                                                     "(python shared/data/prepare.py DIR)")

def correlated_features(n, d, seed, shift=0.0):
    """n samples of a d-dim Gaussian with a random dense covariance A A^T / d."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ a.T / d ** 0.5 + shift


def scipy_fid(f1, f2):
    """Reference FID with scipy.linalg.sqrtm, as in the original TTUR / pytorch-fid code."""
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


class RandomConvNet(torch.nn.Module):
    """A fixed, randomly initialised conv net: a feature network that needs no weights file."""

    def __init__(self, in_channels=1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 32, 3, padding=1), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU())

    def features(self, x):
        return self.body(x).mean(dim=(2, 3))


def load_npz_images(name, split):
    data = np.load(os.path.join(DATA_DIR, f"{name}.npz"))
    x = torch.from_numpy(data[f"x_{split}"]).float() / 127.5 - 1
    x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x, torch.from_numpy(data[f"y_{split}"]).long()


def mnist_feature_network():
    try:
        from lesson_lib.evaluation.judges import load_classifier
        return load_classifier("mnist")
    except FileNotFoundError:
        return RandomConvNet()


# ----------------------------------------------------------------------------- FID

def test_feature_statistics_match_numpy():
    f = correlated_features(500, 16, seed=0, shift=3.0)
    mu, sigma = feature_statistics(f.float())
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), f.numpy().mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), np.cov(f.numpy(), rowvar=False), rtol=1e-5, atol=1e-7)


def test_fid_of_a_set_with_itself_is_zero():
    f = correlated_features(2000, 64, seed=1)
    mu, sigma = feature_statistics(f)
    scale = sigma.trace().item()
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * scale
    assert abs(fid_from_features(f, f)) < 1e-6 * scale


def test_fid_is_symmetric():
    f1, f2 = correlated_features(1000, 32, seed=2), correlated_features(800, 32, seed=3, shift=0.3)
    assert fid_from_features(f1, f2) == pytest.approx(fid_from_features(f2, f1), rel=1e-9)


def test_fid_of_diagonal_gaussians_matches_closed_form():
    g = torch.Generator().manual_seed(4)
    d = 20
    mu1, mu2 = torch.randn(d, generator=g), torch.randn(d, generator=g)
    s1, s2 = torch.rand(d, generator=g) + 0.1, torch.rand(d, generator=g) * 3 + 0.1
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    got = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expected.item(), rel=1e-6)


def test_fid_of_proportional_covariances_matches_closed_form():
    # Sigma_2 = c Sigma_1 (dense): (Sigma_1 Sigma_2)^{1/2} = sqrt(c) Sigma_1, so
    # FID = ||mu1 - mu2||^2 + Tr(Sigma_1) (1 - sqrt(c))^2.
    sigma1 = feature_statistics(correlated_features(3000, 16, seed=5))[1]
    mu1, mu2 = torch.zeros(16), torch.full((16,), 0.5)
    c = 2.5
    expected = 16 * 0.25 + sigma1.trace().item() * (1 - c ** 0.5) ** 2
    assert frechet_distance(mu1, sigma1, mu2, c * sigma1) == pytest.approx(expected, rel=1e-8)


def test_fid_agrees_with_scipy_sqrtm():
    f1 = correlated_features(2000, 64, seed=6)
    f2 = correlated_features(1500, 64, seed=7, shift=0.2) * 1.3
    assert fid_from_features(f1, f2) == pytest.approx(scipy_fid(f1, f2), rel=1e-6)
    # numpy inputs and float32 features give the same result (computed in float64)
    assert fid_from_features(f1.numpy(), f2.float()) == pytest.approx(scipy_fid(f1, f2), rel=1e-5)


def test_fid_is_stable_for_rank_deficient_covariances():
    # fewer samples than dimensions: singular covariances, where sqrtm of the product is fragile
    f1, f2 = correlated_features(40, 64, seed=8), correlated_features(40, 64, seed=9)
    value = fid_from_features(f1, f2)
    assert np.isfinite(value) and value > 0
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8 * feature_statistics(f1)[1].trace().item())


def test_fid_rejects_bad_input():
    mu, sigma = torch.zeros(3), torch.eye(3)
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(mu, sigma, torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(mu, sigma, mu, torch.eye(4))
    with pytest.raises(ValueError, match="features1 and features2 must have the same dimension"):
        fid_from_features(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(torch.randn(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        feature_statistics(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))


@needs_data
def test_fid_grows_monotonically_with_added_noise():
    images, _ = load_npz_images("mnist", "test")
    a, b = images[:300], images[300:600]
    network = mnist_feature_network()
    reference = extract_features(b, network)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(a.shape, generator=g)
    fids = [fid_from_features(extract_features((a + std * noise).clamp(-1, 1), network), reference)
            for std in (0.0, 0.25, 0.5, 1.0)]
    assert all(x < y for x, y in zip(fids, fids[1:])), fids


# ----------------------------------------------------------------------------- KID

def test_extrapolation_to_infinite_n_recovers_the_line_it_fits():
    sizes = [500, 1000, 2000, 5000]
    fid_inf, k = extrapolate_to_infinite_n(sizes, [2.0 + 300.0 / n for n in sizes])
    assert fid_inf == pytest.approx(2.0, abs=1e-12) and k == pytest.approx(300.0, rel=1e-12)
    # least squares: points off the line pull the intercept by the closed-form amount
    fid_inf, k = extrapolate_to_infinite_n([1, 2], [3.0, 2.0])       # through (1, 3) and (1/2, 2): y = 1 + 2x
    assert (fid_inf, k) == pytest.approx((1.0, 2.0))


def test_extrapolation_rejects_one_size_or_unequal_lengths():
    with pytest.raises(ValueError, match="two or more distinct"):
        extrapolate_to_infinite_n([1000, 1000], [1.0, 1.1])
    with pytest.raises(ValueError, match="same length"):
        extrapolate_to_infinite_n([500, 1000], [1.0])


def test_fid_against_n_draws_subsets_and_checks_its_arguments():
    a, b = correlated_features(300, 4, seed=0), correlated_features(200, 4, seed=0, shift=1.0)
    curve = fid_against_n(a, b, [50, 200], draws=3, seed=0)
    assert list(curve) == [50, 200] and all(len(v) == 3 for v in curve.values())
    assert curve == fid_against_n(a, b, [50, 200], draws=3, seed=0)          # seeded
    assert len(set(curve[50])) == 3                                          # the draws differ
    with pytest.raises(ValueError, match="each of sizes must be between 2 and 200"):
        fid_against_n(a, b, [201])
    with pytest.raises(ValueError, match="draws must be at least 1"):
        fid_against_n(a, b, [50], draws=0)
    with pytest.raises(ValueError, match="non-empty list"):
        fid_against_n(a, b, 50)


def test_less_diverse_samples_beat_the_floor_at_small_n_and_fid_infinity_ranks_them():
    """Isotropic Gaussians in d = 32: 'data' N(0, I), 'samples' N(0, 0.81 I), whose true FID is
    d (1 - 0.9)^2 = 0.32 (Frechet distance of two isotropic Gaussians). At n = 100 the samples
    score *below* the data-vs-data floor (their smaller covariance has a smaller bias); FID_inf
    gives each its true value, about 0.32 and 0."""
    g = torch.Generator().manual_seed(1)
    real = torch.randn(12000, 32, generator=g, dtype=torch.float64)
    fake = 0.9 * torch.randn(4000, 32, generator=g, dtype=torch.float64)
    train, test = real[:4000], real[4000:]
    floor_100 = sum(fid_against_n(train, test, [100], draws=10, seed=1)[100]) / 10
    fake_100 = sum(fid_against_n(fake, test, [100], draws=10, seed=1)[100]) / 10
    assert fake_100 < floor_100 - 0.2 and floor_100 > 5           # the bias dwarfs the true 0.32
    floor_inf = fid_infinity(train, test, seed=1)
    fake_inf = fid_infinity(fake, test, seed=1)
    assert abs(floor_inf["fid_infinity"]) < 0.05
    assert fake_inf["fid_infinity"] == pytest.approx(32 * 0.1 ** 2, abs=0.06)
    assert sorted(fake_inf["fids"]) == [800, 903, 1037, 1217, 1474, 1867, 2545, 4000]   # evenly spaced in 1/n
    assert fake_inf["slope"] > 0                                   # FID falls as n grows


def test_polynomial_kernel_and_mmd2_match_explicit_sums():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64) + 0.5

    def k(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    assert polynomial_kernel(x, y)[2, 5].item() == pytest.approx(k(x[2], y[5]))
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert mmd2(x, y).item() == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    xx_b = sum(k(x[i], x[j]) for i in range(m) for j in range(m)) / m ** 2
    yy_b = sum(k(y[i], y[j]) for i in range(n) for j in range(n)) / n ** 2
    assert mmd2(x, y, unbiased=False).item() == pytest.approx(xx_b + yy_b - 2 * xy, rel=1e-10)


def test_unbiased_mmd2_is_zero_on_average_for_one_distribution():
    g = torch.Generator().manual_seed(11)
    reps, m, d = 300, 40, 8
    unbiased, biased = [], []
    for _ in range(reps):
        x = torch.randn(m, d, generator=g, dtype=torch.float64)
        y = torch.randn(m, d, generator=g, dtype=torch.float64)
        unbiased.append(mmd2(x, y).item())
        biased.append(mmd2(x, y, unbiased=False).item())
    unbiased, biased = np.array(unbiased), np.array(biased)
    se_u, se_b = unbiased.std() / reps ** 0.5, biased.std() / reps ** 0.5
    assert abs(unbiased.mean()) < 3 * se_u
    assert biased.mean() > 10 * se_b          # the biased estimator is clearly positive


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    f1 = correlated_features(600, 16, seed=12)
    same_mean, same_std = kid(f1[:300], f1[300:], subset_size=100, num_subsets=50)
    assert abs(same_mean) < 3 * same_std
    other = correlated_features(600, 16, seed=13, shift=0.5)
    diff_mean, diff_std = kid(f1, other, subset_size=100, num_subsets=50)
    assert diff_mean > 0 and diff_mean > 5 * diff_std
    assert diff_mean > 10 * abs(same_mean)
    assert kid(f1, other, subset_size=100, num_subsets=50) == (diff_mean, diff_std)  # seeded
    # a subset larger than the data is capped at the smaller set
    assert np.isfinite(kid(f1[:50], other, subset_size=1000, num_subsets=3)[0])


def test_kid_rejects_bad_input():
    with pytest.raises(ValueError, match="subset_size"):
        kid(torch.randn(10, 3), torch.randn(10, 3), subset_size=0)
    with pytest.raises(ValueError, match="num_subsets"):
        kid(torch.randn(10, 3), torch.randn(10, 3), num_subsets=2.5)


# ----------------------------------------------------------------------------- features

def test_extract_features_batches_in_eval_mode_and_float32():
    net = RandomConvNet()
    net.body.append(torch.nn.Dropout(0.5))          # would randomise features in train mode
    net.train()
    images = torch.rand(23, 1, 28, 28) * 2 - 1
    whole = extract_features(images, net, batch_size=500)
    batched = extract_features(images, net, batch_size=5)
    assert whole.shape == (23, 64) and whole.dtype == torch.float32
    torch.testing.assert_close(whole, batched)
    assert net.training                                  # mode restored
    with torch.autocast("cpu", dtype=torch.bfloat16):    # autocast switched off inside
        in_autocast = extract_features(images, net)
    assert in_autocast.dtype == torch.float32
    torch.testing.assert_close(in_autocast, whole)


def test_extract_features_rejects_bad_images():
    net = RandomConvNet()
    with pytest.raises(TypeError, match="127.5"):
        extract_features(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), net)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        extract_features(torch.full((2, 1, 28, 28), 255.0), net)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        extract_features(torch.zeros(1, 28, 28), net)
    with pytest.raises(TypeError, match="features"):
        extract_features(torch.zeros(2, 1, 28, 28), torch.nn.Identity())


def test_compute_metrics_with_explicit_reference_and_extractor():
    net = RandomConvNet(seed=3)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(120, 1, 28, 28, generator=g) * 2 - 1
    fake = (torch.rand(100, 1, 28, 28, generator=g) * 2 - 1) * 0.5
    result = compute_metrics(fake, real, extractor=net, kid_subset_size=50, kid_num_subsets=10)
    assert set(result) >= {"fid", "kid_mean", "kid_std", "feature_network", "n_fake", "n_real"}
    assert result["feature_network"] == "RandomConvNet"
    assert (result["n_fake"], result["n_real"]) == (100, 120)
    f_fake, f_real = extract_features(fake, net), extract_features(real, net)
    assert result["fid"] == pytest.approx(fid_from_features(f_fake, f_real), rel=1e-9)
    assert result["kid_mean"] == pytest.approx(kid(f_fake, f_real, 50, 10)[0], rel=1e-9)
    with pytest.raises(ValueError, match="dataset"):
        compute_metrics(fake, real, dataset="imagenet", extractor=net)


@needs_data
def test_compute_metrics_defaults_and_real_floor_on_mnist():
    n = 200
    floor = real_floor("mnist", n, kid_num_subsets=20)
    assert floor["n"] == n and floor["fid"] > 0
    noise = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = compute_metrics(noise, dataset="mnist", kid_num_subsets=20)
    assert bad["n_real"] == n and bad["feature_network"] == floor["feature_network"]
    assert bad["fid"] > 10 * floor["fid"] and bad["kid_mean"] > 10 * abs(floor["kid_mean"])
    with pytest.raises(ValueError, match="n=20000"):
        real_floor("mnist", 20000)


# ----------------------------------------------------------------------------- Inception

def test_inception_extractor_returns_none_or_an_extractor_without_downloading():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extractor = inception_extractor(allow_download=False)
    if extractor is None:
        assert any("Inception-V3 FID is unavailable" in str(w.message) for w in caught)
    else:
        assert hasattr(extractor, "features") and "Inception" in extractor.name


def test_inception_wrapper_converts_images_for_each_backend():
    seen = {}

    def torch_fidelity_like(x):
        seen["tf"] = x
        return (x.float().mean(dim=(2, 3)),)

    def pytorch_fid_like(x):
        seen["pf"] = x
        return [x.mean(dim=(2, 3), keepdim=True)]

    images = torch.tensor([-1.0, 0.0, 1.0, 1.5]).reshape(1, 1, 2, 2)
    out = InceptionExtractor(torch_fidelity_like, "torch_fidelity").features(images)
    assert seen["tf"].dtype == torch.uint8 and seen["tf"].shape == (1, 3, 2, 2)
    assert seen["tf"][0, 0].flatten().tolist() == [0, 128, 255, 255]
    assert out.shape == (1, 3) and out.dtype == torch.float32
    out = InceptionExtractor(pytorch_fid_like, "pytorch_fid").features(images)
    torch.testing.assert_close(seen["pf"][0, 2].flatten(), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    assert out.shape == (1, 3)
    assert fid.extractor_name(InceptionExtractor(pytorch_fid_like, "pytorch_fid")).startswith("Inception")
