"""Bad input, tried as a new user would: every public entry point names the argument, what it
got and the fix, instead of failing deep inside torch or, worse, accepting it silently."""

import math
import os
import warnings

import pytest
import torch

from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.forward import eps_from_x0, q_sample, x0_from_eps
from lesson_lib.diffusion.sampling import ddim_sample, ddpm_sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.models.unet import UNet
from lesson_lib.pretrained import load_model
from lesson_lib.training.checkpoint import load_checkpoint, save_checkpoint
from lesson_lib.training.trainer import NonFiniteLossError, TrainConfig, Trainer

S = NoiseSchedule.linear(20)


def mlp():
    torch.manual_seed(0)
    return MLPDenoiser(hidden=8, num_blocks=1)


def tiny_unet(**kw):
    torch.manual_seed(0)
    return UNet(**{"in_channels": 1, "base_channels": 8, "channel_mults": (1,), "num_res_blocks": 1,
                   "attention_resolutions": (), "image_size": 8, **kw})


# --- the Trainer and its configuration --------------------------------------------------------------

@pytest.mark.parametrize("field, value, error", [
    ("grad_clip", -1.0, ValueError), ("warmup_steps", -5, ValueError), ("lr", math.nan, ValueError),
    ("lr", 0.0, ValueError), ("ema_decay", 2.0, ValueError), ("ema_decay", -0.1, ValueError),
    ("batch_size", 2.5, TypeError), ("batch_size", 0, ValueError), ("weight_decay", -1.0, ValueError),
    ("log_every", 0, ValueError), ("seed", 1.5, TypeError), ("max_seconds", -1.0, ValueError),
    ("warmup_steps", 2.5, TypeError), ("grad_clip", math.inf, ValueError),
])
def test_train_config_names_the_field(field, value, error):
    with pytest.raises(error, match=field):
        TrainConfig(**{field: value})


def test_label_dropout_is_checked_by_the_objective():
    with pytest.raises(ValueError, match="class_dropout"):
        LSimple(S, class_dropout=1.0)


