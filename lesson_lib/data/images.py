"""Image datasets as tensors: MNIST, CIFAR-10 and folders of images.

DDPM works on images scaled to [-1, 1] (Ho et al., 2020, Sec. 3.3: "We assume that image
data consists of integers in {0, 1, ..., 255} scaled linearly to [-1, 1]"). Every loader here
returns ``(images, labels)`` with images of shape (N, C, H, W): float32 in [-1, 1] by default,
or the raw uint8 pixels with ``as_uint8=True`` (4x less memory; :class:`~lesson_lib.data.loader.TensorLoader`
converts each batch to [-1, 1] on the fly).

Where the data comes from, in this order:

1. a *mirror directory*: the ``data_dir`` argument, else the environment variable
   ``DDPM_DATA_DIR``. It holds ``mnist.npz`` / ``cifar10.npz`` with uint8 arrays
   ``x_train, y_train, x_test, y_test`` (MNIST images (N, 28, 28), CIFAR-10 (N, 32, 32, 3)).
   Use this on machines without internet access.
2. otherwise torchvision downloads the dataset into ``~/.cache/lesson_lib``
   (``$XDG_CACHE_HOME/lesson_lib`` when that is set) the first time.

Small datasets fit on a GPU whole (MNIST is 47 MB as uint8, CIFAR-10 154 MB), so
:mod:`lesson_lib.data.loader` moves them there and draws random batches
without any worker processes: the data loader never starves the GPU.
"""

import contextlib
import io
import os

import numpy as np
import torch

MNIST_CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_MIRROR = {  # name -> (file in the mirror directory, image shape in the file, class names)
    "mnist": ("mnist.npz", (28, 28), MNIST_CLASSES),
    "cifar10": ("cifar10.npz", (32, 32, 3), CIFAR10_CLASSES),
}


def default_cache_dir():
    """Where torchvision downloads go: ``$XDG_CACHE_HOME/lesson_lib`` or ``~/.cache/lesson_lib``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lesson_lib")


def uint8_to_float(images):
    """Pixels {0, ..., 255} -> [-1, 1] (float32): x / 127.5 - 1, so 0 -> -1 and 255 -> 1."""
    return images.float() / 127.5 - 1.0


def float_to_uint8(images):
    """[-1, 1] -> pixels {0, ..., 255} (uint8), clipping values outside the range."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# MNIST and CIFAR-10

def _check_split(split):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _from_mirror(name, split, directory):
    filename, shape, _ = _MIRROR[name]
    path = os.path.join(directory, filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the dataset mirror {directory!r} has no {filename}: expected a file with uint8 "
                                f"arrays x_train, y_train, x_test, y_test (images shaped (N, {', '.join(map(str, shape))})); "
                                f"fix data_dir / DDPM_DATA_DIR, or unset both to download with torchvision")
    with np.load(path) as f:
        missing = [k for k in (f"x_{split}", f"y_{split}") if k not in f.files]
        if missing:
            raise ValueError(f"{path} lacks the arrays {missing}; it holds {f.files}")
        x, y = f[f"x_{split}"], f[f"y_{split}"]
    if x.dtype != np.uint8 or x.shape[1:] != shape or len(y) != len(x):
        raise ValueError(f"{path}: x_{split} must be uint8 of shape (N, {', '.join(map(str, shape))}) with one label "
                         f"per image; got {x.dtype} {x.shape} and {len(y)} labels")
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def _from_torchvision(name, split, download):
    import torchvision

    root = os.path.join(default_cache_dir(), name)
    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    chatter = io.StringIO()       # torchvision prints a line per mirror it retries; keep them out of sight
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            ds = cls(root=root, train=(split == "train"), download=download)
    except (RuntimeError, OSError) as err:  # torchvision's "Dataset not found" / download errors
        second = (f"connect to the internet so torchvision can download {name} to {root}" if download else
                  f"call with download=True (and an internet connection) so torchvision can download {name} "
                  f"to {root}")
        raise RuntimeError(
            f"could not load {name} ({split} split): no dataset mirror was given and torchvision could not "
            f"provide it. Fix one of:\n"
            f"  1. set the environment variable DDPM_DATA_DIR (or pass data_dir=...) to a mirror directory "
            f"holding {_MIRROR[name][0]} with uint8 arrays x_train, y_train, x_test, y_test;\n"
            f"  2. {second}.\n"
            f"torchvision said: {type(err).__name__}: {err}") from err
    x = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
    return x.to(torch.uint8), torch.as_tensor(ds.targets, dtype=torch.long)


