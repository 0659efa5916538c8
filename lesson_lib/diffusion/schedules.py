"""Noise schedules: the variances beta_1..beta_T and everything derived from them.

Index convention: code index ``t`` in ``{0, ..., T-1}`` is the paper's timestep ``t + 1``.
``betas[0]`` is beta_1, ``alpha_bars[t]`` is alpha-bar_{t+1}, and ``alpha_bars_prev[0]`` is
alpha-bar_0 = 1 (no noise at all).

Every derived quantity is computed once, in float64, in :class:`NoiseSchedule`, following
the layout of improved-diffusion's ``GaussianDiffusion``. Use :func:`extract` to pick the
entries for a batch of timesteps in the dtype and device of your data.
"""

import math
import warnings

import torch


def _check_T(T):
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer number of diffusion steps, got T={T!r}")


def _check_betas(betas, name="betas"):
    if not torch.all((betas > 0) & (betas < 1)):
        bad = betas[~((betas > 0) & (betas < 1))]
        raise ValueError(
            f"every beta must lie strictly between 0 and 1, but {name} contains "
            f"{bad[:3].tolist()}; choose beta_start/beta_end (or max_beta) inside (0, 1)"
        )


def linear_beta_schedule(T, beta_start=1e-4, beta_end=0.02):
    """The linear schedule of Ho et al. (2020), Sec. 4: beta_t rises linearly from
    ``beta_start`` (beta_1) to ``beta_end`` (beta_T).

    The paper's values 1e-4 and 0.02 were chosen for T = 1000. Returns a float64 tensor of
    shape ``(T,)``.
    """
    _check_T(T)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {name}={value!r}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_beta_schedule(T, s=0.008, max_beta=0.999):
    """The cosine schedule of Nichol & Dhariwal (2021), Eq. 17.

    alpha-bar(t) = f(t) / f(0) with f(t) = cos^2( (t/T + s) / (1 + s) * pi/2 ), and
    beta_t = 1 - alpha-bar(t) / alpha-bar(t-1), clipped to at most ``max_beta`` so that the
    last steps (where alpha-bar reaches 0) stay finite. ``s`` keeps beta_1 from being
    vanishingly small. Returns a float64 tensor of shape ``(T,)``.
    """
    _check_T(T)
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must lie strictly between 0 and 1, got max_beta={max_beta!r}")
    if s < 0:
        raise ValueError(f"the offset s must be non-negative, got s={s!r}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(min=0, max=max_beta)


def alpha_bar_matched_linear_schedule(T, reference_T=1000, beta_start=1e-4, beta_end=0.02):
    """A T-step schedule whose alpha-bar follows the paper's ``reference_T``-step linear
    schedule (Ho et al., 2020, Sec. 4) at the T evenly spaced times it keeps.

    Scaling the betas by reference_T / T pushes beta_T = 0.02 * 1000 / T past 1 for T < 50,
    and clipping it to 0.999 destroys the signal in one step. Instead keep the reference
    alpha-bars at times tau_i = round(i * reference_T / T), i = 1..T, and set
    beta_i = 1 - alpha-bar_{tau_i} / alpha-bar_{tau_{i-1}} (the respacing of Nichol &
    Dhariwal, 2021, Sec. 4). alpha-bar is decreasing and positive, so every beta lies in
    (0, 1) without clipping, and alpha-bar_T equals the reference's. Returns float64 ``(T,)``.
    """
    _check_T(T)
    _check_T(reference_T)
    if T > reference_T:
        raise ValueError(f"T must not exceed reference_T, got T={T} > reference_T={reference_T}; "
                         f"raise reference_T or use linear_beta_schedule")
    ref = torch.cumprod(1 - linear_beta_schedule(reference_T, beta_start, beta_end), dim=0)
    taus = torch.tensor([round(i * reference_T / T) for i in range(1, T + 1)])
    kept = torch.cat([torch.ones(1, dtype=torch.float64), ref[taus - 1]])
    return 1 - kept[1:] / kept[:-1]


class NoiseSchedule:
    """Every quantity derived from beta_1..beta_T, named after the paper's symbols.

    ============================  =====================================================
    attribute                     meaning (code index t is the paper's t+1)
    ============================  =====================================================
    ``betas``                     beta_t, the variance added at step t
    ``alphas``                    alpha_t = 1 - beta_t
    ``alpha_bars``                alpha-bar_t = prod_{s<=t} alpha_s  (Ho et al., Eq. 4)
    ``alpha_bars_prev``           alpha-bar_{t-1}, with alpha-bar_0 = 1
    ``alpha_bars_with_0``         alpha-bar_0 = 1 followed by ``alpha_bars`` (length T + 1):
                                  entry k is the paper's alpha-bar_k, so the level of code
                                  index s is entry s + 1, and s = -1 is the data itself
    ``sqrt_alpha_bars``           sqrt(alpha-bar_t), the signal scale of x_t
    ``sqrt_one_minus_alpha_bars`` sqrt(1 - alpha-bar_t), the noise scale of x_t
    ``snr``                       alpha-bar_t / (1 - alpha-bar_t), signal-to-noise ratio
    ``posterior_variance``        beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t
                                  (Ho et al., Eq. 7)
    ``posterior_log_variance``    log beta-tilde_t, with the t=0 entry (where beta-tilde is 0)
                                  replaced by that of t=1 so that it stays finite
    ``posterior_mean_coef_x0``    sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t)   (Eq. 7)
    ``posterior_mean_coef_xt``    sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t)
    ============================  =====================================================

    All tensors are float64 on the CPU until :meth:`to` moves them; :func:`extract` picks
    the entries for a batch.
    """

    def __init__(self, betas):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        _check_betas(betas)
        self.T = betas.numel()
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        self.alpha_bars_with_0 = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars])
        self.sqrt_alpha_bars = self.alpha_bars.sqrt()
        self.sqrt_one_minus_alpha_bars = (1.0 - self.alpha_bars).sqrt()
        self.snr = self.alpha_bars / (1.0 - self.alpha_bars)
        self.posterior_variance = betas * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)
        self.posterior_log_variance = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        ) if self.T > 1 else torch.log(betas)
        self.posterior_mean_coef_x0 = betas * self.alpha_bars_prev.sqrt() / (1.0 - self.alpha_bars)
        self.posterior_mean_coef_xt = (
            (1.0 - self.alpha_bars_prev) * self.alphas.sqrt() / (1.0 - self.alpha_bars)
        )

    @classmethod
    def linear(cls, T=1000, beta_start=1e-4, beta_end=0.02):
        """The schedule of Ho et al. (2020); see :func:`linear_beta_schedule`."""
        return cls(linear_beta_schedule(T, beta_start, beta_end))

    @classmethod
    def cosine(cls, T=1000, s=0.008, max_beta=0.999):
        """The schedule of Nichol & Dhariwal (2021); see :func:`cosine_beta_schedule`."""
        return cls(cosine_beta_schedule(T, s, max_beta))

    @classmethod
    def from_name(cls, name, T=1000):
        """``NoiseSchedule.from_name("linear" | "cosine", T)``.

        For "linear", beta_start and beta_end are scaled by 1000 / T (the convention of
        Nichol & Dhariwal's code), so that any T ends as close to pure noise as T = 1000
        does with the paper's 1e-4 and 0.02."""
        _check_T(T)
        if name == "linear":
            beta_end = 0.02 * 1000 / T
            if beta_end >= 0.999:
                warnings.warn(f"NoiseSchedule.from_name('linear', T={T}): the scaled beta_end 0.02 * 1000 / T = "
                              f"{beta_end:g} is not below 1, so it was clipped to 0.999; the last steps then "
                              f"destroy almost all signal at once. Use T >= 21, or "
                              f"NoiseSchedule.linear(T, beta_start, beta_end) with your own values", stacklevel=2)
            return cls.linear(T, 1e-4 * 1000 / T, min(beta_end, 0.999))
        if name == "cosine":
            return cls.cosine(T)
        raise ValueError(f"name must be 'linear' or 'cosine', got name={name!r}")

    def steps_until(self, fraction):
        """The first code index t at which sqrt(alpha-bar_t), the share of x_0 left in x_t,
        falls below ``fraction``; T if it never does."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < math.inf:
            raise ValueError(f"fraction must be a finite number >= 0 (a share of x_0, e.g. 0.1), "
                             f"got fraction={fraction!r}")
        below = torch.nonzero(self.sqrt_alpha_bars < fraction)
        return int(below[0]) if len(below) else self.T

    def to(self, device):
        """A copy with every tensor on ``device`` (float64 kept, except on Apple's MPS, which
        has no float64). Move the schedule once, next to the model, not at every step."""
        device = torch.device(device)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        moved = object.__new__(NoiseSchedule)
        for name, value in vars(self).items():
            setattr(moved, name, value.to(device, dtype) if torch.is_tensor(value) else value)
        return moved

    @property
    def device(self):
        return self.betas.device

    def __repr__(self):
        return (f"NoiseSchedule(T={self.T}, beta_1={self.betas[0].item():.3g}, "
                f"beta_T={self.betas[-1].item():.3g}, alpha_bar_T={self.alpha_bars[-1].item():.3g})")


def _check_timestep_type(t, name="t"):
    """Type and dtype only: free, since it reads no values."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of integer timesteps, got {type(t).__name__}; "
                        f"wrap it: torch.tensor([{t!r}])")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer timesteps (torch.long), got dtype {t.dtype}")


