"""The diffusion maths, in reading order: the ideas of the course, one module each.

    schedules    the noise schedules beta_1..beta_T and every quantity derived from them
    forward      the forward process q(x_t | x_0), the chain, the posterior, eps/x0/v conversions
    losses       the objective protocol of the Trainer (one draw of t, eps, x_t), L_simple
    denoiser     any network as one prediction (x0_hat, eps_hat): precision, checks, clipping
    steps        one reverse step t -> s: DDPM (the posterior) and DDIM (Eq. 12)
    timesteps    which timesteps a sampler visits: every one, or S of them spaced four ways
    ode          the probability-flow ODE's solvers as steps: Euler (= DDIM), Heun, DPM-Solver++(2M)
    sampling     the one sampling loop, and DDPM (Algorithm 2), DDIM and the ODE solvers as presets of it
    flow_matching the straight path x_t = (1 - t) x_0 + t eps, its velocity, logit-normal t, the objective, flow_sample
    guidance     classifier guidance (a denoiser wrapper, or a step) and classifier-free guidance
    distillation progressive distillation's target and objective
    consistency  consistency models: the boundary scalings, f, CD and CT as one objective
    inversion    DDIM inversion (the same loop, climbing) and slerp
    likelihood   the variational bound in bits/dim, the learned variance, L_hybrid and L_vlb
    oracles      exact answers for Gaussian data and a Gaussian mixture (tests and lessons)
    latent       latent diffusion's first stage: the KL to N(0, I), the autoencoder's objective
    cascade      cascaded diffusion: down/upsampling, conditioning augmentation, the two-stage sampler

These modules import nothing from the rest of the library but the prediction vocabulary
(:mod:`lesson_lib.models.base`), :mod:`lesson_lib.files` and :mod:`lesson_lib.arguments`.
"""
