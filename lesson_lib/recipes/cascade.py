"""mnist_base14 and mnist_sr: lesson 12's cascade (Ho et al. 2021, Cascaded Diffusion Models), a 14 x 14 base
model and a 14 -> 28 super-resolution model with conditioning augmentation.

``mnist_base14`` is ``mnist_cond``'s recipe on MNIST shrunk to 14 x 14 by area downsampling
(:func:`lesson_lib.diffusion.cascade.downsample`): the same objective (L_simple, label dropout 0.1, so it
also serves classifier-free guidance), the same Trainer, and the U-Net "mnist" without its outer level
(14 -> 7, widths 32-64, attention at 7x7), a quarter of the pixels.

``mnist_sr`` is a :class:`~lesson_lib.models.unet.SuperResUNet` at 28 x 28 that reads x_t beside the
bilinearly upsampled 14-px image, trained by :class:`~lesson_lib.diffusion.cascade.AugmentedLSimple`
on pairs made from the training digits: at every step each low-resolution image is noised afresh at a
level drawn uniformly from [0, 0.5] (s, a fraction of T; the network is told s), so one model serves
every level at sampling time (CDM, Sec. 4.1, "randomized conditioning augmentation"). It is not
class-conditional: the 14-px image carries the class.

``export`` measures the shipped fp16 weights. The base: FID and class accuracy of its DDIM samples
enlarged to 28 x 28 (bilinear), beside the same figures of real test digits shrunk and enlarged the same
way (the floor of anything drawn at 14 px). The SR model: super-resolution of real 14-px test digits, and
the whole cascade (mnist_base14's samples, then mnist_sr at ``level``; the base exported into the same
folder when there is one, else the shipped one), each with FID, class accuracy and
consistency (the mean squared difference between the output shrunk back to 14 px and its 14-px input).
benchmarks/cascade.py measures the lesson's table (every level, the cascade without augmentation, a direct
28-px model).
"""

from pathlib import Path

import torch

from ..data.images import load_dataset, uint8_to_float
from ..diffusion.cascade import AugmentedLSimple, LowResCondition, cascade_sample, downsample, upsample
from ..diffusion.sampling import ddim_sample
from ..diffusion.schedules import NoiseSchedule
from ..evaluation.fid import compute_metrics, reference_images
from ..evaluation.judges import class_accuracy
from ..models.unet import SuperResUNet
from ..pretrained import load_pretrained, model_card, model_from_state, model_payload
from ..training.trainer import TrainConfig, Trainer
from .mnist_cond import SETTINGS as MNIST_COND, build as build_conditional
from ..sample import generate
from .run import Recipe

BASE_UNET = dict(image_size=14, channel_mults=(1, 2), attention_resolutions=(7,))
"""Overrides of the U-Net preset "mnist" for 14 x 14 digits: 14 -> 7, widths 32-64, attention at 7x7."""
SR_UNET = dict(in_channels=1, image_size=28, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
               attention_resolutions=(), dropout=0.0)
"""The SR network: 28 -> 14 -> 7, widths 32-64-64, one ResBlock per level, no attention (an image to sharpen
needs less context than one to invent)."""
EVALUATION = dict(n=2000, steps=50, batch_size=500)
CI_EVALUATION = dict(n=20, steps=2, batch_size=20)
SETTINGS = {
    "base": {
        # full: 6,000 steps of batch 128 (13 epochs) on one CPU thread
        "full": dict(MNIST_COND["full"], unet=BASE_UNET, steps=6000, max_seconds=0, threads=1,
                     batch_size=128, evaluation=EVALUATION),
        "ci": dict(MNIST_COND["ci"], unet=dict(MNIST_COND["ci"]["unet"], image_size=14,
                                              attention_resolutions=(7,)), evaluation=CI_EVALUATION),
    },
    "sr": {
        # full: 6,000 steps of batch 64 on one CPU thread
        "full": dict(unet=SR_UNET, level=0.5, random_level=True, batch_size=64, lr=1e-3, warmup_steps=200,
                     ema_decay=0.999, seed=0, log_every=100, steps=6000, checkpoint_every=500, threads=1,
                     base="mnist_base14", evaluation=dict(EVALUATION, level=0.2)),
        "ci": dict(unet=dict(SR_UNET, base_channels=16, channel_mults=(1, 2)), level=0.5, random_level=True,
                   batch_size=8, lr=2e-3, warmup_steps=2, ema_decay=0.9, seed=0, log_every=2, steps=4,
                   checkpoint_every=2, n_train=256, base="mnist_base14", evaluation=dict(CI_EVALUATION, level=0.2)),
    },
}
SCHEDULE = "linear, T=1000, beta 1e-4 -> 0.02"
SAMPLING = {"sampler": "ddim", "steps": 50, "grid": "linspace"}
"""Both stages' defaults in lesson_lib.sample; the SR card adds the augmentation level it samples at."""
SR_LEVEL = 0.0
"""The level ``python -m lesson_lib.sample --pretrained mnist_sr`` samples at: the best of the levels
benchmarks/cascade.py measured (docs/cascade_table.json: s = 0, FID 0.253 and 97.1% class accuracy at
n = 2,000; s = 0.2, the card's evaluation level, 0.402 and 85.9%)."""
DESCRIPTIONS = {
    "mnist_base14": "Class-conditional DDPM on MNIST shrunk to 14x14 (area downsampling): the first stage of lesson "
                    "12's cascade. U-Net 14 -> 7 (widths 32-64, attention at 7x7), 10 classes + a learned null class, "
                    "label dropout 0.1. EMA weights stored in float16.",
    "mnist_sr": "Super-resolution DDPM 14x14 -> 28x28 on MNIST: the second stage of lesson 12's cascade. A SuperResUNet "
                "reading x_t beside the bilinearly upsampled 14-px image, noised at a level s drawn from [0, 0.5] in "
                "training (conditioning augmentation, s embedded like t). EMA weights stored in float16.",
}


