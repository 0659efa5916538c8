"""mnist_learned_variance and mnist_vlb: mnist_cond with a learned variance (Nichol & Dhariwal 2021).

``mnist_learned_variance`` fine-tunes a learn_sigma copy of the shipped ``mnist_cond`` (every weight and
the eps head copied, the new v channel of the output convolution at zero: frac = 0.5, log Sigma half-way
between log beta and log beta-tilde) with L_hybrid (lambda 0.001,
:class:`~lesson_lib.diffusion.likelihood.Hybrid`). ``mnist_vlb`` fine-tunes the shipped
``mnist_learned_variance`` further with the bound alone (L_vlb, t importance-sampled,
:class:`~lesson_lib.diffusion.likelihood.LVlb`): under L_hybrid the mean at t = 1, whose decoder term L_0
is most of the bound on MNIST, is trained only by L_simple's 1/T share. Both ran on one CPU thread,
limited by the clock (35 and 50 minutes). ``export`` measures the bound in bits/dim on the first MNIST
test images (:func:`~lesson_lib.diffusion.likelihood.bits_per_dim`) and the FID of strided-DDPM samples
with the learned variance.
"""

import torch

from ..diffusion.denoiser import Denoiser
from ..diffusion.likelihood import Hybrid, LVlb, bits_per_dim
from ..diffusion.sampling import ddpm_sample
from ..diffusion.timesteps import spaced
from ..evaluation.fid import compute_metrics, real_floor
from ..models.unet import UNet
from ..pretrained import load_pretrained, model_from_state, model_payload
from ..training.trainer import TrainConfig, Trainer
from .run import Recipe

TRAIN = dict(batch_size=32, lr=1e-4, warmup_steps=50, ema_decay=0.995, seed=0, log_every=25)
EVALUATION = dict(n=1000, K=32, seed=0, batch_size=256, fid_n=200, fid_steps=(5, 10, 25), fid_seeds=(0, 1))
HYBRID = dict(start="mnist_cond", objective="hybrid", lambda_vlb=0.001, class_dropout=0.1, train=TRAIN,
              steps=None, max_seconds=35 * 60, checkpoint_every=25, threads=1, evaluation=EVALUATION)
VLB = dict(HYBRID, start="mnist_learned_variance", objective="vlb", importance=True,
           train=dict(TRAIN, lr=3e-5, warmup_steps=20), max_seconds=50 * 60)


def ci(full):
    """The same run in seconds: 3 steps of batch 4 on 256 images, the bound on 4 images."""
    ci = {k: v for k, v in full.items() if k != "threads"}
    return dict(ci, train=dict(full["train"], batch_size=4, warmup_steps=1, log_every=1), steps=3, max_seconds=0,
                checkpoint_every=1, n_train=256,
                evaluation=dict(n=4, K=2, seed=0, batch_size=8, fid_n=10, fid_steps=(2,), fid_seeds=(0,)))


SCHEDULE = "linear, T=1000, beta 1e-4 -> 0.02"
SAMPLING = {"sampler": "ddpm", "steps": 100, "grid": "linspace"}
DESCRIPTIONS = {
    "mnist_learned_variance": "mnist_cond with a learned variance (Nichol & Dhariwal 2021): the U-Net outputs eps "
                              "and v (learn_sigma=True), fine-tuned from mnist_cond's weights with L_hybrid (lambda "
                              "0.001, label dropout 0.1); the v channel started at zero (frac 0.5).",
    "mnist_vlb": "mnist_learned_variance fine-tuned with the bound alone (L_vlb, Nichol & Dhariwal 2021): t "
                 "importance-sampled by the second moment of the last 10 losses per t (uniform until every t has "
                 "10), the mean not detached, label dropout 0.1.",
}


def learned_variance_copy(model):
    """A learn_sigma=True U-Net with ``model``'s weights: the output convolution's first C
    channels are the eps head, the last C (v) start at zero, so frac = 0.5 everywhere."""
    copy = UNet.from_config(dict(model.config, learn_sigma=True))
    state = model.state_dict()
    weight, bias = state["out.2.weight"], state["out.2.bias"]
    state["out.2.weight"] = torch.cat([weight, torch.zeros_like(weight)])
    state["out.2.bias"] = torch.cat([bias, torch.zeros_like(bias)])
    copy.load_state_dict(state)
    return copy


