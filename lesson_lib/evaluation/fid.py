"""Sample-quality metrics for images: FID and KID in the feature space of a trained network.

Both metrics embed real and generated images with a fixed feature network phi and compare the
two clouds of feature vectors.

FID, the Frechet Inception Distance (Heusel et al., 2017, Eq. 6), fits a Gaussian to each
cloud and reports the Frechet (2-Wasserstein) distance between the two Gaussians:

    FID = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^{1/2}).

KID, the Kernel Inception Distance (Binkowski et al., 2018, Sec. 3), is the squared maximum
mean discrepancy (MMD^2) between the clouds under the cubic polynomial kernel
k(x, y) = (x . y / d + 1)^3, estimated without bias and averaged over random subsets.

The papers use Inception-V3 pool3 features (d = 2048). This course runs offline, so by default
phi is the penultimate layer of the course's own dataset classifier (:mod:`lesson_lib.models.classifiers`).
Figures computed with it are NOT comparable with Inception FIDs in papers; compare them with
each other at the same sample count n, next to the real-vs-real floor (:func:`real_floor`).
FID is biased upwards for small n, so never compare FIDs computed from different n; the bias
also depends on the samples (less diverse samples, a smaller covariance, a smaller bias), so at
small n a model can score below the floor. :func:`fid_infinity` removes the bias to first order.

A feature extractor is any object with a ``features(x)`` method that maps a batch of images
in [-1, 1], shape (B, C, H, W), to a (B, d) tensor: the course classifiers, the
:class:`InceptionExtractor` of :func:`inception_extractor`, or your own network.

Why one module of about 500 lines: FID and KID share their inputs (features of the same two
image sets), their bias at small n and the real-data floor they are read against; one file
keeps the two estimators, FID against n, the floor and the optional Inception back end side by side.
"""

import os
import warnings

import torch

from ..arguments import choice, images as check_images, integer

DATASETS = ("mnist", "cifar10")


# ----------------------------------------------------------------------------- FID

def _as_float64(value, name):
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a tensor or array of numbers, got "
                            f"{type(value).__name__}") from err
    return value.detach().to("cpu", torch.float64)


def _clean_eigenvalues(eigenvalues):
    """Set eigenvalues of a PSD matrix that are zero up to rounding (|lambda| <= d * eps *
    lambda_max, which includes slightly negative ones) to exactly zero.

    sqrt is infinitely steep at 0, so leaving rounding noise of size 1e-16 there would turn into
    errors of size 1e-8 per eigenvalue once square-rooted (rank-deficient covariances, N < d).
    """
    tolerance = len(eigenvalues) * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > tolerance, eigenvalues, torch.zeros_like(eigenvalues))


def _psd_sqrt(sigma):
    """The symmetric square root of a symmetric positive semi-definite matrix, via eigh."""
    eigenvalues, eigenvectors = torch.linalg.eigh(sigma)
    return (eigenvectors * _clean_eigenvalues(eigenvalues).sqrt()) @ eigenvectors.T


def trace_sqrt_product(sigma1, sigma2):
    """Tr((Sigma_1 Sigma_2)^{1/2}) for symmetric PSD Sigma_1, Sigma_2, stably.

    Sigma_1 Sigma_2 is not symmetric, but it is similar to the symmetric PSD matrix
    M = Sigma_1^{1/2} Sigma_2 Sigma_1^{1/2} (conjugate by Sigma_1^{1/2}), so both have the same
    non-negative eigenvalues lambda_i and Tr((Sigma_1 Sigma_2)^{1/2}) = sum_i sqrt(lambda_i).
    """
    root1 = _psd_sqrt(sigma1)
    m = root1 @ sigma2 @ root1
    m = (m + m.T) / 2                                   # remove rounding asymmetry
    return _clean_eigenvalues(torch.linalg.eigvalsh(m)).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al., 2017, Eq. 6).

        d^2 = ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^{1/2})

    Computed in float64; accepts tensors or numpy arrays. Returns a Python float (>= 0 up to
    rounding).
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1.dim() != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length d, got shapes "
                         f"{tuple(mu1.shape)} and {tuple(mu2.shape)}")
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"{name} must be a ({d}, {d}) covariance matrix to match the means, "
                             f"got shape {tuple(sigma.shape)}")
        if not torch.isfinite(sigma).all():
            raise ValueError(f"{name} contains NaN or inf; check the features for NaNs")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    mean_term = (mu1 - mu2).pow(2).sum()
    cov_term = sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product(sigma1, sigma2)
    return (mean_term + cov_term).item()


