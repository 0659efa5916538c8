# %% [markdown]
# # Lesson 9 · Exercises: consistency models
#
# A consistency model (Song, Dhariwal, Chen & Sutskever, 2023) learns the *consistency function* $f(x_t, t)$: the
# point at the data where the probability-flow trajectory through $x_t$ ends. It takes the same value all along one
# trajectory (self-consistency) and it is the identity at the data (the boundary condition), so one call turns
# noise into a sample, $x_0 = f(x_T, T)$, and a few calls with fresh noise between them refine it.
#
# In the course's variables the level of code timestep $t$ is $\bar\alpha_t$ = `alpha_bars_with_0[t + 1]`, and
# $t = -1$ is the data itself, where $\bar\alpha = 1$. The paper makes any network $F$ obey the boundary condition with
# a skip connection (Sec. 3):
#
# $$f(x_t, t) = c_\text{skip}(t)\, x_t + c_\text{out}(t)\, F(x_t, t),\qquad c_\text{skip} = 1,\ c_\text{out} = 0
# \text{ at the data.}$$
#
# Three exercises, about an hour: the scalings for a v-prediction network and $f$ itself (the warm-up), one target of
# consistency distillation, and the multistep sampler. Runtime: a few seconds (no network is trained).

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import torch

from lesson_lib.course import feedback

from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.distillation import distillation_timesteps
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.schedules import NoiseSchedule


# %% [markdown]
# ## 1 · The boundary condition, built in
#
# A v-prediction network's estimate of the data is (lesson 7)
#
# $$\hat x_0 = \sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\; v_\theta(x_t, t).$$
#
# Read it in that form: return $(c_\text{skip}, c_\text{out})$ for given $\bar\alpha$ (a float64 tensor of any
# shape), so that $c_\text{skip} x_t + c_\text{out} v_\theta$ is this $\hat x_0$. At $\bar\alpha = 1$ they must come
# out as exactly $(1, 0)$: the boundary condition is already in the parameterisation.

# %%
def boundary_scalings_v(alpha_bar):
    """(c_skip, c_out) of a v network on the VP schedule (Song et al., 2023, Sec. 3): c_skip x_t + c_out v is
    x0_hat = sqrt(alpha-bar) x_t - sqrt(1 - alpha-bar) v, and (c_skip, c_out) = (1, 0) at alpha-bar = 1.

    alpha_bar is a float64 tensor of any shape; return two float64 tensors of its shape."""
    ### BEGIN SOLUTION
    return alpha_bar.sqrt(), -(1 - alpha_bar).sqrt()
    ### END SOLUTION


# %% [markdown]
# A check you can run: the scalings from the data ($t = -1$) to pure noise ($t = T - 1$). $c_\text{skip}$ falls from 1
# towards 0 and $|c_\text{out}|$ rises from 0 towards 1: near the data $f$ keeps $x_t$, near the noise it is the
# network's answer.

# %%
schedule = NoiseSchedule.linear(1000)
ab = schedule.alpha_bars_with_0                         # entry t + 1 is the level of code timestep t
for t in (-1, 0, 99, 499, 999):
    c_skip, c_out = boundary_scalings_v(ab[t + 1])
    print(f"t = {t:4d}: alpha-bar = {float(ab[t + 1]):.5f}, c_skip = {float(c_skip):.5f}, "
          f"c_out = {float(c_out) + 0.0:+.5f}")                # + 0.0: -0.0 at the data prints as 0
feedback.check("09", "boundary_scalings_v", globals())  # what the grader will say about it


# %% [markdown]
# Now $f$ itself. `t` is a long tensor of shape `(B,)` with entries from $-1$ (the data) to $T - 1$. Call the network
# with `t.clamp(min=0)` (a real network has no embedding for $t = -1$), reshape each `(B,)` scaling to
# `(B, 1, ..., 1)` and cast it to `x_t`'s dtype. At the rows where $t = -1$ return `x_t` itself (`torch.where`), so
# that $f(x, -1) = x$ holds exactly *whatever* the network answers there.

# %%
def consistency_f(v_net, x_t, t, alpha_bars_with_0):
    """f(x_t, t) = c_skip x_t + c_out v_net(x_t, t) for t >= 0, and x_t exactly at t = -1 (the data).

    x_t has shape (B, ...), t is a long tensor (B,); return a tensor of x_t's shape and dtype."""
    ### BEGIN SOLUTION
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    c_skip, c_out = boundary_scalings_v(alpha_bars_with_0[t + 1])
    v = v_net(x_t, t.clamp(min=0))
    f = c_skip.to(x_t.dtype).reshape(shape) * x_t + c_out.to(x_t.dtype).reshape(shape) * v
    return torch.where((t == -1).reshape(shape), x_t, f)
    ### END SOLUTION


