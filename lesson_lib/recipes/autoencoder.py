"""mnist_autoencoder and cifar10_autoencoder: the first stage of lesson 10's latent diffusion (Rombach et al. 2022).

A KL-regularised autoencoder (:class:`~lesson_lib.models.autoencoder.AutoencoderKL`, its presets
"mnist": 28x28x1 -> 7x7x4 and "cifar10": 32x32x3 -> 8x8x8, both f = 4) trained by the course's
Trainer on :class:`~lesson_lib.diffusion.latent.AutoencoderLoss`: the summed squared error of the
decoded sample plus 1e-6 times the summed KL to N(0, I). No feature (perceptual) loss: the only
feature network the course has offline is the classifier whose features FID reads, and training on
them would make the reconstruction FID below measure the loss instead of the images.

``export`` measures the shipped fp16 weights (:func:`reconstruction_figures`):

* the scale factor, 1 / the std of the posterior means over the whole training split
  (:func:`lesson_lib.data.latents.scale_factor`), which goes on the card, and the std of the test
  split's latents times that factor (near 1 when the factor generalises);
* sigma / std: the root-mean-square posterior sigma in units of the latents' std (how far a sample
  of q(z | x) lies from the mean that :mod:`lesson_lib.data.latents` encodes);
* PSNR (:func:`lesson_lib.evaluation.metrics.psnr`) of the reconstructions (decoded posterior means,
  clipped to [-1, 1]) of ``n`` test images, and their FID and KID against ``n`` training images on the
  course's classifier features, beside the real-data floor at the same ``n``: the reconstructed
  images are exactly the test images that :func:`~lesson_lib.evaluation.fid.real_floor` compares with
  the same training images, so a perfect autoencoder scores the floor itself. This reconstruction
  FID is the floor of any latent diffusion model decoded by this autoencoder.

How the settings were chosen, in short trials on one thread of an Intel Xeon CPU (batch 64, EMA
weights, one seed; the full runs are longer and were not part of them):

* the squared error rather than the reference's L1: at the same steps it gave the higher PSNR
  (MNIST, width 16, 800 steps: 30.1 against 27.9 dB; CIFAR-10 at f = 2, width 32, 300 steps: 31.4 against
  29.2 dB) and a reconstruction FID no worse (MNIST 0.354 against 0.361, floor 0.335; CIFAR-10 1.92
  against 3.51, floor 0.67; n = 1,000 each);
* kl_weight 1e-6, the reference's: with the L1 loss on MNIST (width 32, 500 steps, 500 test images)
  1e-6, 1e-4 and 1e-2 gave PSNR 28.4, 27.5 and 27.0 dB and sigma / std 0.08, 0.08 and 0.22; a
  stronger KL costs fidelity and makes the posterior noisier, and none of them brought the latents'
  std to 1 (1 / std was 1.32, 1.16 and 1.04), which the scale factor does;
* the widths (with the L1 loss): at equal CPU time (about 4.5 minutes) the MNIST autoencoder of
  width 16 (1,600 steps) reached 29.9 dB where width 32 (500 steps) reached 28.4 dB, so the full run
  spends its time on steps; CIFAR-10's width 32 reached 32.3 dB in 500 steps at f = 2, and width 64 costs
  3.4 times as much per step;
* CIFAR-10's latent at f = 4 (the factor the lesson compares with MNIST's): 400 steps of width 32 with
  the squared error gave 25.3 dB with c = 4 channels (8x8x4, 12x fewer numbers than the image) and
  26.0 dB with c = 8 (8x8x8, 6x fewer), at the same cost per step (0.74 to 0.77 s); the full run takes
  c = 8, whose reconstructions bound what its latent diffusion model can reach.
"""

import torch

from ..data.latents import encode_dataset
from ..diffusion.latent import AutoencoderLoss
from ..evaluation.fid import compute_metrics, real_floor, reference_images
from ..evaluation.metrics import psnr
from ..models.autoencoder import autoencoder_preset
from ..pretrained import model_from_state, model_payload
from ..training.trainer import TrainConfig, Trainer
from .run import Recipe

