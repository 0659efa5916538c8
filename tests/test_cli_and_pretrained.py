"""Profiles, the shipped pretrained model, and the train / sample / evaluate command lines."""
import os
import shutil

import pytest
import torch

from lesson_lib import pretrained
from lesson_lib.training import profiles
from lesson_lib.evaluation.metrics import nearest_neighbours
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.data.toy import swiss_roll
from lesson_lib.training.trainer import TrainConfig, Trainer

needs_data = pytest.mark.skipif(not os.environ.get("DDPM_DATA_DIR"),
                                reason="set DDPM_DATA_DIR to a dataset mirror (python shared/data/prepare.py DIR)")


def test_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DDPM_PROFILE", "ci")
    assert profiles.current_profile() == "ci"
    assert profiles.current_profile("gpu") == "gpu"
    monkeypatch.delenv("DDPM_PROFILE")
    assert profiles.current_profile() == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("DDPM_PROFILE", "laptop")
    with pytest.raises(ValueError, match="DDPM_PROFILE"):
        profiles.current_profile()


def test_profiles_grow_from_ci_to_gpu():
    for dataset in profiles.TRAINING:
        steps = [profiles.training_settings(dataset, p)["steps"] for p in profiles.PROFILES]
        assert steps == sorted(steps) and steps[0] < steps[-1]
    with pytest.raises(ValueError, match="dataset"):
        profiles.training_settings("imagenet", "ci")