def _load(name, split, data_dir, download, as_uint8):
    _check_split(split)
    directory = data_dir if data_dir is not None else os.environ.get("DDPM_DATA_DIR") or None
    if directory is not None:
        x, y = _from_mirror(name, split, directory)
    else:
        x, y = _from_torchvision(name, split, download)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)   # (N, H, W) or (N, H, W, C) -> (N, C, H, W)
    x = x.contiguous()
    return (x if as_uint8 else uint8_to_float(x)), y


def load_mnist(split="train", data_dir=None, download=True, as_uint8=False):
    """MNIST digits: images (N, 1, 28, 28) in [-1, 1] (or uint8), labels (N,) long in 0..9.

    ``split`` is "train" (60,000) or "test" (10,000). See the module docstring for where
    the data comes from (``data_dir`` / ``DDPM_DATA_DIR`` mirror, else a torchvision download).
    """
    return _load("mnist", split, data_dir, download, as_uint8)


def load_cifar10(split="train", data_dir=None, download=True, as_uint8=False):
    """CIFAR-10: images (N, 3, 32, 32) in [-1, 1] (or uint8), labels (N,) long in 0..9.

    ``split`` is "train" (50,000) or "test" (10,000); class names in :data:`CIFAR10_CLASSES`.
    """
    return _load("cifar10", split, data_dir, download, as_uint8)


# ---------------------------------------------------------------------------------------------
# A folder of your own images

def load_image_folder(path, size=32, channels=3, as_uint8=False):
    """Load ``path/<class name>/<image files>`` as ``(images, labels, class_names)``.

    Each image is resized so its shorter side is ``size``, center-cropped to size x size and
    converted to RGB (``channels=3``) or grayscale (``channels=1``). Class names are the
    sub-folder names in sorted order; ``labels[i]`` indexes into them.
    """
    import torchvision
    from torchvision import transforms

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int (the output height and width), got {size!r}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no folder at {path!r}")
    if not any(e.is_dir() for e in os.scandir(path)):
        raise ValueError(f"{path!r} has no sub-folders: put the images in one sub-folder per class, "
                         f"e.g. {os.path.join(path, 'cats', 'img001.png')}")
    steps = [transforms.Grayscale(1)] if channels == 1 else []
    steps += [transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()]
    ds = torchvision.datasets.ImageFolder(path, transform=transforms.Compose(steps))
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor(ds.targets, dtype=torch.long)
    return (images if as_uint8 else uint8_to_float(images)), labels, tuple(ds.classes)


def load_dataset(name, split="train", data_dir=None, download=True, as_uint8=False, size=32, channels=3):
    """``(images, labels, class_names)`` for "mnist", "cifar10", or a folder path.

    For a folder, ``path/<split>`` is used when it exists (e.g. ``flowers/train/rose/...``),
    else ``path`` itself; ``size`` and ``channels`` only apply to folders.
    """
    if name in _MIRROR:
        images, labels = _load(name, split, data_dir, download, as_uint8)
        return images, labels, _MIRROR[name][2]
    if os.path.isdir(name):
        folder = os.path.join(name, split) if os.path.isdir(os.path.join(name, split)) else name
        return load_image_folder(folder, size=size, channels=channels, as_uint8=as_uint8)
    raise ValueError(f"unknown dataset {name!r}: use 'mnist', 'cifar10', or the path of an existing folder of "
                     f"images in class sub-folders")


# ---------------------------------------------------------------------------------------------
# Looking at images

def make_grid_image(images, nrow=8, padding=2):
    """A batch (B, C, H, W) in [-1, 1] (or uint8) -> one uint8 numpy image (height, width, 3).

    Uses ``torchvision.utils.make_grid``: ``nrow`` images per row, ``padding`` black pixels
    between them; grayscale images become three equal channels.
    """
    from torchvision.utils import make_grid

    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    pixels = images if images.dtype == torch.uint8 else float_to_uint8(images.detach())
    grid = make_grid(pixels.cpu(), nrow=nrow, padding=padding)
    return grid.permute(1, 2, 0).numpy()


def save_grid(images, path, nrow=8, padding=2):
    """Save :func:`make_grid_image` as a PNG (or a JPEG, for a .jpg name), atomically (temporary
    file, then ``os.replace``)."""
    from PIL import Image

    from ..files import atomic_write

    suffix = os.path.splitext(os.fspath(path))[1].lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
    if suffix not in formats:
        raise ValueError(f"the grid's file name must end in .png, .jpg or .jpeg, got {os.fspath(path)!r}")
    array = make_grid_image(images, nrow=nrow, padding=padding)
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format=formats[suffix]))
    return path