def _check_features(features, name):
    features = _as_float64(features, name)
    if features.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (N, d) array of feature vectors, got shape "
                         f"{tuple(features.shape)}")
    if len(features) < 2:
        raise ValueError(f"{name} needs at least 2 feature vectors, got {len(features)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or inf; check the images and the feature network")
    return features


def feature_statistics(features):
    """The mean mu (d,) and the unbiased covariance Sigma (d, d) of (N, d) features, in float64."""
    features = _check_features(features, "features")
    mu = features.mean(dim=0)
    centered = features - mu
    sigma = centered.T @ centered / (len(features) - 1)
    return mu, sigma


def fid_from_features(features1, features2):
    """FID between two sets of (N, d) feature vectors: fit a Gaussian to each, then
    :func:`frechet_distance`."""
    features1 = _check_features(features1, "features1")
    features2 = _check_features(features2, "features2")
    if features1.shape[1] != features2.shape[1]:
        raise ValueError(f"features1 and features2 must have the same dimension d, got "
                         f"{features1.shape[1]} and {features2.shape[1]}")
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# ----------------------------------------------------------------------------- FID against n

def fid_against_n(features1, features2, sizes, draws=1, seed=0):
    """FID of random subsets at several sample counts: ``{n: [FID of each draw]}``.

    For each n in ``sizes``, ``draws`` times: n vectors drawn without replacement from each set,
    then :func:`fid_from_features`. It shows the small-n bias directly: the same two sets give a
    larger FID the fewer vectors it sees.
    """
    features1 = _check_features(features1, "features1")
    features2 = _check_features(features2, "features2")
    draws = integer(draws, "draws", minimum=1)
    largest = min(len(features1), len(features2))
    if isinstance(sizes, (int, str)) or len(sizes) == 0:
        raise ValueError(f"sizes must be a non-empty list of sample counts, got sizes={sizes!r}")
    sizes = [integer(n, "each of sizes", minimum=2, maximum=largest,
                     hint=f"a subset needs 2 vectors and cannot exceed the smaller set ({largest})") for n in sizes]
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for n in sizes:
        result[n] = [fid_from_features(features1[torch.randperm(len(features1), generator=generator)[:n]],
                                       features2[torch.randperm(len(features2), generator=generator)[:n]])
                     for _ in range(draws)]
    return result


def extrapolate_to_infinite_n(sizes, fids):
    """Least-squares fit of FID(n) = FID_inf + k / n; returns ``(FID_inf, k)`` as floats.

    The bias of FID is, to first order, proportional to 1/n, so FID is a straight line in 1/n and
    its intercept at 1/n = 0 is an estimate free of that bias (Chong & Forsyth, 2020, "Effectively
    unbiased FID": FID_inf from FIDs at 15 values of n). ``fids[i]`` is the FID at ``sizes[i]``;
    the fit needs at least two distinct sizes.
    """
    x = 1.0 / torch.as_tensor([float(n) for n in sizes], dtype=torch.float64)
    y = torch.as_tensor([float(f) for f in fids], dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"sizes and fids must have the same length, got {len(x)} and {len(y)}")
    if len(torch.unique(x)) < 2:
        raise ValueError(f"the fit needs FIDs at two or more distinct sample counts, got sizes={list(sizes)!r}")
    dx = x - x.mean()
    k = (dx * (y - y.mean())).sum() / dx.pow(2).sum()
    return (y.mean() - k * x.mean()).item(), k.item()


def fid_infinity(features1, features2, sizes=None, draws=5, seed=0):
    """FID extrapolated to infinitely many samples, FID_inf (Chong & Forsyth, 2020).

    FIDs of random subsets (:func:`fid_against_n`, ``draws`` per size) at ``sizes`` (default: 8
    sample counts evenly spaced in 1/n from n_max / 5 to n_max = the smaller set's size), then
    :func:`extrapolate_to_infinite_n` through all of them. Unlike FID at one n, FID_inf of two
    sets of the same distribution is close to 0 (to first order in 1/n; it can come out slightly
    negative), so FID_inf of sets of different sizes can be compared, and a generator whose
    samples are less diverse than the data no longer gains from the smaller bias of its own
    covariance. Subsets of n close to a set's size overlap, so the fit has little to go on near
    the sets' sizes; it needs a few thousand vectors to be worth more than the FID at that n.
    Returns ``{"fid_infinity", "slope", "fids"}`` with ``fids = {n: mean FID over the draws}``.
    """
    if sizes is None:
        largest = min(len(features1), len(features2))
        if largest < 10:
            raise ValueError(f"FID_inf needs at least 10 vectors in each set, got {largest}")
        inverse = torch.linspace(1 / largest, 5 / largest, 8, dtype=torch.float64)
        sizes = sorted({int(round(1 / v)) for v in inverse.tolist()})
    fids = fid_against_n(features1, features2, sizes, draws, seed)
    means = {n: sum(values) / len(values) for n, values in fids.items()}
    fid_inf, slope = extrapolate_to_infinite_n(list(means), list(means.values()))
    return {"fid_infinity": fid_inf, "slope": slope, "fids": means}