def check_timesteps(t, T, name="t"):
    """Raise a clear error unless ``t`` is an integer tensor with every entry in 0..T-1.

    Reading the smallest and largest entry makes the host wait for the device (on CUDA), so
    this runs once where timesteps enter the library (``q_sample``, ``l_simple``, a sampler's
    timestep list), never inside :func:`extract`, which every step calls several times."""
    _check_timestep_type(t, name)
    if t.numel() and (t.min() < 0 or t.max() >= T):
        raise ValueError(f"{name} must lie in 0..{T - 1} (code index t is the paper's t+1), "
                         f"got values from {int(t.min())} to {int(t.max())}")


def extract(values, t, x):
    """Pick ``values[t]`` for a batch of timesteps and shape it to broadcast against ``x``.

    ``values`` is a 1-D schedule tensor (length T), ``t`` a long tensor of shape ``(B,)``
    and ``x`` a batch of shape ``(B, ...)``. Returns a tensor of shape ``(B, 1, ..., 1)`` in
    the dtype and on the device of ``x``. Gathering happens in the schedule's precision
    (float64) before the cast.

    It checks types and shapes only, which costs nothing; the values of ``t`` are checked once
    by the public function that received them (:func:`check_timesteps`), not here in the hot
    path.
    """
    _check_timestep_type(t)
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape (batch,) = ({x.shape[0]},) to match x, "
                         f"got t of shape {tuple(t.shape)}")
    if values.device != t.device:
        values = values.to(t.device, torch.float32 if t.device.type == "mps" else values.dtype)
    return values[t].to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
