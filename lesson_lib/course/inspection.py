"""Looking inside a U-Net (lesson 3): its parameters per part, and the shape of every block's output.

    count_parameters(model)          trainable parameters of any network
    parameter_table(model)           rows (part, parameters) of a UNet, then ("total", n)
    shape_table(model, x, t)         rows (block, input shape, output shape), in execution order

They read a :class:`lesson_lib.models.unet.UNet` from outside (forward hooks, the names of its
parts) and change nothing in it; the network itself does not need them.
"""

import torch
from torch import nn

from lesson_lib.models.layers import Downsample, Upsample
from lesson_lib.models.unet import MiddleBlock, ResAttnBlock


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_table(model):
    """Rows ``(part, parameters)`` for the parts of a UNet, ending with a ``("total", n)`` row.

    Print with ``for part, n in parameter_table(model): print(f"{part:16s}{n:>12,}")``.
    """
    parts = [("time embedding", [model.time_embedding])]
    if model.class_embedding is not None:
        parts.append(("class embedding", [model.class_embedding]))
    parts += [("input conv", [model.conv_in]), ("down path", [model.down]), ("middle", [model.middle]),
              ("up path", [model.up]), ("output", [model.out])]
    rows = [(name, sum(count_parameters(m) for m in modules)) for name, modules in parts]
    rows.append(("total", count_parameters(model)))
    return rows


def _describe(module):
    if isinstance(module, (ResAttnBlock, MiddleBlock)):
        attn = not isinstance(module.attn, nn.Identity)
        if isinstance(module, MiddleBlock):
            return "ResBlock+Attention+ResBlock" if attn else "ResBlock+ResBlock"
        return "ResBlock+Attention" if attn else "ResBlock"
    if isinstance(module, (Downsample, Upsample)):
        return type(module).__name__
    return "Conv3x3" if isinstance(module, nn.Conv2d) else "GroupNorm+SiLU+Conv3x3"


def shape_table(model, x, t, y=None):
    """Run one forward pass and return rows ``(block name, input shape, output shape)``.

    Rows come in execution order and cover the input conv, every block of the down path,
    the middle, every block of the up path (whose inputs show the concatenated skips) and
    the output head. Names look like ``"down.2 Downsample"`` (attribute path, then kind).
    """
    kinds = (ResAttnBlock, MiddleBlock, Downsample, Upsample)
    watched = [(f"{name} {_describe(m)}", m) for name, m in model.named_modules()
               if isinstance(m, kinds) or name in ("conv_in", "out")]
    rows, handles = [], []

    def hook(name):
        def record(module, inputs, output):
            rows.append((name, tuple(inputs[0].shape), tuple(output.shape)))
        return record

    try:
        for name, module in watched:
            handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad():
            model(x, t, y)
    finally:
        for h in handles:
            h.remove()
    return rows