def low_resolution(images):
    """Digits as the cascade's first stage sees them: uint8 (N, 1, 28, 28) -> float (N, 1, 14, 14) in [-1, 1]."""
    return downsample(uint8_to_float(images))


def train_base(run):
    s = run.settings
    images, labels = run.images("train")
    trainer = build_conditional(s, low_resolution(images), labels, run.device, run.path("checkpoint.pt"))
    run.resume(trainer)
    run.train(trainer, s["steps"], s["max_seconds"], s["checkpoint_every"])
    return trainer


def build_sr(settings, images, device=None, checkpoint_path=None):
    """The SR U-Net, AugmentedLSimple and the Trainer of ``settings`` on uint8 digits ``images``."""
    torch.manual_seed(settings["seed"])
    model = SuperResUNet(embed_aug_level=settings["level"] > 0, **settings["unet"])
    config = TrainConfig(batch_size=settings["batch_size"], lr=settings["lr"], warmup_steps=settings["warmup_steps"],
                         ema_decay=settings["ema_decay"], seed=settings["seed"], log_every=settings["log_every"])
    objective = AugmentedLSimple(NoiseSchedule.linear(1000), settings["level"], settings["random_level"],
                                 embed_level=settings["level"] > 0)
    return Trainer(model, images, objective, config, cond={"low_res": low_resolution(images)}, device=device,
                   checkpoint_path=checkpoint_path)


def train_sr(run):
    s = run.settings
    images, _ = run.images("train")
    trainer = build_sr(s, images, run.device, run.path("checkpoint.pt"))
    run.resume(trainer)
    run.train(trainer, s["steps"], checkpoint_every=s["checkpoint_every"])
    return trainer


def fid_against_training_digits(x, data_dir, device):
    """FID and KID of 28-px images ``x`` against as many training digits (drawn with seed 0): the SR
    inputs and the floor's images come from the test split, so the references must not."""
    reference = reference_images("mnist", "train", len(x), 0, data_dir)
    return compute_metrics(x, reference, dataset="mnist", data_dir=data_dir, device=device)


def figures(x, labels, x_low, data_dir, device):
    """FID (:func:`fid_against_training_digits`), class accuracy and consistency of 28-px images ``x`` drawn for ``labels``
    from 14-px inputs ``x_low``."""
    q = fid_against_training_digits(x, data_dir, device)
    accuracy = class_accuracy(x, labels, "mnist", device=device)["accuracy"]
    consistency = (downsample(x) - x_low.to(x.device)).pow(2).mean().item()
    return {"fid": round(q["fid"], 3), "kid": round(q["kid_mean"], 5), "class_accuracy": round(accuracy, 3),
            "consistency_mse": round(consistency, 5), "feature_network": q["feature_network"]}


def super_resolve(sr, schedule, x_low, level, steps, batch_size, seed=0, device="cpu"):
    """SR samples (DDIM-``steps``) of the 14-px images ``x_low``, augmented at ``level`` once per sample."""
    out = []
    for i in range(0, len(x_low), batch_size):
        generator = torch.Generator(device).manual_seed(seed + i)
        cond = LowResCondition(schedule, level, sr.embed_aug_level)(x_low[i:i + batch_size].to(device), sr.image_size,
                                                                     generator)
        out.append(ddim_sample(sr, schedule, (len(cond["low_res"]), *sr.data_shape), steps=steps, model_kwargs=cond,
                               generator=generator, device=device, clip_x0=True, progress=False).cpu())
    return torch.cat(out)