CI = dict(steps=4, batch_size=8, lr=1e-3, warmup_steps=2, ema_decay=0.9, log_every=2, checkpoint_every=2,
          n_train=256, n_test=64, evaluation=dict(n=20, seed=0, batch_size=20))
SETTINGS = {
    # full: 12,000 steps of batch 64 (13 epochs) at 0.17 to 0.20 s a step on one CPU thread: 35 to 40 minutes
    "mnist": {
        "full": dict(preset="mnist", autoencoder={}, kl_weight=1e-6, reconstruction="l2", steps=12000,
                     batch_size=64, lr=1e-3, warmup_steps=200, ema_decay=0.999, hflip=False, seed=0, log_every=100,
                     checkpoint_every=1000, threads=1, evaluation=dict(n=2000, seed=0, batch_size=500)),
        "ci": dict(preset="mnist", autoencoder=dict(base_channels=8), kl_weight=1e-6, reconstruction="l2",
                   hflip=False, seed=0, **CI),
    },
    # full: 6,000 steps of batch 64 (7.7 epochs, random flips) at 0.38 s a step on two CPU threads: 40 minutes;
    # measured at n = 5,000, the n of cifar10_latent's figures, whose floor this reconstruction FID is
    "cifar10": {
        "full": dict(preset="cifar10", autoencoder={}, kl_weight=1e-6, reconstruction="l2", steps=6000,
                     batch_size=64, lr=1e-3, warmup_steps=200, ema_decay=0.999, hflip=True, seed=0, log_every=100,
                     checkpoint_every=500, threads=2, evaluation=dict(n=5000, seed=0, batch_size=500)),
        "ci": dict(preset="cifar10", autoencoder=dict(base_channels=8), kl_weight=1e-6, reconstruction="l2",
                   hflip=True, seed=0, **CI),
    },
}
DESCRIPTIONS = {
    "mnist": "KL-regularised convolutional autoencoder for MNIST (AutoencoderKL preset 'mnist': 28x28x1 -> 7x7x4, "
             "f = 4; ResBlocks, no attention), trained on the summed squared error plus 1e-6 times the KL to N(0, I); "
             "the first stage of latent diffusion. EMA weights stored in float16.",
    "cifar10": "KL-regularised convolutional autoencoder for CIFAR-10 (AutoencoderKL preset 'cifar10': 32x32x3 -> "
               "8x8x8, f = 4; ResBlocks, no attention), trained on the summed squared error plus 1e-6 times the KL "
               "to N(0, I); the first stage of latent diffusion. EMA weights stored in float16.",
}


def build(settings, images, device=None, checkpoint_path=None):
    """The autoencoder, its objective and the Trainer of ``settings`` on ``images`` (benchmarks and
    lessons build their runs with it too)."""
    torch.manual_seed(settings["seed"])            # the initial weights too: the same settings, the same model
    model = autoencoder_preset(settings["preset"], **settings["autoencoder"])
    config = TrainConfig(batch_size=settings["batch_size"], lr=settings["lr"], warmup_steps=settings["warmup_steps"],
                         ema_decay=settings["ema_decay"], hflip=settings["hflip"], seed=settings["seed"],
                         log_every=settings["log_every"])
    objective = AutoencoderLoss(settings["kl_weight"], settings["reconstruction"])
    return Trainer(model, images, objective, config, device=device, checkpoint_path=checkpoint_path)


def train(run):
    s = run.settings
    images, _ = run.images("train")
    trainer = build(s, images, run.device, run.path("checkpoint.pt"))
    run.resume(trainer)
    run.train(trainer, s["steps"], checkpoint_every=s["checkpoint_every"])
    return trainer