# ----------------------------------------------------------------------------- KID

def polynomial_kernel(x, y):
    """The cubic polynomial kernel of Binkowski et al. (2018): k(x, y) = (x . y / d + 1)^3.

    ``x`` (n, d) and ``y`` (m, d) give the (n, m) matrix of kernel values.
    """
    d = x.shape[1]
    return (x @ y.T / d + 1) ** 3


def mmd2(x, y, unbiased=True):
    """The squared MMD between samples x (m, d) and y (n, d) with :func:`polynomial_kernel`.

    Unbiased (Gretton et al., 2012, Eq. 3; Binkowski et al., 2018, Eq. 2): the within-set means
    leave out the diagonal k(x_i, x_i),

        MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
                  - 2 sum_{i, j} k(x_i, y_j) / (m n),

    so its expectation is exactly MMD^2 (zero for one distribution; it can come out negative).
    The biased version keeps the diagonal (divides by m^2 and n^2) and is > 0 on average.
    """
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    if unbiased:
        xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
        yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    else:
        xx, yy = k_xx.mean(), k_yy.mean()
    return xx + yy - 2 * k_xy.mean()


def kid(features1, features2, subset_size=1000, num_subsets=100, seed=0):
    """KID (Binkowski et al., 2018): the unbiased MMD^2 averaged over random subsets.

    Each of ``num_subsets`` rounds draws ``subset_size`` vectors from each set without
    replacement (capped at the size of the smaller set) and computes :func:`mmd2`. Returns
    ``(mean, std)`` over the rounds, as Python floats; ``std`` is the spread of one subset's
    estimate, not the standard error of the mean.
    """
    features1 = _check_features(features1, "features1")
    features2 = _check_features(features2, "features2")
    if features1.shape[1] != features2.shape[1]:
        raise ValueError(f"features1 and features2 must have the same dimension d, got "
                         f"{features1.shape[1]} and {features2.shape[1]}")
    for name, value in (("subset_size", subset_size), ("num_subsets", num_subsets)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    m = min(subset_size, len(features1), len(features2))
    if m < 2:
        raise ValueError(f"subset_size must be at least 2, got subset_size={subset_size!r}")
    generator = torch.Generator().manual_seed(seed)
    estimates = torch.empty(num_subsets, dtype=torch.float64)
    for i in range(num_subsets):
        x = features1[torch.randperm(len(features1), generator=generator)[:m]]
        y = features2[torch.randperm(len(features2), generator=generator)[:m]]
        estimates[i] = mmd2(x, y, unbiased=True)
    std = estimates.std().item() if num_subsets > 1 else 0.0
    return estimates.mean().item(), std


# ----------------------------------------------------------------------------- features

def _check_images(images, name):
    """Finite float images in [-1, 1] of shape (N, C, H, W) (overshoot is clipped, 0..255 refused)."""
    if isinstance(images, torch.Tensor) and images.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}")
    check_images(images, name)


def _default_device(extractor):
    try:
        return next(extractor.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def extract_features(images, extractor, batch_size=500, device=None):
    """Features of ``images`` (N, C, H, W) in [-1, 1] from ``extractor.features``, (N, d) float32.

    Runs in batches of ``batch_size`` on ``device`` (default: the extractor's), under
    ``torch.no_grad`` with the extractor in eval mode (its mode is restored afterwards) and
    autocast disabled, so features are computed in float32 even inside a bf16 autocast region.
    Values outside [-1, 1] are clipped, as saving the samples to 8-bit images would.
    """
    _check_images(images, "images")
    if not hasattr(extractor, "features"):
        raise TypeError(f"extractor must have a features(x) method (e.g. load_classifier(...) or "
                        f"inception_extractor()), got {type(extractor).__name__}")
    device = torch.device(device) if device is not None else _default_device(extractor)
    was_training = getattr(extractor, "training", False)
    if hasattr(extractor, "eval"):
        extractor.eval()
    chunks = []
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].to(device, torch.float32).clamp(-1, 1)
                f = extractor.features(x)
                if f.dim() != 2 or len(f) != len(x):
                    raise ValueError(f"extractor.features must return a (B, d) tensor, got shape "
                                     f"{tuple(f.shape)} for a batch of {len(x)} images")
                chunks.append(f.float().cpu())
    finally:
        if was_training:
            extractor.train()
    return torch.cat(chunks)


