"""Training on several processes (several GPUs) with the one Trainer: plain ``torch.distributed``.

The same command trains on one process or many::

    python -m lesson_lib.train --config mnist
    torchrun --nproc_per_node 4 -m lesson_lib.train --config mnist

``torchrun`` starts N copies of the program and tells each its ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` in the environment; :meth:`Distributed.from_env` reads them (and does nothing in a
single process). What changes with N processes, all of it in :class:`~lesson_lib.training.trainer.Trainer`:

* each process runs a copy of the model wrapped in DistributedDataParallel (:meth:`wrap`), which
  averages the gradients over the processes in ``backward()``, so every copy takes the same step;
* the loader of every process draws the same *global* batch and keeps its slice
  (``indices[rank::world]``): a run is defined by its global batch size, whatever N is;
* the objective's generator is seeded per process, so the processes draw different t and noise;
* the loss, the NaN check and a stop request (Ctrl-C, SIGTERM, the time limit) are combined
  across processes at each log interval (:meth:`mean`, :meth:`any`), so all stop together;
* only the main process (rank 0) writes checkpoints; the others wait (:meth:`barrier`).

Backends: NCCL between GPUs, gloo on CPUs (the tests run two CPU processes with gloo).
"""

import os

import torch
import torch.distributed as dist


class Distributed:
    """Who this process is among ``world`` processes, and the few collective operations the
    Trainer needs. ``Distributed()`` is the single process: every method is then a no-op."""

    def __init__(self, rank=0, world=1, local_rank=0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @classmethod
    def from_env(cls, device_type="cpu"):
        """Join the process group ``torchrun`` prepared (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
        ``MASTER_ADDR``/``MASTER_PORT`` in the environment), or stay a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self):
        return self.rank == 0

    def device(self):
        """This process's device: its own GPU (``cuda:LOCAL_RANK``) when there are GPUs, else the CPU."""
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def wrap(self, model):
        """The model as every process must call it: DistributedDataParallel when there are several."""
        if self.world == 1:
            return model
        device = next(model.parameters()).device
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def mean(self, value):
        """The mean of a tensor over the processes (a copy)."""
        if self.world == 1:
            return value
        value = value.clone()
        dist.all_reduce(value)
        return value / self.world

    def any(self, flag, device):
        """Whether ``flag`` (a bool) is true in any process."""
        if self.world == 1:
            return bool(flag)
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, tensor):
        """The tensors of every process, concatenated along dim 0 in rank order (equal shapes)."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj):
        """A list of every process's ``obj`` (e.g. the random generators' states), in rank order."""
        if self.world == 1:
            return [obj]
        parts = [None] * self.world
        dist.all_gather_object(parts, obj)
        return parts

    def barrier(self):
        """Wait until every process gets here (after the main process wrote a checkpoint)."""
        if self.world > 1:
            dist.barrier()
