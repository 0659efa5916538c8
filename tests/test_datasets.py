import os
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from lesson_lib.data import images as datasets
from lesson_lib.data.images import (CIFAR10_CLASSES, MNIST_CLASSES, float_to_uint8, load_cifar10, load_dataset,
                                    load_image_folder, load_mnist, make_grid_image, save_grid, uint8_to_float)
from lesson_lib.data.loader import TensorLoader, to_device_if_fits

REAL_MIRROR = os.environ.get("DDPM_DATA_DIR")
needs_mirror = pytest.mark.skipif(not REAL_MIRROR, reason="set DDPM_DATA_DIR to a mirror with mnist.npz/cifar10.npz "
                                                           "(python shared/data/prepare.py DIR) to test real data")


@pytest.fixture
def fake_mirror(tmp_path):
    """A tiny mirror directory in the documented layout, with known pixel values."""
    rng = np.random.default_rng(0)
    mnist = {f"x_{s}": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 12), ("test", 5))}
    mnist["x_train"][0, 0, 0], mnist["x_train"][0, 0, 1] = 0, 255
    mnist.update(y_train=np.arange(12, dtype=np.uint8) % 10, y_test=np.arange(5, dtype=np.uint8))
    cifar = {f"x_{s}": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for s, n in (("train", 10), ("test", 4))}
    cifar.update(y_train=np.arange(10, dtype=np.uint8)[::-1].copy(), y_test=np.zeros(4, np.uint8))
    np.savez(tmp_path / "mnist.npz", **mnist)
    np.savez(tmp_path / "cifar10.npz", **cifar)
    return tmp_path, mnist, cifar


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No mirror, an empty cache, and a torchvision whose downloads fail like a machine without internet."""
    monkeypatch.delenv("DDPM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(self):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_network)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
    return tmp_path / "cache" / "lesson_lib"


def test_uint8_float_round_trip_is_exact():
    pixels = torch.arange(256, dtype=torch.uint8)
    x = uint8_to_float(pixels)
    assert x.dtype == torch.float32 and x[0] == -1 and x[255] == 1
    assert torch.allclose(x, torch.linspace(-1, 1, 256), atol=1e-6)
    assert torch.equal(float_to_uint8(x), pixels)
    assert torch.equal(float_to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))


def test_mnist_from_mirror_dir(fake_mirror):
    path, raw, _ = fake_mirror
    x, y = load_mnist("train", data_dir=str(path))
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.long and y.tolist() == raw["y_train"].tolist()
    assert x[0, 0, 0, 0] == -1 and x[0, 0, 0, 1] == 1
    assert torch.allclose(x[:, 0], torch.from_numpy(raw["x_train"]).float() / 127.5 - 1)
    xt, yt = load_mnist("test", data_dir=str(path), as_uint8=True)
    assert xt.dtype == torch.uint8 and torch.equal(xt[:, 0], torch.from_numpy(raw["x_test"]))


def test_cifar_from_mirror_is_channels_first(fake_mirror, monkeypatch):
    path, _, raw = fake_mirror
    monkeypatch.setenv("DDPM_DATA_DIR", str(path))   # found through the environment variable
    x, y = load_cifar10("train", as_uint8=True)
    assert x.shape == (10, 3, 32, 32) and x.is_contiguous()
    # pixel (row 5, col 7, channel 2) of image 3 in HWC must land at [3, 2, 5, 7]
    assert x[3, 2, 5, 7] == raw["x_train"][3, 5, 7, 2]
    assert torch.equal(x.permute(0, 2, 3, 1), torch.from_numpy(raw["x_train"]))
    assert y.tolist() == list(range(9, -1, -1))


def test_data_dir_argument_wins_over_environment(fake_mirror, monkeypatch, tmp_path_factory):
    path, _, _ = fake_mirror
    monkeypatch.setenv("DDPM_DATA_DIR", str(tmp_path_factory.mktemp("empty")))
    assert load_mnist("test", data_dir=str(path))[0].shape[0] == 5
    with pytest.raises(FileNotFoundError, match="mnist.npz"):
        load_mnist("test")


def test_bad_split_and_bad_mirror_file(fake_mirror, tmp_path_factory):
    path, _, _ = fake_mirror
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation", data_dir=str(path))
    bad = tmp_path_factory.mktemp("bad")
    np.savez(bad / "mnist.npz", x_train=np.zeros((3, 32, 32), np.uint8), y_train=np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="x_train"):
        load_mnist("train", data_dir=str(bad))
    with pytest.raises(ValueError, match="x_test"):
        load_mnist("test", data_dir=str(bad))


def test_offline_without_mirror_names_both_fixes(offline):
    for loader, name in ((load_mnist, "mnist"), (load_cifar10, "cifar10")):
        with pytest.raises(RuntimeError) as info:
            loader("train")
        msg = str(info.value)
        assert "DDPM_DATA_DIR" in msg and "data_dir" in msg and f"{name}.npz" in msg
        assert "download" in msg and str(offline) in msg
        assert "name resolution" in msg   # the original error is shown, not hidden
    with pytest.raises(RuntimeError, match="download=True"):
        load_mnist("train", download=False)


def test_other_errors_are_not_hidden(offline, monkeypatch):
    def broken(self):
        raise ValueError("something unrelated went wrong")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", broken)
    with pytest.raises(ValueError, match="unrelated"):
        load_mnist("train")


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.default_cache_dir() == str(tmp_path / "lesson_lib")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert datasets.default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "lesson_lib")


@needs_mirror
def test_real_mnist_mirror():
    x, y = load_mnist("train", data_dir=REAL_MIRROR, as_uint8=True)
    assert x.shape == (60000, 1, 28, 28)
    assert abs(x.double().mean().item() - 33.318) < 1e-3        # the published MNIST train mean
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    xf, _ = load_mnist("test", data_dir=REAL_MIRROR)
    assert xf.shape == (10000, 1, 28, 28) and xf.min() == -1 and xf.max() == 1
    assert abs(xf.mean().item() - (33.79 / 127.5 - 1)) < 0.01   # test-set mean pixel 33.79


@needs_mirror
def test_real_cifar10_mirror():
    x, y = load_cifar10("train", data_dir=REAL_MIRROR, as_uint8=True)
    assert x.shape == (50000, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [5000] * 10
    means = x[:5000].double().mean(dim=(0, 2, 3)) / 255        # CIFAR-10 is redder than it is blue
    assert 0.45 < means[0] < 0.52 and 0.40 < means[2] < 0.48 and means[0] > means[2]
    _, yt = load_cifar10("test", data_dir=REAL_MIRROR, as_uint8=True)
    assert torch.bincount(yt).tolist() == [1000] * 10


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder(tmp_path):
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    wide = np.zeros((10, 30, 3), np.uint8)        # white square in the middle of a black strip
    wide[:, 10:20] = 255
    _png(tmp_path / "cats" / "a.png", red)
    _png(tmp_path / "cats" / "b.png", red)
    _png(tmp_path / "dogs" / "c.png", wide)
    x, y, names = load_image_folder(str(tmp_path), size=10)
    assert names == ("cats", "dogs") and y.tolist() == [0, 0, 1]
    assert x.shape == (3, 3, 10, 10) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.ones(10, 10)) and torch.allclose(x[0, 2], -torch.ones(10, 10))
    assert x[2].min() > 0.9, "center crop must keep exactly the white middle of the wide image"
    g, _, _ = load_image_folder(str(tmp_path), size=8, channels=1, as_uint8=True)
    assert g.shape == (3, 1, 8, 8) and g.dtype == torch.uint8
    assert abs(int(g[0, 0, 4, 4]) - 76) <= 1        # ITU-R 601 luma of pure red: 0.299 * 255
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(str(tmp_path), channels=2)
    with pytest.raises(ValueError, match="sub-folder"):
        load_image_folder(str(tmp_path / "cats"))


def test_load_dataset_dispatch(fake_mirror, tmp_path_factory):
    path, _, _ = fake_mirror
    x, y, names = load_dataset("mnist", "test", data_dir=str(path))
    assert x.shape == (5, 1, 28, 28) and names == MNIST_CLASSES
    assert load_dataset("cifar10", "train", data_dir=str(path))[2] == CIFAR10_CLASSES
    assert CIFAR10_CLASSES[3] == "cat" and len(CIFAR10_CLASSES) == 10
    folder = tmp_path_factory.mktemp("flowers")
    _png(folder / "train" / "rose" / "1.png", np.full((12, 12, 3), 200, np.uint8))
    x, y, names = load_dataset(str(folder), "train", size=12)
    assert names == ("rose",) and x.shape == (1, 3, 12, 12)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_loader_visits_every_example_once_per_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10)
    loader = TensorLoader(images, {"y": labels}, batch_size=3, seed=1)
    seen = []
    for _ in range(3):                                             # 10 // 3 = 3 batches an epoch
        x, cond = next(loader)
        y = cond["y"]
        assert x.shape == (3, 1, 2, 2) and x.dtype == torch.float32
        assert torch.allclose(x[:, 0, 0, 0], uint8_to_float(y.to(torch.uint8)))   # images stay with labels
        seen += y.tolist()
    assert len(set(seen)) == 9 and loader.epoch == 0
    next(loader)
    assert loader.epoch == 1
    x, cond = next(TensorLoader(images.float(), None, batch_size=4))
    assert cond == {} and x.dtype == torch.float32


def test_hflip_is_random_per_example():
    image = torch.arange(4.0).view(1, 1, 1, 4).expand(64, 1, 2, 4).contiguous()   # left-right asymmetric
    x, _ = next(TensorLoader(image, batch_size=64, hflip=True, seed=0))
    flipped = (x == image.flip(3)).flatten(1).all(1)
    kept = (x == image).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 10 < int(flipped.sum()) < 54, "about half of the batch should be flipped"
    x, _ = next(TensorLoader(image, batch_size=64, hflip=False))
    assert torch.equal(x, image)


def test_hflip_flips_image_conditioning_with_its_image_and_leaves_labels():
    """A cascade's low-resolution image must be flipped exactly when its image is; labels never."""
    image = torch.arange(64 * 8.0).view(64, 1, 2, 4)                          # every example asymmetric
    low_res = image[:, :, :, ::2].repeat_interleave(2, dim=3) + 1000.0        # a different image, same layout
    labels = torch.arange(64)
    x, cond = next(TensorLoader(image, {"low_res": low_res, "y": labels}, batch_size=64, hflip=True, seed=0))
    order = cond["y"]
    flipped = (x == image[order].flip(3)).flatten(1).all(1)
    assert 10 < int(flipped.sum()) < 54
    expected = torch.where(flipped[:, None, None, None], low_res[order].flip(3), low_res[order])
    assert torch.equal(cond["low_res"], expected)


