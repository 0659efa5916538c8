"""lesson_lib: the small, tested PyTorch library behind the DDPM course.

One module per idea, read in this order:

    schedules    the noise schedules beta_1..beta_T and every quantity derived from them
    forward      the forward process q(x_t | x_0), the chain, the posterior, eps/x0/v conversions
    losses       L_simple, the training objective of Ho et al. (2020)
    sampling     the reverse process: DDPM ancestral sampling (Algorithm 2) and DDIM
    toy_data     2-D datasets: swiss roll, moons, 8 gaussians, checkerboard
    embeddings   the sinusoidal time embedding
    mlp          a small MLP denoiser for 2-D data
    unet         the U-Net denoiser for images, and its presets
    datasets     MNIST, CIFAR-10 and image folders as tensors in [-1, 1]; batches on the GPU
    ema          the exponential moving average of the weights
    checkpoint   atomic, resumable checkpoints
    training     one training loop for every model
    profiles     the same training at three sizes: ci, cpu, gpu
    metrics      sample quality for 2-D data; nearest neighbours (memorisation)
    fid          FID and KID on a feature network
    classifiers  the course's own MNIST and CIFAR-10 classifiers (FID features, class accuracy)
    pretrained   loading checkpoints and the models shipped with the course
    plotting     small matplotlib helpers for the lessons

Command lines: ``python -m lesson_lib.train``, ``.sample``, ``.evaluate`` and, for
instructors, ``.assignments`` (exercises from solutions) and ``.grader`` (with ``checks/``).

Index convention used everywhere: a code timestep ``t`` in ``{0, ..., T-1}`` is the
paper's timestep ``t + 1``. So ``betas[0]`` is the paper's beta_1 and ``alpha_bars[T-1]``
is the paper's alpha-bar_T.
"""

__version__ = "0.1.0"
