"""Checks for lesson 3, the U-Net's building blocks (solutions/03_unet.ipynb).

The student writes the sinusoidal time embedding, the forward pass of a ResBlock and of a
self-attention block, and scaled dot-product attention itself. The two blocks come with their
``__init__`` given, with the same submodule names as :class:`lesson_lib.models.unet.ResBlock` and
:class:`lesson_lib.models.unet.AttentionBlock`, so each check copies the weights of a reference block
into the student's block and compares the outputs. The reference blocks start with some layers
at zero (zero initialisation), so the weights are perturbed first: otherwise a forward pass that
forgets those layers would pass. Total: 10 points.
"""

import math

import torch

from lesson_lib.models import unet
from lesson_lib.course.checks import check, expect_close, expect_tensor
from lesson_lib.models.embeddings import sinusoidal_embedding

EMBEDDING_HINT = ("omega_i = max_period^(-i / (dim/2)) for i = 0..dim/2-1; the embedding is "
                  "[sin(t omega_0), ..., sin(t omega_{dim/2-1}), cos(t omega_0), ..., cos(t omega_{dim/2-1})], "
                  "sines first, in float32.")
RESBLOCK_HINT = ("h = conv1(SiLU(norm1(x))); h = h + time_proj(SiLU(emb)) broadcast over H and W "
                 "([:, :, None, None]); h = conv2(dropout(SiLU(norm2(h)))); return skip(x) + h.")
ATTENTION_HINT = "out = softmax(q k^T / sqrt(d)) v, the softmax over the last dimension (the keys)."
BLOCK_HINT = ("q, k, v = qkv(norm(x)) split into three groups of C channels (chunk(3, dim=1)), each "
              "reshaped to (B, H*W, C) with .flatten(2).transpose(1, 2); attend over the H*W positions; "
              "reshape back to (B, C, H, W) and return x + proj(out).")


def _perturbed(module, seed, scale=0.2):
    """``module`` with noise added to every weight, so that no layer is exactly zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module.eval()


def _student_copy(ns, name, reference, *args, **kwargs):
    """The student's class ``name`` built with ``args``, holding ``reference``'s weights."""
    block = ns[name](*args, **kwargs)
    try:
        block.load_state_dict(reference.state_dict())
    except RuntimeError as error:
        raise AssertionError(f"could not load the reference weights into {name}{args}: keep the "
                             f"__init__ you were given (same submodule names). PyTorch said: "
                             f"{str(error).splitlines()[0]}") from None
    return block.eval()


# --- the sinusoidal time embedding --------------------------------------------------------

@check(points=2, uses=["sinusoidal_embedding"])
def embedding_matches_reference(ns):
    """sinusoidal_embedding matches the Transformer's positional encoding (dims 2, 8, 128)."""
    t = torch.tensor([0, 1, 7, 500, 999, 250, 3])
    for dim in (128, 8, 2):
        expected = sinusoidal_embedding(t, dim)
        got = ns["sinusoidal_embedding"](t.clone(), dim)
        what = f"sinusoidal_embedding(t, dim={dim}) for t = {t.tolist()}"
        expect_tensor(got, what, shape=expected.shape, dtype=torch.float32)
        expect_close(got, expected, what, rtol=1e-4, atol=1e-4, hint=EMBEDDING_HINT)


@check(points=1, uses=["sinusoidal_embedding"])
def embedding_takes_max_period_and_float_t(ns):
    """sinusoidal_embedding honours max_period and accepts float timesteps."""
    t = torch.tensor([0.0, 0.5, 12.25, 99.0, 3.0])
    expected = sinusoidal_embedding(t, 16, max_period=100)
    got = ns["sinusoidal_embedding"](t.clone(), 16, max_period=100)
    expect_close(got, expected, "sinusoidal_embedding(t, 16, max_period=100) for float t", rtol=1e-4,
                 atol=1e-4, hint=f"Use max_period instead of a hard-coded 10000, and do not round t. {EMBEDDING_HINT}")


# --- the ResBlock -------------------------------------------------------------------------

def _resblock_case(ns, in_ch, out_ch, time_dim, seed):
    reference = _perturbed(unet.ResBlock(in_ch, out_ch, time_dim), seed)
    student = _student_copy(ns, "ResBlock", reference, in_ch, out_ch, time_dim)
    x, emb = torch.randn(3, in_ch, 5, 6), torch.randn(3, time_dim)
    with torch.no_grad():
        expected = reference(x, emb)
        got = student(x.clone(), emb.clone())
    what = f"ResBlock({in_ch}, {out_ch}, time_dim={time_dim}) on x of shape {tuple(x.shape)}"
    expect_tensor(got, what, shape=expected.shape)
    return got, expected, what


