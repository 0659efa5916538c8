"""The checks of lessons 3 (the U-Net's blocks) and 4 (training image models).

Everything here runs in this process, without grading workers: the solution notebook's
definitions must pass every check, the untouched exercise's must reach the student's
``NotImplementedError`` in every check (which the grader reports as "not implemented", 0
points), and each check must reject a typical wrong implementation. The end-to-end grading
of these notebooks (full marks, zero) is done for every solution and exercise by
tests/test_grader.py.
"""


import pytest

from grading_helpers import expect_rejected

NOTEBOOKS = {"03": "03_unet.ipynb", "04": "04_training_images.ipynb"}


RESBLOCK = """
class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, time_dim, dropout=0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + {time}
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return {out}
"""
RESBLOCK_OK = dict(time="self.time_proj(F.silu(emb))[:, :, None, None]", out="self.skip(x) + h")

ATTENTION_BLOCK = """
class AttentionBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv({normed}).chunk(3, dim=1)
        q, k, v = ({flat} for z in (q, k, v))
        out = attention(q, k, v).transpose(1, 2).reshape(B, C, H, W)
        return {out}
"""
ATTENTION_BLOCK_OK = dict(normed="self.norm(x)", flat="z.flatten(2).transpose(1, 2)", out="x + self.proj(out)")

EMA = """
def ema_update(ema_model, model, decay):
    {body}
"""

TRAINING_STEP = """
def training_step(model, optimizer, x0, y, schedule, p_uncond):
    B = x0.shape[0]
    t = torch.randint(0, {T}, (B,))
    eps = torch.randn_like(x0)
    {labels}
    a = schedule.alpha_bars[t].float().view(-1, 1, 1, 1)
    loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, y=labels), eps{reduction})
    {zero_grad}
    loss.backward()
    optimizer.step()
    return loss.item()
"""
DROP_OK = ("drop = torch.rand(B) < p_uncond\n"
           "    labels = torch.where(drop, torch.full_like(y, model.num_classes), y)")
TRAINING_OK = dict(T="schedule.T", labels=DROP_OK, reduction="", zero_grad="optimizer.zero_grad()")


def training_step(**changes):
    return TRAINING_STEP.format(**{**TRAINING_OK, **changes})


BUGS = [  # (lesson, check, a wrong implementation that the check must reject)
    ("03", "embedding_matches_reference", """
        def sinusoidal_embedding(t, dim, max_period=10000):
            half = dim // 2
            angles = t.float()[:, None] * max_period ** (-torch.arange(half) / half)
            return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)  # cosines first
     """),
    ("03", "embedding_matches_reference", """
        def sinusoidal_embedding(t, dim, max_period=10000):
            half = dim // 2
            angles = t.float()[:, None] * max_period ** (-torch.arange(half) / dim)  # / dim, not / half
            return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
     """),
    ("03", "embedding_takes_max_period_and_float_t", """
        def sinusoidal_embedding(t, dim, max_period=10000):
            half = dim // 2
            angles = t.long().float()[:, None] * max_period ** (-torch.arange(half) / half)  # rounds t
            return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
     """),
    ("03", "embedding_takes_max_period_and_float_t", """
        def sinusoidal_embedding(t, dim, max_period=10000):
            half = dim // 2
            angles = t.float()[:, None] * 10000 ** (-torch.arange(half) / half)  # ignores max_period
            return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
     """),
    ("03", "resblock_matches_reference", RESBLOCK.format(**{**RESBLOCK_OK, "out": "h"})),  # no residual
    ("03", "resblock_matches_reference",
     RESBLOCK.format(**{**RESBLOCK_OK, "time": "self.time_proj(emb)[:, :, None, None]"})),  # no SiLU
    ("03", "resblock_identity_skip_and_time",
     RESBLOCK.format(**{**RESBLOCK_OK, "out": "(self.skip(x) if in_ch_differs(self) else 0) + h"})
     + "\ndef in_ch_differs(block):\n    return isinstance(block.skip, nn.Conv2d)\n"),
    ("03", "resblock_identity_skip_and_time", RESBLOCK.format(**{**RESBLOCK_OK, "time": "0"})),  # ignores t
    ("03", "attention_matches_formula", """
        def attention(q, k, v):
            return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v  # no 1/sqrt(d)
     """),
    ("03", "attention_matches_formula", """
        def attention(q, k, v):
            return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-2) @ v  # wrong axis
     """),
    ("03", "attention_block_matches_reference",
     ATTENTION_BLOCK.format(**{**ATTENTION_BLOCK_OK, "out": "self.proj(out)"})),  # no residual
    ("03", "attention_block_matches_reference",
     ATTENTION_BLOCK.format(**{**ATTENTION_BLOCK_OK, "normed": "x"})),  # no GroupNorm
    ("03", "attention_block_is_permutation_equivariant",
     ATTENTION_BLOCK.format(**{**ATTENTION_BLOCK_OK, "flat": "z.reshape(B, H * W, C)"})),  # mixes C and HW
    ("04", "ema_update_matches_formula", EMA.format(body="""with torch.no_grad():
        for e, p in zip(ema_model.parameters(), model.parameters()):
            e.copy_((1 - decay) * e + decay * p)  # decay on the wrong side""")),
    ("04", "ema_update_is_in_place", EMA.format(body="""with torch.no_grad():
        for e, p in zip(ema_model.parameters(), model.parameters()):
            e.data = decay * e.data + (1 - decay) * p.data  # a new tensor each time""")),
    ("04", "ema_update_is_in_place", EMA.format(body="""for e, p in zip(ema_model.parameters(), model.parameters()):
        e.mul_(decay).add_(p, alpha=1 - decay)  # no torch.no_grad()""")),
    ("04", "training_step_returns_l_simple", training_step(reduction=', reduction="sum"')),
    ("04", "training_step_updates_parameters", training_step(zero_grad="pass  # gradients never zeroed")),
    ("04", "training_step_drops_labels", training_step(labels="labels = y  # never dropped")),
    ("04", "training_step_drops_labels", training_step(labels=DROP_OK.replace("p_uncond", "0.1"))),
    ("04", "training_step_drops_labels", training_step(labels="drop = torch.rand(B) < p_uncond\n"
                                                       "    y[drop] = model.num_classes  # overwrites y\n"
                                                       "    labels = y")),
    ("04", "training_step_drops_labels", training_step(
        labels="drop = torch.rand(B, generator=torch.Generator().manual_seed(0)) < p_uncond\n"
               "    labels = torch.where(drop, torch.full_like(y, model.num_classes), y)")),  # same mask
    ("04", "training_step_draws_t_and_eps", training_step(T="schedule.T - 1")),  # never T - 1
]


