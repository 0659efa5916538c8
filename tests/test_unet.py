import json
import math

import pytest
import torch
import torch.nn.functional as F

from lesson_lib.models.embeddings import sinusoidal_embedding
from lesson_lib.course.inspection import count_parameters, parameter_table, shape_table
from lesson_lib.models.layers import AttentionBlock, ResBlock, TimeEmbedding, num_groups
from lesson_lib.models.unet import PRESETS, UNet, unet_preset
from model_helpers import perturb

TINY = dict(base_channels=8, num_res_blocks=1, dropout=0.0)


def tiny(preset="mnist", seed=0, **overrides):
    torch.manual_seed(seed)
    return perturb(unet_preset(preset, **{**TINY, **overrides}).eval(), seed=seed)


def small(seed=0, **overrides):
    """A 2-level U-Net on 8x8 images: the same code paths as the presets, 100x cheaper."""
    config = dict(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                  attention_resolutions=(4,), dropout=0.0)
    torch.manual_seed(seed)
    return perturb(UNet(**{**config, **overrides}).eval(), seed=seed)


def inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, s = model.config["in_channels"], model.config["image_size"]
    return torch.randn(batch, c, s, s, generator=g), torch.randint(0, 1000, (batch,), generator=g)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_output_shape_equals_input_shape(preset):
    model = tiny(preset)
    x, t = inputs(model)
    assert x.shape[1:] == ((1, 28, 28) if preset == "mnist" else (3, 32, 32))
    assert model(x, t).shape == x.shape


def test_parameter_counts():
    ddpm = unet_preset("ddpm_cifar10")
    assert abs(count_parameters(ddpm) - 35.7e6) <= 0.1e6        # Ho et al. 2020, Appendix B
    assert count_parameters(ddpm) == 35_746_307
    assert count_parameters(unet_preset("cifar10")) <= 16e6     # fp16 weights fit in 32 MB
    assert 1e6 < count_parameters(unet_preset("mnist")) < 4e6
    rows = parameter_table(ddpm)
    assert rows[-1] == ("total", 35_746_307)
    assert sum(n for _, n in rows[:-1]) == 35_746_307
    assert dict(rows)["time embedding"] == (128 * 512 + 512) + (512 * 512 + 512)


def test_group_counts():
    assert num_groups(128) == 32 and num_groups(256) == 32        # the paper's GroupNorm(32)
    assert num_groups(32) == 8 and num_groups(48) == 12 and num_groups(8) == 2 and num_groups(3) == 1
    assert all(c % num_groups(c) == 0 and (c < 4 or c // num_groups(c) >= 4) for c in range(1, 300))


def test_time_embedding_is_sinusoid_then_mlp():
    torch.manual_seed(0)
    emb = TimeEmbedding(16, 64)
    t = torch.tensor([0, 1, 500, 999])
    lin1, lin2 = emb.mlp[0], emb.mlp[2]
    sin = sinusoidal_embedding(t, 16)
    hidden = sin @ lin1.weight.T + lin1.bias
    expected = (hidden * torch.sigmoid(hidden)) @ lin2.weight.T + lin2.bias
    assert torch.allclose(emb(t), expected, atol=1e-6)
    assert lin1.in_features == 16 and lin2.out_features == 64


@pytest.mark.parametrize("base_channels", [8, 32])
def test_output_depends_on_t(base_channels):
    model = small(base_channels=base_channels)
    x, _ = inputs(model)
    out1 = model(x, torch.tensor([10, 10]))
    out2 = model(x, torch.tensor([900, 900]))
    assert (out1 - out2).abs().max() > 0.05 * out1.abs().mean()


def test_untrained_model_outputs_zero():
    torch.manual_seed(0)
    model = UNet(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,))   # zero-initialised output conv, as in the DDPM code
    x, t = inputs(model)
    assert torch.equal(model(x, t), torch.zeros_like(x))


def test_class_conditioning():
    model = small(num_classes=10)
    x, t = inputs(model)
    a = model(x, t, torch.tensor([3, 3]))
    b = model(x, t, torch.tensor([7, 7]))
    assert (a - b).abs().max() > 1e-3
    null = model(x, t)
    assert torch.allclose(null, model(x, t, torch.tensor([10, 10])))
    assert (null - a).abs().max() > 1e-3
    assert model.class_embedding.num_embeddings == 11
    for bad in ([-1, 0], [0, 11]):
        with pytest.raises(ValueError, match="0..9"):
            model(x, t, torch.tensor(bad))
    with pytest.raises(ValueError, match="integer"):
        model(x, t, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="unconditional"):
        small()(x, t, torch.tensor([1, 2]))


def _attention_by_hand(block, x):
    """softmax(q k^T / sqrt(C)) v for one head, written out with einsum."""
    B, C, H, W = x.shape
    h = block.norm(x).flatten(2)                                     # (B, C, HW)
    w, b = block.qkv.weight[:, :, 0, 0], block.qkv.bias
    q, k, v = (torch.einsum("oc,bcn->bon", w, h) + b[None, :, None]).chunk(3, dim=1)
    attn = torch.softmax(torch.einsum("bcn,bcm->bnm", q, k) / math.sqrt(C), dim=-1)
    out = torch.einsum("bnm,bcm->bcn", attn, v).view(B, C, H, W)
    return x + block.proj(out)


def test_attention_matches_formula_and_is_permutation_equivariant():
    torch.manual_seed(0)
    block = perturb(AttentionBlock(16), scale=0.3)
    x = torch.randn(2, 16, 4, 4)
    out = block(x)
    assert torch.allclose(out, _attention_by_hand(block, x), atol=1e-5)
    assert (out - x).abs().max() > 1e-2
    perm = torch.randperm(16)
    permute = lambda z: z.flatten(2)[:, :, perm].view_as(z)          # shuffle the 16 pixel positions
    assert torch.allclose(block(permute(x)), permute(out), atol=1e-5)
    # a convolution is not permutation-equivariant, so the same check must fail for a ResBlock
    res = perturb(ResBlock(16, 16, time_dim=8), scale=0.3)
    emb = torch.randn(2, 8)
    assert not torch.allclose(res(permute(x), emb), permute(res(x, emb)), atol=1e-3)


def test_multi_head_attention_runs():
    block = perturb(AttentionBlock(16, heads=4))
    x = torch.randn(1, 16, 4, 4)
    assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="heads"):
        AttentionBlock(16, heads=3)