def test_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(torch.zeros(4, 1, 2, 2), batch_size=5)
    with pytest.raises(ValueError, match="one entry per image"):
        TensorLoader(torch.zeros(4, 1, 2, 2), {"y": torch.zeros(3)}, batch_size=2)
    with pytest.raises(ValueError, match="multiple of 2"):
        TensorLoader(torch.zeros(4, 1, 2, 2), batch_size=3, world=2)


def test_processes_share_one_global_batch():
    """Two processes' slices of the same seed's batches are, together, one process's batches."""
    images = torch.arange(20, dtype=torch.float32).view(20, 1, 1, 1).expand(20, 1, 1, 2).contiguous()
    whole = TensorLoader(images, batch_size=8, hflip=True, seed=3)
    parts = [TensorLoader(images, batch_size=8, hflip=True, seed=3, rank=r, world=2) for r in (0, 1)]
    for _ in range(5):                                        # across an epoch boundary too
        x, _ = next(whole)
        a, b = (next(p)[0] for p in parts)
        assert torch.equal(a, x[0::2]) and torch.equal(b, x[1::2])


def test_to_device_if_fits(monkeypatch):
    images, labels = torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long)
    x, cond = to_device_if_fits(images, {"y": labels}, "cpu")
    assert x.device.type == "cpu" and cond["y"].device.type == "cpu"
    # 128 + 64 bytes do not fit in half of 300 free bytes: the data must stay on the CPU
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (300, 10**9))
    x, cond = to_device_if_fits(images, {"y": labels}, "cuda")
    assert x is images and cond["y"] is labels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loader_on_gpu():
    images, labels = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), torch.arange(32)
    x, cond = to_device_if_fits(images, {"y": labels}, "cuda")
    assert x.is_cuda
    xb, cb = next(TensorLoader(x, cond, batch_size=8, hflip=True))
    assert xb.is_cuda and cb["y"].is_cuda and xb.dtype == torch.float32
    xb, cb = next(TensorLoader(images, {"y": labels}, batch_size=8, device="cuda"))   # CPU data, GPU batches
    yb = cb["y"]
    # CUDA divides by a scalar as a multiplication by its reciprocal: equal up to one rounding
    assert xb.is_cuda and torch.allclose(xb.cpu(), uint8_to_float(images[yb.cpu()]), atol=1e-6, rtol=0)


def test_grid_image_and_save(tmp_path):
    images = torch.linspace(-1, 1, 4 * 64).view(4, 1, 8, 8)
    grid = make_grid_image(images, nrow=2, padding=2)
    assert grid.shape == (22, 22, 3) and grid.dtype == np.uint8
    assert (grid[:2] == 0).all()                                  # the padding
    assert np.array_equal(grid[2:10, 12:20, 0], float_to_uint8(images[1, 0]).numpy())
    out = save_grid(images, tmp_path / "sub" / "grid.png", nrow=2)
    assert np.array_equal(np.asarray(Image.open(out)), grid)
    assert os.listdir(tmp_path / "sub") == ["grid.png"]            # no temporary file left behind
    rgb = make_grid_image(torch.zeros(3, 3, 4, 4), nrow=3, padding=0)
    assert rgb.shape == (4, 12, 3) and (rgb == 128).all()         # 0.0 in [-1, 1] is mid-grey
    with pytest.raises(ValueError, match="shape"):
        make_grid_image(torch.zeros(2, 2, 4, 4))
