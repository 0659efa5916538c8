"""Looking inside a U-Net (lesson 3): its parameters per part, and the shape of every block's output.

    count_parameters(model)          trainable parameters of any network
    parameter_table(model)           rows (part, parameters) of a UNet, then ("total", n)
    shape_table(model, x, t)         rows (block, input shape, output shape), in execution order
    unet_layout(model)               the blocks, sizes, channels and skip connections a diagram shows
    draw_unet(model, ax)             that diagram, with matplotlib

They read a :class:`lesson_lib.models.unet.UNet` from outside (forward hooks, the names of its
parts) and change nothing in it; the network itself does not need them.
"""

import numpy as np
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


# --- a diagram of the U-Net, read from the model -------------------------------------------------

def _short_kind(described):
    return {"Conv3x3": "conv in", "GroupNorm+SiLU+Conv3x3": "out", "Downsample": "Down", "Upsample": "Up",
            "ResBlock": "Res", "ResBlock+Attention": "Res+Attn", "ResBlock+ResBlock": "Res,Res",
            "ResBlock+Attention+ResBlock": "Res+Attn\n+Res"}[described]


def unet_layout(model, image_size=None):
    """What a diagram of ``model`` (a UNet) shows, read from one forward pass (:func:`shape_table`).

    Returns a dict with

    * ``blocks``: one dict per block in execution order, with ``name`` (``"down.3"``), ``kind``
      (``"Res+Attn"``, ``"Down"``, ...), ``path`` (``"in"``, ``"down"``, ``"middle"``, ``"up"`` or
      ``"out"``), ``size`` (the side of its output feature map), ``channels_in`` and
      ``channels_out`` (as measured), and ``conditioned`` (True for the blocks whose ResBlocks add
      the embedding of t, and of y in a class-conditional model);
    * ``skips``: one ``(source, target, channels)`` per skip connection: the output of block
      ``source`` is concatenated to the input of up-path block ``target`` (``channels`` wide), in
      the order the forward pass consumes them (last stored, first used);
    * ``sizes``: the feature-map sides from the input's down to the bottleneck's;
    * ``embedding``: what every conditioned block receives, as text.

    ``image_size`` defaults to the model's own; the input is one random image.
    """
    size = image_size or model.image_size
    x = torch.randn(1, model.in_channels, size, size)
    t = torch.zeros(1, dtype=torch.long)
    blocks, was_training = [], model.training
    try:
        rows = shape_table(model.eval(), x, t)
    finally:
        model.train(was_training)
    for label, shape_in, shape_out in rows:
        name, described = label.split(" ", 1)
        path = name.split(".")[0] if name not in ("conv_in", "out") else {"conv_in": "in", "out": "out"}[name]
        kind = _short_kind(described)
        blocks.append(dict(name=name, kind=kind, path=path, size=shape_out[-1], channels_in=shape_in[1],
                           channels_out=shape_out[1], conditioned=kind.startswith("Res")))
    by_name = {b["name"]: b for b in blocks}
    skips = []
    if model.use_skips:       # the forward pass's stack: conv_in's output, then every down block's
        stored = ["conv_in"] + [f"down.{i}" for i in range(len(model.down))]
        for i, block in enumerate(model.up):
            if not isinstance(block, Upsample):
                source = stored.pop()
                skips.append((source, f"up.{i}", by_name[source]["channels_out"]))
    sizes = sorted({b["size"] for b in blocks}, reverse=True)
    embedding = "emb = TimeEmbedding(t)" + (" + ClassEmbedding(y)" if model.class_embedding is not None else "")
    return dict(blocks=blocks, skips=skips, sizes=sizes, embedding=embedding)


COLOURS = {"conv in": "#d9d9d9", "out": "#d9d9d9", "Down": "#fdd0a2", "Up": "#c7e9c0", "Res": "#c6dbef",
           "Res+Attn": "#9e9ac8", "Res,Res": "#c6dbef", "Res+Attn\n+Res": "#9e9ac8"}


