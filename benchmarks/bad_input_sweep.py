#!/usr/bin/env python3
"""Bad input, swept: wrong calls to the wave-2 entry points, and what each one gets back.

    DDPM_DATA_DIR=/tmp/data python benchmarks/bad_input_sweep.py [--verbose] [--area sampling]

Each case is a call a student could plausibly make by mistake (a timestep list in the wrong
order, uint8 images, a network where a denoiser is expected, a wrong command-line flag...) and
the name of the argument a good error message would mention. A case ends as one of:

* ``clear``: an error raised by the library that names the argument (for a command line: exit
  status 2, the last line ``prog: error: ...`` naming the flag, no traceback, no file written);
* ``used``: not an error, the argument does what --help says (``--sampler ddpm --steps 20``);
* ``vague``: an error that does not name the argument, or Python's or torch's own message
  raised in the library (a bare KeyError, "'Tensor' object has no attribute 'x0'");
* ``silent``: accepted without complaint (NaN out, a wrong answer, a flag ignored);
* ``dependency``: an error raised inside torch, PIL, ... rather than in the library.

No test imports this script; tests/test_bad_input_wave2.py holds one test per class of bad
input. The command lines run in-process with the samplers replaced by a stub that records the
timesteps it was asked for and returns blank images, so that a case that is wrongly accepted
costs a second, not minutes of sampling.
"""

import argparse
import contextlib
import io
import math
import os
import tempfile
import traceback
from collections import Counter

import torch

import lesson_lib
from lesson_lib import evaluate as evaluate_cli
from lesson_lib import sample as sample_cli
from lesson_lib.cli import run
from lesson_lib.diffusion import likelihood as lk
from lesson_lib.diffusion.denoiser import ClipX0, Denoiser, Prediction
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance, ClassifierGuidance, ClassifierGuidedStep
from lesson_lib.diffusion.inversion import ddim_invert, slerp
from lesson_lib.diffusion.sampling import ddim_sample, ddpm_sample, sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import spaced
from lesson_lib.evaluation import fid, judges
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.models.unet import UNet

LIBRARY = os.path.dirname(os.path.abspath(lesson_lib.__file__))
S = NoiseSchedule.linear(20)
T = S.T
CASES = []                      # (area, what, the argument its error should name, the call, did it do as asked?)


def bad(area, what, name, fn, used=None):
    """Register ``fn()``, a bad call of ``area`` whose error should name ``name``; ``used(result)``
    says whether a call that returns did what was asked (e.g. gave exactly the steps asked for)."""
    CASES.append((area, what, name, fn, used))


# --- small models and data -----------------------------------------------------------------------

def mlp():
    torch.manual_seed(0)
    return MLPDenoiser(hidden=8, num_blocks=1)


def unet(num_classes=3):
    torch.manual_seed(0)
    return UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                attention_resolutions=(), image_size=8, num_classes=num_classes)


