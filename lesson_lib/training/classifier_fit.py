"""Training the course's dataset classifiers (the judges of :mod:`lesson_lib.evaluation.judges`).

One loop for both: SGD with Nesterov momentum and the one-cycle learning-rate schedule (Smith &
Topin, 2019), label smoothing (Szegedy et al., 2016), and for CIFAR-10 random crops with 4 pixels
of reflect padding plus horizontal flips, done on the device on whole batches. On CUDA the loop
uses bf16 autocast and channels_last memory. This is a different recipe from the diffusion
:class:`~lesson_lib.training.trainer.Trainer` (SGD, one-cycle, BatchNorm), so it stays separate.

The trained weights ship in ``lesson_lib/weights/`` as fp16 state dicts with a model card
(:mod:`lesson_lib.pretrained`). Train or retrain them with

    python -m lesson_lib.training.classifier_fit train --dataset mnist --out lesson_lib/weights/mnist_classifier.pt
"""

import argparse
import math
import platform
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.classifiers import DATASETS, _check_dataset, build_classifier
from ..pretrained import save_artifact

# Hyper-parameters used by ``train_classifier`` when an argument is left as None.
TRAIN_DEFAULTS = {
    "mnist": dict(epochs=4, batch_size=128, lr=0.1),
    "cifar10": dict(epochs=16, batch_size=512, lr=0.2),
}


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
    """Train ``model`` on in-memory tensors; the loop behind :func:`train_classifier`.

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


def _load_split(dataset, split, data_dir, limit):
    from ..data import images as datasets  # imported lazily: only training needs the data

    loader = {"mnist": datasets.load_mnist, "cifar10": datasets.load_cifar10}[dataset]
    images, labels = loader(split, data_dir=data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def _hardware(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads"


def train_classifier(dataset, epochs=None, batch_size=None, lr=None, device=None, data_dir=None,
                     progress=True, limit=None, seed=0):
    """Train the classifier for ``dataset`` on its training split; evaluate on the test split.

    Arguments left as None take the values in ``TRAIN_DEFAULTS``; ``device`` defaults to CUDA
    when available; ``limit`` keeps only the first ``limit`` images of each split (smoke runs).
    Prints one line per epoch when ``progress``. Returns ``(model, info)`` where ``info`` holds
    the test accuracy and everything needed for the sidecar JSON.
    """
    _check_dataset(dataset)
    defaults = TRAIN_DEFAULTS[dataset]
    epochs = defaults["epochs"] if epochs is None else epochs
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    lr = defaults["lr"] if lr is None else lr
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    x_train, y_train = _load_split(dataset, "train", data_dir, limit)
    x_test, y_test = _load_split(dataset, "test", data_dir, limit)
    model = build_classifier(dataset)
    result = fit_classifier(model, x_train, y_train, x_test, y_test, epochs=epochs,
                            batch_size=batch_size, lr=lr, augment=(dataset == "cifar10"),
                            device=device, progress=progress, seed=seed)
    if progress:
        print(f"{dataset}: test accuracy {result['test_accuracy']:.4f} after {epochs} epochs "
              f"({result['wall_time_s']:.0f}s on {_hardware(device)})", flush=True)
    info = dict(
        dataset=dataset,
        architecture=type(model).__name__,
        feature_dim=model.feature_dim,
        num_params=sum(p.numel() for p in model.parameters()),
        test_accuracy=result["test_accuracy"],
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        n_train=len(x_train), n_test=len(x_test),
        hardware=_hardware(device),
        wall_time_s=round(result["wall_time_s"], 1),
        torch_version=torch.__version__,
        final_train_loss=sum(result["losses"][-20:]) / len(result["losses"][-20:]),
    )
    return model, info



def fp16_state_dict(model):
    """The model's state dict with every floating-point tensor cast to fp16 (on the CPU)."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
            for k, v in model.state_dict().items()}


def save_classifier(model, path, info):
    """Save ``model`` as an fp16 state dict at ``path`` (.pt) with ``info`` as its model card
    (same name, .json, with the sha256), in the shipped format of :mod:`lesson_lib.pretrained`.
    Returns the card."""
    return save_artifact(fp16_state_dict(model), path, dict(info, kind="classifier", dtype="float16"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lesson_lib.training.classifier_fit",
                                     description="Train the course's dataset classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a classifier and save fp16 weights + JSON")
    train.add_argument("--dataset", choices=DATASETS, required=True)
    train.add_argument("--out", required=True, help="weights file (.pt); the JSON goes next to it")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--device", default=None)
    train.add_argument("--data-dir", default=None)
    train.add_argument("--limit", type=int, default=None,
                       help="use only the first LIMIT images of each split (smoke runs)")
    train.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model, info = train_classifier(args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                                   lr=args.lr, device=args.device, data_dir=args.data_dir,
                                   limit=args.limit, seed=args.seed)
    # Report the accuracy of the weights as shipped, i.e. after rounding to fp16.
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v)
                           for k, v in fp16_state_dict(model).items()})
    x_test, y_test = _load_split(args.dataset, "test", args.data_dir, args.limit)
    info["test_accuracy"] = evaluate_accuracy(model, x_test, y_test)
    argv = sys.argv[1:] if argv is None else argv
    info["command"] = " ".join(["python -m lesson_lib.training.classifier_fit", *argv])
    sidecar = save_classifier(model, args.out, info)
    print(f"saved {args.out} (sha256 {sidecar['sha256'][:12]}..., fp16 test accuracy "
          f"{info['test_accuracy']:.4f})", flush=True)
    return sidecar


if __name__ == "__main__":
    main()
