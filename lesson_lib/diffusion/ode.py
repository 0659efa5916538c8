"""The probability-flow ODE and its solvers: Euler, Heun and DPM-Solver++(2M) as steps of the one loop.

Deterministic sampling integrates one ODE. In the variables of Karras et al. (2022, "EDM"),

    sigma = sqrt((1 - alpha-bar) / alpha-bar),    x_VE = x / sqrt(alpha-bar),

it reads dx_VE / dsigma = (x_VE - D(x_VE; sigma)) / sigma = eps_hat (EDM, Eq. 3 with
sigma(t) = t, s(t) = 1), where D is the denoiser's x0_hat. Each solver below is a step
``step(schedule, x_t, t, s, pred, noise, state) -> (x_s, state)`` between two code timesteps
(s = -1 is sigma = 0, the data), computed in float64 from alpha-bar at both ends and taking and
returning x in the course's (VP) variable:

* :func:`euler_step`, one Euler step in sigma: it *is* DDIM with eta = 0 (the test suite checks
  this to rounding); first order, one network call per step.
* :func:`heun_step`, EDM's Algorithm 2 (lines 5-8): the Euler step, then a second call at the
  end point and the trapezoidal average of the two slopes; second order, 2N - 1 calls for N steps
  (the step to sigma = 0 stays Euler, whose slope there would divide by zero).
* :func:`dpmpp_2m_step`, DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2): a DDIM step whose
  x0_hat is extrapolated linearly in lambda = -ln sigma from this step's x0_hat and the previous
  one; second order, one call per step. The first step and the step to sigma = 0 are DDIM.

Why a module of its own: these are the solvers of one equation, which share its variables
(:func:`sigma_of`); :mod:`.steps` holds the steps of the discrete chain (DDPM, DDIM, consistency).
Heun needs a second network call and DPM-Solver++ the previous x0_hat, which a step of the
chain never needs; how the loop provides them is the ``state`` of
:func:`lesson_lib.diffusion.sampling.sample`.
"""

from .denoiser import check_returned
from .forward import eps_from_x0
from .steps import _bcast, _levels, ddim_step


def sigma_of(alpha_bar):
    """EDM's noise level of a VP level: sigma = sqrt((1 - alpha-bar) / alpha-bar) (0 at the data)."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def stateful(step):
    """Mark ``step`` as a step that receives and returns the loop's state (see :func:`~lesson_lib.
    diffusion.sampling.sample`)."""
    step.stateful = True
    return step


def _euler(schedule, x_t, t, s, slope):
    """x_s = sqrt(alpha-bar_s) (x_t / sqrt(alpha-bar_t) + (sigma_s - sigma_t) slope): an Euler step
    of dx_VE / dsigma = slope, written back in the VP variable."""
    a_t, a_s = _levels(schedule, t, s)
    x_ve = x_t / _bcast(a_t.sqrt(), x_t) + _bcast(sigma_of(a_s) - sigma_of(a_t), x_t) * slope
    return _bcast(a_s.sqrt(), x_t) * x_ve


@stateful
def euler_step(schedule, x_t, t, s, pred, noise=None, state=None):
    """An Euler step of the probability-flow ODE in sigma (EDM, Algorithm 2, lines 4-5):

        x_VE(sigma_s) = x_VE(sigma_t) + (sigma_s - sigma_t) * (x_VE - x0_hat) / sigma_t,

    with slope (x_VE - x0_hat) / sigma_t = eps_hat. Substituting x_VE = x0_hat + sigma_t eps_hat
    gives x0_hat + sigma_s eps_hat, i.e. sqrt(alpha-bar_s) x0_hat + sqrt(1 - alpha-bar_s) eps_hat
    in the VP variable: DDIM's Eq. 12 with eta = 0. ``noise`` is ignored."""
    return _euler(schedule, x_t, t, s, pred.eps), state


@stateful
def heun_step(schedule, x_t, t, s, pred, noise=None, state=None):
    """Heun's second-order step (EDM, Algorithm 2, lines 5-8): the Euler step to x'_s, then the
    slope at (x'_s, s) from a second call of the denoiser (``state["denoise"]``), and

        x_VE(sigma_s) = x_VE(sigma_t) + (sigma_s - sigma_t) (eps_hat(x_t, t) + eps_hat(x'_s, s)) / 2.

    To sigma = 0 (s = -1) it stays an Euler step (line 7's condition sigma_{i+1} != 0), so N
    steps cost 2N - 1 network calls. ``noise`` is ignored (EDM's churn is not used)."""
    x_euler, state = euler_step(schedule, x_t, t, s, pred, state=state)
    if bool((s < 0).any()):
        return x_euler, state
    pred_s = check_returned(state["denoise"](x_euler, s))
    return _euler(schedule, x_t, t, s, (pred.eps + pred_s.eps) / 2), state


def _half_log_snr(schedule, t):
    """lambda_t = -ln sigma_t = ln(sqrt(alpha-bar_t) / sqrt(1 - alpha-bar_t)), float64 (B,)."""
    return -sigma_of(schedule.alpha_bars_with_0[t + 1]).log()


@stateful
def dpmpp_2m_step(schedule, x_t, t, s, pred, noise=None, state=None):
    """DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2), from t to s: with lambda = -ln sigma,
    h = lambda_s - lambda_t and r = h_prev / h (h_prev the previous step's h),

        D = (1 + 1 / (2r)) x0_hat_t - (1 / (2r)) x0_hat_prev,
        x_s = (sigma_s / sigma_t) x_VE + (1 - sigma_s / sigma_t) D      (in the VE variable),

    which is :func:`~lesson_lib.diffusion.steps.ddim_step` (Eq. 12, eta = 0) with x0_hat replaced by
    D and eps_hat re-derived from (x_t, D). The first step (no previous x0_hat in ``state``) and the
    step to sigma = 0 (h infinite) use D = x0_hat_t: first order, DDIM itself, as in k-diffusion's
    ``sample_dpmpp_2m`` and diffusers' final step. ``state`` carries ``x0`` and ``lam``, this
    step's x0_hat and lambda_t, to the next step. ``noise`` is ignored."""
    state, x0_hat = dict(state or {}), pred.x0
    if "x0" in state and bool((s >= 0).all()):
        lam_t, lam_s = _half_log_snr(schedule, t), _half_log_snr(schedule, s)
        c = _bcast((lam_s - lam_t) / (2 * (lam_t - state["lam"])), x_t)        # 1 / (2r)
        d = (1 + c) * x0_hat - c * state["x0"]
        pred = pred._replace(x0=d, eps=eps_from_x0(schedule, x_t, t, d))
    state.update(x0=x0_hat, lam=_half_log_snr(schedule, t))
    return ddim_step(schedule, x_t, t, s, pred), state


SOLVERS = {"euler": euler_step, "heun": heun_step, "dpmpp2m": dpmpp_2m_step}
