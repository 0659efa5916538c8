"""The training loop, through its public API only: Trainer(model, data, objective, config, cond,
device, checkpoint_path), run, save, resume, state_dict, history and ema.

Everything is tiny (an MLP of width 32 on the swiss roll, T = 50) and runs on the CPU.
"""

import math
import shutil

import pytest
import torch

from lesson_lib.training.checkpoint import load_checkpoint, save_checkpoint
from lesson_lib.diffusion.losses import LSimple, Objective, l_simple
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.data.toy import swiss_roll
from lesson_lib.training.trainer import NonFiniteLossError, TrainConfig, Trainer

SCHEDULE = NoiseSchedule.from_name("linear", 50)
DATA = swiss_roll(2000, seed=0)


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return MLPDenoiser(**{"hidden": 32, "num_blocks": 2, "time_dim": 16, **overrides})


def make_trainer(model=None, path=None, schedule=SCHEDULE, class_dropout=0.0, **config):
    cfg = TrainConfig(**{"batch_size": 64, "lr": 3e-3, "log_every": 10, "ema_decay": 0.9, **config})
    return Trainer(model if model is not None else make_model(), DATA, LSimple(schedule, class_dropout), cfg,
                   device="cpu", checkpoint_path=path)


def same_state(a, b):
    """Bit-identical model and EMA weights."""
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
    for (name, p), q in zip(a.ema.model.state_dict().items(), b.ema.model.state_dict().values()):
        assert torch.equal(p, q), "ema " + name


# --- learning ----------------------------------------------------------------------------------

def test_loss_decreases_and_history_is_logged():
    g = torch.Generator().manual_seed(1)
    x0 = swiss_roll(4000, seed=1)
    t, eps = torch.randint(0, 50, (4000,), generator=g), torch.randn(4000, 2, generator=g)

    def held_out_loss(model):
        with torch.no_grad():
            return l_simple(model.eval(), SCHEDULE, x0, t, eps).item()
    before = held_out_loss(make_model())
    trainer = make_trainer(log_every=20)
    history = trainer.run(200, progress=False)
    assert history is trainer.history
    assert [step for step, _ in history] == list(range(20, 201, 20))
    losses = [loss for _, loss in history]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0]             # the training loss falls
    assert before > 0.8                                        # untrained: about E[eps^2] = 1
    assert held_out_loss(trainer.model) < 0.5 * before         # and so does the loss on fresh data
    assert held_out_loss(trainer.ema.model) < 0.5 * before
    assert trainer.step == 200
    # the EMA moved away from the initial weights and towards the trained ones
    init = make_model()
    ema_w, w, w0 = trainer.ema.model.inp.weight, trainer.model.inp.weight, init.inp.weight
    assert (ema_w - w).norm() < (w0 - w).norm()


def test_history_includes_the_last_step():
    trainer = make_trainer(log_every=4)
    trainer.run(10, progress=False)
    assert [step for step, _ in trainer.history] == [4, 8, 10]
    trainer.run(10, progress=False)                            # already there: nothing to do
    assert trainer.step == 10 and len(trainer.history) == 3


def test_ema_decay_is_used():
    trainer = make_trainer(ema_decay=0.0)                      # "average" of the last step only
    trainer.run(3, progress=False)
    for p, q in zip(trainer.model.parameters(), trainer.ema.model.parameters()):
        assert torch.equal(p, q)


def test_same_seed_same_result_other_seed_differs():
    a, b, c = make_trainer(), make_trainer(), make_trainer(seed=1)
    for trainer in (a, b, c):
        trainer.run(5, progress=False)
    same_state(a, b)
    assert not torch.equal(a.model.inp.weight, c.model.inp.weight)


# --- exact resumption ----------------------------------------------------------------------------

def test_resume_is_exact_from_a_mid_run_checkpoint(tmp_path):
    """Run 20 steps with a checkpoint every 10; a fresh trainer resumed from the step-10 file
    ends bit-identical (weights, EMA, history) to an uninterrupted 20-step run."""
    path, kept = tmp_path / "run.pt", tmp_path / "step10.pt"

    def keep_step_10(trainer):
        if trainer.step == 10:
            shutil.copy(path, kept)
    interrupted = make_trainer(path=path, log_every=5)
    interrupted.run(20, progress=False, checkpoint_every=10, callback_every=10, callback=keep_step_10)
    assert load_checkpoint(kept)["step"] == 10
    assert load_checkpoint(path)["step"] == 20

    reference = make_trainer(log_every=5)
    reference.run(20, progress=False)

    resumed = make_trainer(model=make_model(seed=123), path=kept, log_every=5)   # other initial weights
    assert resumed.resume() is True
    assert resumed.step == 10
    resumed.run(20, progress=False)
    same_state(resumed, reference)
    same_state(interrupted, reference)
    assert resumed.history == reference.history
    assert [s for s, _ in reference.history] == [5, 10, 15, 20]