class Classifier(torch.nn.Module):
    """logits = a linear map of the flattened x_t (t ignored): a noisy classifier for 3 classes."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 3)

    def forward(self, x, t):
        return self.linear(x.flatten(1))


def den():
    return Denoiser(mlp(), S)


def cden():
    return Denoiser(unet(), S)


x2 = torch.randn(4, 2)
img = torch.randn(4, 1, 8, 8).clamp(-1, 1)
t4 = torch.tensor([3, 5, 7, 9])
y4 = torch.tensor([0, 1, 2, 0])
nan2 = torch.full((4, 2), math.nan)
grid = torch.randint(0, 256, (4, 1, 8, 8)).float() / 127.5 - 1          # 8-bit images in [-1, 1]
as_uint8 = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
as_255 = as_uint8.float()
nan_img = grid.clone()
nan_img[0, 0, 0, 0] = math.nan


def loop(timesteps, x=x2, denoise=None, **kw):
    return lambda: sample(denoise or den(), S, x, timesteps, ddim_step, progress=False, **kw)


# --- the sampling loop and its presets --------------------------------------------------------------

A = "sampling"
bad(A, "ascending list, end=-1", "timesteps", loop([1, 5, 9]))
bad(A, "repeated entries", "timesteps", loop([9, 5, 5, 0]))
bad(A, "unsorted list", "timesteps", loop([9, 2, 5, 0]))
bad(A, "empty list", "timesteps", loop([]))
bad(A, "entry >= T", "timesteps", loop([25, 0]))
bad(A, "fractional entries", "timesteps", loop([9.5, 3.2]))
bad(A, "2-D tensor list", "timesteps", loop(torch.tensor([[9, 5], [3, 0]])))
bad(A, "a number of steps, not a list", "timesteps", loop(10))
bad(A, "descending list, end above its last", "timesteps", loop([9, 5, 0], end=5))
bad(A, "ascending list, end below its last", "timesteps", loop([0, 5, 9], end=3))
bad(A, "end >= T", "end", loop([9, 5], end=50))
bad(A, "NaN x_T", "x_T", loop([9, 5, 0], x=nan2))
bad(A, "inf x_T", "x_T", loop([9, 5, 0], x=torch.full((4, 2), math.inf)))
bad(A, "uint8 x_T", "x_T", loop([9, 5, 0], x=torch.zeros(4, 2, dtype=torch.uint8)))
bad(A, "x_T a list", "x_T", loop([9, 5, 0], x=[[0.0, 0.0]]))
bad(A, "a network as denoise", "Denoiser", loop([9, 5, 0], denoise=mlp()))
bad(A, "a plain function returning a tensor", "Denoiser", loop([9, 5, 0], denoise=lambda x, t: x))
bad(A, "cond not a dict", "cond", loop([9, 5, 0], cond=torch.zeros(4)))
bad(A, "schedule a string", "schedule", lambda: sample(den(), "linear", x2, [9, 0], ddim_step, progress=False))


def ddpm(**kw):
    return lambda: ddpm_sample(mlp(), S, (4, 2), progress=False, **kw)


def ddim(**kw):
    return lambda: ddim_sample(mlp(), S, **{"shape": (4, 2), "steps": 5, "progress": False, **kw})


bad(A, "ddpm: ascending timesteps", "timesteps", ddpm(timesteps=[5, 7]))
bad(A, "ddpm: repeated timesteps", "timesteps", ddpm(timesteps=[7, 5, 5, 0]))
bad(A, "ddpm: variance unknown", "variance", ddpm(variance="fixed"))
bad(A, "ddim: steps > T", "steps", ddim(steps=50))
bad(A, "ddim: spacing unknown", "spacing", ddim(spacing="cubic"))
bad(A, "ddim: clip_x0 = -1", "clip_x0", ddim(clip_x0=-1))
bad(A, "ddim: clip_x0 a string", "clip_x0", ddim(clip_x0="yes"))
bad(A, "ddim: eta a string", "eta", ddim(eta="0"))
bad(A, "ddim: NaN x_T", "x_T", ddim(shape=None, x_T=nan2))
bad(A, "ddim: y out of range", "y", lambda: ddim_sample(unet(), S, (4, 1, 8, 8), steps=2, progress=False,
                                                       model_kwargs={"y": torch.tensor([0, 1, 2, 5])}))
bad(A, "ddim: y float", "y", lambda: ddim_sample(unet(), S, (4, 1, 8, 8), steps=2, progress=False,
                                                model_kwargs={"y": y4.float()}))
bad(A, "ddim: y of the wrong length", "y", lambda: ddim_sample(unet(), S, (4, 1, 8, 8), steps=2, progress=False,
                                                              model_kwargs={"y": torch.tensor([0, 1])}))
bad(A, "ddim: y 2-D", "y", lambda: ddim_sample(unet(), S, (4, 1, 8, 8), steps=2, progress=False,
                                              model_kwargs={"y": y4[:, None]}))
bad(A, "ddim: a Denoiser as model", "model", lambda: ddim_sample(den(), S, (4, 2), steps=2, progress=False))
bad(A, "ddim: a guidance instance as guidance", "guidance",
    lambda: ddim_sample(unet(), S, (4, 1, 8, 8), steps=2, progress=False, model_kwargs={"y": y4},
                        guidance=ClassifierFreeGuidance(cden(), 1.0)))

# --- the denoiser and clipping ---------------------------------------------------------------------

A = "denoiser"
bad(A, "Denoiser clip_x0 = -1", "clip_x0", lambda: Denoiser(mlp(), S, clip_x0=-1)(x2, t4))
bad(A, "Denoiser clip_x0 = 0", "clip_x0", lambda: Denoiser(mlp(), S, clip_x0=0)(x2, t4))
bad(A, "Denoiser clip_x0 = NaN", "clip_x0", lambda: Denoiser(mlp(), S, clip_x0=math.nan)(x2, t4))
bad(A, "Denoiser clip_x0 = 'true'", "clip_x0", lambda: Denoiser(mlp(), S, clip_x0="true")(x2, t4))
bad(A, "ClipX0 clip_x0 = -1", "clip_x0", lambda: ClipX0(den(), S, -1)(x2, t4))
bad(A, "ClipX0 clip_x0 = inf", "clip_x0", lambda: ClipX0(den(), S, math.inf)(x2, t4))
bad(A, "Denoiser of a Denoiser", "model", lambda: Denoiser(den(), S)(x2, t4))
bad(A, "Denoiser schedule a string", "schedule", lambda: Denoiser(mlp(), "linear")(x2, t4))
bad(A, "Denoiser prediction unknown", "prediction", lambda: Denoiser(mlp(), S, prediction="noise"))
bad(A, "ClipX0 around a network", "Denoiser", lambda: ClipX0(mlp(), S, True)(x2, t4))

# --- guidance ----------------------------------------------------------------------------------------

A = "guidance"
CG, CFG, CGStep = ClassifierGuidance, ClassifierFreeGuidance, ClassifierGuidedStep
bad(A, "CG around a network", "Denoiser", lambda: CG(unet(), Classifier(), 1.0)(img, t4, y=y4))
bad(A, "CFG around a network", "Denoiser", lambda: CFG(unet(), 1.0)(img, t4, y=y4))
bad(A, "CG scale NaN", "scale", lambda: CG(cden(), Classifier(), math.nan))
bad(A, "CG scale a string", "scale", lambda: CG(cden(), Classifier(), "2"))
bad(A, "CG scale negative", "scale", lambda: CG(cden(), Classifier(), -1.0))
bad(A, "CG scale a bool", "scale", lambda: CG(cden(), Classifier(), True))
bad(A, "CFG w = -2", "w", lambda: CFG(cden(), -2.0))
bad(A, "CFG w inf", "w", lambda: CFG(cden(), math.inf))
bad(A, "CFG rescale 2", "rescale", lambda: CFG(cden(), 1.0, rescale=2.0))
bad(A, "CFG rescale NaN", "rescale", lambda: CFG(cden(), 1.0, rescale=math.nan))
bad(A, "CFG w and scale", "scale", lambda: CFG(cden(), 1.0, scale=2.0))
bad(A, "CFG null_class a string", "null_class", lambda: CFG(cden(), 1.0, null_class="none"))
bad(A, "guided step gradient_at unknown", "gradient_at", lambda: CGStep(Classifier(), 1.0, y4, gradient_at="x0"))
bad(A, "CG interval reversed", "interval", lambda: CG(cden(), Classifier(), 1.0, interval=(15, 2)))
bad(A, "CG interval a string", "interval", lambda: CG(cden(), Classifier(), 1.0, interval="all"))
bad(A, "CG interval beyond T", "interval", lambda: CG(cden(), Classifier(), 1.0, interval=(0, 100)))
bad(A, "guided step without y", "y", lambda: CGStep(Classifier(), 1.0, None))
bad(A, "guided step y float", "y", lambda: CGStep(Classifier(), 1.0, y4.float()))
bad(A, "guided step y out of range", "y", lambda: CGStep(Classifier(), 1.0, torch.tensor([0, 1, 2, 3])))
bad(A, "guided step scale negative", "scale", lambda: CGStep(Classifier(), -1.0, y4))
bad(A, "guided step y of the wrong length", "y",
    lambda: ddpm_sample(unet(), S, (2, 1, 8, 8), step=CGStep(Classifier(), 1.0, y4), progress=False))
bad(A, "CG without y", "y", lambda: CG(cden(), Classifier(), 1.0)(img, t4))
bad(A, "CG y float", "y", lambda: CG(cden(), Classifier(), 1.0)(img, t4, y=y4.float()))
bad(A, "CG y 2-D", "y", lambda: CG(cden(), Classifier(), 1.0)(img, t4, y=y4[:, None]))
bad(A, "CG y of the wrong length", "y", lambda: CG(cden(), Classifier(), 1.0)(img, t4, y=y4[:2]))
bad(A, "CG y out of range", "y", lambda: CG(cden(), Classifier(), 1.0)(img, t4, y=torch.tensor([0, 1, 2, 3])))
bad(A, "CFG y the null class", "y", lambda: CFG(cden(), 1.0)(img, t4, y=torch.tensor([0, 1, 2, 3])))
bad(A, "CFG y a list", "y", lambda: CFG(cden(), 1.0)(img, t4, y=[0, 1, 2, 0]))
bad(A, "CFG y of the wrong length", "y", lambda: CFG(cden(), 1.0)(img, t4, y=y4[:3]))
bad(A, "CG classifier without num_classes", "classifier", lambda: CG(cden(), torch.nn.Linear(64, 3), 1.0))

# --- inversion and slerp -----------------------------------------------------------------------------

A = "inversion"
z = torch.randn(3, 4, dtype=torch.float64)
zero = z.clone()
zero[1] = 0
bad(A, "slerp of a zero vector", "z1", lambda: slerp(zero, z, 0.5))
bad(A, "slerp to a zero vector", "z2", lambda: slerp(z, zero, 0.5))
bad(A, "slerp of antipodal vectors", "antipodal", lambda: slerp(z, -z, 0.5))
bad(A, "slerp of antipodal float32 vectors", "antipodal", lambda: slerp(z.float(), -z.float(), 0.5))
bad(A, "slerp of nearly antipodal vectors", "antipodal", lambda: slerp(z, -z + 1e-9, 0.5))
bad(A, "slerp alpha NaN", "alpha", lambda: slerp(z, z.flip(0), math.nan))
bad(A, "slerp alpha a string", "alpha", lambda: slerp(z, z.flip(0), "half"))
bad(A, "slerp shapes differ", "z1", lambda: slerp(z, z[:, :2], 0.5))
bad(A, "slerp uint8", "z1", lambda: slerp(z.to(torch.uint8), z.to(torch.uint8), 0.5))
bad(A, "ddim_invert ascending list", "timesteps", lambda: ddim_invert(den(), S, x2, [0, 5, 9]))
bad(A, "ddim_invert repeated entries", "timesteps", lambda: ddim_invert(den(), S, x2, [9, 5, 5, 0]))
bad(A, "ddim_invert one timestep", "timesteps", lambda: ddim_invert(den(), S, x2, [5]))
bad(A, "ddim_invert NaN x0", "x0", lambda: ddim_invert(den(), S, nan2, [9, 5, 0]))
bad(A, "ddim_invert a network", "Denoiser", lambda: ddim_invert(mlp(), S, x2, [9, 5, 0]))

# --- likelihood --------------------------------------------------------------------------------------

A = "likelihood"
zero_pred = lambda x_t, t: Prediction(0 * x_t, x_t)  # noqa: E731
lv = torch.full((4, 1, 8, 8), -5.0)
t_lk = torch.tensor([0, 1, 2, 3])
bad(A, "bits_per_dim uint8", "x0", lambda: lk.bits_per_dim(zero_pred, S, as_uint8, 2))
bad(A, "bits_per_dim 0..255", "x0", lambda: lk.bits_per_dim(zero_pred, S, as_255, 2))
bad(A, "bits_per_dim NaN images", "x0", lambda: lk.bits_per_dim(zero_pred, S, nan_img, 2))
bad(A, "bits_per_dim a network", "Denoiser", lambda: lk.bits_per_dim(unet(None), S, grid, 2))
bad(A, "bits_per_dim K = 0", "timesteps_per_image", lambda: lk.bits_per_dim(zero_pred, S, grid, 0))
bad(A, "bits_per_dim variance unknown", "variance", lambda: lk.bits_per_dim(zero_pred, S, grid, 2, variances=["fixed"]))
bad(A, "bits_per_dim cond of the wrong length", "cond", lambda: lk.bits_per_dim(zero_pred, S, grid, 2,
                                                                               cond={"y": y4[:2]}))
bad(A, "prior_bpd uint8", "x0", lambda: lk.prior_bpd(S, as_uint8))
bad(A, "prior_bpd 0..255", "x0", lambda: lk.prior_bpd(S, as_255))
bad(A, "prior_bpd NaN", "x0", lambda: lk.prior_bpd(S, nan_img))
bad(A, "decoder_floor_bpd uint8", "x0", lambda: lk.decoder_floor_bpd(as_uint8, -5.0))
bad(A, "decoder_floor_bpd 0..255", "x0", lambda: lk.decoder_floor_bpd(as_255, -5.0))
bad(A, "decoder_floor_bpd NaN", "x0", lambda: lk.decoder_floor_bpd(nan_img, -5.0))
bad(A, "discretized log-likelihood uint8", "x", lambda: lk.discretized_gaussian_log_likelihood(as_uint8, grid, lv))
bad(A, "discretized log-likelihood 0..255", "x", lambda: lk.discretized_gaussian_log_likelihood(as_255, grid, lv))
bad(A, "discretized log-likelihood NaN", "x", lambda: lk.discretized_gaussian_log_likelihood(nan_img, grid, lv))
bad(A, "vlb_terms uint8", "x0", lambda: lk.vlb_terms(S, as_uint8, grid, t_lk, grid, lv))
bad(A, "vlb_terms 0..255", "x0", lambda: lk.vlb_terms(S, as_255, grid, t_lk, grid, lv))
bad(A, "vlb_terms NaN", "x0", lambda: lk.vlb_terms(S, nan_img, grid, t_lk, grid, lv))
bad(A, "vlb_terms NaN x0_hat", "x0_hat", lambda: lk.vlb_terms(S, grid, grid, t_lk, nan_img, lv))
bad(A, "reverse_log_variance unknown", "variance", lambda: lk.reverse_log_variance(S, t_lk, grid, "fixed"))
bad(A, "stratified_timesteps K = 0", "timesteps_per_image", lambda: lk.stratified_timesteps(4, T, 0))

# --- timestep lists ------------------------------------------------------------------------------

A = "timesteps"
for T_, steps_ in ((1000, 500), (1000, 37), (1000, 1000), (20, 20), (50, 7)):
    bad(A, f"quadratic, {steps_} of {T_}", "steps", lambda T_=T_, steps_=steps_: spaced(T_, steps_, "quadratic"),
        used=lambda ts, steps_=steps_: len(set(ts)) == len(ts) == steps_ and ts == sorted(ts, reverse=True))
bad(A, "steps = 0", "steps", lambda: spaced(1000, 0))
bad(A, "steps > T", "steps", lambda: spaced(1000, 2000))
bad(A, "spacing unknown", "spacing", lambda: spaced(1000, 10, "cubic"))
bad(A, "T a float", "T", lambda: spaced(1000.0, 10))
bad(A, "T negative", "T", lambda: spaced(-5, 1))
bad(A, "steps a bool", "steps", lambda: spaced(1000, True))

# --- judges and FID ---------------------------------------------------------------------------------

A = "judges"
digits = torch.rand(8, 1, 28, 28) * 2 - 1
labels8 = torch.arange(8) % 10
u8_digits = ((digits + 1) * 127.5).round().to(torch.uint8)
nan_digits = digits.clone()
nan_digits[0, 0, 0, 0] = math.nan
bad(A, "class_accuracy uint8 images", "images", lambda: judges.class_accuracy(u8_digits, labels8, "mnist"))
bad(A, "class_accuracy 0..255 images", "images", lambda: judges.class_accuracy(u8_digits.float(), labels8, "mnist"))
bad(A, "class_accuracy NaN images", "images", lambda: judges.class_accuracy(nan_digits, labels8, "mnist"))
bad(A, "class_accuracy 3-D images", "images", lambda: judges.class_accuracy(digits[:, 0], labels8, "mnist"))
bad(A, "class_accuracy labels fractional", "labels", lambda: judges.class_accuracy(digits, labels8 + 0.5, "mnist"))
bad(A, "class_accuracy labels out of range", "labels", lambda: judges.class_accuracy(digits, labels8 + 5, "mnist"))
bad(A, "class_accuracy labels of the wrong length", "labels",
    lambda: judges.class_accuracy(digits, labels8[:3], "mnist"))
bad(A, "class_accuracy labels 2-D", "labels", lambda: judges.class_accuracy(digits, labels8[:, None], "mnist"))
bad(A, "class_accuracy dataset unknown", "dataset", lambda: judges.class_accuracy(digits, labels8, "svhn"))
bad(A, "classify uint8 images", "images", lambda: judges.classify(u8_digits, "mnist"))
bad(A, "compute_metrics uint8 fakes", "fake_images", lambda: fid.compute_metrics(u8_digits, digits, "mnist"))
bad(A, "compute_metrics NaN fakes", "fake_images", lambda: fid.compute_metrics(nan_digits, digits, "mnist"))
bad(A, "extract_features 0..255", "images",
    lambda: fid.extract_features(u8_digits.float(), judges.load_classifier("mnist")))


# --- the command lines ------------------------------------------------------------------------------

class Stub:
    """Stands in for ddpm_sample / ddim_sample: records the timesteps asked for, returns blank images."""

    def __init__(self):
        self.calls = []

    def sampler(self, kind):
        def fake(model, schedule, shape=None, *, steps=None, timesteps=None, spacing="linspace", **kwargs):
            if steps is not None:
                spaced(schedule.T, steps, spacing)            # what ddim_sample checks first
            self.calls.append((kind, steps, None if timesteps is None else len(list(timesteps))))
            return torch.zeros(shape)
        return fake


def cli(module, prog, argv):
    """A command-line case, run in a fresh folder that holds an existing.png, a folder.png, a
    folder a_folder/ and an empty file; returns a :class:`CliResult`."""
    def call():
        stub = Stub()
        with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
            old = os.getcwd()
            os.chdir(folder)
            stack.callback(os.chdir, old)
            open("existing.png", "wb").close()
            os.mkdir("folder.png")
            os.mkdir("a_folder")
            open("file", "w").close()
            before = sorted(os.listdir(folder))
            saved = sample_cli.ddpm_sample, sample_cli.ddim_sample
            sample_cli.ddpm_sample, sample_cli.ddim_sample = stub.sampler("ddpm"), stub.sampler("ddim")
            stack.callback(setattr, sample_cli, "ddim_sample", saved[1])
            stack.callback(setattr, sample_cli, "ddpm_sample", saved[0])
            err, out = io.StringIO(), io.StringIO()
            code = 0
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                    run(module.main, argv, prog)
            except SystemExit as stop:
                code = stop.code
            written = sorted(set(os.listdir(folder)) - set(before)) + (
                ["existing.png (replaced)"] if os.path.getsize("existing.png") else [])
        return CliResult(code, err.getvalue(), written, stub.calls)
    return call


class CliResult:
    def __init__(self, code, err, written, calls):
        self.code, self.err, self.written, self.calls = code, err, written, calls


A = "sample CLI"
SAMPLE = "python -m lesson_lib.sample"
P = ["--pretrained", "mnist_cond"]
SMALL = ["--n", "10", "--steps", "2"]


def sample_case(what, argv, name, used=None):
    bad(A, what, name, cli(sample_cli, SAMPLE, argv), used)


sample_case("unknown model", ["--pretrained", "mnist_unknown", "--out", "a.png"], "--pretrained")
sample_case("a classifier as model", ["--pretrained", "mnist_classifier", "--out", "a.png"], "--pretrained")
sample_case("a noisy classifier as model", ["--pretrained", "mnist_noisy_classifier", "--out", "a.png"], "--pretrained")
sample_case("missing checkpoint", ["--checkpoint", "missing.pt", "--out", "a.png"], "--checkpoint")
sample_case("checkpoint is a folder", ["--checkpoint", "a_folder", "--out", "a.png"], "--checkpoint")
sample_case("checkpoint is an empty file", ["--checkpoint", "file", "--out", "a.png"], "--checkpoint")
sample_case("neither model flag", ["--out", "a.png"], "--checkpoint")
sample_case("both model flags", P + ["--checkpoint", "x.pt", "--out", "a.png"], "--checkpoint")
sample_case("--n 0", P + ["--n", "0", "--out", "a.png"], "--n")
sample_case("--n -3", P + ["--n", "-3", "--out", "a.png"], "--n")
sample_case("--n 2.5", P + ["--n", "2.5", "--out", "a.png"], "--n")
sample_case("--n ten", P + ["--n", "ten", "--out", "a.png"], "--n")
sample_case("--n not a multiple of the classes", P + ["--n", "64", "--out", "a.png"], "--n")
sample_case("--label 10", P + SMALL + ["--label", "10", "--out", "a.png"], "--label")
sample_case("--label -1", P + SMALL + ["--label", "-1", "--out", "a.png"], "--label")
sample_case("--label three", P + SMALL + ["--label", "three", "--out", "a.png"], "--label")
sample_case("--out in a missing folder", P + SMALL + ["--out", "no/such/folder/a.png"], "--out")
sample_case("--out below a file", P + SMALL + ["--out", "file/a.png"], "--out")
sample_case("--out in an unwritable folder", P + SMALL + ["--out", "/proc/a.png"], "--out")       # even for root
sample_case("--out .gif", P + SMALL + ["--out", "grid.gif"], "--out")
sample_case("--out without extension", P + SMALL + ["--out", "grid"], "--out")
sample_case("--out empty", P + SMALL + ["--out", ""], "--out")
sample_case("--out is a folder", P + SMALL + ["--out", "folder.png"], "--out")
sample_case("--out exists, no --overwrite", P + SMALL + ["--out", "existing.png"], "--out")
sample_case("--device cuda without a GPU", P + SMALL + ["--device", "cuda", "--out", "a.png"], "--device")  # (on a CPU)
sample_case("--device tpu", P + SMALL + ["--device", "tpu", "--out", "a.png"], "--device")
sample_case("--device cpu:x", P + SMALL + ["--device", "cpu:x", "--out", "a.png"], "--device")
sample_case("--seed -1", P + SMALL + ["--seed", "-1", "--out", "a.png"], "--seed")
sample_case("--seed 2**70", P + SMALL + ["--seed", str(2 ** 70), "--out", "a.png"], "--seed")
sample_case("--seed 1.5", P + SMALL + ["--seed", "1.5", "--out", "a.png"], "--seed")
sample_case("--steps 0", P + ["--n", "10", "--steps", "0", "--out", "a.png"], "--steps")
sample_case("--steps 5000 (> T)", P + ["--n", "10", "--steps", "5000", "--out", "a.png"], "--steps")
sample_case("--sampler euler", P + SMALL + ["--sampler", "euler", "--out", "a.png"], "--sampler")
sample_case("--raw with --pretrained", P + SMALL + ["--raw", "--out", "a.png"], "--raw")
sample_case("unknown flag", P + SMALL + ["--cfg-scale", "2", "--out", "a.png"], "--cfg-scale")
sample_case("--guidance negative", P + SMALL + ["--guidance", "-2", "--out", "a.png"], "--guidance")
sample_case("--sampler ddpm --steps 20", P + ["--n", "10", "--sampler", "ddpm", "--steps", "20", "--out", "a.png"],
            "--steps", used=lambda calls: calls == [("ddpm", None, 20)])

A = "evaluate CLI"
EVALUATE = "python -m lesson_lib.evaluate"
DATA = os.environ.get("DDPM_DATA_DIR", "/tmp/data")


def evaluate_case(what, argv, name, used=None):
    bad(A, what, name, cli(evaluate_cli, EVALUATE, argv), used)


ESMALL = ["--n", "20", "--steps", "2", "--data-dir", DATA, "--device", "cpu"]
evaluate_case("unknown model", ["--pretrained", "mnist_unknown"] + ESMALL, "--pretrained")
evaluate_case("a classifier as model", ["--pretrained", "mnist_classifier"] + ESMALL, "--pretrained")
evaluate_case("missing checkpoint", ["--checkpoint", "missing.pt", "--dataset", "mnist"] + ESMALL, "--checkpoint")
evaluate_case("checkpoint without --dataset", ["--checkpoint", "missing.pt"] + ESMALL, "--dataset")
evaluate_case("--dataset svhn", P + ["--dataset", "svhn"] + ESMALL, "--dataset")
evaluate_case("--dataset of another model", P + ["--dataset", "cifar10"] + ESMALL, "--dataset")
evaluate_case("--n 1", P + ["--n", "1", "--data-dir", DATA], "--n")
evaluate_case("--n 0", P + ["--n", "0", "--data-dir", DATA], "--n")
evaluate_case("--n many", P + ["--n", "many", "--data-dir", DATA], "--n")
evaluate_case("--n above the test set", P + ["--n", "20000", "--data-dir", DATA], "--n")
evaluate_case("--data-dir missing", P + ["--n", "20", "--steps", "2", "--data-dir", "no/such/folder"], "--data-dir")
evaluate_case("--data-dir is a file", P + ["--n", "20", "--steps", "2", "--data-dir", "file"], "--data-dir")
evaluate_case("--steps 0", P + ["--n", "20", "--steps", "0", "--data-dir", DATA], "--steps")
evaluate_case("--steps 5000 (> T)", P + ["--n", "20", "--steps", "5000", "--data-dir", DATA], "--steps")
evaluate_case("--sampler euler", P + ESMALL + ["--sampler", "euler"], "--sampler")
evaluate_case("--device cuda without a GPU", P + ["--n", "20", "--data-dir", DATA, "--device", "cuda"], "--device")
evaluate_case("--device tpu", P + ["--n", "20", "--data-dir", DATA, "--device", "tpu"], "--device")
evaluate_case("unknown flag", P + ESMALL + ["--out", "x.json"], "--out")
evaluate_case("--sampler ddpm --steps 20", P + ["--n", "20", "--sampler", "ddpm", "--steps", "20", "--data-dir", DATA,
                                                "--device", "cpu"],
              "--steps", used=lambda calls: bool(calls) and all(c[0] == "ddpm" and c[2] == 20 for c in calls))


# --- classification ---------------------------------------------------------------------------------

def raised_in_library(error):
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(LIBRARY)


def python_own(error):
    """Python's or torch's own message, raised by an operation in the library rather than a check."""
    return isinstance(error, (AttributeError, KeyError, IndexError, ZeroDivisionError, NameError)) or \
        "object has no attribute" in str(error) or "argument after ** must be a mapping" in str(error) or \
        "got an unexpected keyword argument" in str(error)


def classify(name, fn, used=None):
    """(verdict, message) of one case."""
    try:
        result = fn()
    except Exception as error:                            # noqa: BLE001 - the point is to see every kind
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        if not raised_in_library(error):
            return "dependency", message
        if python_own(error) or name.lower() not in str(error).lower():
            return "vague", message
        return "clear", message
    if isinstance(result, CliResult):
        return classify_cli(name, result, used)
    if used is not None and used(result):
        return "used", f"returned {summary(result)}"
    return "silent", f"returned {summary(result)}"


def classify_cli(name, r, used):
    lines = [line for line in r.err.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if r.code == 0:
        if used is not None and used(r.calls):
            return "used", f"ran as asked: {r.calls[:1]}"
        return "silent", f"exit 0, wrote {r.written}, sampler calls {r.calls[:1]}"
    if r.written:
        return "vague", f"exit {r.code} but wrote {r.written}: {last}"
    clear = (r.code == 2 and "Traceback" not in r.err and last.startswith("python -m lesson_lib.")
             and ": error: " in last and name in last)
    return ("clear" if clear else "vague"), f"exit {r.code}: {last}"


def summary(value):
    if isinstance(value, torch.Tensor):
        nans = int(torch.isnan(value.float()).sum()) if value.is_floating_point() else 0
        return f"tensor {tuple(value.shape)}" + (f" with {nans} NaN" if nans else "")
    if isinstance(value, dict):
        return "dict " + ", ".join(f"{k}={summary(v)}" for k, v in list(value.items())[:3])
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)[:60]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action="store_true", help="print every case, not only the ones that are not clear")
    p.add_argument("--area", help="only the cases of this area (e.g. sampling, 'sample CLI')")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    counts, by_area = Counter(), {}
    for area, what, name, fn, used in CASES:
        if args.area and area != args.area:
            continue
        verdict, message = classify(name, fn, used)
        counts[verdict] += 1
        by_area.setdefault(area, Counter())[verdict] += 1
        if args.verbose or verdict not in ("clear", "used"):
            print(f"{verdict:<10} {area:<12} {what:<42} {message[:150]}")
    print()
    kinds = ("clear", "used", "vague", "silent", "dependency")
    print(f"{'area':<14}" + "".join(f"{k:>11}" for k in kinds))
    for area, c in by_area.items():
        print(f"{area:<14}" + "".join(f"{c[k]:>11}" for k in kinds))
    print(f"{'all':<14}" + "".join(f"{counts[k]:>11}" for k in kinds) + f"   ({sum(counts.values())} cases)")


if __name__ == "__main__":
    main()
