#!/usr/bin/env python3
"""Training and sampling throughput (images/s) of each U-Net preset, beside an equal-size
U-Net from the diffusers library run in the same process.

    python benchmarks/throughput.py [--device cpu|cuda] [--batch-size 32] [--seconds 5]

Training = one full optimisation step (forward, L_simple, backward, AdamW); on CUDA with
bf16 autocast and channels-last, as lesson_lib.training does. Sampling = one denoiser
evaluation per image and step (images/s per sampling step), in inference mode.
diffusers is a benchmark-only dependency: `pip install diffusers` (skipped if missing).
Figures are recorded in docs/benchmarks.md with the hardware they came from.
"""
import argparse
import time

import torch
import torch.nn.functional as F

from lesson_lib.unet import PRESETS, count_parameters, unet_preset


def _timed(fn, seconds, sync):
    fn()
    fn()                                   # warm-up: kernels, allocator, cudnn autotuning
    sync()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return n / elapsed


def measure(model, shape, device, batch_size, seconds, call):
    """Steps/s of training and of inference for ``model`` on batches of ``shape``; returns images/s."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    model = model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, *shape, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch_size,), device=device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.mse_loss(call(model, x, t).float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.inference_mode()
    def sample_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            call(model, x, t)

    model.train()
    train = _timed(train_step, seconds, sync) * batch_size
    model.eval()
    sample = _timed(sample_step, seconds, sync) * batch_size
    return {"params_M": round(count_parameters(model) / 1e6, 2), "batch_size": batch_size,
            "train_img_per_s": round(train, 1), "sample_img_per_s": round(sample, 1)}


def measure_preset(name, device, batch_size, seconds):
    model = unet_preset(name)
    shape = (model.in_channels, model.image_size, model.image_size)
    return measure(model, shape, device, batch_size, seconds, lambda m, x, t: m(x, t))


def diffusers_unet_like_cifar10():
    """diffusers' UNet2DModel with the shape of the "cifar10" preset: 64 base channels,
    multipliers (1, 2, 2, 2), two ResNet blocks per level, attention at 16x16, dropout 0.1."""
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(64, 128, 128, 128), dropout=0.1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                       attention_head_dim=None, norm_num_groups=32)


def measure_diffusers(device, batch_size, seconds):
    model = diffusers_unet_like_cifar10()
    return measure(model, (3, 32, 32), device, batch_size, seconds,
                   lambda m, x, t: m(x, t, return_dict=False)[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device_name}; torch {torch.__version__}; batch {args.batch_size}")
    print(f"{'model':<26} {'params':>8} {'train img/s':>12} {'sample img/s':>13}")
    rows = [(name, lambda name=name: measure_preset(name, args.device, args.batch_size, args.seconds))
            for name in PRESETS]
    rows.append(("diffusers (cifar10 shape)", lambda: measure_diffusers(args.device, args.batch_size, args.seconds)))
    for name, run in rows:
        try:
            r = run()
        except ImportError as e:
            print(f"{name:<26} skipped: {e}")
            continue
        print(f"{name:<26} {r['params_M']:>7.2f}M {r['train_img_per_s']:>12,.1f} {r['sample_img_per_s']:>13,.1f}")


if __name__ == "__main__":
    main()