def test_shipped_model_loads_and_matches_its_card():
    assert "mnist_cond" in pretrained.available()
    card = pretrained.model_card("mnist_cond")
    model, schedule = pretrained.load_pretrained("mnist_cond")
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    assert model.num_classes == 10 and schedule.T == 1000
    assert card["evaluation"]["fid"] < 2 * card["evaluation"]["fid_floor_train_vs_test"]
    x = torch.randn(2, 1, 28, 28)
    out = model(x, torch.tensor([10, 500]), y=torch.tensor([3, 10]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_export_model_keeps_only_what_sampling_needs(tmp_path):
    """export_model writes the shipped format: fp16 EMA weights that load_model rebuilds."""
    torch.manual_seed(0)
    model = MLPDenoiser(hidden=32, num_blocks=1)
    trainer = Trainer(model, swiss_roll(256), LSimple(NoiseSchedule.linear(50)),
                      TrainConfig(batch_size=64, ema_decay=0.9), checkpoint_path=str(tmp_path / "full.pt"))
    trainer.run(20, progress=False, checkpoint_every=20)
    path = pretrained.export_model(trainer, str(tmp_path / "shared.pt"))
    state = torch.load(path, weights_only=True)
    assert "optimizer" not in state and "model" not in state and state["step"] == 20
    assert all(v.dtype == torch.float16 for v in state["ema"]["model"].values() if v.is_floating_point())
    assert os.path.getsize(path) < os.path.getsize(tmp_path / "full.pt") / 3
    loaded, schedule = pretrained.load_model(path)
    assert torch.equal(schedule.betas, trainer.schedule.betas)
    x, t = torch.randn(8, 2), torch.randint(0, 50, (8,))
    with torch.no_grad():
        expected = trainer.ema.model(x, t)
        torch.testing.assert_close(loaded(x, t), expected, rtol=1e-2, atol=1e-2)   # fp16 weights
        assert not torch.equal(loaded(x, t), model.eval()(x, t))                    # EMA, not raw
    with pytest.raises(ValueError, match="only EMA weights"):
        pretrained.load_model(path, ema=False)


def test_a_corrupted_shipped_model_is_refused(tmp_path, monkeypatch):
    shutil.copy(pretrained.WEIGHTS_DIR / "mnist_cond.json", tmp_path)
    data = bytearray((pretrained.WEIGHTS_DIR / "mnist_cond.pt").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "mnist_cond.pt").write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(RuntimeError, match="corrupted or was replaced"):
        pretrained.load_pretrained("mnist_cond")
    with pytest.raises(FileNotFoundError, match="available"):
        pretrained.load_pretrained("cifar10_cond_missing")


def test_load_model_rebuilds_a_trained_checkpoint(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(MLPDenoiser(hidden=32), swiss_roll(256, seed=0), LSimple(NoiseSchedule.linear(50)),
                      TrainConfig(batch_size=32, log_every=5), device="cpu", checkpoint_path=tmp_path / "c.pt")
    trainer.run(10, progress=False)
    trainer.save()
    x, t = torch.randn(4, 2), torch.tensor([0, 1, 2, 49])
    for ema, reference in [(True, trainer.ema.model), (False, trainer.model)]:
        model, schedule = pretrained.load_model(tmp_path / "c.pt", ema=ema)
        torch.testing.assert_close(model(x, t), reference.eval()(x, t))
        assert torch.equal(schedule.betas, trainer.schedule.betas)


def test_nearest_neighbours_is_brute_force():
    g = torch.Generator().manual_seed(0)
    data, queries = torch.randn(300, 1, 4, 4, generator=g), torch.randn(7, 1, 4, 4, generator=g)
    queries[2] = data[123]
    idx, dist = nearest_neighbours(queries, data, batch_size=64)
    full = torch.cdist(queries.flatten(1), data.flatten(1))
    assert torch.equal(idx, full.argmin(1)) and idx[2] == 123
    torch.testing.assert_close(dist, full.min(1).values)


def test_sample_command_writes_a_grid(tmp_path, capsys):
    from lesson_lib import sample
    out = tmp_path / "grid.png"
    sample.main(["--pretrained", "mnist_cond", "--n", "10", "--steps", "2", "--out", str(out), "--device", "cpu"])
    assert out.exists() and out.stat().st_size > 0
    assert "wrote 10 samples" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sample.main(["--pretrained", "mnist_cond", "--label", "12", "--out", str(out), "--overwrite",
                     "--device", "cpu"])
    assert "--label must lie in 0..9" in capsys.readouterr().err


@needs_data
def test_train_command_resumes_where_it_stopped(tmp_path, capsys):
    from lesson_lib import train
    args = ["--config", "mnist", "--profile", "ci", "--out", str(tmp_path), "--checkpoint-every", "2",
            "--sample-every", "0", "--device", "cpu"]
    train.main(args + ["--steps", "2"])
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "samples_step2.png").exists()
    train.main(args + ["--steps", "4"])
    assert "resumed from" in capsys.readouterr().out
    model, _ = pretrained.load_model(tmp_path / "checkpoint.pt")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4


@needs_data
def test_evaluate_reports_metrics_next_to_the_floor():
    from lesson_lib.evaluate import evaluate, format_table
    model, schedule = pretrained.load_pretrained("mnist_cond")
    r = evaluate(model, schedule, "mnist", n=20, steps=2, progress=False)
    for key in ("fid", "fid_floor", "kid_mean", "kid_floor", "class_accuracy", "samples_per_s"):
        assert key in r
    table = format_table(r)
    assert "FID" in table and "floor" in table and "n = 20" in table


def test_generate_and_a_reloaded_checkpoint_use_the_models_prediction(tmp_path):
    """A v-prediction model must be sampled as one by sample.generate (which evaluate, train's
    periodic grids and the GPU session use) and after a save / load round trip."""
    from lesson_lib.diffusion.sampling import ddim_sample
    from lesson_lib.models.unet import UNet
    from lesson_lib.sample import generate

    torch.manual_seed(0)
    model = UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                 attention_resolutions=(), image_size=8, prediction="v")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)                 # not the zero-initialised output
    schedule = NoiseSchedule.linear(50)
    x = generate(model, schedule, 3, "ddim", 4, progress=False)
    g = torch.Generator().manual_seed(0)
    as_v = ddim_sample(model, schedule, (3, 1, 8, 8), steps=4, clip_x0=True, prediction="v",
                       generator=g, progress=False)
    assert torch.equal(x, as_v)
    trainer = Trainer(model, torch.zeros(8, 1, 8, 8), LSimple(schedule), TrainConfig(batch_size=4), device="cpu",
                      checkpoint_path=tmp_path / "v.pt")
    trainer.save()
    loaded, _ = pretrained.load_model(tmp_path / "v.pt", ema=False)
    assert loaded.prediction == "v"
    assert torch.equal(generate(loaded, schedule, 3, "ddim", 4, progress=False), x)


