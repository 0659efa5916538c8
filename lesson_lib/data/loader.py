"""Batches on the device: the whole dataset on the GPU when it fits, one random batch at a time.

Loading, not the network, is what starves a small model on a fast GPU: a DataLoader with worker
processes decodes and copies every batch. The course's datasets are small (MNIST is 47 MB as
uint8, CIFAR-10 150 MB), so :func:`to_device_if_fits` puts them on the GPU once, as uint8, and
:class:`TensorLoader` slices random batches there, converting to [-1, 1] per batch.
"""

import torch

from .images import uint8_to_float



def to_device_if_fits(images, cond, device, max_fraction=0.5):
    """Move the whole dataset (``images`` and the dict ``cond`` of per-example tensors, e.g.
    ``{"y": labels}``) to ``device`` if it takes at most ``max_fraction`` of the free memory.

    On CUDA the free memory comes from ``torch.cuda.mem_get_info``; when the data does not fit
    it stays on the CPU and :class:`TensorLoader` copies one batch at a time (pinned,
    non-blocking). Pass uint8 images (``as_uint8=True``) to need 4x less memory.
    """
    device = torch.device(device)
    cond = dict(cond or {})
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        needed = sum(x.numel() * x.element_size() for x in (images, *cond.values()))
        if needed > max_fraction * free:
            return images, cond
    return images.to(device), {key: value.to(device) for key, value in cond.items()}


class TensorLoader:
    """An endless iterator of random batches ``(x, cond)`` from tensors, e.g. on the GPU.

    Each epoch visits every example once in a fresh random order; the last incomplete batch
    of an epoch is dropped so every batch has exactly ``batch_size`` examples (convenient for
    torch.compile). Batches come out on ``device`` (default: where ``images`` live) as float32
    in [-1, 1]: uint8 images are converted per batch, which lets the dataset sit on the GPU at
    a quarter of the float32 size. ``cond`` is a dict of per-example tensors (``{"y": labels}``,
    or ``{}``), sliced with the images. ``hflip=True`` flips each example left-right with
    probability 1/2 (DDPM's CIFAR-10 augmentation), on the device, and with it every conditioning
    entry that is an image too (a 4-D tensor: a cascade's ``{"low_res": ...}``), so that the two stay
    aligned; labels are left alone. Randomness comes from a CPU generator seeded with ``seed``.

    With several processes (:mod:`lesson_lib.training.distributed`) every process builds the
    same loader (the same seed) and passes its ``rank`` of ``world``: all draw the same global
    batch of ``batch_size`` examples, and each keeps every ``world``-th one from its ``rank`` on,
    so the processes together see exactly what one process would.

        loader = TensorLoader(*to_device_if_fits(images, {"y": labels}, "cuda"), batch_size=128, device="cuda")
        x0, cond = next(loader)
    """

    def __init__(self, images, cond=None, batch_size=128, device=None, hflip=False, seed=0, rank=0, world=1):
        cond = dict(cond or {})
        for key, value in cond.items():
            if not isinstance(value, torch.Tensor) or len(value) != len(images):
                raise ValueError(f"cond[{key!r}] must be a tensor with one entry per image ({len(images)}), "
                                 f"got {type(value).__name__} of length {len(value) if hasattr(value, '__len__') else '?'}")
            if value.device != images.device:
                raise ValueError(f"images and cond[{key!r}] must be on the same device, got {images.device} and "
                                 f"{value.device}; move both with to_device_if_fits(images, cond, device)")
        if not 1 <= batch_size <= len(images):
            raise ValueError(f"batch_size must be between 1 and the number of images ({len(images)}), "
                             f"got {batch_size}")
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is the global batch of {world} processes: it must be a "
                             f"multiple of {world}")
        if hflip and images.ndim != 4:
            raise ValueError(f"hflip needs images of shape (N, C, H, W), got {tuple(images.shape)}")
        self.images, self.cond = images, cond
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.device = torch.device(device) if device is not None else images.device
        self.hflip = hflip
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = -1
        self._order, self._pos = None, len(images)

    def state_dict(self):
        """Everything needed to continue the exact same sequence of batches."""
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "pos": self._pos,
                "order": None if self._order is None else self._order.cpu()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.epoch, self._pos = state["epoch"], state["pos"]
        self._order = None if state["order"] is None else state["order"].to(self.images.device)

    def __iter__(self):
        return self

    def _to_device(self, batch):
        if batch.device == self.device:
            return batch
        if self.device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def __next__(self):
        if self._pos + self.batch_size > len(self.images):
            self.epoch += 1
            self._order = torch.randperm(len(self.images), generator=self.generator).to(self.images.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size][self.rank::self.world]
        self._pos += self.batch_size
        x = self._to_device(self.images[idx])
        x = uint8_to_float(x) if x.dtype == torch.uint8 else x.float()
        cond = {key: self._to_device(value[idx]) for key, value in self.cond.items()}
        if self.hflip:
            flip = torch.rand(self.batch_size, generator=self.generator) < 0.5     # the global batch's draws
            flip = self._to_device(flip[self.rank::self.world])[:, None, None, None]
            x = torch.where(flip, x.flip(3), x)
            cond = {key: torch.where(flip, value.flip(3), value) if value.ndim == 4 else value
                    for key, value in cond.items()}
        return x, cond
