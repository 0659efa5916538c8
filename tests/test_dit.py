"""The Diffusion Transformer (models/dit.py): patchify, the position embedding, adaLN-Zero, the parameter
count against its closed form and the reference implementation, and the course's training, checkpoint
and learned-variance paths."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.likelihood import Hybrid, bits_per_dim
from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models.base import MODEL_CLASSES
from lesson_lib.models.dit import (PRESETS, DiT, DiTBlock, ViTBlock, dit_parameter_count, dit_preset, modulate, patchify,
                                   sincos_2d_position_embedding, unpatchify)
from lesson_lib.pretrained import load_model
from lesson_lib.training.trainer import TrainConfig, Trainer
from model_helpers import perturb


SMALL = dict(in_channels=2, image_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=4)


def small(seed=0, **overrides):
    torch.manual_seed(seed)
    return DiT(**{**SMALL, **overrides}).eval()


def inputs(model, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *model.data_shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = None if model.num_classes is None else torch.randint(0, model.num_classes + 1, (batch,), generator=g)
    return x, t, y


# --- adaLN-Zero: the untrained model is exactly zero -----------------------------------------

@pytest.mark.parametrize("overrides", [{}, dict(num_classes=10), dict(learn_sigma=True, num_classes=3),
                                       dict(patch_size=4, prediction="v")])
def test_the_untrained_model_outputs_exactly_zero_and_every_block_is_the_identity(overrides):
    model = small(**overrides)
    x, t, y = inputs(model)
    out = model(x, t, y)
    assert out.shape == (3, model.out_channels, 8, 8)
    assert torch.equal(out, torch.zeros_like(out))
    c = model.embed(t, y)
    h = torch.randn(3, model.num_tokens, 32)
    for block in model.blocks:
        assert torch.equal(block(h, c), h)                    # gate = 0: x + 0 * branch = x, bit for bit
    assert (c.abs() > 0).any()                                # the identity is not from a zero input
    perturb(model)                                            # once trained, neither holds
    assert not torch.equal(model.blocks[0](h, c), h) and model(x, t, y).abs().max() > 1e-3


def test_the_first_l_simple_is_the_mean_of_eps_squared():
    model = dit_preset("DiT-T/7")
    x0 = torch.rand(16, 1, 28, 28) * 2 - 1
    objective = LSimple(NoiseSchedule.linear(1000))
    loss = objective(model, model, x0, {}, torch.Generator().manual_seed(1))
    eps = objective.draw(model, x0, {}, torch.Generator().manual_seed(1)).eps
    assert torch.equal(loss, F.mse_loss(torch.zeros_like(eps), eps))
    assert loss.item() == pytest.approx(eps.pow(2).mean().item(), rel=1e-6)
    assert abs(loss.item() - 1) < 4 * math.sqrt(2 / eps.numel())      # E||eps||^2 / dim = 1


# --- patchify, unpatchify, modulate, the position embedding ----------------------------------

@pytest.mark.parametrize("size, p", [(28, 2), (28, 4), (28, 7), (32, 2), (32, 4), (32, 8)])
def test_patchify_and_unpatchify_are_exact_inverses(size, p):
    x = torch.randn(2, 3, size, size)
    tokens = patchify(x, p)
    assert tokens.shape == (2, (size // p) ** 2, p * p * 3)
    assert torch.equal(unpatchify(tokens, p, 3, size), x)
    other = torch.randn_like(tokens)
    assert torch.equal(patchify(unpatchify(other, p, 3, size), p), other)


def test_patchify_orders_tokens_by_row_then_column():
    size, p, C = 12, 3, 2
    x = torch.randn(1, C, size, size)
    tokens, g = patchify(x, p), size // p
    for k in range(g * g):
        row, column = k // g, k % g
        patch = x[0, :, row * p:(row + 1) * p, column * p:(column + 1) * p]          # (C, p, p)
        assert torch.equal(tokens[0, k], patch.permute(1, 2, 0).reshape(-1)), k     # pixel (i, j), then channel
    with pytest.raises(ValueError, match="divisible by the patch size"):
        patchify(torch.zeros(1, 1, 28, 28), 8)
    with pytest.raises(ValueError, match="tokens must have shape"):
        unpatchify(tokens, p, C + 1, size)


def test_modulate_is_the_identity_at_zero_and_x_times_one_plus_scale_plus_shift():
    x = torch.randn(2, 5, 4)
    zero = torch.zeros(2, 4)
    assert torch.equal(modulate(x, zero, zero), x)
    shift, scale = torch.randn(2, 4), torch.randn(2, 4)
    out = modulate(x, shift, scale)
    for b in range(2):
        for n in range(5):                                    # the same shift and scale for every token
            torch.testing.assert_close(out[b, n], x[b, n] * (1 + scale[b]) + shift[b], rtol=0, atol=1e-6)


def test_the_position_embedding_at_a_pinned_position():
    """dim 8 on a 4 x 4 grid: 4 channels per axis, frequencies 1 and 10000^(-2/4) = 0.01. Token 6 is at
    row 1, column 2: [sin 2, sin 0.02, cos 2, cos 0.02 | sin 1, sin 0.01, cos 1, cos 0.01]."""
    table = sincos_2d_position_embedding(8, 4)
    assert table.shape == (16, 8) and table.dtype == torch.float32
    expected = [0.9092974268, 0.0199986667, -0.4161468365, 0.9998000067,
                0.8414709848, 0.0099998333, 0.5403023059, 0.9999500004]
    torch.testing.assert_close(table[6], torch.tensor(expected), rtol=0, atol=1e-6)
    assert torch.equal(table[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))       # row 0, column 0
    assert torch.equal(table[1, 4:], table[0, 4:]) and not torch.equal(table[1, :4], table[0, :4])
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_2d_position_embedding(6, 4)


def test_the_position_embedding_is_fixed_not_a_parameter():
    model = small()
    assert torch.equal(model.position_embedding, sincos_2d_position_embedding(32, 4))
    assert "position_embedding" not in dict(model.named_parameters())
    assert "position_embedding" not in model.state_dict()         # rebuilt from the formula, never stored
    assert all(p.requires_grad for p in model.parameters())


# --- the parameter count: the closed form, and the reference implementation --------------------

def _parts(model):
    groups = {"patch embedding": [model.patch_embedding], "time embedding": [model.time_embedding],
              "class embedding": [model.class_embedding] if model.class_embedding is not None else [],
              "blocks": [model.blocks], "final layer": [model.final_layer]}
    return {name: sum(p.numel() for m in modules for p in m.parameters()) for name, modules in groups.items()}


@pytest.mark.parametrize("config", [SMALL, dict(SMALL, num_classes=10, learn_sigma=True),
                                    dict(SMALL, mlp_ratio=2.5, patch_size=4, in_channels=3),
                                    *[PRESETS[name] for name in ("DiT-T/2", "DiT-T/4", "DiT-T/7")]])
def test_the_parameter_count_is_the_closed_form(config):
    model = DiT(**config)
    parts = dit_parameter_count(model.config, parts=True)
    assert parts == _parts(model)
    assert dit_parameter_count(model.config) == sum(p.numel() for p in model.parameters())


def test_the_parameter_count_of_every_paper_preset():
    for name in PRESETS:
        with torch.device("meta"):                            # shapes only: XL/2 would take 2.7 GB
            model = dit_preset(name)
        assert dit_parameter_count(model.config) == sum(p.numel() for p in model.parameters()), name
    D = 384
    assert dit_parameter_count(PRESETS["DiT-S/2"], parts=True)["blocks"] == 12 * (18 * D * D + 15 * D)


# Counted by running the reference implementation: facebookresearch/DiT at commit
# ed81ce2229091fd4ecc9a223645f95cf379d582b (its models.py, imported in a separate environment with
# timm 1.0.31 and torch 2.14.1, on the CPU):
#     m = DiT_models[name](input_size=32, num_classes=1000, learn_sigma=True)
#     sum(p.numel() for p in m.parameters())                          -> the second number (what the
#                                                                         reference's train.py logs)
#     sum(p.numel() for p in m.parameters() if p.requires_grad)       -> the first number
# The difference is the reference's position embedding, a frozen nn.Parameter of (I/p)^2 x D; here it
# is a buffer, so the course's model has exactly the reference's trainable parameters.
REFERENCE_COUNTS = {"DiT-S/2": (32_865_056, 32_963_360), "DiT-B/4": (130_426_496, 130_475_648),
                    "DiT-XL/2": (674_834_720, 675_129_632)}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_the_parameter_count_equals_the_reference_implementations(name):
    trainable, total = REFERENCE_COUNTS[name]
    with torch.device("meta"):
        model = dit_preset(name)                   # the paper's 32 x 32 x 4 latents, 1000 classes, learned sigma
    assert model.config["image_size"] == 32 and model.config["in_channels"] == 4
    assert sum(p.numel() for p in model.parameters()) == trainable == dit_parameter_count(model.config)
    assert trainable + model.num_tokens * model.config["hidden_size"] == total


def _deterministic_weights(model):
    """Every parameter set from a fixed formula (no random generator), in named_parameters order."""
    with torch.no_grad():
        for i, (_, p) in enumerate(model.named_parameters()):
            k = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_((0.3 * torch.sin(0.7 * k + i) / math.sqrt(p.shape[-1])).reshape(p.shape).float())
    return model


def test_the_forward_pass_matches_the_reference_implementation():
    """The reference's DiT (same commit as above; in_channels 2, input_size 8, patch 2, width 32, depth 2,
    4 heads, 3 classes, learned sigma), given these weights (its patch convolution = this Linear reshaped,
    its time MLP's input columns swapped for its cos-then-sin order), returned these numbers; the course's
    model agreed with it to 2.4e-7 everywhere."""
    model = _deterministic_weights(small(num_classes=3, learn_sigma=True))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 8, 8, generator=g)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 17, 999]), torch.tensor([0, 2, 3])).double()
    assert out.mean().item() == pytest.approx(0.006271, abs=2e-6)
    assert out.abs().mean().item() == pytest.approx(0.311564, abs=2e-6)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([-0.42634, 0.34586, -0.37399, 0.33645]).double(),
                               rtol=0, atol=2e-5)
    torch.testing.assert_close(out[2, :, 7, 5], torch.tensor([-0.192, 0.41712, -0.32475, 0.39658]).double(),
                               rtol=0, atol=2e-5)


def test_a_block_computes_the_adaln_zero_formula():
    """x + gate1 * Attn(LN(x)(1 + scale1) + shift1), then the same with the MLP, written out by hand:
    LayerNorm without weights (eps 1e-6), softmax(q k^T / sqrt(d)) v per head, GELU's tanh form."""
    torch.manual_seed(0)
    D, heads, d = 16, 4, 4
    block = perturb(DiTBlock(D, heads), scale=0.5)
    x, c = 3 * torch.randn(2, 5, D), torch.randn(2, D)
    shift1, scale1, gate1, shift2, scale2, gate2 = (F.silu(c) @ block.modulation[1].weight.T
                                                    + block.modulation[1].bias).chunk(6, dim=1)

    def norm(h):
        return (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-6)

    h = norm(x) * (1 + scale1[:, None]) + shift1[:, None]
    q, k, v = (h @ block.qkv.weight.T + block.qkv.bias).split(D, dim=-1)
    q, k, v = (z.reshape(2, 5, heads, d).transpose(1, 2) for z in (q, k, v))
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
    x1 = x + gate1[:, None] * (attn.transpose(1, 2).reshape(2, 5, D) @ block.proj.weight.T + block.proj.bias)
    h = norm(x1) * (1 + scale2[:, None]) + shift2[:, None]
    fc1, fc2 = block.mlp[0], block.mlp[2]
    mlp = F.gelu(h @ fc1.weight.T + fc1.bias, approximate="tanh") @ fc2.weight.T + fc2.bias
    torch.testing.assert_close(block(x, c), x1 + gate2[:, None] * mlp, rtol=1e-5, atol=1e-5)
    assert fc1.out_features == 4 * D and block.modulation[1].out_features == 6 * D


# --- conditioning, gradients, the config ------------------------------------------------------

def test_conditioning_on_t_and_y_and_the_null_class():
    model = perturb(small(num_classes=10), scale=0.1)
    x, t, _ = inputs(model)
    a, b = model(x, t, torch.tensor([3, 3, 3])), model(x, t, torch.tensor([7, 7, 7]))
    assert (a - b).abs().max() > 1e-3
    assert (model(x, t + 1, torch.tensor([3, 3, 3])) - a).abs().max() > 1e-4
    assert torch.equal(model(x, t), model(x, t, torch.tensor([10, 10, 10])))     # no label = the null class
    assert model.class_embedding.num_embeddings == 11


def test_gradient_reaches_every_parameter():
    model = perturb(small(num_classes=10, learn_sigma=True)).train()
    x, t, y = inputs(model)
    model(x, t, y).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_presets_config_round_trip_and_registry():
    assert MODEL_CLASSES["DiT"] is DiT
    assert [n for n in PRESETS if not n.startswith("DiT-T")] == [f"DiT-{s}/{p}" for s in ("S", "B", "L", "XL")
                                                                  for p in (2, 4, 8)]
    assert {n: PRESETS[n]["depth"] for n in ("DiT-S/2", "DiT-B/4", "DiT-L/8", "DiT-XL/2")} == \
        {"DiT-S/2": 12, "DiT-B/4": 12, "DiT-L/8": 24, "DiT-XL/2": 28}
    tiny = dit_preset("DiT-T/4")
    assert tiny.data_shape == (1, 28, 28) and tiny.num_tokens == 49 and tiny.learn_sigma is False
    assert (len(tiny.blocks), tiny.blocks[0].num_heads, tiny.config["hidden_size"]) == (6, 4, 128)
    assert sum(p.numel() for p in tiny.parameters()) == 1_867_664
    assert dit_preset("DiT-T/7").num_tokens == 16 and dit_preset("DiT-T/2").num_tokens == 196
    with torch.device("meta"):
        mnist = dit_preset("DiT-S/4", image_size=28, in_channels=1, num_classes=10, learn_sigma=False)
    assert mnist.data_shape == (1, 28, 28) and mnist.num_classes == 10 and mnist.out_channels == 1
    model = perturb(small(num_classes=10, prediction="v"))
    config = json.loads(json.dumps(model.config))
    assert config == model.config and config["prediction"] == "v"
    copy = DiT.from_config(config).eval()
    copy.load_state_dict(model.state_dict())
    x, t, y = inputs(model)
    assert torch.equal(copy(x, t, y), model(x, t, y))


def test_channels_last_bf16_and_compile_give_the_same_output():
    """What the Trainer does on a GPU: channels-last images, bfloat16 autocast, torch.compile."""
    model = perturb(small(num_classes=10), scale=0.1)
    x, t, y = inputs(model)
    expected = model(x, t, y)
    assert (expected.abs() > 1e-3).any()
    last = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), t, y)
    torch.testing.assert_close(last, expected, rtol=0, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert torch.allclose(out.float(), expected, atol=0.1 * expected.abs().max().item())
    compiled = torch.compile(model, backend="eager", fullgraph=True)          # fails on any graph break
    torch.testing.assert_close(compiled(x, t, y), expected, rtol=0, atol=1e-6)
    half = small(num_classes=10).to(torch.bfloat16)
    assert half(x.bfloat16(), t, y).dtype == torch.bfloat16


# --- training, checkpoints, the learned variance ----------------------------------------------

def test_one_trainer_step_changes_the_loss_and_the_checkpoint_rebuilds_the_model(tmp_path):
    torch.manual_seed(0)
    data = torch.rand(64, 1, 28, 28) * 2 - 1                  # MNIST-shaped
    model = dit_preset("DiT-T/7", num_classes=10)
    objective = LSimple(NoiseSchedule.linear(1000), class_dropout=0.1)
    trainer = Trainer(model, data, objective, TrainConfig(batch_size=16, lr=1e-3, log_every=1),
                      cond={"y": torch.randint(0, 10, (64,))}, device="cpu", checkpoint_path=tmp_path / "c.pt")
    x0 = data[:16]

    def loss():
        with torch.no_grad():
            return objective(model, model, x0, {}, torch.Generator().manual_seed(5)).item()

    eps = objective.draw(model, x0, {}, torch.Generator().manual_seed(5)).eps
    before = loss()
    assert before == pytest.approx(eps.pow(2).mean().item(), rel=1e-6)
    trainer.train_step()
    assert model.final_layer.linear.weight.abs().max() > 0
    assert abs(loss() - before) > 1e-4
    trainer.run(2, progress=False)
    trainer.save()
    x, t, y = inputs(model)
    for ema, reference in [(True, trainer.ema.model), (False, trainer.model)]:
        loaded, schedule = load_model(tmp_path / "c.pt", ema=ema)
        assert type(loaded) is DiT and loaded.config == model.config
        with torch.no_grad():
            expected = reference.eval()(x, t, y)
            assert expected.abs().max() > 0
            assert torch.equal(loaded(x, t, y), expected)
        assert torch.equal(schedule.betas, objective.schedule.betas)


def test_the_learned_variance_output_is_laid_out_as_the_denoiser_reads_it():
    """Final bias 0.25 on every prediction channel and -0.5 on every v channel of each token: after
    unpatchify the first C channels must be 0.25 and the last C -0.5, so the denoiser's frac = (v + 1) / 2
    is 0.25 everywhere."""
    model = small(learn_sigma=True)
    C = model.in_channels
    with torch.no_grad():
        bias = model.final_layer.linear.bias
        bias.copy_(torch.where(torch.arange(bias.numel()) % (2 * C) < C, 0.25, -0.5))
    x, t, _ = inputs(model)
    out = model(x, t)
    assert out.shape == (3, 2 * C, 8, 8)
    assert (out[:, :C] == 0.25).all() and (out[:, C:] == -0.5).all()
    schedule = NoiseSchedule.linear(1000)
    pred = Denoiser(model, schedule)(x, t)
    assert torch.equal(pred.frac, torch.full_like(x, 0.25)) and torch.equal(pred.eps, torch.full_like(x, 0.25))


def test_a_learned_variance_dit_trains_on_l_hybrid_and_has_a_bound():
    schedule = NoiseSchedule.linear(1000)
    model = perturb(small(in_channels=1, learn_sigma=True)).train()
    x0 = torch.randint(0, 256, (8, 1, 8, 8)).float() / 127.5 - 1
    loss = Hybrid(schedule)(model, model, x0, {}, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.final_layer.linear.weight.grad.abs().sum() > 0
    with torch.no_grad():
        bound = bits_per_dim(Denoiser(model.eval(), schedule), schedule, x0, 2, variances=["learned"],
                             generator=torch.Generator().manual_seed(0))["learned"]
    assert math.isfinite(bound.total) and bound.total > 0
    with pytest.raises(ValueError, match="learn_sigma=True"):
        Hybrid(schedule)(small(in_channels=1), small(in_channels=1), x0, {}, torch.Generator().manual_seed(0))


# --- errors name the argument ------------------------------------------------------------------

BAD_ARGUMENTS = [
    (dict(patch_size=3), ValueError, r"^patch_size=3 must divide image_size=8.*among \[1, 2, 4, 8\]"),
    (dict(num_heads=3), ValueError, r"^num_heads=3 must divide hidden_size=32"),
    (dict(hidden_size=30, num_heads=2), ValueError, r"^hidden_size=30 must be a multiple of 4"),
    (dict(depth=0), ValueError, r"^depth must be at least 1"),
    (dict(image_size=8.0), TypeError, r"^image_size must be a whole number"),
    (dict(mlp_ratio=0), ValueError, r"^mlp_ratio must be a finite number > 0"),
    (dict(mlp_ratio=0.01), ValueError, r"^mlp_ratio=0.01 gives an MLP of width"),
    (dict(num_classes=0), ValueError, r"^num_classes must be at least 1.*None for an unconditional"),
    (dict(learn_sigma=1), TypeError, r"^learn_sigma must be True or False"),
    (dict(prediction="noise"), ValueError, r"^prediction must be one of"),
]


@pytest.mark.parametrize("bad, error, match", BAD_ARGUMENTS)
def test_bad_arguments_name_the_argument(bad, error, match):
    with pytest.raises(error, match=match):
        DiT(**{**SMALL, **bad})


def test_bad_inputs_and_presets_name_the_argument():
    model = small(num_classes=10)
    with pytest.raises(ValueError, match=r"^x must have shape \(batch, 2, 8, 8\), got \(1, 2, 16, 16\)"):
        model(torch.zeros(1, 2, 16, 16), torch.tensor([1]))           # one image size: the position embedding's
    with pytest.raises(ValueError, match=r"^timesteps must be >= 0"):
        model(torch.zeros(1, 2, 8, 8), torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"^y must lie in 0\.\.9"):
        model(torch.zeros(1, 2, 8, 8), torch.tensor([1]), torch.tensor([11]))
    with pytest.raises(ValueError, match=r"^this DiT is unconditional"):
        small()(torch.zeros(1, 2, 8, 8), torch.tensor([1]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"^unknown DiT preset 'DiT-M/2'"):
        dit_preset("DiT-M/2")
    with pytest.raises(ValueError, match=r"^dit_preset takes only .*\['depth'\].*build DiT"):
        dit_preset("DiT-T/4", depth=3)
    with pytest.raises(ValueError, match=r"^patch_size=8 must divide image_size=28"):
        dit_preset("DiT-S/8", image_size=28)
    with pytest.raises(ValueError, match=r"^config has arguments DiT does not take: \['width'\]"):
        dit_parameter_count({"width": 3})


# ---------------------------------------------------------------------------------------------
# In-context conditioning, the paper's first baseline (lesson 11's comparison)

def in_context(**overrides):
    return dit_preset("DiT-T/4", num_classes=10, conditioning="in-context", **overrides)


def test_in_context_parameter_count_is_the_closed_form_and_has_no_modulation():
    model = in_context()
    assert sum(p.numel() for p in model.parameters()) == dit_parameter_count(dict(model.config))
    assert not any("modulation" in name for name, _ in model.named_parameters())
    adaln = dit_preset("DiT-T/4", num_classes=10)
    D, depth = 128, 6
    saved = depth * (6 * D * D + 6 * D - 4 * D) + (2 * D * D + 2 * D - 2 * D)
    assert dit_parameter_count(dict(adaln.config)) - dit_parameter_count(dict(model.config)) == saved


def test_in_context_starts_at_zero_and_reads_t_and_y_through_the_extra_tokens():
    torch.manual_seed(0)
    model = in_context()
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([5, 500, 999]), torch.tensor([1, 2, 3])
    assert torch.equal(model(x, t, y), torch.zeros_like(x))
    torch.nn.init.normal_(model.final_layer.linear.weight)      # trained-looking output layer
    out = model(x, t, y)
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x, t.flip(0), y))      # t matters
    assert not torch.allclose(out, model(x, t, y.flip(0)))      # y matters
    assert not torch.allclose(out, model(x, t, None))           # the null class is another token
    tokens = model.condition_tokens(t, y)
    assert tokens.shape == (3, 2, 128)
    assert torch.equal(tokens[:, 0], model.time_embedding(t))
    assert torch.equal(tokens[:, 1], model.class_embedding(y))
    assert dit_preset("DiT-T/4", conditioning="in-context").condition_tokens(t).shape == (3, 1, 128)


def test_in_context_blocks_are_plain_vit_blocks():
    torch.manual_seed(0)
    block = ViTBlock(32, 4)
    x = torch.randn(2, 5, 32)
    h = x + block.attention(block.norm1(x))
    assert torch.allclose(block(x), h + block.mlp(block.norm2(h)), atol=1e-6)
    with pytest.raises(ValueError, match="conditioning must be one of"):
        dit_preset("DiT-T/4", conditioning="cross-attention")


@pytest.mark.parametrize("name,conditioning", [("DiT-T/2", "adaln-zero"), ("DiT-T/4", "adaln-zero"),
                                               ("DiT-T/7", "in-context")])
def test_forward_gflops_counts_every_matrix_product_and_the_attention(name, conditioning):
    """Model.forward_gflops against the FLOPs worked out by hand (a multiply-add is 2 FLOPs)."""
    model = dit_preset(name, num_classes=10, conditioning=conditioning)
    D, p, depth = 128, model.patch_size, 6
    N = model.num_tokens + (2 if conditioning == "in-context" else 0)      # in-context: t and y tokens
    per_block = 2 * N * (3 * D * D + D * D + 8 * D * D) + 2 * 2 * N * N * D    # qkv, proj, MLP; q k^T and a v
    modulation = 2 * 6 * D * D * depth + 2 * 2 * D * D if conditioning == "adaln-zero" else 0
    flops = (2 * model.num_tokens * p * p * D                     # patch embedding
             + 2 * (256 * D + D * D)                              # time MLP
             + depth * per_block + modulation
             + 2 * model.num_tokens * D * p * p)                  # final Linear
    assert model.forward_gflops() == pytest.approx(flops / 1e9, rel=1e-9)
