"""Checks for lesson 4, training image models (solutions/04_training_images.ipynb).

``ema_update`` is compared with the formula theta_ema <- d theta_ema + (1 - d) theta (Ho et
al., 2020, Appendix B), computed here in float64. ``training_step`` trains a class-conditional
model with label dropout (Ho & Salimans, 2022): it draws its own t, eps and dropout mask, so
the checks record what the model was called with, recover eps from x_t by inverting Eq. 4,
and compare the loss and the SGD update with :func:`lesson_lib.diffusion.losses.l_simple` for that same
t, eps and labels. The dropout rate is checked statistically on a large batch (the bounds are
five standard deviations wide). Total: 10 points.
"""

import copy

import torch
from torch import nn

from lesson_lib.diffusion import losses
from lesson_lib.course.checks import check, expect_close, expect_fresh_t_and_eps, expect_sgd_step
from lesson_lib.diffusion.schedules import NoiseSchedule

EMA_HINT = "theta_ema <- decay * theta_ema + (1 - decay) * theta, for every parameter."
LOSS_HINT = ("the loss is mean((eps - model(x_t, t, y=labels))^2) over every entry, with "
             "x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps, computed before optimizer.step()")


# --- ema_update -----------------------------------------------------------------------------

def _ema_pair(seed, trainable_ema):
    """A small model and an EMA copy whose weights differ from it."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.GroupNorm(1, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    ema_model = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema_model.parameters():
            p.add_(torch.randn_like(p))
    if not trainable_ema:
        ema_model.requires_grad_(False)
    return ema_model, model


@check(points=2, uses=["ema_update"])
def ema_update_matches_formula(ns):
    """ema_update computes d * theta_ema + (1 - d) * theta for d = 0.9, 0.999 and 0 (a copy)."""
    ema_model, model = _ema_pair(seed=0, trainable_ema=False)
    for step, decay in enumerate((0.9, 0.999, 0.0), start=1):
        expected = [decay * e.double() + (1 - decay) * p.double()
                    for e, p in zip(ema_model.parameters(), model.parameters())]
        ns["ema_update"](ema_model, model, decay)
        for (name, e), want in zip(ema_model.named_parameters(), expected):
            expect_close(e, want.float(), f"EMA parameter {name} after update {step} (decay = {decay})",
                         rtol=1e-5, atol=1e-6, hint=EMA_HINT)
        with torch.no_grad():  # move the model, so that the next update has something to average
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))


@check(points=1, uses=["ema_update"])
def ema_update_is_in_place(ns):
    """ema_update changes the EMA's own tensors in place, leaves the model alone, builds no graph."""
    ema_model, model = _ema_pair(seed=1, trainable_ema=True)  # as after copy.deepcopy(model)
    tensors = [(p, p.data_ptr()) for p in ema_model.parameters()]
    model_before = [p.detach().clone() for p in model.parameters()]
    expected = [0.75 * e.detach().double() + 0.25 * p.detach().double()
                for e, p in zip(ema_model.parameters(), model.parameters())]
    try:
        ns["ema_update"](ema_model, model, 0.75)
    except RuntimeError as error:
        if "in-place" in str(error) or "leaf Variable" in str(error):
            raise AssertionError("ema_update failed on an EMA model whose parameters require grad "
                                 "(e.g. made with copy.deepcopy(model)): update under torch.no_grad(). "
                                 f"PyTorch said: {error}") from None
        raise
    for (p, ptr), (name, now), want in zip(tensors, ema_model.named_parameters(), expected):
        if now is not p or now.data_ptr() != ptr:
            raise AssertionError(f"ema_update replaced the EMA parameter {name} by a new tensor; update the "
                                 f"existing one in place (mul_, add_, lerp_ or copy_) so that no second copy "
                                 f"of the model is allocated at every step")
        expect_close(now.detach(), want.float(), f"EMA parameter {name} (decay = 0.75)", rtol=1e-5,
                     atol=1e-6, hint=EMA_HINT)
        if now.grad_fn is not None:
            raise AssertionError(f"EMA parameter {name} has a grad_fn: ema_update recorded a graph. "
                                 f"Run it under torch.no_grad()")
    for (name, p), old in zip(model.named_parameters(), model_before):
        if not torch.equal(p, old):
            raise AssertionError(f"ema_update changed the model's parameter {name}; only the EMA copy "
                                 f"may change")


