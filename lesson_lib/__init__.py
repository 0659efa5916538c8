"""lesson_lib: the small, tested PyTorch library behind the DDPM course.

One module per idea, read in this order:

    schedules   the noise schedules beta_1..beta_T and every quantity derived from them
    forward     the forward process q(x_t | x_0), the chain, the posterior, eps/x0/v conversions
    losses      L_simple, the training objective of Ho et al. (2020)
    sampling    the reverse process: DDPM ancestral sampling (Algorithm 2) and DDIM
    toy_data    2-D datasets: swiss roll, moons, 8 gaussians, checkerboard
    embeddings  the sinusoidal time embedding
    mlp         a small MLP denoiser for 2-D data
    unet        the U-Net denoiser for images
    datasets    MNIST, CIFAR-10 and image folders as tensors in [-1, 1]
    training    one training loop for every model (EMA, bf16, checkpoints)
    metrics     sample-quality metrics for 2-D data

Index convention used everywhere: a code timestep ``t`` in ``{0, ..., T-1}`` is the
paper's timestep ``t + 1``. So ``betas[0]`` is the paper's beta_1 and ``alpha_bars[T-1]``
is the paper's alpha-bar_T.
"""

__version__ = "0.1.0"