def test_run_rejects_a_negative_or_fractional_target():
    trainer = Trainer(mlp(), torch.randn(64, 2), LSimple(S), TrainConfig(batch_size=8), device="cpu")
    for bad, error in ((-5, ValueError), (2.5, TypeError), ("10", TypeError)):
        with pytest.raises(error, match="steps"):
            trainer.run(bad, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every"):
        trainer.run(2, progress=False, checkpoint_every=-1)


def test_trainer_checks_data_against_the_model():
    with pytest.raises(ValueError, match=r"(?s)12x12.*built for 8x8"):
        Trainer(tiny_unet(), torch.zeros(16, 1, 12, 12), LSimple(S), TrainConfig(batch_size=4), device="cpu")
    with pytest.raises(ValueError, match="channel"):
        Trainer(tiny_unet(), torch.zeros(16, 3, 8, 8), LSimple(S), TrainConfig(batch_size=4), device="cpu")
    with pytest.raises(ValueError, match=r"dimension"):
        Trainer(mlp(), torch.zeros(16, 3), LSimple(S), TrainConfig(batch_size=4), device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        Trainer(mlp(), torch.full((16, 2), math.nan), LSimple(S), TrainConfig(batch_size=4), device="cpu")
    with pytest.raises(TypeError, match="schedule"):
        Trainer(mlp(), torch.zeros(16, 2), LSimple("linear"), TrainConfig(batch_size=4), device="cpu")
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        Trainer(tiny_unet(num_classes=10), torch.zeros(16, 1, 8, 8), LSimple(S), TrainConfig(batch_size=4),
                cond={"y": torch.full((16,), 10)}, device="cpu")


class ExplodesAfter(MLPDenoiser):
    def __init__(self, n, **kw):
        super().__init__(**kw)
        self.n, self.calls = n, 0

    def forward(self, x, t, y=None):
        self.calls += 1
        out = super().forward(x, t, y)
        return out * math.nan if self.calls > self.n else out


def test_after_a_non_finite_loss_the_message_says_the_model_in_memory_is_unusable(tmp_path):
    torch.manual_seed(0)
    model = ExplodesAfter(25, hidden=8, num_blocks=1)
    trainer = Trainer(model, torch.randn(64, 2), LSimple(S), TrainConfig(batch_size=8, log_every=5), device="cpu",
                      checkpoint_path=tmp_path / "c.pt")
    with pytest.raises(NonFiniteLossError, match=r"not usable: call trainer.resume\(\)"):
        trainer.run(40, progress=False, checkpoint_every=10)
    with pytest.raises(NonFiniteLossError, match="call trainer.resume"):
        trainer.run(40, progress=False)                    # refuses to go on with the broken weights
    assert trainer.resume() and trainer.step == 20
    assert all(bool(p.isfinite().all()) for p in trainer.model.parameters())
    assert all(bool(p.isfinite().all()) for p in trainer.ema.model.parameters())
    no_ckpt = Trainer(ExplodesAfter(3, hidden=8, num_blocks=1), torch.randn(64, 2), LSimple(S),
                      TrainConfig(batch_size=8, log_every=5), device="cpu")
    with pytest.raises(NonFiniteLossError, match="not usable: build the model again"):
        no_ckpt.run(10, progress=False)


# --- the forward process and the conversions -----------------------------------------------------------

def test_q_sample_and_conversions():
    t = torch.tensor([1, 2])
    with pytest.raises(TypeError, match=r"x0 must be a float tensor.*127\.5"):
        q_sample(S, torch.zeros(2, 2, dtype=torch.uint8), t)
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        q_sample("linear", torch.zeros(2, 2), t)
    with pytest.raises(ValueError, match="eps must have the same shape as x_t"):
        x0_from_eps(S, torch.zeros(2, 2), t, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x0 must have the same shape as x_t"):
        eps_from_x0(S, torch.zeros(2, 2), t, torch.zeros(3, 2))


def test_schedule_warns_and_refuses():
    with pytest.warns(UserWarning, match=r"beta_end .* clipped to 0\.999"):
        NoiseSchedule.from_name("linear", T=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NoiseSchedule.from_name("linear", T=1000)
    for bad in (math.nan, -0.1, math.inf, "0.1"):
        with pytest.raises((ValueError, TypeError), match="fraction"):
            S.steps_until(bad)


# --- the samplers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    ({"eta": math.nan}, ValueError, "eta"),
    ({"eta": -1.0}, ValueError, "eta"),
    ({"steps": 2.5}, TypeError, "steps"),
    ({"steps": 0}, ValueError, "steps"),
    ({"clip_x0": -1}, ValueError, "clip_x0"),
    ({"clip_x0": math.nan}, ValueError, "clip_x0"),
    ({"x_T": torch.full((2, 2), math.nan)}, ValueError, "x_T contains NaN"),
    ({"x_T": torch.zeros(2, 2, dtype=torch.float64)}, TypeError, "x_T is float64 but the model"),
    ({"x_T": torch.zeros(2, 3)}, ValueError, "x_T has shape"),
    ({"shape": (2, 2.5)}, TypeError, "shape"),
])
def test_ddim_arguments(kwargs, error, match):
    kwargs = {"steps": 5, **({"shape": (2, 2)} if "x_T" not in kwargs else {}), **kwargs}
    with pytest.raises(error, match=match):
        ddim_sample(mlp(), S, progress=False, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"trajectory_stride": 0, "return_trajectory": True}, ValueError, "trajectory_stride"),
    ({"trajectory_stride": -1, "return_trajectory": True}, ValueError, "trajectory_stride"),
    ({"clip_x0": -1}, ValueError, "clip_x0"),
    ({"timesteps": [5, 7]}, ValueError, "descending"),
])
def test_ddpm_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ddpm_sample(mlp(), S, (2, 2), progress=False, **kwargs)


# --- the U-Net -------------------------------------------------------------------------------------------------