# --- training_step ----------------------------------------------------------------------------

class _TinyConditional(nn.Module):
    """A small class-conditional eps_theta(x_t, t, y) for 1x4x4 images; label ``num_classes``
    is the null class."""

    def __init__(self, num_classes, T):
        super().__init__()
        self.num_classes, self.T = num_classes, T
        self.class_embedding = nn.Embedding(num_classes + 1, 6)
        self.net = nn.Sequential(nn.Linear(16 + 1 + 6, 24), nn.Tanh(), nn.Linear(24, 16))

    def forward(self, x_t, t, y):
        features = [x_t.flatten(1), (t.float() / self.T)[:, None], self.class_embedding(y)]
        return self.net(torch.cat(features, dim=1)).view_as(x_t)


class _Recording(nn.Module):
    """Wraps a model and remembers every (x_t, t, y) it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.num_classes = model.num_classes
        self.calls = []

    def forward(self, x_t, t, y=None):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (x_t.shape[0],):
            described = (f"a {t.dtype} tensor of shape {tuple(t.shape)}"
                         if isinstance(t, torch.Tensor) else repr(t))
            raise AssertionError(f"the model must be called as model(x_t, t, y=labels) with t a long tensor "
                                 f"of shape (B,) = ({x_t.shape[0]},); got t = {described}")
        if y is None:
            raise AssertionError("the model was called without labels: call model(x_t, t, y=labels), with "
                                 "the dropped labels replaced by the null class model.num_classes")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.long or tuple(y.shape) != (x_t.shape[0],):
            raise AssertionError(f"the labels must be a long tensor of shape (B,) = ({x_t.shape[0]},), got "
                                 f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__} of shape "
                                 f"{tuple(getattr(y, 'shape', ()))}")
        if int(y.min()) < 0 or int(y.max()) > self.num_classes:
            raise AssertionError(f"labels must lie in 0..{self.num_classes} (num_classes is the null "
                                 f"class), got values from {int(y.min())} to {int(y.max())}")
        self.calls.append((x_t.detach().clone(), t.detach().clone(), y.detach().clone()))
        return self.model(x_t, t, y)


def _setup(B=64, T=1000, num_classes=3, seed=0):
    torch.manual_seed(seed)
    model = _Recording(_TinyConditional(num_classes, T))
    x0 = 0.8 * torch.randn(B, 1, 4, 4)
    y = torch.randint(0, num_classes, (B,))
    return model, NoiseSchedule.linear(T), x0, y


def _one_training_step(ns, model, optimizer, x0, y, schedule, p_uncond):
    """Call the student's training_step; returns (loss, t, eps, labels seen by the model), with
    eps recovered from x_t by inverting Eq. 4 in float64."""
    n_before = len(model.calls)
    given = y.clone()
    loss = ns["training_step"](model, optimizer, x0.clone(), given, schedule, p_uncond)
    if len(model.calls) != n_before + 1:
        raise AssertionError(f"training_step should call the model exactly once, it called it "
                             f"{len(model.calls) - n_before} times")
    if not torch.equal(given, y):
        raise AssertionError("training_step changed the labels y it was given (in place); build a new "
                             "tensor with torch.where, or clone y first: the caller's labels must survive")
    if isinstance(loss, torch.Tensor) or not isinstance(loss, float):
        raise AssertionError(f"training_step returned {type(loss).__name__}; return loss.item(), "
                             f"a Python float (so that no graph is kept alive)")
    x_t, t, seen = model.calls[-1]
    if t.min() < 0 or t.max() >= schedule.T:
        raise AssertionError(f"training_step drew timesteps from {int(t.min())} to {int(t.max())}; "
                             f"they must lie in 0..T-1 = 0..{schedule.T - 1}")
    a = schedule.alpha_bars[t].view(-1, 1, 1, 1)
    eps = (x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
    return loss, t, eps.float(), seen


@check(points=2, uses=["training_step"])
def training_step_returns_l_simple(ns):
    """training_step returns L_simple for the t, eps and labels it used, before the update."""
    model, schedule, x0, y = _setup()
    before = copy.deepcopy(model.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss, t, eps, seen = _one_training_step(ns, model, optimizer, x0, y, schedule, p_uncond=0.3)
    expected = losses.l_simple(before, schedule, x0, t=t, eps=eps, y=seen).item()
    if abs(loss - expected) > 1e-4 * max(1.0, abs(expected)):
        raise AssertionError(f"training_step returned {loss:.6g}, but L_simple for the t, eps and labels "
                             f"it used is {expected:.6g}: {LOSS_HINT}")


@check(points=2, uses=["training_step"])
def training_step_updates_parameters(ns):
    """Two steps with SGD move the parameters by -lr * grad L_simple each (zero_grad, step)."""
    lr = 0.1
    model, schedule, x0, y = _setup(seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    previous_grads = None
    for step in (1, 2):
        before = copy.deepcopy(model.model)
        _, t, eps, seen = _one_training_step(ns, model, optimizer, x0, y, schedule, p_uncond=0.5)
        grads = torch.autograd.grad(losses.l_simple(before, schedule, x0, t=t, eps=eps, y=seen),
                                    list(before.parameters()), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(before.parameters(), grads)]
        expect_sgd_step(before, model.model, grads, previous_grads, lr, step)
        previous_grads = grads


@check(points=2, uses=["training_step"])
def training_step_drops_labels(ns):
    """Labels become the null class with probability p_uncond (0.25, 0, 1), afresh at every call."""
    B, num_classes = 4000, 3
    model, schedule, x0, y = _setup(B=B, T=10, num_classes=num_classes, seed=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    null = f"the null class model.num_classes = {num_classes}"
    masks = []
    for _ in range(2):
        _, _, _, seen = _one_training_step(ns, model, optimizer, x0, y, schedule, p_uncond=0.25)
        dropped = seen == num_classes
        kept_changed = int((seen[~dropped] != y[~dropped]).sum())
        if kept_changed:
            raise AssertionError(f"{kept_changed} labels were changed to something other than {null}; a "
                                 f"label is either kept as it is or replaced by the null class")
        rate = dropped.float().mean().item()
        if abs(rate - 0.25) > 0.035:
            raise AssertionError(f"with p_uncond = 0.25, {rate:.1%} of {B} labels were replaced by {null}; "
                                 f"drop each label independently with probability p_uncond "
                                 f"(torch.rand(B) < p_uncond)")
        masks.append(dropped)
    if torch.equal(masks[0], masks[1]):
        raise AssertionError("training_step dropped the same labels on two calls; draw a fresh dropout "
                             "mask at every call")
    for p_uncond, expected in ((0.0, 0), (1.0, B)):
        _, _, _, seen = _one_training_step(ns, model, optimizer, x0, y, schedule, p_uncond=p_uncond)
        n_dropped = int((seen == num_classes).sum())
        if n_dropped != expected:
            raise AssertionError(f"with p_uncond = {p_uncond}, {n_dropped} of {B} labels were replaced by "
                                 f"{null}, expected {expected}")


@check(points=1, uses=["training_step"])
def training_step_draws_t_and_eps(ns):
    """training_step draws t uniformly from 0..T-1 and fresh eps ~ N(0, I) at every call."""
    T, B = 10, 4000
    model, schedule, x0, y = _setup(B=B, T=T, seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    _, t, eps, _ = _one_training_step(ns, model, optimizer, x0, y, schedule, p_uncond=0.1)
    _, t2, eps2, _ = _one_training_step(ns, model, optimizer, x0, y, schedule, p_uncond=0.1)
    expect_fresh_t_and_eps(t, eps, t2, eps2, T)
