"""The course's own dataset classifiers: feature networks for FID/KID and judges for samples.

FID and KID (see ``fid.py``) compare generated and real images in the feature space of a
pretrained network. The papers use Inception-V3 trained on ImageNet, whose weights must be
downloaded; the course runs offline, so it trains one small classifier per dataset and uses
its penultimate layer as the feature space instead. The same networks also grade
class-conditional models: a sample "of class 3" should be classified as a 3, with high
confidence (:func:`class_accuracy`).

    MNISTClassifier     three conv layers with BatchNorm, a 128-unit fully connected layer (the
                        features), dropout; >= 99% test accuracy.
    CIFAR10Classifier   a ResNet-ish net in the style of fast CIFAR-10 training (Page, 2018),
                        widths 64-128-256-512, 512 features, about 3M parameters, >= 85% test acc.

Both take images in [-1, 1] of shape (B, C, H, W), expose ``features(x)`` -> (B, feature_dim),
the penultimate layer, and ``forward(x)`` -> logits (B, 10).

Training (one loop for both): SGD with Nesterov momentum and the one-cycle learning-rate
schedule (Smith & Topin, 2019), label smoothing (Szegedy et al., 2016), and for CIFAR-10
random crops with 4 pixels of reflect padding plus horizontal flips, done on the device on whole
batches. On CUDA the loop uses bf16 autocast and channels_last memory.

The trained weights ship in ``lesson_lib/weights/`` as fp16 state dicts with a sidecar JSON
(sha256, test accuracy, how they were trained). Train or retrain them with

    python -m lesson_lib.classifiers train --dataset mnist --out lesson_lib/weights/mnist_classifier.pt
"""

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DATASETS = ("mnist", "cifar10")
WEIGHTS_DIR = Path(__file__).parent / "weights"

# Hyper-parameters used by ``train_classifier`` when an argument is left as None.
TRAIN_DEFAULTS = {
    "mnist": dict(epochs=4, batch_size=128, lr=0.1),
    "cifar10": dict(epochs=16, batch_size=512, lr=0.2),
}


def _check_dataset(dataset):
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got dataset={dataset!r}")


def train_command(dataset):
    """The documented shell command that trains (and ships) the classifier for ``dataset``."""
    return (f"python -m lesson_lib.classifiers train --dataset {dataset} "
            f"--out lesson_lib/weights/{dataset}_classifier.pt")


# ----------------------------------------------------------------------------- architectures

def conv_bn(c_in, c_out):
    """3x3 convolution (same padding, no bias: BatchNorm has one) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """x + f(x) with f two conv_bn layers of the same width (He et al., 2016)."""

    def __init__(self, channels):
        super().__init__()
        self.f = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.f(x)


class _Classifier(nn.Module):
    """Shared behaviour: check the input; ``forward`` = ``head(features(x))``."""

    in_channels = None
    image_size = None
    logit_scale = 1.0

    def _check_input(self, x):
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a float tensor in [-1, 1]; got "
                            f"{type(x).__name__} {getattr(x, 'dtype', '')}. Convert uint8 images "
                            f"with x.float() / 127.5 - 1")
        c, s = self.in_channels, self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"{type(self).__name__} expects images of shape (B, {c}, {s}, {s}); "
                             f"got x of shape {tuple(x.shape)}")

    def forward(self, x):
        """Class logits, (B, 10)."""
        return self.logit_scale * self.head(self.features(x))


class MNISTClassifier(_Classifier):
    """A small CNN for 28x28 digits with a 128-unit penultimate layer.

    Two conv blocks, conv-BN-ReLU + max-pool at 28x28 (32 channels) and at 14x14 (64 channels),
    a conv-BN-ReLU at 7x7, then the 64 x 7 x 7 map is flattened into a fully connected layer of
    128 ReLU units: these are the ``features``. Dropout and a linear layer give the 10 logits.
    About 460k parameters (0.9 MB in fp16); >= 99% test accuracy after 4 epochs on a CPU.
    """

    in_channels = 1
    image_size = 28

    def __init__(self, width=32, feature_dim=128, dropout=0.3, num_classes=10):
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            conv_bn(1, width), nn.MaxPool2d(2),              # 28 -> 14
            conv_bn(width, 2 * width), nn.MaxPool2d(2),      # 14 -> 7
            conv_bn(2 * width, 2 * width),
        )
        self.fc = nn.Sequential(nn.Linear(2 * width * 7 * 7, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x):
        """The penultimate features, (B, 128): the fully connected ReLU layer."""
        self._check_input(x)
        return self.fc(self.body(x).flatten(1))


class CIFAR10Classifier(_Classifier):
    """A ResNet-ish net for 32x32 colour images, after the fast CIFAR-10 "ResNet-9" of Page (2018).

    prep: conv 64 at 32x32;
    stage 1: conv 128, max-pool to 16x16, residual block (128);
    stage 2: conv 256, max-pool to 8x8, residual block (256);
    stage 3: conv 512, max-pool to 4x4;
    global average pooling (the 512 ``features``) and a linear layer to the 10 logits, scaled
    by 1/8 as in Page (2018): without it the first large SGD steps on the 512-wide linear layer
    blow the logits up. About 3M parameters.
    """

    in_channels = 3
    image_size = 32
    logit_scale = 0.125

    def __init__(self, widths=(64, 128, 256, 512), num_classes=10):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.feature_dim = w3
        self.body = nn.Sequential(
            conv_bn(3, w0),
            conv_bn(w0, w1), nn.MaxPool2d(2), Residual(w1),   # 32 -> 16
            conv_bn(w1, w2), nn.MaxPool2d(2), Residual(w2),   # 16 -> 8
            conv_bn(w2, w3), nn.MaxPool2d(2),                 # 8 -> 4
        )
        self.head = nn.Linear(w3, num_classes)

    def features(self, x):
        """The penultimate features, (B, 512): the last stage's output, averaged over space."""
        self._check_input(x)
        return self.body(x).mean(dim=(2, 3))


