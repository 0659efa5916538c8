"""Sample quality for 2-D data, a memorisation check and a diversity measure for images, and the
peak signal-to-noise ratio of a reconstruction (:func:`psnr`).

How close are a model's samples to the data? For two point clouds we use the sliced
Wasserstein distance (Rabin et al., 2011; Bonneel et al., 2015): project both clouds on many
random directions theta, where the 1-D Wasserstein-1 distance is just the mean gap between
sorted projections, and average over directions:

    SW_1(P, Q) = E_theta [ W_1( theta^T P, theta^T Q ) ].

A finite sample of the data is not at distance 0 from another finite sample of the data,
so a figure means nothing alone: :func:`sample_quality_2d` reports it next to the
data-vs-data *floor*, the distance between two independent data samples of the same size.
A ratio near 1 means the model's samples are as close to the data as the data is to itself.
"""

import torch


def sliced_wasserstein(x, y, num_projections=512, seed=0):
    """The sliced Wasserstein-1 distance between point clouds ``x`` and ``y`` of shape ``(n, d)``.

    Both clouds must hold the same number of points (the 1-D distance is then the mean
    absolute gap between sorted projections). Directions are drawn from a fixed ``seed``
    so the same inputs always give the same figure.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) point clouds of the same dimension, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of points, got {x.shape[0]} and {y.shape[0]}; "
                         f"subsample the larger one")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], num_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px = torch.sort(x.detach().cpu().double() @ theta, dim=0).values
    py = torch.sort(y.detach().cpu().double() @ theta, dim=0).values
    return (px - py).abs().mean().item()


def sample_quality_2d(samples, sample_data, seed=0, floor_pairs=5):
    """Compare ``samples`` (n, 2) with the data, next to the data-vs-data floor.

    ``sample_data(n, seed)`` draws ``n`` fresh data points (e.g.
    ``lambda n, seed: swiss_roll(n, seed=seed)``). The floor is itself a random quantity, so
    it is averaged over ``floor_pairs`` independent pairs of data samples. Returns a dict
    with ``sw`` (model vs data), ``floor`` (data vs independent data) and their ``ratio``.
    """
    n = samples.shape[0]
    reference = sample_data(n, seed=10_000 + seed)
    sw = sliced_wasserstein(samples, reference, seed=seed)
    floor = sum(sliced_wasserstein(sample_data(n, seed=20_000 + 100 * seed + i), reference, seed=seed)
                for i in range(floor_pairs)) / floor_pairs
    return {"sw": sw, "floor": floor, "ratio": sw / floor}


def nearest_neighbours(queries, data, batch_size=1024):
    """For each query (N, ...) the index of, and Euclidean distance to, its nearest neighbour
    in ``data`` (M, ...), comparing flattened pixels.

    A generative model that memorised its training set produces samples that sit much closer
    to some training image than fresh test images do: compare the two distance distributions
    (lesson 4). Returns ``(indices, distances)``.
    """
    q = queries.detach().flatten(1).float()
    best_d = torch.full((len(q),), float("inf"), device=q.device)
    best_i = torch.zeros(len(q), dtype=torch.long, device=q.device)
    for start in range(0, len(data), batch_size):
        chunk = data[start:start + batch_size].to(q.device).flatten(1).float()
        d = torch.cdist(q, chunk)
        m, i = d.min(dim=1)
        better = m < best_d
        best_d = torch.where(better, m, best_d)
        best_i = torch.where(better, i + start, best_i)
    return best_i, best_d


def within_class_spread(features, labels):
    """Diversity within classes: the mean Euclidean distance between two feature vectors
    (e.g. :func:`lesson_lib.evaluation.fid.extract_features`) of the same class, averaged
    over the classes. Guidance trades it for class fidelity: identical samples score 0.
    ``features`` (N, d), ``labels`` (N,); each class needs at least two examples."""
    features = features.detach().cpu().double()
    labels = torch.as_tensor(labels).cpu()
    spreads = []
    for k in labels.unique().tolist():
        f = features[labels == k]
        if len(f) < 2:
            raise ValueError(f"class {k} has {len(f)} example(s); the spread needs at least two per class")
        d = torch.cdist(f, f)
        spreads.append(d.sum().item() / (len(f) * (len(f) - 1)))
    return sum(spreads) / len(spreads)


def out_of_range_fraction(samples, data, margin=0.0):
    """The fraction of ``samples`` (N, d) outside the data's bounding box, widened by ``margin``
    on every side: a handful of exploded points can dominate a mean distance such as
    :func:`sliced_wasserstein`, so report this count beside it (lesson 2).
    """
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got margin={margin!r}")
    lo = data.min(dim=0).values - margin
    hi = data.max(dim=0).values + margin
    outside = ((samples < lo) | (samples > hi)).any(dim=1)
    return outside.double().mean().item()


def median_nn_distance(samples, data):
    """The median Euclidean distance from each sample to its nearest data point: a robust
    companion to a mean distance, unmoved by a few far-off samples (lesson 2).
    """
    _, d = nearest_neighbours(samples, data)
    return d.quantile(0.5).item()   # the mean of the middle two when N is even


def psnr(x, reference, data_range=2.0):
    """The peak signal-to-noise ratio of each image ``x[i]`` against ``reference[i]``, in decibels:

        PSNR = 10 log10( data_range^2 / mean over pixels of (x - reference)^2 )

    with ``data_range`` = 2 for images in [-1, 1] (the same figure as 255 for 0..255). +3 dB halves
    the mean squared error. Returns an (N,) float64 tensor (inf where the two are identical);
    report the mean over images, as reconstruction PSNRs are.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(reference, torch.Tensor) or x.shape != reference.shape:
        shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in (x, reference)]
        raise ValueError(f"x and reference must be tensors of the same shape (N, ...), got {shapes[0]} and {shapes[1]}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive (2 for images in [-1, 1], 255 for 0..255), got {data_range!r}")
    mse = ((x.detach().cpu().double() - reference.detach().cpu().double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)
