# %% [markdown]
# *Generated from `solutions/08_likelihood.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/08_likelihood.ipynb`, which `python -m lesson_lib.course.assignments start 08` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/08_likelihood.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 8 · Exercises: learned variances and the bound in bits per dimension
#
# The variational bound of Ho et al. (2020), Eq. 5, is a sum of Gaussian KL divergences $L_{t-1}$, a prior term
# $L_T$ and a *discretised decoder* $L_0$ (Eq. 13) that puts on each of the 256 levels of a pixel the mass of a
# Gaussian over its bin. Nichol & Dhariwal (2021) let the network choose the reverse variance between
# $\beta_t$ and $\tilde\beta_t$ (Eq. 15). Four exercises: the Gaussian KL, the discretised log-likelihood with open
# edge bins, the learned variance, and a question about how sharp the decoder must be. Runtime: a few seconds (no
# network is run).

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import math

import torch

from lesson_lib.course import feedback

from lesson_lib.diffusion.schedules import NoiseSchedule


# %% [markdown]
# ## 1 · The KL divergence of two Gaussians
#
# Per element, in nats, with the variances given by their logarithms:
#
# $$\mathrm{KL}\big(\mathcal N(\mu_1, e^{\ell_1})\,\big\|\,\mathcal N(\mu_2, e^{\ell_2})\big)
# = \tfrac12\Big(-1 + \ell_2 - \ell_1 + e^{\ell_1 - \ell_2} + (\mu_1 - \mu_2)^2 e^{-\ell_2}\Big).$$
#
# Every $L_{t-1}$ of the bound is this, averaged over the pixels. Keep to log variances: the posterior variance
# $\tilde\beta_t$ is tiny at small $t$.

# %%
def gaussian_kl(mean1, log_var1, mean2, log_var2):
    """KL( N(mean1, exp(log_var1)) || N(mean2, exp(log_var2)) ) per element, in nats.

    The four arguments are tensors that broadcast against each other; return their broadcast shape."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: torch knows the KL of two normal distributions.

# %%
p = torch.distributions.Normal(torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64))
q = torch.distributions.Normal(torch.tensor([-0.2], dtype=torch.float64), torch.tensor([1.3], dtype=torch.float64))
mine = gaussian_kl(p.mean, 2 * p.stddev.log(), q.mean, 2 * q.stddev.log())
print("matches torch.distributions.kl_divergence:", torch.allclose(mine, torch.distributions.kl_divergence(p, q)))
feedback.check("08", "gaussian_kl", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · The discretised decoder (Eq. 13)
#
# Pixels $x$ lie on the 256 levels $k/127.5 - 1$ of $[-1, 1]$, $2/255$ apart, so the bin of $x$ is $x \pm 1/255$.
# The decoder gives $x$ the mass of $\mathcal N(\mu, \sigma^2)$ over its bin,
#
# $$P(x) = \Phi\Big(\frac{x + 1/255 - \mu}{\sigma}\Big) - \Phi\Big(\frac{x - 1/255 - \mu}{\sigma}\Big),$$
#
# except that the two **edge bins are open**: the bin of $-1$ reaches down to $-\infty$ (so $P(-1) = \Phi(\cdot)$ of its
# upper end) and the bin of $1$ up to $+\infty$ (so $P(1) = 1 - \Phi(\cdot)$ of its lower end $= \Phi(-\cdot)$). Then the
# 256 probabilities sum to one. Return $\log P(x)$ per element.
#
# Far tails matter: with the mean on the other side of the image, $P(-1)$ can be $10^{-2000}$, and
# $\log\Phi(z)$ must then be computed directly (`torch.special.log_ndtr`), not as the log of a number that has already
# rounded to 0. In the middle of the grid the difference of two CDF values is enough (you may floor it at
# $10^{-12}$ as the reference implementation does; the checks never go below $10^{-9}$ there).

# %%
def discretized_log_likelihood(x, mean, log_variance):
    """log P(x) per element, in nats, for x on the 256-level grid of [-1, 1] (float64 tensors that broadcast):
    the mass of N(mean, exp(log_variance)) over x +- 1/255, the bins of -1 and 1 open to -inf and +inf."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# Two checks you can run: the 256 probabilities sum to one, and a black pixel ($x = -1$) whose mean is a white one
# ($\mu = 1$) at $\sigma = 0.02$ costs a finite (huge) number of nats.

# %%
levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
log_p = discretized_log_likelihood(levels, torch.full_like(levels, 0.3), torch.full_like(levels, 2 * math.log(0.05)))
print(f"sum over the 256 levels: {log_p.exp().sum().item():.9f}")
far = discretized_log_likelihood(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                                 torch.tensor([2 * math.log(0.02)], dtype=torch.float64))
print(f"log P(x = -1 | mean 1, sigma 0.02) = {far.item():.1f} nats")
feedback.check("08", "discretized_log_likelihood", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · The learned variance (Eq. 15)
#
# The network outputs, besides $\hat\epsilon$, one number $v \in [-1, 1]$ per dimension, and
#
# $$\log\Sigma_\theta = \text{frac}\,\log\beta_t + (1 - \text{frac})\log\tilde\beta_t,\qquad \text{frac} = \frac{v+1}{2}:$$
#
# $v = 1$ gives $\sigma^2 = \beta_t$, $v = -1$ gives $\tilde\beta_t$, the two fixed choices of Ho et al.

# %%
def learned_log_variance(v, log_beta, log_beta_tilde):
    """log Sigma of Nichol & Dhariwal's Eq. 15 from v in [-1, 1]; log_beta and log_beta_tilde broadcast against v
    (e.g. shape (B, 1, 1, 1), one step per example)."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
schedule = NoiseSchedule.linear(1000)
t = 10
log_beta, log_beta_tilde = schedule.betas.log()[t], schedule.posterior_log_variance[t]
for v in (-1.0, 0.0, 1.0):
    var = learned_log_variance(torch.tensor(v, dtype=torch.float64), log_beta, log_beta_tilde).exp().item()
    print(f"t = {t}, v = {v:+.0f}: sigma^2 = {var:.4e}")
print(f"beta_t = {schedule.betas[t].item():.4e}, beta-tilde_t = {log_beta_tilde.exp().item():.4e}")
feedback.check("08", "learned_log_variance", globals())  # what the grader will say about it


# %% [markdown]
# ## 4 · A question: how sharp must the decoder be?
#
# Suppose the network's mean at $t = 0$ is *exactly* the true level of an interior pixel. Its bin then holds
# $2\Phi(h/\sigma) - 1$ of the decoder's mass, $h = 1/255$: the pixel still costs $-\log_2\big(2\Phi(h/\sigma) - 1\big)$
# bits, for no fault of the network. Write the decoder std $\sigma$ at which this cost is `bits` bits (your answer is
# checked at drawn values). Then run the cell after it, which compares with the schedule's $\sqrt{\beta_1} = 0.01$.

# %%
def decoder_std_for_bits(bits):
    """The decoder std sigma at which an interior pixel whose mean sits exactly on its level costs ``bits`` bits."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
for b in (1.0, 0.1, 0.01):
    print(f"{b:5} bits per interior pixel needs sigma <= {decoder_std_for_bits(b):.5f} (sqrt(beta_1) = 0.01)")
feedback.check("08", "decoder_std_for_bits", globals())  # what the grader will say about it