ARCHITECTURES = {"mnist": MNISTClassifier, "cifar10": CIFAR10Classifier}


def build_classifier(dataset):
    """A freshly initialised classifier for ``dataset`` ("mnist" or "cifar10")."""
    _check_dataset(dataset)
    return ARCHITECTURES[dataset]()


# ----------------------------------------------------------------------------- training

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
    from . import datasets  # imported lazily: only training needs the data

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


# ----------------------------------------------------------------------------- shipping

def fp16_state_dict(model):
    """The model's state dict with every floating-point tensor cast to fp16 (on the CPU)."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
            for k, v in model.state_dict().items()}


def sha256_of(path):
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_classifier(model, path, info):
    """Save ``model`` as an fp16 state dict at ``path`` (.pt) and ``info`` + its sha256 next to
    it (same name, .json). Returns the sidecar dict."""
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"the weights file must end in .pt, got path={str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fp16_state_dict(model), path)
    sidecar = dict(info, sha256=sha256_of(path), file=path.name, dtype="float16")
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def load_classifier(dataset, device="cpu", weights_dir=None):
    """The shipped, trained classifier for ``dataset``, in float32 and eval mode.

    Reads ``{dataset}_classifier.pt`` and its sidecar ``.json`` from ``weights_dir`` (default:
    ``lesson_lib/weights``), checks the file's sha256 against the JSON, loads the state dict
    with ``weights_only=True`` and casts it to float32. The returned model carries ``info``
    (the sidecar dict) and ``name`` (architecture and hash prefix, used in metric reports).
    """
    _check_dataset(dataset)
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    path = weights_dir / f"{dataset}_classifier.pt"
    sidecar_path = path.with_suffix(".json")
    if not path.exists() or not sidecar_path.exists():
        raise FileNotFoundError(
            f"no trained {dataset} classifier in {weights_dir} (need {path.name} and "
            f"{sidecar_path.name}); train it with: {train_command(dataset)}")
    info = json.loads(sidecar_path.read_text())
    if sha256_of(path) != info.get("sha256"):
        raise RuntimeError(
            f"sha256 of {path} does not match {sidecar_path.name}: the shipped weights are "
            f"corrupted or were replaced; reinstall lesson_lib or retrain with: "
            f"{train_command(dataset)}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_classifier(dataset)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    model.info = info
    model.name = f"{info.get('architecture', type(model).__name__)}[{info['sha256'][:8]}]"
    return model.to(device).eval()


# ----------------------------------------------------------------------------- judging samples

@torch.no_grad()
def classify(images, dataset="mnist", classifier=None, batch_size=500, device=None):
    """Predicted labels and confidences (the softmax probability of the predicted class).

    ``images`` are in [-1, 1], shape (N, C, H, W). Uses the shipped classifier for ``dataset``
    unless ``classifier`` is given. Returns ``(labels (N,) long, confidence (N,) float32)``.
    """
    if classifier is None:
        classifier = load_classifier(dataset, device=device or "cpu")
    device = torch.device(device) if device is not None else next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    labels, confidence = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device, torch.float32)
        probs = classifier(x).float().softmax(dim=1)
        conf, pred = probs.max(dim=1)
        labels.append(pred.cpu())
        confidence.append(conf.cpu())
    classifier.train(was_training)
    return torch.cat(labels), torch.cat(confidence)


def class_accuracy(images, labels, dataset="mnist", classifier=None, batch_size=500, device=None):
    """Class accuracy and confidence of generated samples of a class-conditional model.

    ``labels`` are the classes the samples were conditioned on. Returns a dict with
    ``accuracy`` (fraction classified as their label), ``mean_confidence`` (mean softmax
    probability of the predicted class) and ``n``.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be a 1-D tensor with one label per image; got labels of "
                         f"shape {tuple(labels.shape)} for {len(images)} images")
    predicted, confidence = classify(images, dataset, classifier, batch_size, device)
    return dict(accuracy=(predicted == labels).float().mean().item(),
                mean_confidence=confidence.mean().item(), n=len(labels))


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lesson_lib.classifiers",
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
    info["command"] = " ".join(["python -m lesson_lib.classifiers", *argv])
    sidecar = save_classifier(model, args.out, info)
    print(f"saved {args.out} (sha256 {sidecar['sha256'][:12]}..., fp16 test accuracy "
          f"{info['test_accuracy']:.4f})", flush=True)
    return sidecar


if __name__ == "__main__":
    main()
