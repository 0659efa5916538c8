"""Bad input to the entry points of wave 2 (guidance, inversion, likelihood, the sampling loop,
judging, the sample and evaluate commands): each class of mistake fails at once with an error
that names the argument and the fix, instead of silently (NaN out, a flag ignored) or deep inside
torch. benchmarks/bad_input_sweep.py tries many more calls of each class and counts the verdicts."""

import math
import os
import subprocess
import sys

import pytest
import torch

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
from lesson_lib.evaluation.judges import class_accuracy
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.models.unet import UNet

S = NoiseSchedule.linear(20)
DATA = os.environ.get("DDPM_DATA_DIR")


def mlp():
    torch.manual_seed(0)
    return MLPDenoiser(hidden=8, num_blocks=1)


def unet():
    torch.manual_seed(0)
    return UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                attention_resolutions=(), image_size=8, num_classes=3)


class Classifier(torch.nn.Module):
    """A noisy classifier of 8x8 images into 3 classes (t ignored)."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 3)

    def forward(self, x, t):
        return self.linear(x.flatten(1))


def levels(shape, seed=0):
    """8-bit images scaled to [-1, 1]."""
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).float() / 127.5 - 1


# --- the sampling loop: its timestep list and x_T, checked once per call -------------------------------

@pytest.mark.parametrize("timesteps, end", [
    ([1, 5, 9], -1),            # ascending, but sampling goes down to the data
    ([9, 5, 5, 0], -1),         # a repeated entry: a step from t to t
    ([9, 2, 5, 0], -1),         # out of order
    ([9, 5, 0], 5),             # descending, but end is above the last entry
    ([0, 5, 9], 3),             # ascending, but end is below the last entry
])
def test_the_loop_refuses_a_timestep_list_in_the_wrong_order(timesteps, end):
    calls = []

    def denoise(x_t, t):
        calls.append(int(t[0]))
        return Prediction(0 * x_t, x_t)

    with pytest.raises(ValueError, match=r"timesteps.*must be strictly descending"):
        sample(denoise, S, torch.zeros(2, 2), timesteps, ddim_step, end=end, progress=False)
    assert not calls                                                   # refused before the first step


def test_an_ascending_list_with_end_above_it_is_inversion_and_allowed():
    seen = []

    def denoise(x_t, t):
        seen.append(int(t[0]))
        return Prediction(0 * x_t, x_t)

    sample(denoise, S, torch.zeros(2, 2), [0, 5, 9], ddim_step, end=15, stochastic=False, progress=False)
    assert seen == [0, 5, 9]


@pytest.mark.parametrize("x_T, error, match", [
    (torch.full((2, 2), math.nan), ValueError, "x_T contains NaN"),
    (torch.tensor([[0.0, math.inf], [0.0, 0.0]]), ValueError, "x_T contains NaN"),
    (torch.zeros(2, 2, dtype=torch.uint8), TypeError, r"x_T must be a float tensor.*127\.5"),
    ([[0.0, 0.0]], TypeError, "x_T must be a torch.Tensor"),
])
def test_the_loop_refuses_a_bad_x_T(x_T, error, match):
    with pytest.raises(error, match=match):
        sample(Denoiser(mlp(), S), S, x_T, [9, 5, 0], ddim_step, progress=False)


def test_the_presets_refuse_repeated_timesteps_through_the_loop():
    with pytest.raises(ValueError, match="timesteps must be strictly descending"):
        ddpm_sample(mlp(), S, (2, 2), timesteps=[7, 5, 5, 0], progress=False)


# --- the mean-form guided step (its list is the loop's); guidance's scales and labels -------------------

@pytest.mark.parametrize("timesteps, match", [
    ([0, 5, 9], "strictly descending"), ([9, 5, 5, 0], "strictly descending"),
    ([50, 9, 0], r"timesteps must lie in 0\.\.19"), ([], "at least one"),
])
def test_the_mean_form_step_is_checked_by_the_loop_that_runs_it(timesteps, match):
    step = ClassifierGuidedStep(Classifier(), 1.0, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=match) as caught:
        ddpm_sample(unet(), S, (2, 1, 8, 8), timesteps=timesteps, step=step, progress=False)
    assert "timesteps" in str(caught.value)


def test_the_mean_form_step_names_the_fix_for_labels_of_another_batch():
    step = ClassifierGuidedStep(Classifier(), 1.0, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"y must be 1-D with one label per example, shape \(4,\)"):
        ddpm_sample(unet(), S, (4, 1, 8, 8), step=step, progress=False)


@pytest.mark.parametrize("make, error, name", [
    (lambda d: ClassifierGuidance(d, Classifier(), "2"), TypeError, "scale"),
    (lambda d: ClassifierGuidance(d, Classifier(), True), TypeError, "scale"),
    (lambda d: ClassifierFreeGuidance(d, math.inf), ValueError, "w"),
    (lambda d: ClassifierFreeGuidance(d, 1.0, rescale=math.nan), ValueError, "rescale"),
    (lambda d: ClassifierFreeGuidance(d, 1.0, null_class="none"), TypeError, "null_class"),
    (lambda d: ClassifierGuidance(d, Classifier(), 1.0, interval="all"), TypeError, "interval"),
    (lambda d: ClassifierGuidedStep(Classifier(), 1.0, torch.tensor([0, 1]), gradient_at="x0"), ValueError,
     "gradient_at"),
])
def test_guidance_arguments_name_themselves(make, error, name):
    with pytest.raises(error, match=f"^{name} must be"):
        make(Denoiser(unet(), S))


@pytest.mark.parametrize("guide", [lambda d: ClassifierGuidance(d, Classifier(), 1.0),
                                   lambda d: ClassifierFreeGuidance(d, 1.0)])
@pytest.mark.parametrize("y, error, match", [
    (torch.tensor([0, 1]), ValueError, r"y must be 1-D with one label per example, shape \(4,\)"),
    (torch.tensor([[0], [1], [2], [0]]), ValueError, "y must be 1-D"),
    (torch.tensor([0.0, 1.0, 2.0, 0.0]), TypeError, "y must be an integer tensor"),
    (torch.tensor([0, 1, 2, 3]), ValueError, r"y must lie in 0\.\.2"),
])
def test_guidance_labels_are_checked_against_the_batch(guide, y, error, match):
    with pytest.raises(error, match=match):
        guide(Denoiser(unet(), S))(torch.zeros(4, 1, 8, 8), torch.full((4,), 5), y=y)


def test_the_sampler_checks_labels_once_against_the_batch():
    with pytest.raises(ValueError, match=r"y must be 1-D with one label per example, shape \(4,\)"):
        ddim_sample(unet(), S, (4, 1, 8, 8), steps=2, model_kwargs={"y": torch.tensor([0, 1])}, progress=False)
    with pytest.raises(TypeError, match="model_kwargs must be a dict"):
        ddim_sample(unet(), S, (4, 1, 8, 8), steps=2, model_kwargs=[0, 1, 2, 0], progress=False)


# --- clip_x0: True, False, None or a positive finite number, wherever x0_hat is clipped ------------------

@pytest.mark.parametrize("bad, error", [(-1, ValueError), (0, ValueError), (math.nan, ValueError),
                                        (math.inf, ValueError), ("true", TypeError)])
@pytest.mark.parametrize("make", [lambda c: Denoiser(mlp(), S, clip_x0=c),
                                  lambda c: ClipX0(Denoiser(mlp(), S), S, c)])
def test_clip_x0_is_checked_by_denoiser_and_clipx0(make, bad, error):
    with pytest.raises(error, match=f"clip_x0 must be a .*got clip_x0={bad!r}".replace("(", r"\(")):
        make(bad)


@pytest.mark.parametrize("good", [True, False, None, 2, 0.5])
def test_clip_x0_accepts_the_documented_values(good):
    pred = ClipX0(Denoiser(mlp(), S), S, good)(torch.randn(3, 2) * 50, torch.tensor([19, 19, 19]))
    bound = math.inf if good in (False, None) else (1.0 if good is True else good)
    assert pred.x0.abs().max() <= bound


# --- a network where a denoiser is expected, and the reverse -------------------------------------------

WRAP = r"wrap a network: Denoiser\(model, schedule\)"


@pytest.mark.parametrize("call", [
    pytest.param(lambda m: sample(m, S, torch.zeros(2, 2), [9, 5, 0], ddim_step, progress=False), id="sample"),
    pytest.param(lambda m: ddim_invert(m, S, torch.zeros(2, 2), [9, 5, 0]), id="ddim_invert"),
    pytest.param(lambda m: ClipX0(m, S, True), id="ClipX0"),
    pytest.param(lambda m: ClassifierGuidance(m, Classifier(), 1.0), id="ClassifierGuidance"),
    pytest.param(lambda m: ClassifierFreeGuidance(m, 1.0), id="ClassifierFreeGuidance"),
    pytest.param(lambda m: lk.bits_per_dim(m, S, levels((2, 2)), 2), id="bits_per_dim"),
])
def test_a_network_passed_as_a_denoiser_says_to_wrap_it(call):
    with pytest.raises(TypeError, match=f"denoise must be a denoiser.*{WRAP}"):
        call(mlp())


def test_a_function_returning_a_tensor_is_told_what_a_denoiser_returns():
    with pytest.raises(TypeError, match=r"denoise must return a Prediction \(x0, eps\), got Tensor.*Denoiser\("):
        sample(lambda x_t, t: x_t, S, torch.zeros(2, 2), [9, 5, 0], ddim_step, progress=False)


@pytest.mark.parametrize("call", [lambda d: Denoiser(d, S),
                                  lambda d: ddim_sample(d, S, (2, 2), steps=2, progress=False)])
def test_a_denoiser_passed_as_a_model_is_refused(call):
    with pytest.raises(TypeError, match="model must be a network.*got model=Denoiser"):
        call(Denoiser(mlp(), S))


def test_a_guidance_wrapper_passed_as_guidance_says_to_pass_a_function():
    with pytest.raises(TypeError, match=r"guidance must be a function.*lambda d: ClassifierFreeGuidance"):
        ddim_sample(unet(), S, (2, 1, 8, 8), steps=2, progress=False, model_kwargs={"y": torch.tensor([0, 1])},
                    guidance=ClassifierFreeGuidance(Denoiser(unet(), S), 1.0))


# --- likelihood: 8-bit images in [-1, 1], never uint8, 0..255 or NaN -----------------------------------

def _nan_images(shape):
    x = levels(shape)
    x[1, 0, 2, 2] = math.nan
    return x


BAD_IMAGES = [                                  # images of a given shape, the error, what it says
    pytest.param(lambda shape: levels(shape).add(1).mul(127.5).round().to(torch.uint8), TypeError,
                 r"float tensor.*/ 127\.5 - 1", id="uint8"),
    pytest.param(lambda shape: levels(shape).add(1).mul(127.5).round(), ValueError, r"in \[-1, 1\].*/ 127\.5 - 1",
                 id="0..255"),
    pytest.param(_nan_images, ValueError, "contains NaN", id="NaN"),
]
zero_pred = lambda x_t, t: Prediction(0 * x_t, x_t)  # noqa: E731
LIKELIHOOD_CALLS = [
    pytest.param("x0", lambda x: lk.bits_per_dim(zero_pred, S, x, 2), id="bits_per_dim"),
    pytest.param("x0", lambda x: lk.prior_bpd(S, x), id="prior_bpd"),
    pytest.param("x0", lambda x: lk.decoder_floor_bpd(x, -5.0), id="decoder_floor_bpd"),
    pytest.param("x", lambda x: lk.discretized_gaussian_log_likelihood(x, torch.zeros(4, 1, 4, 4),
                                                                       torch.full((4, 1, 4, 4), -5.0)),
                 id="discretized_gaussian_log_likelihood"),
    pytest.param("x0", lambda x: lk.vlb_terms(S, x, torch.zeros(4, 1, 4, 4), torch.tensor([0, 1, 2, 3]),
                                              torch.zeros(4, 1, 4, 4), torch.full((4, 1, 4, 4), -5.0)), id="vlb_terms"),
]


@pytest.mark.parametrize("images, error, match", BAD_IMAGES)
@pytest.mark.parametrize("name, call", LIKELIHOOD_CALLS)
def test_likelihood_helpers_refuse_uint8_0_to_255_and_nan_images(name, call, images, error, match):
    with pytest.raises(error, match=f"^{name} .*{match}"):
        call(images((4, 1, 4, 4)))


@pytest.mark.parametrize("name, call", LIKELIHOOD_CALLS)
def test_likelihood_helpers_accept_8bit_images_in_minus1_1(name, call):
    result = call(levels((4, 1, 4, 4)))
    values = torch.as_tensor([v.total for v in result.values()] if isinstance(result, dict) else result)
    assert torch.isfinite(values).all()


# --- judging: class_accuracy of images in [-1, 1] with integer labels -----------------------------------

@pytest.mark.parametrize("images, error, match", BAD_IMAGES)
def test_class_accuracy_refuses_uint8_0_to_255_and_nan_images(images, error, match):
    with pytest.raises(error, match=f"^images .*{match}"):
        class_accuracy(images((4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]), "mnist")


@pytest.mark.parametrize("labels, error, match", [
    (torch.tensor([0, 1, 2, 12]), ValueError, r"labels must lie in 0\.\.9"),
    (torch.tensor([0.0, 1.5, 2.0, 3.0]), TypeError, "labels must be an integer tensor"),
    (torch.tensor([0, 1]), ValueError, "one label per image"),
])
def test_class_accuracy_checks_its_labels(labels, error, match):
    with pytest.raises(error, match=match):
        class_accuracy(torch.zeros(4, 1, 28, 28), labels, "mnist")


# --- slerp: undefined for a zero vector and for opposite vectors ------------------------------------------

def test_slerp_refuses_a_zero_vector():
    z = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zero = z.clone()
    zero[1] = 0
    with pytest.raises(ValueError, match=r"z1 holds a zero vector \(example 1\)"):
        slerp(zero, z, 0.5)
    with pytest.raises(ValueError, match=r"z2 holds a zero vector \(example 1\)"):
        slerp(z, zero, 0.5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nudge", [0.0, 1e-9])
def test_slerp_refuses_antipodal_vectors(dtype, nudge):
    z = torch.randn(3, 8, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="z1 and z2 are antipodal"):
        slerp(z, -z + nudge, 0.5)


def test_slerp_still_interpolates_wide_angles_and_checks_alpha():
    e1, e2 = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[-0.99, 0.141]], dtype=torch.float64)
    mid = slerp(e1, e2, 0.5)                                    # about 172 degrees apart: well defined
    assert torch.isfinite(mid).all() and mid.norm().item() == pytest.approx(1.0, abs=1e-2)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        slerp(e1, e2, math.nan)


# --- spaced("quadratic"): exactly `steps` distinct timesteps -------------------------------------------

@pytest.mark.parametrize("T, steps", [(1000, 37), (1000, 500), (1000, 1000), (20, 20), (50, 7), (1, 1)])
def test_every_spacing_returns_exactly_steps_distinct_timesteps(T, steps):
    for spacing in ("linspace", "leading", "trailing", "quadratic"):
        ts = spaced(T, steps, spacing)
        assert len(ts) == steps and ts == sorted(set(ts), reverse=True) and 0 <= ts[-1] and ts[0] <= T - 1, spacing


def test_quadratic_is_ddims_formula_where_its_entries_are_distinct():
    for steps in (2, 10, 29):
        ddim = [int(v) for v in torch.linspace(0, math.sqrt(800), steps, dtype=torch.float64) ** 2][::-1]
        assert spaced(1000, steps, "quadratic") == ddim


# --- the sample and evaluate commands -------------------------------------------------------------------

class Samplers:
    """Stands in for ddpm_sample / ddim_sample in lesson_lib.sample: records the call, returns zeros."""

    def __init__(self, monkeypatch, allowed=True):
        self.calls, self.allowed = [], allowed
        monkeypatch.setattr(sample_cli, "ddpm_sample", self.fake("ddpm"))
        monkeypatch.setattr(sample_cli, "ddim_sample", self.fake("ddim"))

    def fake(self, kind):
        def sampler(model, schedule, shape, *, steps=None, timesteps=None, **kwargs):
            assert self.allowed, "sampling started before the arguments were checked"
            self.calls.append((kind, steps, timesteps))
            return torch.zeros(shape)
        return sampler


def _help(module, capsys):
    with pytest.raises(SystemExit):
        module.main(["--help"])
    return " ".join(capsys.readouterr().out.split())


def test_sample_uses_steps_with_the_ddpm_sampler(tmp_path, monkeypatch, capsys):
    samplers = Samplers(monkeypatch)
    sample_cli.main(["--pretrained", "mnist_cond", "--n", "10", "--sampler", "ddpm", "--steps", "20",
                     "--out", str(tmp_path / "a.png"), "--device", "cpu"])
    assert samplers.calls == [("ddpm", None, spaced(1000, 20))]
    sample_cli.main(["--pretrained", "mnist_cond", "--n", "10", "--sampler", "ddpm",
                     "--out", str(tmp_path / "b.png"), "--device", "cpu"])
    assert samplers.calls[-1] == ("ddpm", None, None)                       # default: every step
    assert "DDPM default all T, fewer gives strided DDPM" in _help(sample_cli, capsys)


@pytest.mark.skipif(not DATA, reason="set DDPM_DATA_DIR to the prepared datasets")
def test_evaluate_uses_steps_with_the_ddpm_sampler(monkeypatch, capsys):
    samplers = Samplers(monkeypatch)
    evaluate_cli.main(["--pretrained", "mnist_cond", "--n", "20", "--sampler", "ddpm", "--steps", "20",
                       "--data-dir", DATA, "--device", "cpu"])
    assert samplers.calls and all(c == ("ddpm", None, spaced(1000, 20)) for c in samplers.calls)
    assert "sampler ddpm-20" in capsys.readouterr().out
    assert "DDPM default all T, fewer gives strided DDPM" in _help(evaluate_cli, capsys)


P = ["--pretrained", "mnist_cond"]
SMALL = ["--n", "10", "--steps", "2"]
SAMPLE_ERRORS = [
    (["--pretrained", "mnist_unknown"], "--pretrained"),
    (["--pretrained", "mnist_classifier"], "--pretrained"),
    (["--checkpoint", "missing.pt"], "--checkpoint"),
    (["--checkpoint", "folder"], "--checkpoint"),
    (["--checkpoint", "empty_file"], "--checkpoint"),
    (P + ["--n", "0"], "--n"),
    (P + ["--n", "2.5"], "--n"),
    (P + ["--n", "64"], "--n"),
    (P + SMALL + ["--label", "10"], "--label"),
    (P + SMALL + ["--label", "-1"], "--label"),
    (P + SMALL + ["--label", "three"], "--label"),
    (P + SMALL + ["--out", "no/such/folder/a.png"], "--out"),
    (P + SMALL + ["--out", "empty_file/a.png"], "--out"),
    (P + SMALL + ["--out", "/proc/a.png"], "--out"),                 # not writable, even for root
    (P + SMALL + ["--out", "grid.gif"], "--out"),
    (P + SMALL + ["--out", "grid"], "--out"),
    (P + SMALL + ["--out", "folder"], "--out"),
    (P + SMALL + ["--out", "existing.png"], "--out"),
    (P + SMALL + ["--device", "tpu"], "--device"),
    (P + SMALL + ["--device", "cpu:x"], "--device"),
    (P + SMALL + ["--seed", "-1"], "--seed"),
    (P + SMALL + ["--seed", str(2 ** 70)], "--seed"),
    (P + ["--n", "10", "--steps", "5000"], "--steps"),
    (P + ["--n", "10", "--steps", "0"], "--steps"),
    (P + SMALL + ["--sampler", "euler"], "--sampler"),
    (P + SMALL + ["--raw"], "--raw"),
] + ([] if torch.cuda.is_available() else [(P + SMALL + ["--device", "cuda"], "--device")])
EVALUATE_ERRORS = [
    (["--pretrained", "mnist_unknown"], "--pretrained"),
    (["--pretrained", "mnist_noisy_classifier"], "--pretrained"),
    (["--checkpoint", "missing.pt"], "--dataset"),
    (P + ["--dataset", "cifar10"], "--dataset"),
    (P + ["--n", "1"], "--n"),
    (P + ["--n", "many"], "--n"),
    (P + ["--data-dir", "no/such/folder"], "--data-dir"),
    (P + ["--data-dir", "empty_file"], "--data-dir"),
    (P + ["--data-dir", "folder"], "--data-dir"),                    # a folder without mnist.npz
    (P + ["--steps", "0"], "--steps"),
    (P + ["--device", "tpu"], "--device"),
    (P + ["--sampler", "euler"], "--sampler"),
] + ([] if torch.cuda.is_available() else [(P + ["--device", "cuda"], "--device")])


@pytest.mark.parametrize("command, argv, flag", [("sample", a, f) for a, f in SAMPLE_ERRORS] +
                         [("evaluate", a, f) for a, f in EVALUATE_ERRORS])
def test_a_wrong_argument_is_one_line_naming_it_with_no_file_written(command, argv, flag, tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing.png").write_bytes(b"")
    (tmp_path / "empty_file").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    Samplers(monkeypatch, allowed=False)
    module = {"sample": sample_cli, "evaluate": evaluate_cli}[command]
    prog = f"python -m lesson_lib.{command}"
    with pytest.raises(SystemExit) as stop:
        run(module.main, argv + (["--out", "a.png"] if command == "sample" and "--out" not in argv else []), prog)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert stop.value.code == 2 and "Traceback" not in err, err
    assert last.startswith(f"{prog}: error: ") and flag in last, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "existing.png").stat().st_size == 0


def test_overwrite_replaces_an_existing_grid(tmp_path, monkeypatch):
    Samplers(monkeypatch)
    out = tmp_path / "grid.png"
    out.write_bytes(b"")
    sample_cli.main(P + SMALL + ["--out", str(out), "--overwrite", "--device", "cpu"])
    assert out.stat().st_size > 0


def test_a_library_error_is_one_line_on_stderr(capsys):
    def main(argv):
        raise ValueError("n=3 is wrong;\nchoose n >= 4")

    with pytest.raises(SystemExit) as stop:
        run(main, [], "prog")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("prog: error: n=3 is wrong; choose n >= 4")


@pytest.mark.skipif(not DATA, reason="set DDPM_DATA_DIR to the prepared datasets")
def test_evaluate_from_the_shell_prints_one_line_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lesson_lib.evaluate", "--pretrained", "mnist_cond", "--n", "20000",
                           "--data-dir", DATA, "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("python -m lesson_lib.evaluate: error: --n=20000 is larger")
    assert not list(tmp_path.iterdir())