def test_ablations_run():
    full = small()
    x, t = inputs(full)
    no_attn = small(use_attention=False)
    assert not any(isinstance(m, AttentionBlock) for m in no_attn.modules())
    assert sum(isinstance(m, AttentionBlock) for m in full.modules()) == 1 + 1 + 2   # down 4x4, middle, up 4x4
    no_skips = small(use_skips=False)
    assert count_parameters(no_skips) < count_parameters(full)
    for model in (no_attn, no_skips, small(use_attention=False, use_skips=False)):
        assert model(x, t).shape == x.shape
    up_inputs = lambda m: [r[1][1] for r in shape_table(m, x, t) if r[0].startswith("up.") and "ResBlock" in r[0]]
    assert all(a < b for a, b in zip(up_inputs(no_skips), up_inputs(full)))     # no skip concatenated


def test_invalid_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        UNet(in_channels=3, image_size=28, base_channels=8, channel_mults=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(in_channels=1, image_size=28, base_channels=8, channel_mults=(1, 2, 2), attention_resolutions=(8,))
    model = small()
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 9, 9), torch.tensor([1]))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(1, 3, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="prediction"):
        unet_preset("mnist", prediction="noise")
    with pytest.raises(ValueError, match="preset"):
        unet_preset("imagenet")


def test_other_image_sizes_work():
    model = small()                     # built for 8x8, fully convolutional
    assert model(torch.randn(1, 1, 12, 16), torch.tensor([5])).shape == (1, 1, 12, 16)


def test_gradient_reaches_every_parameter():
    model = small(in_channels=3, num_classes=10).train()
    x, t = inputs(model)
    loss = model(x, t, torch.tensor([1, 10])).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_can_overfit_one_batch():
    torch.manual_seed(0)
    model = UNet(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,),
                 dropout=0.0)              # the real (zero) initialisation
    x0 = torch.randn(8, 1, 8, 8)
    t = torch.randint(0, 1000, (8,))
    target = torch.randn_like(x0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss = F.mse_loss(model(x0, t), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_channels_last_gives_same_output():
    model = small(in_channels=3)
    x, t = inputs(model)
    expected = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last), t), expected, atol=1e-5)


def test_bf16_autocast_and_bf16_weights():
    model = small(num_classes=10)
    x, t = inputs(model)
    y = torch.tensor([1, 2])
    expected = model(x, t, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert torch.allclose(out.float(), expected, atol=0.1 * expected.abs().max().item())
    half = model.to(torch.bfloat16)
    assert half(x.bfloat16(), t, y).dtype == torch.bfloat16


def test_config_round_trip():
    model = small(num_classes=10, prediction="v")
    assert model.prediction == "v"
    config = json.loads(json.dumps(model.config))           # JSON-friendly
    assert config == model.config
    copy = UNet.from_config(config).eval()
    copy.load_state_dict(model.state_dict())
    x, t = inputs(model)
    assert torch.equal(copy(x, t), model(x, t))


def test_shape_table():
    model = tiny("cifar10", num_res_blocks=2)
    x, t = inputs(model)
    rows = shape_table(model, x, t)
    assert rows[0] == ("conv_in Conv3x3", (2, 3, 32, 32), (2, 8, 32, 32))
    assert rows[-1][0].startswith("out") and rows[-1][2] == (2, 3, 32, 32)
    assert len(rows) == 1 + len(model.down) + 1 + len(model.up) + 1
    assert min(r[2][2] for r in rows) == 4                   # 32 -> 16 -> 8 -> 4
    first_up = next(r for r in rows if r[0].startswith("up.0"))
    assert first_up[1][1] == 16 + 16                          # bottleneck features + the last skip
    assert any("Attention" in r[0] and r[2][2] == 16 for r in rows)
    assert not any(m._forward_hooks for m in model.modules())   # the hooks are removed again


def test_torch_compile_full_graph():
    model = small(num_classes=10)
    x, t = inputs(model)
    compiled = torch.compile(model, backend="eager", fullgraph=True)   # fails on any graph break
    assert torch.allclose(compiled(x, t, torch.tensor([1, 2])), model(x, t, torch.tensor([1, 2])), atol=1e-6)
