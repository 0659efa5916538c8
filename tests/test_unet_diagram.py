"""The U-Net diagram of lesson 3 (lesson_lib.course.inspection.unet_layout / draw_unet) says what the
network does: its skip connections are the ones the forward pass concatenates, its channels and
sizes are the measured ones, and the blocks marked as receiving the embedding hold ResBlocks."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lesson_lib.course.inspection import draw_unet, shape_table, unet_layout  # noqa: E402
from lesson_lib.models.layers import ResBlock  # noqa: E402
from lesson_lib.models.unet import UNet, unet_preset  # noqa: E402

TINY = dict(in_channels=1, image_size=28, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
            attention_resolutions=(7,), dropout=0.0)
MODELS = {"mnist, 10 classes": lambda: unet_preset("mnist", num_classes=10),
          "cifar10": lambda: unet_preset("cifar10"),
          "tiny": lambda: UNet(**TINY)}


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_every_skip_is_a_concatenation_the_forward_pass_makes(make):
    model = make()
    layout = unet_layout(model)
    blocks = {b["name"]: b for b in layout["blocks"]}
    order = [b["name"] for b in layout["blocks"]]
    assert len(layout["skips"]) == len(model.down) + 1          # conv_in's output and every down block's
    targets = [target for _, target, _ in layout["skips"]]
    assert len(set(targets)) == len(targets)
    assert set(targets) == {f"up.{i}" for i, m in enumerate(model.up) if m.__class__.__name__ != "Upsample"}
    for source, target, channels in layout["skips"]:
        previous = blocks[order[order.index(target) - 1]]
        # the up block reads the current features and the stored ones, side by side, at one size
        assert blocks[target]["channels_in"] == previous["channels_out"] + channels
        assert blocks[source]["size"] == blocks[target]["size"] == previous["size"]
        assert order.index(source) < order.index(target)


def test_a_first_in_first_out_pairing_would_not_match_the_channels():
    """The test above can fail: pairing the skips in the wrong order breaks the channel sums."""
    layout = unet_layout(unet_preset("mnist"))
    blocks = {b["name"]: b for b in layout["blocks"]}
    order = [b["name"] for b in layout["blocks"]]
    sources = [s for s, _, _ in layout["skips"]][::-1]             # reversed: first stored, first used
    mismatched = [target for source, (_, target, _) in zip(sources, layout["skips"])
                  if blocks[target]["channels_in"] != blocks[order[order.index(target) - 1]]["channels_out"]
                  + blocks[source]["channels_out"]]
    assert mismatched


def test_shapes_are_the_measured_ones_and_the_bottleneck_is_read_from_the_model():
    model = UNet(**TINY)
    layout = unet_layout(model)
    measured = shape_table(model, torch.randn(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    assert [(b["channels_in"], b["channels_out"], b["size"]) for b in layout["blocks"]] == \
        [(shape_in[1], shape_out[1], shape_out[-1]) for _, shape_in, shape_out in measured]
    assert layout["sizes"] == [28, 14, 7]
    middle = next(b for b in layout["blocks"] if b["path"] == "middle")
    assert middle["channels_out"] * middle["size"] ** 2 == 32 * 7 * 7 == 1568


def test_without_skips_there_are_none():
    assert unet_layout(UNet(**TINY, use_skips=False))["skips"] == []


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_the_blocks_marked_for_the_embedding_are_those_holding_resblocks(make):
    model = make()
    layout = unet_layout(model)
    modules = dict(model.named_modules())
    holding = {name for name in (b["name"] for b in layout["blocks"])
               if any(isinstance(m, ResBlock) for m in modules[name].modules())}
    assert {b["name"] for b in layout["blocks"] if b["conditioned"]} == holding
    assert ("ClassEmbedding(y)" in layout["embedding"]) == (model.class_embedding is not None)


def test_the_drawing_has_a_box_per_block_an_arc_per_skip_and_keeps_the_mode():
    model = unet_preset("mnist", num_classes=10).train()
    fig, ax = plt.subplots()
    assert draw_unet(model, ax=ax) is ax
    layout = unet_layout(model)
    assert len(ax.patches) == len(layout["blocks"])
    arcs = [line for line in ax.lines if line.get_color() == "tab:green" and len(line.get_xdata()) > 2]
    assert len(arcs) == len(layout["skips"])
    assert [label.get_text() for label in ax.get_yticklabels()] == ["28x28", "14x14", "7x7"]
    assert model.training
    plt.close(fig)