def test_resume_is_exact_across_save_and_resume(tmp_path):
    path = tmp_path / "ckpt.pt"
    first = make_trainer(path=path)
    first.run(10, progress=False)
    first.save()
    torch.manual_seed(999)                                     # disturb the global RNG in between
    second = make_trainer(model=make_model(seed=7), path=path, log_every=3)   # log_every may change
    assert second.resume()
    second.run(20, progress=False)

    reference = make_trainer()
    reference.run(20, progress=False)
    same_state(second, reference)

    # the check above is sharp: resuming with Adam's moments reset ends elsewhere
    state = load_checkpoint(path)
    state["optimizer"] = make_trainer().optimizer.state_dict()
    save_checkpoint(state, path)
    third = make_trainer(path=path)
    assert third.resume()
    third.run(20, progress=False)
    assert not torch.equal(third.model.inp.weight, reference.model.inp.weight)


def test_state_dict_contents(tmp_path):
    trainer = make_trainer(path=tmp_path / "c.pt")
    trainer.run(4, progress=False)
    state = trainer.state_dict()
    assert state["step"] == 4
    assert state["model_config"] == trainer.model.config
    assert state["train_config"]["lr"] == 3e-3
    assert torch.equal(state["betas"], SCHEDULE.betas)
    trainer.save()
    on_disk = load_checkpoint(tmp_path / "c.pt")
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(on_disk["model"][k], v)


def test_resume_without_a_checkpoint(tmp_path):
    trainer = make_trainer(path=tmp_path / "none.pt")
    assert trainer.resume() is False and trainer.step == 0
    assert make_trainer().resume() is False
    with pytest.raises(ValueError, match="checkpoint path"):
        make_trainer().save()


@pytest.mark.parametrize("model_kwargs, config, key", [
    ({"hidden": 16}, {}, "hidden"),
    ({"prediction": "v"}, {}, "prediction"),
    ({}, {"lr": 1e-2}, "lr"),
    ({}, {"batch_size": 32}, "batch_size"),
    ({}, {"seed": 3}, "seed"),
])
def test_resume_refuses_another_configuration(tmp_path, model_kwargs, config, key):
    path = tmp_path / "ckpt.pt"
    make_trainer(path=path).save()
    other = make_trainer(model=make_model(**model_kwargs), path=path, **config)
    with pytest.raises(ValueError, match=rf"(?s)different .*configuration.*\b{key}: checkpoint has"):
        other.resume()


def test_resume_refuses_another_schedule(tmp_path):
    path = tmp_path / "ckpt.pt"
    make_trainer(path=path).save()
    with pytest.raises(ValueError, match="noise schedule"):
        make_trainer(path=path, schedule=NoiseSchedule.from_name("cosine", 50)).resume()


# --- a loss that becomes NaN -------------------------------------------------------------------

