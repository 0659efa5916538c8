"""The one Trainer on two processes (CPU, gloo): what ``torchrun --nproc_per_node 2`` does.

One spawn of two processes runs every scenario in turn and saves what it saw; the tests compare
that with the same runs in one process:

* 2 processes x batch B are 1 process x batch 2B (weights and EMA, to float tolerance: the
  gradients are averaged in another order), with an objective whose noise comes from the
  examples themselves, so that it does not depend on which process draws it;
* with L_simple the two processes draw different t and noise;
* exactly one checkpoint is written (by process 0), and resuming a 2-process run is exact;
* a NaN on one process stops both, with the usual message.
"""

import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from lesson_lib.data.toy import swiss_roll
from lesson_lib.diffusion.forward import q_sample
from lesson_lib.diffusion.losses import DiffusionObjective, LSimple
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.training.distributed import Distributed
from lesson_lib.training.trainer import NonFiniteLossError, TrainConfig, Trainer

SCHEDULE = NoiseSchedule.linear(50)
DATA = swiss_roll(512, seed=0)
B, STEPS = 16, 6


class ExampleNoise(DiffusionObjective):
    """L_simple with t and eps computed from each example (not drawn): any split of a batch
    between processes sees the same noise."""

    def config(self):
        return {"name": "example_noise"}

    def forward(self, net, model, x0, cond, generator):
        t = (x0[:, 0].abs() * 1000).long() % self.schedule.T
        eps = torch.sin(97 * x0 + torch.arange(x0.shape[1]))
        return F.mse_loss(net(q_sample(self.schedule, x0, t, eps, check=False), t), eps)


class NaNOnRank(LSimple):
    """L_simple that turns NaN on process 1 from step 3 on."""

    def __init__(self, schedule, rank):
        super().__init__(schedule)
        self.rank, self.calls = rank, 0

    def forward(self, net, model, x0, cond, generator):
        self.calls += 1
        loss = super().forward(net, model, x0, cond, generator)
        return loss * float("nan") if self.rank == 1 and self.calls >= 3 else loss


def trainer(objective, batch, distributed=None, path=None):
    torch.manual_seed(0)
    model = MLPDenoiser(hidden=16, num_blocks=1, time_dim=8)
    return Trainer(model, DATA, objective, TrainConfig(batch_size=batch, lr=1e-2, log_every=2, ema_decay=0.9),
                   device="cpu", checkpoint_path=path, distributed=distributed or Distributed())


def weights(t):
    return {"model": {k: v.clone() for k, v in t.model.state_dict().items()},
            "ema": {k: v.clone() for k, v in t.ema.model.state_dict().items()}}


def _process(rank, world, folder):
    """One of the two processes: every scenario, what it saw saved to ``folder/rank{rank}.pt``."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                                         world_size=world)
    dist = Distributed(rank, world)
    seen = {}
    try:
        two = trainer(ExampleNoise(SCHEDULE), 2 * B, dist)
        two.run(STEPS, progress=False)
        seen["equivalence"] = weights(two)

        draws = trainer(LSimple(SCHEDULE), 2 * B, dist)
        seen["first_t"] = torch.randint(0, 50, (B,), generator=draws.generator)   # what the objective draws first

        run = os.path.join(folder, "run", "checkpoint.pt")
        first = trainer(LSimple(SCHEDULE), 2 * B, dist, run)
        first.run(3, progress=False, checkpoint_every=3)
        again = trainer(LSimple(SCHEDULE), 2 * B, dist, run)
        assert again.resume()
        again.run(STEPS, progress=False)
        seen["resumed"] = weights(again)
        whole = trainer(LSimple(SCHEDULE), 2 * B, dist)
        whole.run(STEPS, progress=False)
        seen["uninterrupted"] = weights(whole)

        broken = trainer(NaNOnRank(SCHEDULE, rank), 2 * B, dist)
        try:
            broken.run(10, progress=False)
            seen["nan"] = f"no error, stopped at step {broken.step}"
        except NonFiniteLossError as error:
            seen["nan"] = (broken.step, str(error))
    finally:
        torch.save(seen, os.path.join(folder, f"rank{rank}.pt"))
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_process, args=(2, str(folder)), nprocs=2, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in (0, 1)], folder


def test_two_processes_of_batch_b_are_one_process_of_batch_2b(two_processes):
    (zero, one), _ = two_processes
    single = trainer(ExampleNoise(SCHEDULE), 2 * B)
    single.run(STEPS, progress=False)
    for part in ("model", "ema"):
        for name, value in weights(single)[part].items():
            torch.testing.assert_close(zero["equivalence"][part][name], value, rtol=1e-5, atol=1e-6)
            assert torch.equal(zero["equivalence"][part][name], one["equivalence"][part][name])  # in step


def test_the_processes_draw_different_noise(two_processes):
    (zero, one), _ = two_processes
    assert not torch.equal(zero["first_t"], one["first_t"])


def test_one_checkpoint_and_an_exact_resume(two_processes):
    (zero, one), folder = two_processes
    assert sorted(os.listdir(folder / "run")) == ["checkpoint.pt"]
    state = torch.load(folder / "run" / "checkpoint.pt", weights_only=True)
    assert state["world"] == 2 and len(state["rng"]["loop"]) == 2
    for part in ("model", "ema"):
        for name, value in zero["uninterrupted"][part].items():
            assert torch.equal(zero["resumed"][part][name], value), name
            assert torch.equal(one["resumed"][part][name], value), name
    alone = trainer(LSimple(SCHEDULE), 2 * B, path=folder / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"written by 2 process\(es\).*--nproc_per_node 2"):
        alone.resume()


def test_a_nan_on_one_process_stops_both(two_processes):
    (zero, one), _ = two_processes
    for seen in (zero, one):
        step, message = seen["nan"]
        assert step == 4 and "the training loss became nan" in message
