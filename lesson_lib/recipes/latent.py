"""mnist_latent, mnist_latent_flow and cifar10_latent: class-conditional models on an autoencoder's latents (lessons 10, 13).

The second stage of latent diffusion. The shipped autoencoder ``mnist_autoencoder`` (its recipe:
:mod:`lesson_lib.recipes.autoencoder`) encodes every training digit once into a 7x7x4 latent
(:func:`lesson_lib.data.latents.encode_dataset`: posterior means, cached in the run folder, scaled by
the training set's 1 / std that the autoencoder's card records), and a U-Net learns L_simple on those
latents exactly as ``mnist_cond`` learns it on pixels: the same linear schedule (T = 1000), the same
label dropout 0.1 (so one network also serves classifier-free guidance), the same Trainer.

The U-Net is the pixel model's innermost level: the preset "mnist" runs 28 -> 14 -> 7 with widths
32-64-64 and attention at 7x7; here one level of width 64 at 7x7, with attention, is the whole network
(a 7x7 map cannot be halved twice). Its card's ``latent`` names the autoencoder and the scale, so
``python -m lesson_lib.sample --pretrained mnist_latent`` decodes its samples (x0_hat never clipped:
latents are not confined to [-1, 1]).

``cifar10_latent`` is the same recipe on ``cifar10_autoencoder``'s 8x8x8 latents, with a U-Net of two
levels (8 -> 4, widths 64-128, attention at 4x4, no dropout: 13 epochs do not overfit). Flipping a latent
is not flipping its image, so the training set is encoded twice, as it is and flipped left to right (the
flips the pixel models take).

``mnist_latent_flow`` (lesson 13) is mnist_latent's recipe with flow matching for L_simple: the same U-Net
(built to predict a velocity), data and Trainer, the objective :class:`~lesson_lib.diffusion.flow_matching.FlowMatching`
(the straight path, logit-normal t); its export samples by Euler on the flow, without guidance and with
classifier-free guidance (w = 2) on the velocity.

``export`` measures the shipped fp16 weights, decoded: FID, KID and class accuracy of DDIM samples
without guidance and with classifier-free guidance, beside the real-data floor and the autoencoder's
reconstruction FID (the floor any model decoded by it inherits).
"""

import torch

from ..data.latents import encode_dataset, latent_decoder
from ..diffusion.guidance import ClassifierFreeGuidance
from ..diffusion.flow_matching import FlowMatching
from ..diffusion.losses import LSimple
from ..diffusion.schedules import NoiseSchedule
from ..evaluate import evaluate
from ..models.unet import UNet
from ..pretrained import load_autoencoder, model_from_state, model_payload
from ..sample import FLOW_SAMPLERS
from ..training.trainer import TrainConfig, Trainer
from .run import Recipe

UNET = dict(base_channels=64, channel_mults=(1,), num_res_blocks=2, attention_resolutions=(7,), dropout=0.1)
CIFAR10_UNET = dict(base_channels=64, channel_mults=(1, 2), num_res_blocks=2, attention_resolutions=(4,), dropout=0.0)
CI = dict(batch_size=8, lr=2e-3, warmup_steps=2, ema_decay=0.9, class_dropout=0.1, seed=0, log_every=2, steps=4,
          checkpoint_every=2, n_train=256, evaluation=dict(n=20, steps=2, guidance=(0.0, 2.0), batch_size=20))