def cascade_samples(base, base_schedule, sr, sr_schedule, n, level, steps, batch_size, device="cpu"):
    """``n`` samples of the cascade (:func:`~lesson_lib.diffusion.cascade.cascade_sample`, DDIM-``steps``
    per stage, x0 clipped), the classes in turn: ``(x_high, x_low, labels)``."""
    labels = torch.arange(10).repeat(n // 10 + 1)[:n]
    highs, lows = [], []
    for i in range(0, n, batch_size):
        high, low, _ = cascade_sample(base, sr, base_schedule, len(labels[i:i + batch_size]),
                                      labels=labels[i:i + batch_size], level=level, sr_schedule=sr_schedule, seed=i,
                                      device=device, return_stages=True, steps=steps, clip_x0=True, progress=False)
        highs.append(high.cpu())
        lows.append(low.cpu())
    return torch.cat(highs), torch.cat(lows), labels


def export_base(run, trainer, weights_dir, overwrite=False):
    e = run.settings["evaluation"]
    payload = model_payload(trainer)
    model, schedule = model_from_state(payload, device=trainer.device)
    n = e["n"]
    labels = torch.arange(10).repeat(n // 10 + 1)[:n]
    x = torch.cat([generate(model, schedule, len(labels[i:i + e["batch_size"]]), "ddim", e["steps"],
                            {"y": labels[i:i + e["batch_size"]]}, trainer.device, i, False).cpu()
                   for i in range(0, n, e["batch_size"])])
    test, test_labels, _ = load_dataset("mnist", "test", run.data_dir, as_uint8=True)
    real = upsample(low_resolution(test[:n]), 28)
    evaluation = {
        "sampler": f"DDIM, {e['steps']} steps, eta=0, x0 clipped, conditional on the class (no guidance); "
                   f"samples enlarged to 28x28 (bilinear) for the course's feature network",
        "n": n, "references": "as many training digits (seed 0)",
        "samples": figures(upsample(x, 28), labels, x, run.data_dir, trainer.device),
        "real_test_14px_enlarged": figures(real, test_labels[:n], low_resolution(test[:n]), run.data_dir,
                                            trainer.device)}
    card = run.card("mnist_base14", "diffusion", DESCRIPTIONS["mnist_base14"], model, evaluation, weights_dir,
                    model_config=dict(model.config), prediction=model.prediction, schedule=SCHEDULE, sampling=SAMPLING,
                    settings=run.settings, steps=trainer.step, examples_seen=trainer.step * trainer.config.batch_size)
    return [run.save(payload, weights_dir, "mnist_base14", card, overwrite)]


def export_sr(run, trainer, weights_dir, overwrite=False):
    s, e = run.settings, run.settings["evaluation"]
    payload = model_payload(trainer)
    sr, schedule = model_from_state(payload, device=trainer.device)
    test, test_labels, _ = load_dataset("mnist", "test", run.data_dir, as_uint8=True)
    x_low, labels = low_resolution(test[:e["n"]]), test_labels[:e["n"]]
    x = super_resolve(sr, schedule, x_low, 0.0, e["steps"], e["batch_size"], device=trainer.device)
    evaluation = {"sampler": f"DDIM, {e['steps']} steps per stage, eta=0, x0 clipped", "n": e["n"],
                  "references": "as many training digits (seed 0); the SR inputs are test digits",
                  "sr_of_real_14px": figures(x, labels, x_low, run.data_dir, trainer.device)}
    # the base model: the one exported beside this one when there is one (a fresh pair), else the shipped one
    base_dir = weights_dir if (Path(weights_dir) / f"{s['base']}.json").exists() else None
    base, base_schedule = load_pretrained(s["base"], device=trainer.device, weights_dir=base_dir)
    x, x_low, labels = cascade_samples(base, base_schedule, sr, schedule, e["n"], e["level"], e["steps"],
                                       e["batch_size"], trainer.device)
    evaluation[f"cascade_level_{e['level']:g}"] = figures(x, labels, x_low, run.data_dir, trainer.device)
    evaluation["cascade_base"] = {"name": s["base"], "sha256": model_card(s["base"], base_dir)["sha256"]}
    card = run.card("mnist_sr", "diffusion", DESCRIPTIONS["mnist_sr"], sr, evaluation, weights_dir,
                    model_config=dict(sr.config), prediction=sr.prediction, schedule=SCHEDULE,
                    sampling=dict(SAMPLING, level=SR_LEVEL),
                    settings=s, steps=trainer.step, examples_seen=trainer.step * trainer.config.batch_size)
    return [run.save(payload, weights_dir, "mnist_sr", card, overwrite)]


BASE = Recipe("mnist_base14", "mnist", ("mnist_base14",), SETTINGS["base"], train_base, export_base,
              "lesson 12's 14x14 class-conditional base model (mnist_cond's recipe on shrunk digits)")
SR = Recipe("mnist_sr", "mnist", ("mnist_sr",), SETTINGS["sr"], train_sr, export_sr,
            "lesson 12's 14 -> 28 super-resolution model with conditioning augmentation (needs mnist_base14)")
RECIPES = (BASE, SR)
"""The recipes whose models ship (lesson_lib.recipes registers them)."""
