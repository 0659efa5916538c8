"""Checks for lesson 4, training image models (solutions/04_training_images.ipynb).

``ema_update`` is compared with the formula theta_ema <- d theta_ema + (1 - d) theta (Ho et
al., 2020, Appendix B), computed here in float64. ``training_step`` trains a class-conditional
model with label dropout (Ho & Salimans, 2022): it draws its own t, eps and dropout mask, so
the probe records what the model was called with and the parameters after each step; the
judge recovers eps from x_t by inverting Eq. 4 and compares the loss and the SGD update with :func:`lesson_lib.diffusion.losses.l_simple` for that same
t, eps and labels. The dropout rate is checked statistically on a large batch (the bounds are
five standard deviations wide). ``ema_of_constant`` and ``ema_steps_averaged`` are two questions
about what the average does, judged against lesson_lib's EMA. Total: 12 points.

Why one module: these are the checks of one exercise notebook; the grader loads a lesson's checks
from one module, and its parts share the probes and the model rebuilt in the grader.
"""


import torch
from torch import nn

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import (as_number, call_each, expect_close, expect_finite,
                                              expect_fresh_t_and_eps, expect_number, expect_sgd_step,
                                              expect_tensor, field, pairs)
from lesson_lib.course.protocol import type_name
from lesson_lib.diffusion.schedules import NoiseSchedule

# What the worker loads besides this module (see lesson_lib/course/box.py): the schedule builds the
# probes' alpha-bars; the references (losses, the EMA) are imported inside the judges only.
WORKER_MODULES = ("lesson_lib.diffusion.schedules",)

EMA_HINT = "theta_ema <- decay * theta_ema + (1 - decay) * theta, for every parameter."
LOSS_HINT = ("the loss is mean((eps - model(x_t, t, y=labels))^2) over every entry, with "
             "x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps, computed before optimizer.step()")


# --- ema_update -----------------------------------------------------------------------------

def _small_model():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.GroupNorm(1, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))


def _ema_case(decays):
    """A small model, an EMA copy whose weights differ from it, and how the model moves
    between updates."""
    model = _small_model()
    ema = {k: v + torch.randn_like(v) for k, v in model.state_dict().items()}
    moves = [{k: 0.1 * torch.randn_like(v) for k, v in model.state_dict().items()} for _ in decays]
    return {"model": dict(model.state_dict()), "ema": ema, "decays": list(decays), "moves": moves}


def _ema_models(case, trainable_ema):
    ema_model, model = _small_model(), _small_model()
    ema_model.load_state_dict(case["ema"])
    model.load_state_dict(case["model"])
    if not trainable_ema:
        ema_model.requires_grad_(False)
    return ema_model, model


def _ema_probe(ns, case):
    """After each update: the EMA's parameters; then the model moves for the next update."""
    ema_model, model = _ema_models(case, trainable_ema=False)
    answers = []
    for decay, move in zip(case["decays"], case["moves"]):
        ns["ema_update"](ema_model, model, decay)
        answers.append({k: v.detach().clone() for k, v in ema_model.named_parameters()})
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(move[name])
    return answers


@check(points=2, uses=["ema_update"], case=lambda: _ema_case((0.9, 0.999, 0.0)), probe=_ema_probe)
def ema_update_matches_formula(case, answer):
    """ema_update computes d * theta_ema + (1 - d) * theta for d = 0.9, 0.999 and 0 (a copy)."""
    ema_model, model = _ema_models(case, trainable_ema=False)
    ema = {k: v.detach() for k, v in ema_model.named_parameters()}
    theta = {k: v.detach().clone() for k, v in model.named_parameters()}
    for step, ((decay, move), got) in enumerate(pairs(list(zip(case["decays"], case["moves"])), answer), 1):
        for name in ema:
            want = decay * ema[name].double() + (1 - decay) * theta[name].double()
            expect_close(field(got, name), want.float(),
                         f"EMA parameter {name} after update {step} (decay = {decay})",
                         rtol=1e-5, atol=1e-6, hint=EMA_HINT)
        ema = {name: field(got, name) for name in ema}
        theta = {name: theta[name] + move[name] for name in theta}