BUGS += [  # the questions: a formula that misses a layer, a guess, the wrong closed form
    ("03", "resblock_parameter_count_is_exact", """
        def resblock_parameter_count(in_ch, out_ch, time_dim):
            return 2 * in_ch + 2 * out_ch + 9 * in_ch * out_ch + 9 * out_ch * out_ch + 2 * out_ch \\
                + time_dim * out_ch + out_ch + in_ch * out_ch + out_ch  # the skip conv even when in_ch == out_ch
     """),
    ("03", "resblock_parameter_count_is_exact", """
        def resblock_parameter_count(in_ch, out_ch, time_dim):
            skip = in_ch * out_ch if in_ch != out_ch else 0
            return 9 * in_ch * out_ch + 9 * out_ch * out_ch + time_dim * out_ch + skip  # no biases, no norms
     """),
    ("03", "resblock_parameter_count_is_exact", """
        def resblock_parameter_count(in_ch, out_ch, time_dim):
            return float(sum(p.numel() for p in ResBlock(in_ch, out_ch, time_dim).parameters()))  # a float
     """),
    ("04", "ema_of_constant_weights", """
        def ema_of_constant(theta_ema, theta, decay, steps):
            return theta_ema  # the average never moves
     """),
    ("04", "ema_of_constant_weights", """
        def ema_of_constant(theta_ema, theta, decay, steps):
            return theta + (1 - decay) ** steps * (theta_ema - theta)  # decay and 1 - decay swapped
     """),
    ("04", "ema_steps_averaged_is_one_over_one_minus_decay", """
        def ema_steps_averaged(decay):
            return 1000.0  # the answer for decay = 0.999 only
     """),
    ("04", "ema_steps_averaged_is_one_over_one_minus_decay", """
        def ema_steps_averaged(decay):
            return decay / (1 - decay)  # the mean age of the averaged steps
     """),
]


@pytest.mark.parametrize("lesson, check_name, source", BUGS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BUGS)])
def test_checks_reject_common_bugs(lesson, check_name, source):
    expect_rejected(lesson, check_name, source)


def test_ema_without_no_grad_gets_a_specific_hint():
    source = next(src for _, name, src in BUGS if "no torch.no_grad" in src)
    expect_rejected("04", "ema_update_is_in_place", source).match("torch.no_grad")