# %% [markdown]
# A check you can run: for a network that answers nonsense, $f$ is still exactly $x$ at the data, and at $t \ge 0$ it
# is the network's $\hat x_0$ as the course's `Denoiser` reads a v network.

# %%
torch.manual_seed(0)
nonsense = lambda x, t: 1e6 * torch.cos(x) + t[:, None]              # a v "network" that is no good anywhere
x = torch.randn(5, 2, dtype=torch.float64)
t = torch.tensor([-1, 0, 250, 999, -1])
f = consistency_f(nonsense, x, t, ab)
print("f(x, -1) is x exactly:", torch.equal(f[t == -1], x[t == -1]))
x0_hat = Denoiser(nonsense, schedule, prediction="v")(x, t.clamp(min=0)).x0
print("f(x, t) is the Denoiser's x0_hat at t >= 0:", torch.allclose(f[t >= 0], x0_hat[t >= 0], rtol=1e-12, atol=0))
feedback.check("09", "consistency_f", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · One target of consistency distillation
#
# Consistency distillation (Algorithm 2) teaches $f_\theta$ to give at $(x_t, t)$ what the *target network*
# $f_{\theta^-}$ (an exponential moving average of the student) gives one ODE step further down the same trajectory,
# at the neighbouring time $s < t$ of the grid, where a trained teacher takes that step:
#
# $$x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon \quad\text{(Ho et al., Eq. 4)},\qquad
# \hat x_s = \sqrt{\bar\alpha_s}\, \hat x_0 + \sqrt{1 - \bar\alpha_s}\, \hat\epsilon \quad\text{(one DDIM step,
# } \eta = 0\text{)},\qquad \text{target} = f_{\theta^-}(\hat x_s, s),$$
#
# with $(\hat x_0, \hat\epsilon)$ the teacher's prediction at $(x_t, t)$, **not clipped**. The student's loss is then a
# distance between $f_\theta(x_t, t)$ and the target. At the last interval, $s = -1$, the target is $\hat x_s$ itself
# (the boundary condition).
#
# Write `cd_target`. `teacher_denoise(x, t)` returns the teacher's `Prediction` (`.x0`, `.eps`); `target_net` is a
# v network, read through your `consistency_f`. The target network may be the student itself (rate $\mu = 0$, as in
# improved consistency training): the target is a fixed regression target, so compute the teacher's step and the
# target under `torch.no_grad()`. `x0` and `eps` have shape `(B, ...)`, `t` and `s` are long tensors `(B,)`; return
# `(x_t, target)`, both in `x0`'s dtype.

# %%
def cd_target(teacher_denoise, target_net, x0, eps, t, s, alpha_bars_with_0):
    """One consistency-distillation pair (Song et al., 2023, Algorithm 2): x_t from Ho et al.'s Eq. 4, one
    unclipped DDIM step (eta = 0) of the teacher from t to s, and the target network's f at (x^_s, s), with no
    gradient.

    Return (x_t, target)."""
    ### BEGIN SOLUTION
    shape = (-1,) + (1,) * (x0.ndim - 1)
    a_t, a_s = alpha_bars_with_0[t + 1].reshape(shape), alpha_bars_with_0[s + 1].reshape(shape)
    x_t = a_t.sqrt().to(x0.dtype) * x0 + (1 - a_t).sqrt().to(x0.dtype) * eps
    with torch.no_grad():
        pred = teacher_denoise(x_t, t)
        x_s = a_s.sqrt().to(x0.dtype) * pred.x0 + (1 - a_s).sqrt().to(x0.dtype) * pred.eps
        target = consistency_f(target_net, x_s, s, alpha_bars_with_0)
    return x_t, target
    ### END SOLUTION


# %% [markdown]
# A check you can run: for Gaussian data $x_0 \sim \mathcal N(0, C^2 I)$ both the teacher and the target network can be
# exact. The exact denoiser is `GaussianData`'s, and the exact consistency function is the probability-flow map from
# $t$ to the data, `GaussianData.flow`, here read as a v network. Then the target would equal
# $f(x_t, t)$ if DDIM's step followed the trajectory exactly; what is left is DDIM's error on one interval of the grid.
# On a grid of twice as many intervals each step is half as long and the error about four times smaller: on a fine grid
# the distilled student learns the teacher's ODE; on a coarse one, the map of DDIM's coarse steps.

# %%
class FlowAsV(torch.nn.Module):
    """The exact consistency function of Gaussian data as a v network: v = (sqrt(ab) x - f) / sqrt(1 - ab)."""

    prediction = "v"

    def __init__(self, data):
        super().__init__()
        self.data = data

    def forward(self, x, t):
        ab = self.data.schedule.alpha_bars_with_0[t + 1][:, None]
        f = self.data.flow(x, t, torch.full_like(t, -1))
        return (ab.sqrt() * x - f) / (1 - ab).sqrt()


C = 0.5
data = GaussianData(schedule, std=C, dim=2)
teacher = Denoiser(GaussianData(schedule, std=C, prediction="eps", dim=2), schedule)
generator = torch.Generator().manual_seed(0)
x0, eps = data.sample(4096, generator), torch.randn(4096, 2, generator=generator, dtype=torch.float64)
for N in (8, 16, 32, 64):
    grid = torch.tensor(distillation_timesteps(1000, N))
    n = torch.randint(0, N, (4096,), generator=generator)
    t, s = grid[n + 1], grid[n]
    x_t, target = cd_target(teacher, FlowAsV(data), x0, eps, t, s, ab)
    error = (target - data.flow(x_t, t, torch.full_like(t, -1))).pow(2).mean().sqrt()
    print(f"{N:2d} intervals: RMS distance of the target from f(x_t, t) = {float(error):.1e}")
student = torch.nn.Linear(2, 2).double()                # a live network (weights that take gradients) as the target
_, target = cd_target(teacher, lambda x, t: student(x), x0, eps, t, s, ab)
print("the target carries no gradient:", not target.requires_grad)
feedback.check("09", "cd_target", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · Multistep consistency sampling
#
# Algorithm 1 of the paper, on the course's grid. Given the times to visit, largest first (`[T - 1]` for one call):
#
# 1. $\hat x_0 = f(x_T, \text{times}[0])$;
# 2. for each later time $s$: draw $z \sim \mathcal N(0, I)$, set $x_s = \sqrt{\bar\alpha_s}\, \hat x_0 +
#    \sqrt{1 - \bar\alpha_s}\, z$ (Ho et al.'s Eq. 4: a fresh draw of $q(x_s \mid \hat x_0)$, not a step from
#    the previous $x$), and $\hat x_0 = f(x_s, s)$;
# 3. return $\hat x_0$. There is no noise after the last call, and $f$ is called once per time.
#
# `f(x, t)` takes `t` as a long tensor of shape `(B,)`. Draw each $z$ as
# `torch.randn(x0.shape, generator=generator, dtype=x0.dtype)`, one draw per re-noising, in order, and nothing else
# from `generator`: then your samples are exactly those of the course's sampler from the same generator, and the
# grader compares them.

# %%
def multistep_sample(f, x_T, times, alpha_bars_with_0, generator):
    """Multistep consistency sampling (Song et al., 2023, Algorithm 1) from x_T on ``times`` (descending code
    timesteps, a list of ints): one call of f per time, fresh noise from ``generator`` between calls.

    Return the last estimate of x_0, a tensor of x_T's shape."""
    ### BEGIN SOLUTION
    B = x_T.shape[0]
    x0 = f(x_T, torch.full((B,), times[0], dtype=torch.long))
    for s in times[1:]:
        a_s = alpha_bars_with_0[s + 1]
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_s = a_s.sqrt().to(x0.dtype) * x0 + (1 - a_s).sqrt().to(x0.dtype) * z
        x0 = f(x_s, torch.full((B,), s, dtype=torch.long))
    return x0
    ### END SOLUTION


# %% [markdown]
# A check you can run: with the exact consistency function of $\mathcal N(0, C^2)$ data, $C = 0.5$, every number of
# calls gives the data's spread. For contrast, one DDIM step from $x_T$ to the data with the *exact denoiser* returns
# $\mathbb E[x_0 \mid x_T]$, the mean of everything $x_T$ could have come from, which at $t = T - 1$ is nearly 0 for
# every point: the denoiser's answer is not the end of the trajectory.

# %%
exact_f = lambda x, t: data.flow(x, t, torch.full_like(t, -1))
generator = torch.Generator().manual_seed(1)
x_T = torch.randn(20000, 2, generator=generator, dtype=torch.float64)
for times in ([999], [999, 499], [999, 699, 299]):
    x = multistep_sample(exact_f, x_T, times, ab, generator)
    print(f"{len(times)} call(s) on {times}: mean {x.mean().item():+.3f}, std {x.std().item():.3f} (data: 0, {C})")
denoised = data.denoise(x_T, torch.full((20000,), 999)).x0
print(f"one DDIM step with the exact denoiser: std {denoised.std().item():.4f}")
feedback.check("09", "multistep_sample", globals())  # what the grader will say about it