@torch.no_grad()
def reconstruct(autoencoder, images, batch_size=500):
    """Decoded posterior means of ``images`` (N, C, H, W) in [-1, 1], clipped to [-1, 1], on the CPU."""
    device, chunks = next(autoencoder.parameters()).device, []
    autoencoder.eval()
    for x in images.split(batch_size):
        chunks.append(autoencoder.decode(autoencoder.encode(x.to(device))[0]).clamp(-1, 1).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def reconstruction_figures(autoencoder, dataset, train_images, test_images, n, seed=0, batch_size=500, data_dir=None):
    """What the card of an autoencoder reports (see the module docstring), as a dict: the scale factor
    from ``train_images`` (all of them), the scaled std of ``test_images``' latents, sigma / std, and PSNR,
    FID and KID of ``n`` reconstructed test images beside the floor at the same ``n`` (seed ``seed``)."""
    autoencoder.eval()
    train = encode_dataset(autoencoder, train_images, batch_size=batch_size)
    test = encode_dataset(autoencoder, test_images, scale=train.scale_factor, batch_size=batch_size)
    originals = reference_images(dataset, "test", n, seed + 1, data_dir)     # real_floor's two sets
    references = reference_images(dataset, "train", n, seed, data_dir)
    device = next(autoencoder.parameters()).device
    logvar = torch.cat([autoencoder.encode(x.to(device))[1].float().cpu() for x in originals.split(batch_size)])
    reconstructions = reconstruct(autoencoder, originals, batch_size)
    # FID and KID are symmetric; with the training images first, as real_floor has them, KID draws the same
    # subsets as the floor's, so a perfect autoencoder scores the floor to the last digit
    quality = compute_metrics(references, reconstructions, dataset, batch_size=batch_size, data_dir=data_dir, seed=seed)
    floor = real_floor(dataset, n, batch_size=batch_size, data_dir=data_dir, seed=seed)
    return {"scale_factor": train.scale_factor, "n_train_latents": len(train.data),
            "scaled_latent_std_test": float(test.data.double().std()), "n_test_latents": len(test.data),
            "posterior_sigma_over_latent_std": float(logvar.double().exp().mean().sqrt()) * train.scale_factor,
            "n": n, "psnr_db": float(psnr(reconstructions, originals).mean()),
            "reconstruction_fid": quality["fid"], "fid_floor_train_vs_test": floor["fid"],
            "reconstruction_kid": quality["kid_mean"], "kid_floor": floor["kid_mean"],
            "feature_network": quality["feature_network"]}


def export(run, trainer, weights_dir, overwrite=False):
    s, e, dataset = run.settings, run.settings["evaluation"], run.recipe.dataset
    payload = model_payload(trainer)
    autoencoder, _ = model_from_state(payload, device=trainer.device)      # the shipped weights, as they load
    figures = reconstruction_figures(autoencoder, dataset, run.images("train")[0], run.images("test")[0], e["n"],
                                     e["seed"], e["batch_size"], run.data_dir)
    rounding = {"scale_factor": 6, "scaled_latent_std_test": 4, "posterior_sigma_over_latent_std": 5, "psnr_db": 3,
                "reconstruction_fid": 3, "fid_floor_train_vs_test": 3, "reconstruction_kid": 5, "kid_floor": 5}
    evaluation = {key: round(value, rounding[key]) if key in rounding else value for key, value in figures.items()}
    evaluation["reconstructions"] = ("decoded posterior means of n test images, clipped to [-1, 1]; FID and KID "
                                     "against n training images, the same two sets as the floor's")
    name = run.recipe.name
    card = run.card(name, "autoencoder", DESCRIPTIONS[dataset], autoencoder, evaluation, weights_dir,
                    architecture=type(autoencoder).__name__, model_config=dict(autoencoder.config),
                    latent_shape=list(autoencoder.latent_shape), scale_factor=evaluation["scale_factor"],
                    objective=trainer.objective.config(), settings=s, steps=trainer.step,
                    examples_seen=trainer.step * s["batch_size"])
    return [run.save(payload, weights_dir, name, card, overwrite)]


MNIST = Recipe("mnist_autoencoder", "mnist", ("mnist_autoencoder",), SETTINGS["mnist"], train, export,
               "lesson 10's MNIST autoencoder (28x28x1 -> 7x7x4): squared error + KL, 35-40 min on one CPU thread")
CIFAR10 = Recipe("cifar10_autoencoder", "cifar10", ("cifar10_autoencoder",), SETTINGS["cifar10"], train, export,
                 "lesson 10's CIFAR-10 autoencoder (32x32x3 -> 8x8x8): squared error + KL, 40 min on two CPU threads")
RECIPES = (MNIST, CIFAR10)
"""The recipes whose models ship (lesson_lib.recipes registers them)."""
