"""mnist_cond and mnist_dit: the class-conditional MNIST DDPMs, a U-Net (lessons 4 to 8) and a DiT (lesson 11).

L_simple (Ho et al. 2020, Algorithm 1) on the linear schedule, T = 1000, with label dropout 0.1
(Ho & Salimans 2022) so that the same network serves classifier-free guidance; the U-Net preset
"mnist" with 10 classes and a learned null class. It trains for 150 s of wall-clock time
(``max_seconds``): on one H200 that was 3,100 steps of batch 256; a CPU makes far fewer in 150 s.
``export`` measures FID, KID and class accuracy of DDIM samples of the shipped fp16 weights beside
the real-data floor (:func:`lesson_lib.evaluate.evaluate`), and again with classifier-free guidance at
each w of the settings' ``evaluation["guidance"]`` (mnist_dit: w = 2).

``mnist_dit`` trains lesson 11's Diffusion Transformer the same way (the same objective, label dropout,
Trainer, sampler and evaluation): the course's tiny preset "DiT-T/4" (6 adaLN-Zero blocks of width 128,
4 heads, 4 x 4 patches: 49 tokens per digit, 1.87M parameters) for a fixed number of steps on one CPU
thread. Two settings are the transformer's own. It predicts v (Salimans & Ho 2022) where the U-Net
and the paper's DiT predict eps: on this budget the eps-predicting DiT had learnt next to nothing
about the digits' shapes, where the v-predicting one had. After 1,000 steps of batch 128 each
(``benchmarks/dit.py prediction``, docs/benchmarks.md section 13), the course classifier read the
right class in the x0_hat of noised test digits (n = 1,000) at t = 500 and t = 800 for 24% and 9% of
them with eps, for 97% and 93% with v; DDIM-50 samples: FID 15.4 and 17% class accuracy against
6.6 and 72%. With eps, the part of the output that carries x_0 shrinks as the noise grows, and its errors are
multiplied by sqrt((1 - alpha-bar) / alpha-bar) in x0_hat (50 at t = 800); v keeps the digit itself
in the target at every t. And AdamW runs at 1e-3 after 500 warm-up steps (the paper: 1e-4 with batch
256; a tiny model on a short budget takes a larger step).
"""

import torch

from ..diffusion.guidance import ClassifierFreeGuidance
from ..diffusion.losses import LSimple
from ..diffusion.schedules import NoiseSchedule
from ..evaluate import evaluate
from ..models.dit import dit_preset
from ..models.unet import unet_preset
from ..pretrained import model_from_state, model_payload
from ..training.trainer import TrainConfig, Trainer
from .run import Recipe

SETTINGS = {
    "full": dict(preset="mnist", unet={}, batch_size=256, lr=1e-3, warmup_steps=200, ema_decay=0.999,
                 class_dropout=0.1, seed=0, log_every=100, steps=None, max_seconds=150, checkpoint_every=500,
                 evaluation=dict(n=2000, steps=100, batch_size=500)),
    "ci": dict(preset="mnist", unet=dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                                         attention_resolutions=(14,)),
               batch_size=8, lr=2e-3, warmup_steps=2, ema_decay=0.9, class_dropout=0.1, seed=0, log_every=2,
               steps=4, max_seconds=0, checkpoint_every=2, n_train=256,
               evaluation=dict(n=20, steps=2, batch_size=20)),
}
SETTINGS_DIT = {
    # full: 4,000 steps of batch 128 (8.5 epochs) on one CPU thread
    "full": dict(architecture="dit", preset="DiT-T/4", unet=dict(prediction="v"), batch_size=128, lr=1e-3, warmup_steps=500, ema_decay=0.999,
                 class_dropout=0.1, seed=0, log_every=100, steps=4000, max_seconds=0, checkpoint_every=500, threads=1,
                 evaluation=dict(n=2000, steps=50, batch_size=500, guidance=(2.0,))),
    "ci": dict(architecture="dit", preset="DiT-T/7", unet=dict(prediction="v"), batch_size=8, lr=1e-3, warmup_steps=2, ema_decay=0.9,
               class_dropout=0.1, seed=0, log_every=2, steps=4, max_seconds=0, checkpoint_every=2, n_train=256,
               evaluation=dict(n=20, steps=2, batch_size=20, guidance=(2.0,))),
}
SCHEDULE = "linear, T=1000, beta 1e-4 -> 0.02"
SAMPLING = {"sampler": "ddim", "steps": 100, "grid": "linspace"}
DESCRIPTIONS = {
    "mnist_cond": "Class-conditional DDPM on MNIST (U-Net preset 'mnist', 10 classes + a learned null class, label "
                  "dropout 0.1, so it also serves classifier-free guidance). EMA weights stored in float16.",
    "mnist_dit": "Class-conditional Diffusion Transformer on MNIST (preset 'DiT-T/4': 6 adaLN-Zero blocks of width "
                 "128, 4 heads, 4x4 patches = 49 tokens; 10 classes + a learned null class, label dropout 0.1, so it "
                 "also serves classifier-free guidance). EMA weights stored in float16.",
}
ARCHITECTURES = {"unet": unet_preset, "dit": dit_preset}
"""The networks a recipe of this module builds, by its settings' ``architecture`` (default "unet"):
``mnist_cond``'s U-Net, and lesson 11's DiT (``mnist_dit``) trained the same way."""