def draw_unet(model, ax=None, title=None):
    """Draw ``model`` (a UNet) as :func:`unet_layout` reads it, on ``ax`` (a new figure if None).

    One column per block in execution order, one row per feature-map size (the input's at the
    top): the down path descends, the middle sits at the bottom, the up path climbs back. Each
    box names the block and its channels in -> out (an up-path block shows the concatenation,
    current + skip); arcs above the rows are the skip connections; a dot marks every block
    whose ResBlocks add the embedding of t (and y). Returns the Axes.
    """
    from matplotlib import patches
    import matplotlib.pyplot as plt

    layout = unet_layout(model)
    blocks, sizes = layout["blocks"], layout["sizes"]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(8.0, 0.62 * len(blocks)), 1.6 + 1.5 * len(sizes)))
    row = {size: -level for level, size in enumerate(sizes)}
    column = {b["name"]: i for i, b in enumerate(blocks)}
    skip_in = {target: channels for _, target, channels in layout["skips"]}
    width, height = 0.86, 0.5
    for i, b in enumerate(blocks):
        x, y = i, row[b["size"]]
        ax.add_patch(patches.FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                            boxstyle="round,pad=0.02", facecolor=COLOURS[b["kind"]],
                                            edgecolor="black", linewidth=0.8))
        channels = (f"{b['channels_in'] - skip_in[b['name']]}+{skip_in[b['name']]}" if b["name"] in skip_in
                    else f"{b['channels_in']}")
        ax.text(x, y + 0.07, b["kind"], ha="center", va="center", fontsize=6.5 if "\n" not in b["kind"] else 5.5)
        ax.text(x, y - 0.13, f"{channels}→{b['channels_out']}", ha="center", va="center", fontsize=6)
        if b["conditioned"]:
            ax.plot(x - width / 2 + 0.09, y - height / 2 + 0.08, "o", color="crimson", ms=3.5)
        if i:                                         # the main flow, block to block
            previous = (i - 1, row[blocks[i - 1]["size"]])
            ax.annotate("", xy=(x - width / 2, y), xytext=(previous[0] + width / 2, previous[1]),
                        arrowprops=dict(arrowstyle="->", lw=0.8, color="black", shrinkA=0, shrinkB=0))
    spans = sorted(layout["skips"], key=lambda skip: column[skip[1]] - column[skip[0]])
    for source, target, _ in layout["skips"]:          # nested arcs (last stored, first used), inner ones lower
        x0, x1 = column[source], column[target]
        size = blocks[x0]["size"]
        inner = sum(1 for s, _, _ in spans if blocks[column[s]]["size"] == size and column[s] > x0)
        rise, top = 0.16 + 0.1 * inner, row[size] + height / 2
        xs = np.linspace(x0, x1, 60)
        ys = top + 4 * rise * (xs - x0) * (x1 - xs) / (x1 - x0) ** 2
        ax.plot(xs, ys, color="tab:green", lw=0.7)
        ax.annotate("", xy=(xs[-1], ys[-1]), xytext=(xs[-4], ys[-4]),
                    arrowprops=dict(arrowstyle="->", lw=0.7, color="tab:green", shrinkA=0, shrinkB=0))
    ax.plot([], [], "o", color="crimson", ms=4,
            label=f"its ResBlocks add {layout['embedding']}, one shift per channel")
    ax.plot([], [], color="tab:green", label="skip connection (concatenated to the up block's input)")
    ax.legend(loc="lower left", fontsize=7, frameon=False, bbox_to_anchor=(0.0, -0.02))
    ax.set_xlim(-0.7, len(blocks) - 0.3)
    ax.set_ylim(-len(sizes) + 0.2, 1.1)
    ax.set_yticks([row[s] for s in sizes], [f"{s}x{s}" for s in sizes])
    ax.set_xticks(range(len(blocks)), [b["name"] for b in blocks], rotation=90, fontsize=7)
    ax.set_ylabel("feature-map size")
    ax.set_xlabel("block, in execution order")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or "U-Net, read from the model")
    return ax