def _in_place_probe(ns, case):
    ema_model, model = _ema_models(case, trainable_ema=True)  # as after copy.deepcopy(model)
    tensors = [(p, p.data_ptr()) for p in ema_model.parameters()]
    try:
        ns["ema_update"](ema_model, model, case["decays"][0])
    except RuntimeError as error:
        if "in-place" in str(error) or "leaf Variable" in str(error):
            raise AssertionError("ema_update failed on an EMA model whose parameters require grad "
                                 "(e.g. made with copy.deepcopy(model)): update under torch.no_grad(). "
                                 f"PyTorch said: {error}") from None
        raise
    return {"replaced": [now is not p or now.data_ptr() != ptr
                         for (p, ptr), now in zip(tensors, ema_model.parameters())],
            "graph": [now.grad_fn is not None for now in ema_model.parameters()],
            "ema": {k: v.detach().clone() for k, v in ema_model.named_parameters()},
            "model": {k: v.detach().clone() for k, v in model.named_parameters()}}


@check(points=1, uses=["ema_update"], case=lambda: _ema_case((0.75,)), probe=_in_place_probe)
def ema_update_is_in_place(case, answer):
    """ema_update changes the EMA's own tensors in place, leaves the model alone, builds no graph."""
    ema_model, model = _ema_models(case, trainable_ema=False)
    names = [name for name, _ in ema_model.named_parameters()]
    replaced, graph = field(answer, "replaced"), field(answer, "graph")
    for (name, e), p, was_replaced, has_graph in zip(ema_model.named_parameters(), model.parameters(),
                                                     pairs(names, replaced), pairs(names, graph)):
        if was_replaced[1] is not False:
            raise AssertionError(f"ema_update replaced the EMA parameter {name} by a new tensor; update the "
                                 f"existing one in place (mul_, add_, lerp_ or copy_) so that no second copy "
                                 f"of the model is allocated at every step")
        want = 0.75 * e.detach().double() + 0.25 * p.detach().double()
        expect_close(field(field(answer, "ema"), name), want.float(), f"EMA parameter {name} (decay = 0.75)",
                     rtol=1e-5, atol=1e-6, hint=EMA_HINT)
        if has_graph[1] is not False:
            raise AssertionError(f"EMA parameter {name} has a grad_fn: ema_update recorded a graph. "
                                 f"Run it under torch.no_grad()")
    for name, p in model.named_parameters():
        now = field(field(answer, "model"), name)
        expect_tensor(now, f"the model's parameter {name}", shape=p.shape)
        if not torch.equal(now, p.detach()):
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
    """Wraps a model and remembers every (x_t, t, y) it is called with (in the worker)."""

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


def _training_case(p_unconds, B=64, T=1000, num_classes=3, lr=0.05):
    model = _TinyConditional(num_classes, T)
    return {"T": T, "num_classes": num_classes, "lr": lr, "p_unconds": list(p_unconds),
            "weights": dict(model.state_dict()), "x0": 0.8 * torch.randn(B, 1, 4, 4),
            "y": torch.randint(0, num_classes, (B,))}


def _training_probe(ns, case):
    """One training step per entry of ``p_unconds``; per step: the loss, the number of model
    calls, what the model saw, the labels given afterwards and the parameters afterwards."""
    model = _Recording(_TinyConditional(case["num_classes"], case["T"]))
    model.model.load_state_dict(case["weights"])
    optimizer = torch.optim.SGD(model.parameters(), lr=case["lr"])
    schedule, answers = NoiseSchedule.linear(case["T"]), []
    for p_uncond in case["p_unconds"]:
        n_before, given = len(model.calls), case["y"].clone()
        loss = ns["training_step"](model, optimizer, case["x0"].clone(), given, schedule, p_uncond)
        x_t, t, seen = model.calls[-1] if model.calls else (None, None, None)
        answers.append({"loss": loss, "calls": len(model.calls) - n_before, "x_t": x_t, "t": t, "seen": seen,
                        "given_after": given,
                        "after": {k: v.detach().clone() for k, v in model.model.named_parameters()}})
    return answers