SETTINGS = {
    "mnist": {
        # full: 8,000 steps of batch 128 (17 epochs) on one CPU thread
        "full": dict(autoencoder="mnist_autoencoder", unet=UNET, flips=False, batch_size=128, lr=1e-3,
                     warmup_steps=200, ema_decay=0.999, class_dropout=0.1, seed=0, log_every=100, steps=8000,
                     checkpoint_every=500, threads=1, evaluation=dict(n=2000, steps=50, guidance=(0.0, 2.0),
                                                                      batch_size=500)),
        "ci": dict(autoencoder="mnist_autoencoder", unet=dict(UNET, base_channels=16), flips=False, **CI),
    },
    "flow": {
        # full: mnist_latent's settings, trained by flow matching instead of L_simple (lesson 13)
        "full": dict(autoencoder="mnist_autoencoder", unet=UNET, flips=False, objective="flow_matching",
                     batch_size=128, lr=1e-3, warmup_steps=200, ema_decay=0.999, class_dropout=0.1, seed=0,
                     log_every=100, steps=8000, checkpoint_every=500, threads=1,
                     evaluation=dict(n=2000, steps=50, sampler="euler", guidance=(0.0, 2.0), batch_size=500)),
        "ci": dict(autoencoder="mnist_autoencoder", unet=dict(UNET, base_channels=16), flips=False,
                   objective="flow_matching", **dict(CI, evaluation=dict(CI["evaluation"], sampler="euler",
                                                                          guidance=(0.0,)))),
    },
    "cifar10": {
        # full: 10,000 steps of batch 128 (13 epochs of the 100,000 latents) at 0.37 s a step on two CPU threads
        "full": dict(autoencoder="cifar10_autoencoder", unet=CIFAR10_UNET, flips=True, batch_size=128, lr=1e-3,
                     warmup_steps=200, ema_decay=0.999, class_dropout=0.1, seed=0, log_every=100, steps=10000,
                     checkpoint_every=500, threads=2, evaluation=dict(n=5000, steps=25, guidance=(0.0, 2.0, 4.0),
                                                                      batch_size=500)),
        "ci": dict(autoencoder="cifar10_autoencoder", unet=dict(CIFAR10_UNET, base_channels=16), flips=True, **CI),
    },
}
SCHEDULE = "linear, T=1000, beta 1e-4 -> 0.02"
FLOW_SCHEDULE = "flow matching: x_t = (1 - t) x_0 + t eps, t = 1 noise, network time round(1000 t) - 1"
SAMPLER_NAMES = {"ddim": "DDIM (eta = 0)", "euler": "Euler on the flow", "heun": "Heun on the flow"}
SAMPLING = {"sampler": "ddim", "steps": 50, "grid": "linspace"}
DESCRIPTIONS = {
    "mnist_latent_flow": "Class-conditional flow matching (straight path, logit-normal t) on MNIST's latents: "
                         "mnist_latent's U-Net and data, trained to predict the velocity eps - x0 instead of eps; "
                         "sample by integrating dx/dt = v from t = 1 (noise) to 0 (Euler or Heun), then decode with "
                         "mnist_autoencoder. EMA weights stored in float16.",
    "mnist": "Class-conditional latent diffusion on MNIST: a U-Net (one level of width 64 at 7x7, attention, 10 classes "
             "+ a learned null class, label dropout 0.1) trained with L_simple on the scaled 7x7x4 latents of "
             "mnist_autoencoder; sample, then decode with it (never clip x0_hat). EMA weights stored in float16.",
    "cifar10": "Class-conditional latent diffusion on CIFAR-10: a U-Net (8x8 -> 4x4, widths 64-128, attention at 4x4, "
               "10 classes + a learned null class, label dropout 0.1) trained with L_simple on the scaled 8x8x8 latents "
               "of cifar10_autoencoder (the training images and their mirror images); sample, then decode with it "
               "(never clip x0_hat). EMA weights stored in float16.",
}


def encode(settings, images, labels, cache=None, device=None):
    """The training latents of ``images``: the shipped autoencoder's posterior means times its card's
    scale factor, with their labels (:class:`~lesson_lib.data.latents.LatentData`)."""
    autoencoder, scale = load_autoencoder(settings["autoencoder"], device=device or "cpu")
    return encode_dataset(autoencoder, images, labels, scale=scale, cache=cache)


def build(settings, latents, device=None, checkpoint_path=None):
    """The U-Net, L_simple and the Trainer of ``settings`` on ``latents`` (a LatentData)."""
    torch.manual_seed(settings["seed"])            # the initial weights too: the same settings, the same model
    c, size = latents.data.shape[1], latents.data.shape[-1]
    flow = settings.get("objective", "l_simple") == "flow_matching"
    model = UNet(in_channels=c, image_size=size, num_classes=10, prediction="v" if flow else "eps", **settings["unet"])
    config = TrainConfig(batch_size=settings["batch_size"], lr=settings["lr"], warmup_steps=settings["warmup_steps"],
                         ema_decay=settings["ema_decay"], hflip=False, seed=settings["seed"],
                         log_every=settings["log_every"])
    if flow:
        objective = FlowMatching("logit_normal", class_dropout=settings["class_dropout"])
    else:
        objective = LSimple(NoiseSchedule.linear(1000), class_dropout=settings["class_dropout"])
    return Trainer(model, latents.data, objective, config, cond=latents.cond, device=device,
                   checkpoint_path=checkpoint_path)