def test_a_shipped_model_samples_with_its_own_defaults_and_writes_npz(tmp_path, capsys):
    """A distilled student samples on its own steps of its own grid unless told otherwise, and an
    .npz output holds the samples themselves: uint8 images and their labels."""
    import argparse

    import numpy as np

    from lesson_lib import sample
    args = argparse.Namespace(pretrained="mnist_distilled_4", sampler=None, steps=None)
    assert sample.defaults(args) == ("ddim", 4, "distillation")
    assert sample.defaults(argparse.Namespace(pretrained="mnist_distilled_4", sampler=None, steps=8)) == \
        ("ddim", 8, "linspace")
    assert sample.defaults(argparse.Namespace(pretrained=None, sampler=None, steps=None)) == ("ddim", None, "linspace")
    out = tmp_path / "students.npz"
    sample.main(["--pretrained", "mnist_distilled_4", "--n", "20", "--out", str(out), "--device", "cpu",
                 "--guidance", "1.0"])
    assert "ddim, 4 steps, guidance w = 1" in capsys.readouterr().out
    with np.load(out) as saved:
        assert saved["images"].shape == (20, 28, 28) and saved["images"].dtype == np.uint8
        assert saved["labels"].tolist() == [k for k in range(10) for _ in range(2)]


def test_the_shipped_sr_model_samples_the_whole_cascade_from_the_command_line(tmp_path, capsys):
    """--pretrained mnist_sr runs the base model its card names, then the SR model at --level: the digits of
    each row are the class the base was asked for, and the samples are those of cascade_sample itself."""
    import numpy as np

    from lesson_lib import sample
    from lesson_lib.diffusion.cascade import cascade_sample
    from lesson_lib.pretrained import load_pretrained
    out = tmp_path / "cascade.npz"
    sample.main(["--pretrained", "mnist_sr", "--n", "10", "--steps", "2", "--level", "0.3", "--seed", "4",
                 "--out", str(out), "--device", "cpu"])
    assert "ddim, 2 steps per stage, augmentation level s = 0.3" in capsys.readouterr().out
    base, base_schedule = load_pretrained("mnist_base14")
    sr, schedule = load_pretrained("mnist_sr")
    x = cascade_sample(base, sr, base_schedule, 10, labels=torch.arange(10), level=0.3, sr_schedule=schedule,
                       seed=4, steps=2, clip_x0=True, progress=False)
    with np.load(out) as saved:
        assert saved["images"].shape == (10, 28, 28) and saved["labels"].tolist() == list(range(10))
        expected = ((x[:, 0].clamp(-1, 1) + 1) * 127.5).round()
        assert (torch.from_numpy(saved["images"]).double() - expected.double()).abs().max() <= 1


@pytest.mark.parametrize("name", ["mnist_base14", "mnist_sr"])
def test_evaluate_says_where_a_cascade_stage_is_measured(capsys, name):
    from lesson_lib import evaluate
    with pytest.raises(SystemExit):
        evaluate.main(["--pretrained", name, "--n", "20"])
    assert f"--pretrained {name} is a stage of lesson 12's cascade" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--pretrained", "mnist_cond", "--level", "0.2"], "--level is the conditioning augmentation of a cascade"),
    (["--pretrained", "mnist_sr", "--level", "1.5"], "--level must lie in [0, 1]"),
    (["--pretrained", "mnist_sr", "--sampler", "heun"], "a cascade samples both stages with --sampler ddim or ddpm"),
    (["--pretrained", "mnist_sr", "--guidance", "2"], "a cascade samples both stages with --sampler ddim or ddpm"),
])
def test_cascade_flags_are_refused_where_they_do_not_apply(tmp_path, capsys, flags, message):
    from lesson_lib import sample
    out = tmp_path / "x.png"
    with pytest.raises(SystemExit):
        sample.main(flags + ["--n", "10", "--out", str(out), "--device", "cpu"])
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("w", ["-2", "nan", "inf"])
def test_a_guidance_weight_below_minus_one_is_refused_before_sampling(tmp_path, capsys, w):
    """w < -1 (s = 1 + w < 0) means nothing; the command says so and writes nothing."""
    from lesson_lib import sample
    out = tmp_path / "x.png"
    with pytest.raises(SystemExit):
        sample.main(["--pretrained", "mnist_cond", "--n", "10", "--out", str(out), "--device", "cpu", "--guidance", w])
    assert "--guidance must be a weight w >= -1" in capsys.readouterr().err and not out.exists()


def test_generate_takes_a_conditioning_dict_and_says_so_when_given_labels():
    from lesson_lib.pretrained import load_pretrained
    from lesson_lib.sample import generate
    model, schedule = load_pretrained("mnist_cond")
    with pytest.raises(TypeError, match=r"cond must be a dict .*cond=\{'y': labels\}, got cond=Tensor"):
        generate(model, schedule, 2, "ddim", 2, torch.tensor([1, 2]), progress=False)
