"""The diffusion maths, in reading order: the ideas of the course, one module each.

    schedules    the noise schedules beta_1..beta_T and every quantity derived from them
    forward      the forward process q(x_t | x_0), the chain, the posterior, eps/x0/v conversions
    losses       L_simple, and the objective interface of the Trainer
    denoiser     any network as one prediction (x0_hat, eps_hat): precision, checks, clipping
    steps        one reverse step t -> s: DDPM (the posterior) and DDIM (Eq. 12)
    timesteps    which timesteps a sampler visits: every one, or S of them spaced four ways
    sampling     the one sampling loop, and DDPM (Algorithm 2) and DDIM as presets of it
    guidance     classifier guidance and classifier-free guidance: wrappers of the denoiser

These modules import nothing from the rest of the library but the prediction vocabulary
(:mod:`lesson_lib.models.base`), :mod:`lesson_lib.files` and :mod:`lesson_lib.arguments`.
"""