def train(run):
    s = run.settings
    images, labels = run.images("train")
    if s["flips"]:                                  # a flipped latent is not the latent of the flipped image
        images, labels = torch.cat([images, images.flip(-1)]), torch.cat([labels, labels])
    latents = encode(s, images, labels, cache=run.path("latents.pt"), device=run.device)
    trainer = build(s, latents, run.device, run.path("checkpoint.pt"))
    run.resume(trainer)
    run.train(trainer, s["steps"], checkpoint_every=s["checkpoint_every"])
    return trainer


def export(run, trainer, weights_dir, overwrite=False):
    s, e = run.settings, run.settings["evaluation"]
    payload = model_payload(trainer)
    model, schedule = model_from_state(payload, device=trainer.device)     # the shipped weights, as they load
    autoencoder, scale = load_autoencoder(s["autoencoder"], device=trainer.device)     # the scale encode() used
    decode = latent_decoder(autoencoder, scale)
    sampler = e.get("sampler", "ddim")
    evaluation = {"sampler": f"{SAMPLER_NAMES[sampler]}, {e['steps']} steps, x0_hat not clipped, decoded by "
                             f"{s['autoencoder']}",
                  "reconstruction_fid": autoencoder.card["evaluation"]["reconstruction_fid"],
                  "reconstruction_n": autoencoder.card["evaluation"]["n"]}
    for w in e["guidance"]:
        guidance = None if w == 0 else (lambda denoise, w=w: ClassifierFreeGuidance(denoise, w=w))
        q = evaluate(model, schedule, run.recipe.dataset, n=e["n"], sampler=sampler, steps=e["steps"],
                     device=trainer.device, data_dir=run.data_dir, batch_size=e["batch_size"], progress=False,
                     guidance=guidance, clip_x0=False, decode=decode)
        evaluation[f"guidance_{w:g}"] = {
            "n": q["n"], "fid": round(q["fid"], 3), "kid": round(q["kid_mean"], 5),
            "class_accuracy": round(q["class_accuracy"], 3), "mean_confidence": round(q["confidence"], 3),
            "samples_per_second": round(q["samples_per_s"], 1)}
        evaluation["fid_floor_train_vs_test"], evaluation["kid_floor"] = round(q["fid_floor"], 3), round(q["kid_floor"], 5)
        evaluation["feature_network"] = q["feature_network"]
    name = run.recipe.name
    card = run.card(name, "diffusion", DESCRIPTIONS.get(name, DESCRIPTIONS[run.recipe.dataset]), model, evaluation,
                    weights_dir, model_config=dict(model.config), prediction=model.prediction,
                    schedule=FLOW_SCHEDULE if sampler in FLOW_SAMPLERS else SCHEDULE,
                    sampling={**SAMPLING, "sampler": sampler, "steps": e["steps"]}, latent={"autoencoder": s["autoencoder"], "scale_factor": scale}, settings=s, steps=trainer.step,
                    examples_seen=trainer.step * trainer.config.batch_size)
    return [run.save(payload, weights_dir, name, card, overwrite)]


MNIST = Recipe("mnist_latent", "mnist", ("mnist_latent",), SETTINGS["mnist"], train, export,
               "lesson 10's class-conditional latent diffusion model on mnist_autoencoder's 7x7x4 latents")
FLOW = Recipe("mnist_latent_flow", "mnist", ("mnist_latent_flow",), SETTINGS["flow"], train, export,
              "lesson 13's class-conditional flow-matching model on mnist_autoencoder's 7x7x4 latents")
CIFAR10 = Recipe("cifar10_latent", "cifar10", ("cifar10_latent",), SETTINGS["cifar10"], train, export,
                 "lesson 10's class-conditional latent diffusion model on cifar10_autoencoder's 8x8x8 latents")
RECIPES = (MNIST, FLOW, CIFAR10)
"""The recipes whose models ship (lesson_lib.recipes registers them)."""
