#!/usr/bin/env python3
"""Training and sampling throughput (images/s) of each U-Net preset, beside an equal-size
U-Net from the diffusers library (its "twin") run in the same process.

    python benchmarks/throughput.py [--device cpu|cuda] [--batch-size 32] [--seconds 3] [--rounds 3]

Training = one full optimisation step (forward, L_simple, backward, AdamW); on CUDA with
bf16 autocast and channels-last, as lesson_lib.training.trainer does. Sampling = one denoiser
evaluation per image and step (images/s per sampling step), in inference mode.

Shared machines are noisy, and a slow minute would favour whichever model ran in it. So the
preset and its twin take turns: each round measures both, for --seconds each, and the table
reports the median over --rounds rounds and the ratio of the medians (ours / twin; >= 1
means the course model is at least as fast).

diffusers is a benchmark-only dependency: `pip install -e ".[bench]"` (twins are skipped
when it is missing). Figures are recorded in docs/benchmarks.md with the hardware.
"""
import argparse
import importlib.util
import statistics
import time

import torch
import torch.nn.functional as F

from lesson_lib.cards import hardware
from lesson_lib.course.inspection import count_parameters
from lesson_lib.models.layers import num_groups
from lesson_lib.models.unet import PRESETS, unet_preset


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
    """Training and sampling speed of ``model`` on batches of ``shape``, in images/s."""
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


def diffusers_twin(name):
    """diffusers' ``UNet2DModel`` with the shape of preset ``name``: the same channel widths,
    ResNet blocks per level, attention resolutions (one head, and in the middle block),
    dropout, time-embedding width (4 x base channels) and down/upsampling by convolution.

    The parameter counts are identical (tests/test_benchmarks.py). The one difference: diffusers
    uses one GroupNorm group count everywhere, ours adapts it to each width
    (:func:`lesson_lib.models.layers.num_groups`); the twin takes ours at the base width.
    """
    from diffusers import UNet2DModel
    cfg = PRESETS[name]
    resolutions = [cfg["image_size"] // 2 ** i for i in range(len(cfg["channel_mults"]))]
    attention = [r in cfg["attention_resolutions"] for r in resolutions]
    return UNet2DModel(
        sample_size=cfg["image_size"], in_channels=cfg["in_channels"], out_channels=cfg["in_channels"],
        layers_per_block=cfg["num_res_blocks"], dropout=cfg["dropout"],
        block_out_channels=tuple(cfg["base_channels"] * m for m in cfg["channel_mults"]),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        attention_head_dim=None, norm_num_groups=num_groups(cfg["base_channels"]))


def measure_preset(name, device, batch_size, seconds):
    model = unet_preset(name)
    shape = (model.in_channels, model.image_size, model.image_size)
    return measure(model, shape, device, batch_size, seconds, lambda m, x, t: m(x, t))


def measure_twin(name, device, batch_size, seconds):
    cfg = PRESETS[name]
    shape = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    return measure(diffusers_twin(name), shape, device, batch_size, seconds,
                   lambda m, x, t: m(x, t, return_dict=False)[0])


def compare(name, device, batch_size, seconds, rounds):
    """Median figures of preset ``name`` and of its diffusers twin, measured in alternation.

    Returns ``{"ours": {...}, "twin": {...} or None, "train_ratio": r, "sample_ratio": r}``
    (ratios are ours / twin; None without diffusers).
    """
    have_twin = importlib.util.find_spec("diffusers") is not None
    runs = {"ours": [], "twin": []}
    for _ in range(rounds):
        runs["ours"].append(measure_preset(name, device, batch_size, seconds))
        if have_twin:
            runs["twin"].append(measure_twin(name, device, batch_size, seconds))

    def median(rows):
        if not rows:
            return None
        keys = ("train_img_per_s", "sample_img_per_s")
        return {**rows[0], **{k: round(statistics.median(r[k] for r in rows), 1) for k in keys}}

    ours, twin = median(runs["ours"]), median(runs["twin"])
    result = {"ours": ours, "twin": twin, "rounds": rounds, "train_ratio": None, "sample_ratio": None}
    if twin:
        result["train_ratio"] = round(ours["train_img_per_s"] / twin["train_img_per_s"], 2)
        result["sample_ratio"] = round(ours["sample_img_per_s"] / twin["sample_img_per_s"], 2)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=3.0, help="per figure, per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = hardware(args.device)
    print(f"device: {device_name}; torch {torch.__version__}; batch {args.batch_size}; "
          f"median of {args.rounds} alternating rounds")
    print(f"{'model':<22} {'params':>8} {'train img/s':>12} {'sample img/s':>13}")
    for name in args.presets:
        r = compare(name, args.device, args.batch_size, args.seconds, args.rounds)
        for label, row in ((name, r["ours"]), ("  diffusers twin", r["twin"])):
            if row is None:
                print(f"{label:<22} skipped: diffusers is not installed (pip install -e '.[bench]')")
                continue
            print(f"{label:<22} {row['params_M']:>7.2f}M {row['train_img_per_s']:>12,.1f} "
                  f"{row['sample_img_per_s']:>13,.1f}")
        if r["twin"]:
            print(f"{'  ours / twin':<22} {'':>8} {r['train_ratio']:>11.2f}x {r['sample_ratio']:>12.2f}x")


if __name__ == "__main__":
    main()