def build(settings, images, labels, device=None, checkpoint_path=None):
    """The model, L_simple and the Trainer of ``settings`` on class-labelled images (benchmarks/gpu_session.py
    builds its runs with it too)."""
    torch.manual_seed(settings["seed"])            # the initial weights too: the same settings, the same model
    preset = ARCHITECTURES[settings.get("architecture", "unet")]
    model = preset(settings["preset"], num_classes=10, **settings.get("unet", {}))
    config = TrainConfig(batch_size=settings["batch_size"], lr=settings["lr"], warmup_steps=settings["warmup_steps"],
                         ema_decay=settings["ema_decay"], hflip=settings.get("hflip", False), seed=settings["seed"],
                         log_every=settings["log_every"], max_seconds=settings["max_seconds"])
    objective = LSimple(NoiseSchedule.linear(1000), class_dropout=settings["class_dropout"])
    return Trainer(model, images, objective, config, cond={"y": labels}, device=device, checkpoint_path=checkpoint_path)


def train(run):
    s = run.settings
    images, labels = run.images("train")
    trainer = build(s, images, labels, run.device, run.path("checkpoint.pt"))
    run.resume(trainer)
    run.train(trainer, s["steps"], s["max_seconds"], s["checkpoint_every"])
    return trainer


def export(run, trainer, weights_dir, overwrite=False):
    e = run.settings["evaluation"]
    payload = model_payload(trainer)
    model, schedule = model_from_state(payload, device=trainer.device)     # the shipped weights, as they load
    q = evaluate(model, schedule, "mnist", n=e["n"], sampler="ddim", steps=e["steps"], device=trainer.device,
                 data_dir=run.data_dir, batch_size=e["batch_size"], progress=False)
    evaluation = {
        "sampler": f"DDIM, {e['steps']} steps, eta=0, x0 clipped to [-1, 1], conditional on the class (no guidance)",
        "n": q["n"], "fid": round(q["fid"], 3), "kid": round(q["kid_mean"], 5),
        "fid_floor_train_vs_test": round(q["fid_floor"], 3), "kid_floor": round(q["kid_floor"], 5),
        "class_accuracy": round(q["class_accuracy"], 3), "mean_confidence": round(q["confidence"], 3),
        "feature_network": q["feature_network"], "samples_per_second": round(q["samples_per_s"], 1)}
    for w in e.get("guidance", ()):                 # the same samples' seeds, with classifier-free guidance
        q = evaluate(model, schedule, "mnist", n=e["n"], sampler="ddim", steps=e["steps"], device=trainer.device,
                     data_dir=run.data_dir, batch_size=e["batch_size"], progress=False,
                     guidance=lambda denoise, w=w: ClassifierFreeGuidance(denoise, w=w))
        evaluation[f"guidance_{w:g}"] = {"fid": round(q["fid"], 3), "kid": round(q["kid_mean"], 5),
                                         "class_accuracy": round(q["class_accuracy"], 3),
                                         "mean_confidence": round(q["confidence"], 3),
                                         "samples_per_second": round(q["samples_per_s"], 1)}
    name = run.recipe.name
    card = run.card(name, "diffusion", DESCRIPTIONS[name], model, evaluation, weights_dir, model_config=dict(model.config), prediction=model.prediction,
                    schedule=SCHEDULE, sampling=SAMPLING, settings=run.settings, steps=trainer.step,
                    examples_seen=trainer.step * trainer.config.batch_size)
    return [run.save(payload, weights_dir, name, card, overwrite)]


RECIPE = Recipe("mnist_cond", "mnist", ("mnist_cond",), SETTINGS, train, export,
                "the class-conditional MNIST DDPM (L_simple, label dropout), 150 s on a GPU")
DIT = Recipe("mnist_dit", "mnist", ("mnist_dit",), SETTINGS_DIT, train, export,
             "lesson 11's class-conditional DiT-T/4 on MNIST (L_simple on v, label dropout), 4,000 steps on one CPU thread")
