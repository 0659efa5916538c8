"""lesson_lib: the small, tested PyTorch library behind the DDPM course.

One idea per module, grouped by layer; read them in this order:

    diffusion/    the maths of the course (imports only models.base, files and arguments)
        schedules    the noise schedules beta_1..beta_T and every quantity derived from them
        forward      the forward process q(x_t | x_0), the chain, the posterior (and its empirical check), eps/x0/v conversions
        losses       the objective protocol (Objective, DiffusionObjective and its one draw of t, eps,
                     x_t), L_simple, the bound's weight lambda_t (vlb_weights, WeightedEps)
        denoiser     any network as one prediction (x0_hat, eps_hat): precision, checks, clipping
        steps        one reverse step t -> s: DDPM (the posterior) and DDIM (Eq. 12)
        timesteps    which timesteps a sampler visits: every one, or S of them spaced four ways
        ode          the probability-flow ODE's solvers as steps: Euler (= DDIM), Heun (EDM, Alg. 2)
                     and DPM-Solver++(2M)
        sampling     the one sampling loop; DDPM (Algorithm 2), DDIM and the ODE solvers as presets of it
        flow_matching the straight path (t = 1 noise), its velocity eps - x_0, logit-normal t, FlowMatching, flow_sample (Euler, Heun)
        guidance     classifier guidance (a denoiser wrapper, or a step: the mean form) and
                     classifier-free guidance (a denoiser wrapper)
        distillation progressive distillation's target x~ (two teacher DDIM steps in one) and objective
        consistency  consistency models: f(x_t, t) exact at the data, distillation and training as one objective
        inversion    DDIM inversion (encode x_0 to x_T with the same loop, climbing) and slerp
        likelihood   the variational bound in bits/dim (Gaussian KLs, the discretised decoder), the
                     learned variance's range, and L_hybrid and L_vlb as objectives
        oracles      exact answers: Gaussian data and a class-conditional Gaussian mixture, their exact
                     denoiser, classifier and probability-flow map (for tests and lessons)
        latent       latent diffusion's first stage: the KL to N(0, I) and the autoencoder's objective
                     (AutoencoderLoss: squared error + KL, no noise schedule)
        cascade      cascaded diffusion: area down- and bilinear upsampling, the conditioning
                     augmentation (level s = round(s T) forward steps), the SR model's cond dict, its
                     L_simple, and the two-stage sampler (two calls of one sampler preset)
    models/       the networks (never import diffusion/, training/, evaluation/ or course/)
        base         what every network shares: the recorded config, from_config, prediction,
                     num_classes, data_shape, the input checks
        embeddings   the sinusoidal time embedding
        layers       the shared layers: time and class embeddings (with the null class), ResBlock,
                     attention, down/up-sampling, group_norm, zero_init
        mlp          a small MLP denoiser for 2-D data
        unet         the U-Net denoiser for images, and its presets (lesson 3's tables of its
                     shapes and parameters: course/inspection); SuperResUNet, the U-Net of a
                     cascade's super-resolution stage (extra input channels, the augmentation level)
        classifiers  the course's MNIST and CIFAR-10 classifiers
        noisy_classifier  f_phi(y | x_t, t), the guide of classifier guidance (the U-Net's down path)
        autoencoder  the KL-regularised autoencoder of latent diffusion: encode -> (mean, logvar), decode
        dit          the Diffusion Transformer: patchify, adaLN-Zero blocks, the paper's presets and tiny MNIST ones
    data/         toy (2-D datasets), images (MNIST, CIFAR-10, folders, grids), loader (batches),
                  latents (a dataset encoded once by an autoencoder, scaled to unit variance)
    training/     trainer (one loop for every model), distributed (the same loop on several
                  processes: torchrun), ema, checkpoint, profiles (ci, cpu, gpu),
                  classifier_fit (the classifiers' own loop: SGD, one-cycle),
                  distill (progressive distillation: one Trainer per halving); never imports
                  pretrained or recipes
    evaluation/   metrics (2-D quality, nearest neighbours, PSNR), fid (FID and KID), judges (class accuracy)
    pretrained    the one format of every shipped model, its one writer and its verifying loader
    cards         the one schema of every model card (check_card) and hardware(), what a run ran on
    recipes/      how every shipped model is made, each by one command (python -m lesson_lib.train
                  --recipe NAME): run (the run folder and what recipes share), mnist_cond,
                  likelihood (mnist_learned_variance, mnist_vlb), distilled (mnist_v_teacher, mnist_distilled_N),
                  consistency (mnist_consistency), noisy_classifier (lesson 5's guide), classifiers
                  (the judges), autoencoder (lesson 10's mnist_autoencoder and cifar10_autoencoder),
                  latent (lesson 10's mnist_latent and cifar10_latent, lesson 13's mnist_latent_flow)
    files         atomic writes and sha256, used by every layer
    arguments     checks of arguments where they enter, with errors that name the fix
    cli           what the command lines share: argument types, one-line errors
    course/       instructor tooling: plotting, assignments, checks, colab (the repository URL of
                  every notebook's badge and install cell), pairing (each notebook's jupytext
                  percent script, for review), and the grader with its parts:
                  notebook (reading a submission), reader (in a memory-limited process),
                  worker (runs it), box (the fence inside the worker), protocol (its
                  messages), sandbox (bubblewrap), session (one submission's run), batch (a
                  whole class), flags (what an instructor should look at); checks/judging
                  (what the lessons' checks share); feedback (the grader's checks of one
                  exercise, run in the student's notebook for the student's own feedback);
                  playground (lesson 13's panel over every shipped MNIST generator)

Command lines: ``python -m lesson_lib.train`` (``--config`` or ``--recipe``), ``.sample``, ``.evaluate`` and, for
instructors, ``python -m lesson_lib.course.assignments`` (exercises from solutions) and
``python -m lesson_lib.course.grader``; ``python -m lesson_lib.course.colab sync|check`` points
every notebook's Colab badge and install cell at the repository named there.
docs/architecture.md explains the layout and the data flow
schedule -> forward -> model -> denoiser -> step -> loop.

Index convention used everywhere: a code timestep ``t`` in ``{0, ..., T-1}`` is the
paper's timestep ``t + 1``. So ``betas[0]`` is the paper's beta_1 and ``alpha_bars[T-1]``
is the paper's alpha-bar_T; a step's target ``s = -1`` is the data x_0.
"""

__version__ = "0.2.0"