def extractor_name(extractor):
    """A short name of the feature network for reports (its ``name`` attribute or class name)."""
    return getattr(extractor, "name", None) or type(extractor).__name__


def _check_dataset(dataset):
    choice(dataset, "dataset", DATASETS)


def _load_extractor(dataset, extractor, device):
    if extractor is not None:
        return extractor
    from .judges import load_classifier  # lazily: fid.py itself needs no weights

    return load_classifier(dataset, device=device or "cpu")


def _load_images(dataset, split, data_dir):
    from ..data import images as datasets  # lazily: only the default reference sets need the data

    loader = {"mnist": datasets.load_mnist, "cifar10": datasets.load_cifar10}[dataset]
    images, _ = loader(split, data_dir=data_dir, as_uint8=True)
    return images


def _random_subset(images, n, seed, name):
    """n images drawn without replacement, converted from uint8 to [-1, 1]."""
    if n > len(images):
        raise ValueError(f"n={n} is larger than the {len(images)} {name} images available; "
                         f"choose n <= {len(images)}")
    generator = torch.Generator().manual_seed(seed)
    subset = images[torch.randperm(len(images), generator=generator)[:n]]
    return subset.float() / 127.5 - 1 if subset.dtype == torch.uint8 else subset


def reference_images(dataset, split, n, seed=0, data_dir=None):
    """``n`` images of ``dataset``'s ``split`` drawn without replacement with ``seed``, in [-1, 1]: the
    references these functions draw, so a caller can hold exactly the images they compare.
    :func:`compute_metrics` compares with the test split at ``seed``; :func:`real_floor` compares the
    training split at ``seed`` with the test split at ``seed + 1``."""
    _check_dataset(dataset)
    return _random_subset(_load_images(dataset, split, data_dir), n, seed, f"{dataset} {split}")