def objective(settings, schedule):
    if settings["objective"] == "hybrid":
        return Hybrid(schedule, settings["lambda_vlb"], class_dropout=settings["class_dropout"])
    return LVlb(schedule, importance=settings["importance"], class_dropout=settings["class_dropout"])


def train(run):
    s = run.settings
    model, schedule = load_pretrained(s["start"])
    if not getattr(model, "learn_sigma", False):
        model = learned_variance_copy(model)
    images, labels = run.images("train")
    trainer = Trainer(model, images, objective(s, schedule), TrainConfig(**s["train"]), cond={"y": labels},
                      device=run.device, checkpoint_path=run.path("checkpoint.pt"))
    run.resume(trainer)
    run.train(trainer, s["steps"], s["max_seconds"], s["checkpoint_every"])
    return trainer


def measure(model, schedule, run):
    """The bound in bits/dim on the first n test images (unconditional: the null class; K stratified
    timesteps each; x0_hat not clipped, as the objectives train it: see
    :func:`~lesson_lib.diffusion.likelihood.bits_per_dim`) and the FID of strided-DDPM samples (n/10 per
    class, x0_hat clipped while sampling) against the floor."""
    e, device = run.settings["evaluation"], next(model.parameters()).device
    schedule = schedule.to(device)
    x0 = run.images("test", as_uint8=False)[0][:e["n"]].to(device)
    bound = bits_per_dim(Denoiser(model, schedule), schedule, x0, e["K"],
                         generator=torch.Generator().manual_seed(e["seed"]), batch_size=e["batch_size"])
    labels = (torch.arange(e["fid_n"]) % 10).to(device)
    by_steps = {}
    for steps in e["fid_steps"]:
        for seed in e["fid_seeds"]:
            x = ddpm_sample(model, schedule, (e["fid_n"], *model.data_shape), timesteps=spaced(schedule.T, steps),
                            generator=torch.Generator(device).manual_seed(seed), model_kwargs={"y": labels},
                            clip_x0=True, device=device, progress=False)
            fid = compute_metrics(x, dataset="mnist", data_dir=run.data_dir, seed=seed)["fid"]
            by_steps.setdefault(str(steps), []).append(round(float(fid), 3))
    return {"what": "negative log-likelihood bound in bits/dim on the MNIST test split (x0_hat not clipped) and FID "
                    "of strided-DDPM samples with the learned variance (x0_hat clipped)",
            "n": e["n"], "K": e["K"], "seed": e["seed"], "clip_x0": False, "conditioning": "unconditional (null class)",
            "bits_per_dim": {v: round(r.total, 4) for v, r in bound.items()},
            "standard_error": {v: round(r.standard_error, 4) for v, r in bound.items()},
            "L_0": {v: round(r.decoder, 4) for v, r in bound.items()},
            "fid": {"n": e["fid_n"], "floor": round(real_floor("mnist", e["fid_n"], data_dir=run.data_dir)["fid"], 3),
                    "seeds": list(e["fid_seeds"]), "by_steps": by_steps}}


def export(run, trainer, weights_dir, overwrite=False):
    name, s = run.recipe.name, run.settings
    payload = model_payload(trainer)
    model, schedule = model_from_state(payload, device=trainer.device)
    card = run.card(name, "diffusion", DESCRIPTIONS[name] + " EMA weights stored in float16.", model,
                    measure(model, schedule, run), weights_dir, model_config=dict(model.config),
                    prediction=model.prediction, schedule=SCHEDULE, sampling=SAMPLING,
                    objective=trainer.objective.config(), settings=s, start=f"{s['start']} (shipped weights)",
                    steps=trainer.step, examples_seen=trainer.step * trainer.config.batch_size,
                    history=[list(h) for h in trainer.history])
    return [run.save(payload, weights_dir, name, card, overwrite)]


RECIPES = (Recipe("mnist_learned_variance", "mnist", ("mnist_learned_variance",), {"full": HYBRID, "ci": ci(HYBRID)},
                  train, export, "mnist_cond with a learned variance: L_hybrid, 35 min on one CPU thread"),
           Recipe("mnist_vlb", "mnist", ("mnist_vlb",), {"full": VLB, "ci": ci(VLB)},
                  train, export, "mnist_learned_variance fine-tuned with L_vlb, 50 min on one CPU thread"))