def test_unet_checks_its_inputs():
    model = tiny_unet()
    x = torch.zeros(2, 1, 8, 8)
    with pytest.warns(UserWarning, match=r"built for 8x8 images, got 10x10: it runs"):
        model(torch.zeros(2, 1, 10, 10), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer timesteps"):
        model(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="timesteps must be >= 0"):
        model(x, torch.tensor([-1, 3]))


# --- checkpoints -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", ["empty", "truncated", "text", "directory", "not_a_dict"])
def test_a_file_that_is_not_a_checkpoint(tmp_path, make):
    good = tmp_path / "good.pt"
    save_checkpoint({"step": 1, "model": {"w": torch.zeros(3)}}, good)
    path = tmp_path / "bad.pt"
    if make == "empty":
        path.write_bytes(b"")
    elif make == "truncated":
        path.write_bytes(good.read_bytes()[:40])
    elif make == "text":
        path.write_text("hello, I am a text file\n")
    elif make == "directory":
        path.mkdir()
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="is not a checkpoint of lesson_lib"):
        load_checkpoint(path)


def test_a_checkpoint_whose_config_does_not_match_its_weights(tmp_path):
    trainer = Trainer(mlp(), torch.randn(64, 2), LSimple(S), TrainConfig(batch_size=8), device="cpu",
                      checkpoint_path=tmp_path / "c.pt")
    trainer.save()
    state = load_checkpoint(tmp_path / "c.pt")
    state["model_config"]["hidden"] = 16
    save_checkpoint(state, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"is not a checkpoint of lesson_lib: its weights do not fit"):
        load_model(tmp_path / "c.pt")


def test_an_unwritable_checkpoint_folder(tmp_path):
    if os.geteuid() == 0:
        blocked = tmp_path / "file_not_folder"
        blocked.write_text("x")
        path = blocked / "c.pt"                      # a folder that cannot exist, even for root
    else:
        os.chmod(tmp_path, 0o500)
        path = tmp_path / "sub" / "c.pt"
    trainer = Trainer(mlp(), torch.randn(64, 2), LSimple(S), TrainConfig(batch_size=8), device="cpu",
                      checkpoint_path=path)
    with pytest.raises(OSError, match="cannot write the checkpoint"):
        trainer.save()


# --- stopping, and the same command giving the same model ------------------------------------------------

def test_stop_requested_stops_cleanly_after_the_current_step(tmp_path):
    trainer = Trainer(mlp(), torch.randn(64, 2), LSimple(S), TrainConfig(batch_size=8, log_every=2), device="cpu",
                      checkpoint_path=tmp_path / "c.pt")

    def request_stop(t):
        t.stop_requested = True

    trainer.run(50, progress=False, callback_every=7, callback=request_stop)
    assert trainer.step == 7
    trainer.save()
    again = Trainer(mlp(), torch.randn(64, 2), LSimple(S), TrainConfig(batch_size=8, log_every=2), device="cpu",
                    checkpoint_path=tmp_path / "c.pt")
    assert again.resume() and again.step == 7


@pytest.mark.skipif(not os.environ.get("DDPM_DATA_DIR"), reason="set DDPM_DATA_DIR to the prepared datasets")
def test_the_same_command_builds_the_same_model():
    from lesson_lib.train import build

    a, _ = build("mnist", "ci", device="cpu")
    torch.manual_seed(123)                        # whatever happened before
    b, _ = build("mnist", "ci", device="cpu")
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.skipif(not os.environ.get("DDPM_DATA_DIR"), reason="set DDPM_DATA_DIR to the prepared datasets")
def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "lesson_lib.train", "--config", "mnist", "--profile", "ci", "--steps", "100000",
               "--checkpoint-every", "0", "--sample-every", "0", "--out", str(tmp_path), "--device", "cpu"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    first = proc.stdout.readline()                 # printed just before the handlers go in and training starts
    assert "run folder" in first, first
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    out = first + out
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in out and (tmp_path / "checkpoint.pt").exists()
    step = load_checkpoint(tmp_path / "checkpoint.pt")["step"]
    assert 0 < step < 100000
