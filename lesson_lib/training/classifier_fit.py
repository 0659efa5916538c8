"""The training loop of the course's dataset classifiers (the judges of :mod:`lesson_lib.evaluation.judges`).

One loop for both: SGD with Nesterov momentum and the one-cycle learning-rate schedule (Smith &
Topin, 2019), label smoothing (Szegedy et al., 2016), and for CIFAR-10 random crops with 4 pixels
of reflect padding plus horizontal flips, done on the device on whole batches. On CUDA the loop
uses bf16 autocast and channels_last memory. This is a different loop from the diffusion
:class:`~lesson_lib.training.trainer.Trainer` (SGD, one-cycle, BatchNorm), so it stays separate.

The shipped classifiers are made by their recipe (:mod:`lesson_lib.recipes.classifiers`), which
calls :func:`fit_classifier` and ships fp16 weights with a model card:

    python -m lesson_lib.train --recipe mnist_classifier --export lesson_lib/weights
"""

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def random_crop_flip(x, padding=4, generator=None):
    """Random crops with ``padding`` pixels of (reflect) padding and random horizontal flips.

    The standard CIFAR-10 augmentation, done for a whole batch at once on x's device: each
    image gets its own offset (dy, dx) in {0, .., 2 * padding} and a coin flip.
    """
    B, C, H, W = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, B), generator=generator).to(x.device)
    flips = (torch.rand(B, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (padding,) * 4, mode="reflect") if padding > 0 else x
    rows = offsets[0][:, None] + torch.arange(H, device=x.device)          # (B, H)
    cols = offsets[1][:, None] + torch.arange(W, device=x.device)          # (B, W)
    batch = torch.arange(B, device=x.device)[:, None, None, None]
    channel = torch.arange(C, device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    return torch.where(flips[:, None, None, None], out.flip(3), out)


def one_cycle(step, total_steps, warmup_fraction=0.25):
    """The one-cycle learning-rate factor (Smith & Topin, 2019) at ``step`` of ``total_steps``:
    linear warm-up from ~0 to 1 over the first ``warmup_fraction`` of the steps, then cosine
    annealing back to 0."""
    warmup = max(1, int(warmup_fraction * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def evaluate_accuracy(model, images, labels, batch_size=1000, device=None):
    """Top-1 accuracy of ``model`` on (images, labels), in eval mode, in fp32."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device, torch.float32)
        correct += (model(x).argmax(1).cpu() == labels[i:i + batch_size].cpu()).sum().item()
    model.train(was_training)
    return correct / len(images)


def fit_classifier(model, x_train, y_train, x_test=None, y_test=None, *, epochs, batch_size, lr,
                   weight_decay=5e-4, label_smoothing=0.1, augment=False, device="cpu",
                   progress=True, seed=0):
    """Train ``model`` on in-memory tensors (images in [-1, 1], labels); the loop of the classifiers' recipe.

    SGD with Nesterov momentum and a one-cycle schedule (:func:`one_cycle`: linear warm-up over
    the first 25% of steps to ``lr``, then cosine annealing to 0), cross-entropy with label smoothing, optional
    on-device crop+flip augmentation. The whole dataset is moved to ``device`` once; on CUDA
    the forward pass runs under bf16 autocast with channels_last tensors.

    Returns a dict with ``losses`` (one per step), ``test_accuracy`` (None without test data)
    and ``wall_time_s``.
    """
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train and y_train must have the same length, got {len(x_train)} "
                         f"and {len(y_train)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got lr={lr!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    model.to(device, memory_format=memory_format).train()
    x_train = x_train.to(device, torch.float32)
    y_train = y_train.to(device, torch.long)
    n = len(x_train)
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size            # drop the last partial batch (BatchNorm)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: one_cycle(step, epochs * steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    losses = []
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x, y = x_train[idx], y_train[idx]
            if augment:
                x = random_crop_flip(x, padding=4, generator=generator)
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = loss_fn(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        if progress:
            recent = losses[-steps_per_epoch:]
            message = (f"epoch {epoch + 1}/{epochs}  loss {sum(recent) / len(recent):.4f}  "
                       f"{time.perf_counter() - start:.0f}s")
            if x_test is not None:
                message += f"  test acc {evaluate_accuracy(model, x_test, y_test, device=device):.4f}"
            print(message, flush=True)
    model.eval()
    test_accuracy = None
    if x_test is not None:
        test_accuracy = evaluate_accuracy(model, x_test, y_test, device=device)
    return dict(losses=losses, test_accuracy=test_accuracy,
                wall_time_s=time.perf_counter() - start)