@check(points=2, uses=["ResBlock"])
def resblock_matches_reference(ns):
    """ResBlock.forward matches lesson_lib's ResBlock (with a 1x1-conv skip: 8 -> 12 channels)."""
    got, expected, what = _resblock_case(ns, 8, 12, 20, seed=1)
    expect_close(got, expected, what, rtol=1e-4, atol=1e-4,
                 hint=f"{RESBLOCK_HINT} When the widths differ, skip is a 1x1 convolution.")


@check(points=1, uses=["ResBlock"])
def resblock_identity_skip_and_time(ns):
    """With equal widths the skip is the identity; the output depends on the time embedding."""
    got, expected, what = _resblock_case(ns, 8, 8, 16, seed=2)
    expect_close(got, expected, what, rtol=1e-4, atol=1e-4, hint=RESBLOCK_HINT)
    reference = _perturbed(unet.ResBlock(4, 4, 10), seed=3)
    student = _student_copy(ns, "ResBlock", reference, 4, 4, 10)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        same = student(x, torch.zeros(2, 10))
        other = student(x, torch.ones(2, 10))
    if torch.allclose(same, other):
        raise AssertionError("ResBlock ignores the time embedding: its output is the same for two "
                             "different emb. " + RESBLOCK_HINT)


# --- attention ------------------------------------------------------------------------------

def _reference_attention(q, k, v):
    weights = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ v.double()).to(q.dtype)


@check(points=1, uses=["attention"])
def attention_matches_formula(ns):
    """attention(q, k, v) = softmax(q k^T / sqrt(d)) v, for (B, N, d) and (B, heads, N, d) inputs."""
    for shape_q, shape_kv in [((2, 5, 8), (2, 7, 8)), ((3, 2, 9, 4), (3, 2, 9, 4))]:
        q, k = 2 * torch.randn(shape_q), 2 * torch.randn(shape_kv)
        v = torch.randn(shape_kv[:-1] + (6,))
        got = ns["attention"](q.clone(), k.clone(), v.clone())
        what = f"attention(q, k, v) for q of shape {shape_q} and k of shape {shape_kv}"
        expect_close(got, _reference_attention(q, k, v), what, rtol=1e-4, atol=1e-5,
                     hint=f"{ATTENTION_HINT} d is q's last dimension; work on the last two dimensions "
                          f"so that leading (batch, head) dimensions pass through.")


def _attention_block_pair(ns, ch, seed):
    reference = _perturbed(unet.AttentionBlock(ch), seed)
    return reference, _student_copy(ns, "AttentionBlock", reference, ch)


@check(points=2, uses=["AttentionBlock"])
def attention_block_matches_reference(ns):
    """AttentionBlock.forward matches lesson_lib's AttentionBlock (one head, H != W)."""
    for ch, shape, seed in [(8, (3, 8, 4, 5), 4), (12, (2, 12, 3, 3), 5)]:
        reference, student = _attention_block_pair(ns, ch, seed)
        x = torch.randn(shape)
        with torch.no_grad():
            expected = reference(x)
            got = student(x.clone())
        expect_close(got, expected, f"AttentionBlock({ch}) on x of shape {shape}", rtol=1e-4, atol=1e-4,
                     hint=BLOCK_HINT)


@check(points=1, uses=["AttentionBlock"])
def attention_block_is_permutation_equivariant(ns):
    """Shuffling the pixels of the input shuffles the output the same way (attention sees a set)."""
    _, student = _attention_block_pair(ns, 8, seed=6)
    x = torch.randn(2, 8, 4, 6)
    perm = torch.randperm(24)
    shuffle = lambda z: z.flatten(2)[:, :, perm].reshape(z.shape)  # noqa: E731
    with torch.no_grad():
        out = student(x)
        out_of_shuffled = student(shuffle(x))
    expect_tensor(out, "AttentionBlock(8) on x of shape (2, 8, 4, 6)", shape=x.shape)
    expect_close(out_of_shuffled, shuffle(out), "AttentionBlock(8) applied to shuffled pixels", rtol=1e-4,
                 atol=1e-4, hint="Self-attention treats the H*W positions as a set, so permuting them must "
                 "permute the output. A reshape straight from (B, C, H, W) to (B, H*W, C) mixes channels "
                 "and positions; use x.flatten(2).transpose(1, 2). " + BLOCK_HINT)