def _metrics(features1, features2, name, kid_subset_size, kid_num_subsets, seed):
    if kid_subset_size is None:  # subsets of all n vectors would all be the same (std = 0)
        kid_subset_size = max(2, min(1000, min(len(features1), len(features2)) // 2))
    kid_mean, kid_std = kid(features1, features2, kid_subset_size, kid_num_subsets, seed)
    return dict(fid=fid_from_features(features1, features2), kid_mean=kid_mean, kid_std=kid_std,
                feature_network=name, n1=len(features1), n2=len(features2))


def compute_metrics(fake_images, real_images=None, dataset="mnist", extractor=None,
                    batch_size=500, device=None, data_dir=None, kid_subset_size=None,
                    kid_num_subsets=100, seed=0):
    """FID and KID of generated images against real ones.

    ``fake_images`` and ``real_images`` are (N, C, H, W) in [-1, 1]. With ``real_images=None``
    the reference is a random sample of the dataset's test split of the same size as the
    fakes, which is exactly the setting of :func:`real_floor` (train vs test at the same n), so
    the two numbers can be shown side by side. ``extractor`` defaults to the shipped classifier
    for ``dataset``. KID uses ``kid_num_subsets`` subsets of ``kid_subset_size`` vectors
    (default: min(1000, n/2), so that the subsets differ and ``kid_std`` means something; the
    estimate is unbiased for any subset size). Returns a dict with ``fid``, ``kid_mean``,
    ``kid_std``, ``feature_network`` and the sample counts ``n_fake`` and ``n_real``.
    """
    _check_dataset(dataset)
    _check_images(fake_images, "fake_images")
    if real_images is None:
        real_images = reference_images(dataset, "test", len(fake_images), seed, data_dir)
    extractor = _load_extractor(dataset, extractor, device)
    fake = extract_features(fake_images, extractor, batch_size, device)
    real = extract_features(real_images, extractor, batch_size, device)
    result = _metrics(fake, real, extractor_name(extractor), kid_subset_size, kid_num_subsets, seed)
    result["n_fake"], result["n_real"] = result.pop("n1"), result.pop("n2")
    return result


def real_floor(dataset, n, extractor=None, batch_size=500, device=None, data_dir=None,
               kid_subset_size=None, kid_num_subsets=100, seed=0):
    """The real-vs-real floor: FID/KID between ``n`` training and ``n`` test images.

    This is what a perfect generator (one that samples the data distribution itself) would
    score against ``n`` test images, so it is the best figure one can expect at this ``n``;
    FID's small-sample bias makes it well above 0 for small n. Show it next to every reported
    FID. Returns the same dict as :func:`compute_metrics` with ``n`` instead of the counts.
    """
    _check_dataset(dataset)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got n={n!r}")
    train = reference_images(dataset, "train", n, seed, data_dir)
    test = reference_images(dataset, "test", n, seed + 1, data_dir)
    extractor = _load_extractor(dataset, extractor, device)
    result = _metrics(extract_features(train, extractor, batch_size, device),
                      extract_features(test, extractor, batch_size, device),
                      extractor_name(extractor), kid_subset_size, kid_num_subsets, seed)
    del result["n1"], result["n2"]
    result["n"] = n
    return result


# ----------------------------------------------------------------------------- Inception-V3

# File names under ``torch.hub.get_dir()/checkpoints`` where the two packages cache the
# TF-ported Inception-V3 FID weights after their first download.
_INCEPTION_CHECKPOINTS = {
    "torch_fidelity": "weights-inception-2015-12-05-6726825d.pth",
    "pytorch_fid": "pt_inception-2015-12-05-6726825d.pth",
}


class InceptionExtractor(torch.nn.Module):
    """Inception-V3 pool3 features (d = 2048) for images in [-1, 1], as in the papers.

    Wraps torch-fidelity's ``FeatureExtractorInceptionV3`` (the network torchmetrics' FID uses)
    or pytorch-fid's ``InceptionV3``; both resize to 299x299 themselves. Gray images are
    repeated to 3 channels.
    """

    def __init__(self, network, backend):
        super().__init__()
        self.network = network
        self.backend = backend
        self.name = f"InceptionV3-pool3 ({backend})"

    def features(self, x):
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if self.backend == "torch_fidelity":               # expects uint8 in [0, 255]
            x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            return self.network(x)[0].float()
        return self.network((x.clamp(-1, 1) + 1) / 2)[0].flatten(1).float()   # [0, 1] in


def inception_extractor(device="cpu", allow_download=False, weights_path=None):
    """An :class:`InceptionExtractor` if a backend and its weights are available, else None.

    Tries torch-fidelity (``pip install torch-fidelity``, also installed by
    ``torchmetrics[image]``) and then pytorch-fid. Weights come from ``weights_path`` (a
    torch-fidelity .pth file) or the torch hub cache; they are downloaded only with
    ``allow_download=True`` (e.g. on Colab). On failure a warning says why and None is returned.
    """
    def unavailable(reason):
        warnings.warn(f"Inception-V3 FID is unavailable: {reason}. The metrics fall back to the "
                      f"course classifiers' features (see docs/metrics.md).", stacklevel=3)
        return None

    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    tried = []
    for backend in ("torch_fidelity", "pytorch_fid"):
        try:
            if backend == "torch_fidelity":
                from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
            else:
                from pytorch_fid.inception import InceptionV3
        except ImportError:
            tried.append(f"{backend} is not installed")
            continue
        cached = os.path.join(checkpoints, _INCEPTION_CHECKPOINTS[backend])
        path = weights_path if (weights_path and backend == "torch_fidelity") else cached
        if not os.path.exists(path) and not allow_download:
            tried.append(f"{backend} is installed but its weights are not at {path}; pass "
                         f"allow_download=True on a machine with internet")
            continue
        try:
            if backend == "torch_fidelity":
                network = FeatureExtractorInceptionV3(
                    "inception-v3-compat", ["2048"],
                    feature_extractor_weights_path=path if os.path.exists(path) else None)
            else:
                network = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        except Exception as err:  # a failed download or a broken file: report and fall back
            tried.append(f"{backend} failed to load its weights ({type(err).__name__}: {err})")
            continue
        return InceptionExtractor(network, backend).to(device).eval()
    return unavailable("; ".join(tried) + " (pip install torch-fidelity or pytorch-fid)")