class NaNAfter(MLPDenoiser):
    """An MLP whose output turns NaN from its ``(n + 1)``-th training forward pass on."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n, self.calls = n, 0

    def forward(self, x, t, y=None):
        out = super().forward(x, t, y)
        if self.training:
            self.calls += 1
            if self.calls > self.n:
                out = out * float("nan")
        return out


@pytest.mark.parametrize("log_every", [1, 5, 50])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, log_every):
    path = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    model = NaNAfter(12, hidden=32, num_blocks=2, time_dim=16)
    trainer = make_trainer(model=model, path=path, log_every=log_every)
    with pytest.raises(NonFiniteLossError, match=r"nan.*intact"):
        trainer.run(30, progress=False, checkpoint_every=5)
    assert 13 <= trainer.step <= 15                            # stopped at the first check after step 13
    state = load_checkpoint(path)
    assert state["step"] == 10
    for name, value in list(state["model"].items()) + list(state["ema"]["model"].items()):
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name
    assert all(math.isfinite(loss) for _, loss in state["history"])
    # the saved weights are those of a clean run at step 10
    clean = make_trainer(model=make_model())
    clean.run(10, progress=False)
    for k, v in clean.model.state_dict().items():
        assert torch.equal(state["model"][k], v), k


class NaNGradientAt(MLPDenoiser):
    """At training call ``k`` the output stays finite (so does the loss) but the gradient is NaN,
    as when one huge step overflows the weights: the loss only shows it one step later."""

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k, self.calls = k, 0
        self.register_buffer("zero", torch.zeros(()))

    def forward(self, x, t, y=None):
        out = super().forward(x, t, y)
        if self.training:
            self.calls += 1
            if self.calls == self.k:
                w = self.out[-1].bias[0] * 0                   # 0, with gradient path
                out = out + 0.0 * torch.sqrt(w)                # value 0, d/dw sqrt(0) = inf -> NaN grad
        return out


def test_non_finite_weights_are_never_saved(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    model = NaNGradientAt(10, hidden=32, num_blocks=2, time_dim=16)
    trainer = make_trainer(model=model, path=path, log_every=5)
    with pytest.raises(NonFiniteLossError):
        trainer.run(30, progress=False, checkpoint_every=5)
    state = load_checkpoint(path)
    for name, value in state["model"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), f"step {state['step']}: {name} is not finite on disk"


# --- bad arguments ---------------------------------------------------------------------------------

def test_bad_arguments():
    with pytest.raises(ValueError, match="class_dropout > 0 needs class labels"):
        make_trainer(class_dropout=0.1)
    with pytest.raises(ValueError, match="unconditional"):
        Trainer(make_model(), DATA, LSimple(SCHEDULE), TrainConfig(batch_size=64),
                cond={"y": torch.zeros(len(DATA), dtype=torch.long)}, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(make_model(), DATA[:10], LSimple(SCHEDULE), TrainConfig(batch_size=64), device="cpu")
    with pytest.raises(ValueError, match="labels must have one entry per example"):
        Trainer(make_model(), DATA, LSimple(SCHEDULE), TrainConfig(batch_size=64), cond={"y": torch.zeros(5)},
                device="cpu")
    with pytest.raises(TypeError, match=r"LSimple\(schedule\)"):
        Trainer(make_model(), DATA, SCHEDULE, TrainConfig(batch_size=64), device="cpu")
    for bad in ({"batch_size": 0}, {"log_every": 0}, {"lr": 0.0}, {"max_seconds": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)
    for bad in (1.0, -0.1):        # label dropout is the objective's setting now
        with pytest.raises(ValueError, match="class_dropout"):
            LSimple(SCHEDULE, class_dropout=bad)


# --- the objective is an argument -----------------------------------------------------------------

class ShrinkOutput(Objective):
    """A toy objective without a noise schedule: drive the model's output at x0 (t = 0) to zero."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def config(self):
        return {"name": "shrink_output", "scale": self.scale}

    def forward(self, net, model, x0, cond, generator):
        t = torch.zeros(len(x0), dtype=torch.long, device=x0.device)
        return self.scale * net(x0, t).pow(2).mean()


def test_the_trainer_minimises_the_objective_it_is_given(tmp_path):
    trainer = Trainer(make_model(), DATA, ShrinkOutput(), TrainConfig(batch_size=64, lr=3e-3, log_every=10),
                      device="cpu", checkpoint_path=tmp_path / "c.pt")
    trainer.run(60, progress=False)
    first, last = trainer.history[0][1], trainer.history[-1][1]
    assert last < 0.1 * first
    trainer.save()
    assert load_checkpoint(tmp_path / "c.pt")["objective"] == {"name": "shrink_output", "scale": 1.0}
    assert trainer.schedule is None and load_checkpoint(tmp_path / "c.pt")["betas"] is None
    other = Trainer(make_model(), DATA, ShrinkOutput(2.0), TrainConfig(batch_size=64, lr=3e-3, log_every=10),
                    device="cpu", checkpoint_path=tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"(?s)different training objective.*scale: checkpoint has 1.0"):
        other.resume()
    with pytest.raises(TypeError):      # label dropout is a setting of the objective, not of the run
        TrainConfig(class_dropout=0.1)


def test_the_default_objective_is_l_simple_with_the_loops_draws():
    """LSimple draws label dropout, t and eps from the trainer's generator in that order, and
    computes exactly l_simple for those draws."""
    model, x0 = make_model(), DATA[:64]
    g = torch.Generator().manual_seed(3)
    loss = LSimple(SCHEDULE)(model, model, x0, {}, g)
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, SCHEDULE.T, (64,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    assert torch.equal(loss, l_simple(model, SCHEDULE, x0, t, eps))
    assert make_trainer().state_dict()["objective"] == {"name": "l_simple", "class_dropout": 0.0}
    with pytest.raises(ValueError, match="class_dropout must"):
        LSimple(SCHEDULE, 1.5)


def test_bf16_only_where_the_gpu_supports_it(monkeypatch):
    """Simulated: a GPU without bfloat16 (Colab's T4) trains in float32; asking for bf16 there fails."""
    from lesson_lib.training.trainer import use_bf16

    assert use_bf16("cpu") is False and use_bf16("cpu", False) is False
    with pytest.raises(ValueError, match="bf16=True, but cpu does not support bfloat16"):
        use_bf16("cpu", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert use_bf16("cuda") is False
    with pytest.raises(ValueError, match="predates Ampere"):
        use_bf16("cuda", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert use_bf16("cuda") is True and use_bf16("cuda", False) is False
    # Recent PyTorch says True on a T4 by default, because it can emulate bfloat16 there (slowly):
    # only native support counts.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert use_bf16("cuda") is False
    from lesson_lib.diffusion.denoiser import bf16_supported
    assert bf16_supported("cuda") is False and bf16_supported("cpu") is False
