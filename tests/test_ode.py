"""The probability-flow ODE's solvers (lesson_lib.diffusion.ode) and the loop's state for them.

Three kinds of evidence: an independent implementation (diffusers' Euler, Heun and DPM-Solver++
schedulers, driven by the same fake network from the same noise on the same grid), closed forms
(Euler is DDIM; one step on Gaussian data returns E[x_0 | x_T]) and the order of each solver
against the exact flow map of Gaussian data (halving the step divides the error by 2 or 4).
"""

import pytest
import torch

from lesson_lib.diffusion.denoiser import Prediction
from lesson_lib.diffusion.forward import eps_from_x0
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.ode import SOLVERS, dpmpp_2m_step, euler_step, heun_step, sigma_of
from lesson_lib.diffusion.sampling import ddim_sample, ode_sample, sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import spaced

SCHEDULE = NoiseSchedule.linear(1000)


def fake_eps(x, t, **cond):
    """A smooth, nonlinear stand-in for a network: eps as a function of x and t."""
    tt = t.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
    return 0.6 * torch.tanh(x) * torch.cos(tt / 400) + 0.2 * torch.sin(3 * x + tt / 100)


fake_eps.prediction = "eps"


def _x_T(shape=(4, 3), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


# --- Euler is DDIM -----------------------------------------------------------------------------

def test_sigma_of_is_the_ve_noise_level():
    ab = SCHEDULE.alpha_bars
    assert float(sigma_of(ab[999])) == pytest.approx(157.4073, abs=1e-4)
    assert float(sigma_of(ab[0])) == pytest.approx(0.0100005, rel=1e-5)     # sqrt(beta_0 / (1 - beta_0))
    assert float(sigma_of(torch.tensor(1.0, dtype=torch.float64))) == 0.0


def test_an_euler_step_in_sigma_is_a_ddim_step():
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([999, 999, 500, 500, 37, 1])
    s = torch.tensor([888, -1, 499, 3, -1, 0])
    x0 = torch.randn(6, 2, generator=g, dtype=torch.float64)
    pred = Prediction(x0, eps_from_x0(SCHEDULE, x_t, t, x0))          # any x0_hat, and its eps_hat
    x_euler, _ = euler_step(SCHEDULE, x_t, t, s, pred)
    assert _relative(x_euler, ddim_step(SCHEDULE, x_t, t, s, pred)) < 1e-12


def test_euler_sampling_is_ddim_sampling():
    x_T, ts = _x_T(), spaced(1000, 10)
    euler = ode_sample(fake_eps, SCHEDULE, x_T=x_T, timesteps=ts, solver="euler", progress=False)
    ddim = ddim_sample(fake_eps, SCHEDULE, x_T=x_T, timesteps=ts, progress=False)
    assert _relative(euler, ddim) < 1e-12


def test_one_euler_step_from_noise_returns_the_data_mean():
    """From x_T straight to the data, Euler returns x0_hat = E[x_0 | x_T] = m + sqrt(a_T) s^2 / v_T
    (x_T - sqrt(a_T) m): the data mean m, up to the linear schedule's sqrt(alpha-bar_T) = 0.0064.
    Every starting point lands on (almost) the same point: one step collapses to the average."""
    data = GaussianData(SCHEDULE, mean=0.5, std=0.5)
    x_T = _x_T((1000, 1))
    x = ode_sample(data, SCHEDULE, x_T=x_T, timesteps=[999], solver="euler", progress=False)
    a = SCHEDULE.alpha_bars[999]
    closed = 0.5 + a.sqrt() * 0.25 / (a * 0.25 + 1 - a) * (x_T - a.sqrt() * 0.5)
    assert _relative(x, closed) < 1e-12
    assert float((x - 0.5).abs().max()) < 0.01 and float(x.std()) < 0.002        # data std: 0.5


# --- the same trajectories as diffusers' schedulers -----------------------------------------

def _diffusers_run(scheduler, x_T, ve):
    """Drive a diffusers scheduler with fake_eps from x_T (VP); Euler and Heun work in x_VE."""
    x = x_T / SCHEDULE.alpha_bars[int(scheduler.timesteps[0])].sqrt() if ve else x_T
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(fake_eps(x_in, torch.full((x.shape[0],), int(t))), t, x).prev_sample
    return x


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp2m"])
def test_trajectories_match_diffusers(solver, steps):
    """Same betas, same grid (the course's linspace timesteps given to set_timesteps), same noise.
    diffusers' conventions match the course's: the last step goes to sigma = 0 and is first order
    (Euler for Heun; DDIM for DPM-Solver++, final_sigmas_type="zero")."""
    diffusers = pytest.importorskip("diffusers")
    cls, kwargs = {"euler": (diffusers.EulerDiscreteScheduler, {}),
                   "heun": (diffusers.HeunDiscreteScheduler, {}),
                   "dpmpp2m": (diffusers.DPMSolverMultistepScheduler,
                                {"algorithm_type": "dpmsolver++", "solver_order": 2})}[solver]
    scheduler = cls(num_train_timesteps=1000, trained_betas=SCHEDULE.betas.numpy(), **kwargs)
    ts = spaced(1000, steps)
    scheduler.set_timesteps(timesteps=ts)
    x_T = _x_T()
    theirs = _diffusers_run(scheduler, x_T, ve=solver != "dpmpp2m")
    ours = ode_sample(fake_eps, SCHEDULE, x_T=x_T, timesteps=ts, solver=solver, progress=False)
    assert _relative(ours, theirs) < 1e-4


# --- network calls and the state the loop threads -------------------------------------------

@pytest.mark.parametrize("solver, calls", [("euler", 10), ("heun", 19), ("dpmpp2m", 10)])
def test_network_calls_per_sample(solver, calls):
    seen = []

    def counting(x, t, **cond):
        seen.append(int(t[0]))
        return fake_eps(x, t)

    ode_sample(counting, SCHEDULE, x_T=_x_T(), steps=10, solver=solver, progress=False)
    assert len(seen) == calls
    if solver == "heun":        # the second call is at the end of each step but the last (s = -1)
        ts = spaced(1000, 10)
        assert seen == [ts[0]] + [t for t in ts[1:] for _ in (0, 1)]


def test_the_first_dpmpp_step_is_ddim_and_the_state_carries_x0_hat():
    x_T, t, s = _x_T(), torch.full((4,), 999), torch.full((4,), 888)
    pred = Prediction(x_T * 0.1, fake_eps(x_T, t))
    x_s, state = dpmpp_2m_step(SCHEDULE, x_T, t, s, pred, None, {"denoise": None})
    assert torch.equal(x_s, ddim_step(SCHEDULE, x_T, t, s, pred))
    assert torch.equal(state["x0"], pred.x0) and "denoise" in state
    assert float(state["lam"][0]) == pytest.approx(-float(sigma_of(SCHEDULE.alpha_bars[999]).log()))


def test_heuns_second_call_sees_the_runs_conditioning():
    """The loop's denoiser in the state carries cond, so both of Heun's calls get the labels."""
    seen = []

    def conditional(x, t, y=None):
        seen.append(y)
        return fake_eps(x, t)

    conditional.prediction = "eps"
    y = torch.zeros(4, dtype=torch.long)
    ode_sample(conditional, SCHEDULE, x_T=_x_T(), steps=3, solver="heun", model_kwargs={"y": y}, progress=False)
    assert len(seen) == 5 and all(v is y for v in seen)


def test_stateful_steps_are_marked_and_chain_steps_are_not():
    assert all(getattr(step, "stateful", False) for step in (euler_step, heun_step, dpmpp_2m_step))
    assert not getattr(ddim_step, "stateful", False)


def test_unknown_solver_is_named():
    with pytest.raises(ValueError, match="solver must be one of 'euler', 'heun', 'dpmpp2m', got solver='rk4'"):
        ode_sample(fake_eps, SCHEDULE, x_T=_x_T(), solver="rk4")


# --- order of accuracy on Gaussian data ------------------------------------------------------

# Relative error at timestep 0 against the exact flow map (GaussianData.flow) from t = 999, Gaussian
# data N(0.5, 0.25), three starting points; N steps on the linspace grid 999 -> 0 (spaced(1000, N + 1)),
# float64. Ratios N -> 2N: about 2 for first order, about 4 for second order. DPM-Solver++(2M) reaches
# its asymptotic ratio later: on the linspace grid in code timesteps its steps are very unequal in
# lambda = -ln sigma, the last one (to code timestep 0) by far the longest (3.53 against at most 0.96 at
# N = 10, 2.26 against at most 0.61 at N = 40), and at N = 10 its error is larger than DDIM's.
ORDER_TABLE = {            # N = 10, 20, 40, 80, 160
    "euler": [0.1677, 0.088215, 0.045469, 0.023098, 0.011699],
    "heun": [0.046991, 0.01189, 0.0030086, 0.00076142, 0.00019296],
    "dpmpp2m": [0.25464, 0.15144, 0.053513, 0.014325, 0.003484],
}


def _error_at_t0(solver, steps):
    data = GaussianData(SCHEDULE, mean=0.5, std=0.5)
    x_T = torch.tensor([[-1.5], [0.3], [2.0]], dtype=torch.float64)
    exact = data.flow(x_T, torch.full((3,), 999), torch.zeros(3, dtype=torch.long))
    at_0 = {}
    record = lambda r: at_0.update(x=r.x_s) if r.s == 0 else None                   # noqa: E731
    sample(data.denoise, SCHEDULE, x_T, spaced(1000, steps + 1), SOLVERS[solver], stochastic=False,
           callback=record, progress=False)
    return _relative(at_0["x"], exact)


@pytest.mark.parametrize("solver", list(ORDER_TABLE))
def test_global_error_order_on_gaussian_data(solver):
    errors = [_error_at_t0(solver, n) for n in (10, 20, 40, 80, 160)]
    assert errors == pytest.approx(ORDER_TABLE[solver], rel=1e-4)
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    order_ratio = 2 if solver == "euler" else 4
    assert all(abs(r / order_ratio - 1) < 0.1 for r in ratios[-2:]), ratios



# --- the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("solver", ["heun", "dpmpp2m"])
def test_the_sample_command_runs_the_ode_solvers(solver, tmp_path, capsys, monkeypatch):
    """``--sampler heun|dpmpp2m`` reaches ode_sample on DDIM's grid (spaced(T, steps)) and writes the grid."""
    from lesson_lib import sample as sample_cli
    from lesson_lib.diffusion import sampling

    calls = []

    def spy(*args, solver, timesteps, **kwargs):
        calls.append((solver, list(timesteps)))
        return sampling.ode_sample(*args, solver=solver, timesteps=timesteps, **kwargs)

    monkeypatch.setattr(sample_cli, "ode_sample", spy)
    out = tmp_path / "grid.png"
    sample_cli.main(["--pretrained", "mnist_cond", "--n", "10", "--sampler", solver, "--steps", "2",
                     "--out", str(out), "--device", "cpu"])
    assert calls == [(solver, spaced(1000, 2))]
    assert out.exists() and "wrote 10 samples" in capsys.readouterr().out
    assert sample_cli.timesteps_for(SCHEDULE, solver, None) == spaced(1000, 100)
    assert set(sample_cli.ODE_SAMPLERS) <= set(SOLVERS)