def _steps(case, answer):
    """Check the form of every step's answer; yields (loss, t, eps, labels seen, parameters
    after), with eps recovered from x_t by inverting Eq. 4 in float64."""
    schedule, x0, y = NoiseSchedule.linear(case["T"]), case["x0"], case["y"]
    for _, step in pairs(case["p_unconds"], answer):
        if field(step, "calls") != 1:
            raise AssertionError(f"training_step should call the model exactly once, it called it "
                                 f"{step['calls']} times")
        given = field(step, "given_after")
        expect_tensor(given, "the labels after the call", shape=y.shape)
        if not torch.equal(given, y):
            raise AssertionError("training_step changed the labels y it was given (in place); build a new "
                                 "tensor with torch.where, or clone y first: the caller's labels must survive")
        loss = field(step, "loss")
        if type(loss) is not float:
            raise AssertionError(f"training_step returned {type_name(loss)}; return loss.item(), "
                                 f"a Python float (so that no graph is kept alive)")
        as_number(loss, "the loss training_step returned")
        x_t, t, seen = field(step, "x_t"), field(step, "t"), field(step, "seen")
        expect_tensor(t, "the t the model was called with", shape=y.shape, dtype=torch.long)
        expect_tensor(seen, "the labels the model was called with", shape=y.shape, dtype=torch.long)
        expect_tensor(x_t, "the x_t the model was called with", shape=x0.shape)
        expect_finite(x_t, "the x_t the model was called with")
        if t.min() < 0 or t.max() >= schedule.T:
            raise AssertionError(f"training_step drew timesteps from {int(t.min())} to {int(t.max())}; "
                                 f"they must lie in 0..T-1 = 0..{schedule.T - 1}")
        a = schedule.alpha_bars[t].view(-1, 1, 1, 1)
        eps = (x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
        yield loss, t, eps.float(), seen, field(step, "after")


def _model(case, weights):
    model = _TinyConditional(case["num_classes"], case["T"])
    model.load_state_dict({**case["weights"], **weights})
    return model


@check(points=2, uses=["training_step"], probe=_training_probe, case=lambda: _training_case([0.3]))
def training_step_returns_l_simple(case, answer):
    """training_step returns L_simple for the t, eps and labels it used, before the update."""
    from lesson_lib.diffusion import losses
    (loss, t, eps, seen, _), = _steps(case, answer)
    expected = losses.l_simple(_model(case, {}), NoiseSchedule.linear(case["T"]), case["x0"], t=t, eps=eps,
                               y=seen).item()
    expect_number(loss, expected, "the loss training_step returned", rtol=1e-4, atol=1e-4,
                  hint=f"It must be L_simple for the t, eps and labels it used: {LOSS_HINT}")


@check(points=2, uses=["training_step"], probe=_training_probe,
       case=lambda: _training_case([0.5, 0.5], lr=0.1))
def training_step_updates_parameters(case, answer):
    """Two steps with SGD move the parameters by -lr * grad L_simple each (zero_grad, step)."""
    from lesson_lib.diffusion import losses
    schedule, previous_grads, weights = NoiseSchedule.linear(case["T"]), None, {}
    for step, (_, t, eps, seen, after) in enumerate(_steps(case, answer), start=1):
        before = _model(case, weights)
        grads = torch.autograd.grad(losses.l_simple(before, schedule, case["x0"], t=t, eps=eps, y=seen),
                                    list(before.parameters()), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(before.parameters(), grads)]
        expect_sgd_step(before, after, grads, previous_grads, case["lr"], step)
        previous_grads, weights = grads, after


@check(points=2, uses=["training_step"], probe=_training_probe,
       case=lambda: _training_case([0.25, 0.25, 0.0, 1.0], B=4000, T=10, lr=0.0))
def training_step_drops_labels(case, answer):
    """Labels become the null class with probability p_uncond (0.25, 0, 1), afresh at every call."""
    B, num_classes, y = len(case["y"]), case["num_classes"], case["y"]
    null = f"the null class model.num_classes = {num_classes}"
    masks = []
    for p_uncond, (_, _, _, seen, _) in zip(case["p_unconds"], _steps(case, answer)):
        dropped = seen == num_classes
        if p_uncond == 0.25:
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
            if len(masks) == 2 and torch.equal(masks[0], masks[1]):
                raise AssertionError("training_step dropped the same labels on two calls; draw a fresh "
                                     "dropout mask at every call")
        else:
            expected = 0 if p_uncond == 0.0 else B
            n_dropped = int(dropped.sum())
            if n_dropped != expected:
                raise AssertionError(f"with p_uncond = {p_uncond}, {n_dropped} of {B} labels were replaced "
                                     f"by {null}, expected {expected}")


@check(points=1, uses=["training_step"], probe=_training_probe,
       case=lambda: _training_case([0.1, 0.1], B=4000, T=10, lr=0.0))
def training_step_draws_t_and_eps(case, answer):
    """training_step draws t uniformly from 0..T-1 and fresh eps ~ N(0, I) at every call."""
    (_, t, eps, _, _), (_, t2, eps2, _, _) = _steps(case, answer)
    expect_fresh_t_and_eps(t, eps, t2, eps2, case["T"])


# --- two questions about the average ---------------------------------------------------------

def _reference_ema(theta_ema, theta, decay, steps):
    """The EMA of a weight that stays at ``theta`` for ``steps`` updates, by lesson_lib's EMA
    (its warm-up skipped: the decay is ``decay`` from the first update)."""
    from lesson_lib.training.ema import EMA

    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(theta_ema)
    ema = EMA(model, decay=decay)
    ema.num_updates = 10 ** 12  # past the warm-up
    with torch.no_grad():
        model.weight.fill_(theta)
    for _ in range(steps):
        ema.update(model)
    return ema.model.weight.item()


def _constant_case():
    return {"calls": [[[0.5, 0.5, 0.999, 1000], {}],
                      [[float(torch.randn(())), float(torch.randn(())), 0.9, int(torch.randint(1, 50, ()))], {}],
                      [[float(torch.randn(())), 1.0, float(torch.rand(()) * 0.5 + 0.4), int(torch.randint(0, 30, ()))], {}]]}


@check(points=1, uses=["ema_of_constant"], case=_constant_case, probe=call_each("ema_of_constant"))
def ema_of_constant_weights(case, answer):
    """ema_of_constant gives the EMA after `steps` updates towards weights that do not change."""
    for (args, _), got in pairs(case["calls"], answer):
        what = f"ema_of_constant({', '.join(f'{a:.4g}' for a in args)})"
        expect_number(got, _reference_ema(*args), what, rtol=1e-6, atol=1e-9,
                      hint="Each update keeps a fraction decay of the distance to theta, so after n steps "
                           "theta_ema is theta + decay^n (theta_ema - theta); equal weights stay equal.")


def _window_case():
    return {"calls": [[[0.999], {}], [[0.9], {}], [[1 - float(torch.rand(())) * 0.01], {}]]}


@check(points=1, uses=["ema_steps_averaged"], case=_window_case, probe=call_each("ema_steps_averaged"))
def ema_steps_averaged_is_one_over_one_minus_decay(case, answer):
    """ema_steps_averaged(decay) is 1 / (1 - decay), the length of a plain mean that weighs the newest step as much."""
    for (args, _), got in pairs(case["calls"], answer):
        decay = args[0]
        what = f"ema_steps_averaged({decay:.6g})"
        expected = 1.0 / _reference_ema(0.0, 1.0, decay, 1)  # one update from 0 towards 1: the newest weight
        expect_number(got, expected, what, rtol=1e-6, atol=0.0,
                      hint="The newest weights enter the average with weight 1 - decay, as in a plain mean over "
                           "1 / (1 - decay) steps (the weights (1 - decay) decay^k of older steps add up to 1).")
