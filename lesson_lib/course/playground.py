"""The course's closing playground (lesson 13): every shipped MNIST generator behind one panel.

Pick a model, a sampler, a number of steps, a guidance weight w and a seed; the panel draws one
digit per class. Nothing here samples on its own: :func:`draw` is one call of
:func:`lesson_lib.sample.generate`, the function behind ``python -m lesson_lib.sample``, with the
defaults that command takes from the model's card (:func:`lesson_lib.sample.defaults`), so what
the panel shows is what the command line writes for the same settings.

Which samplers a model accepts follows from how it was trained (:func:`samplers_for`): a
flow-matching model integrates its velocity (Euler, Heun); a consistency model takes its own
multistep sampler; a distilled student was trained for its own grid only (DDIM on it); every other
diffusion model takes DDPM, DDIM and the ODE solvers. Guidance is classifier-free guidance with the
paper's weight w (w = 0: the conditional model), for every class-conditional model except the
consistency model, which was distilled without it.

:func:`playground` builds the ipywidgets panel; it needs a running notebook kernel to react to the
controls, and the first draw of each model loads its weights (a second or two).
"""

import functools
import time
from types import SimpleNamespace

import torch

from ..diffusion.guidance import ClassifierFreeGuidance
from ..pretrained import available, latent_decoding, load_pretrained, model_card
from ..sample import DIFFUSION_SAMPLERS, FLOW_SAMPLERS, defaults, generate

GENERATORS = ("mnist_cond", "mnist_dit", "mnist_latent", "mnist_latent_flow", "mnist_consistency",
              "mnist_distilled_8", "mnist_distilled_4", "mnist_distilled_2", "mnist_distilled_1")
"""The shipped class-conditional MNIST generators the panel offers (those of them that are installed)."""


def models():
    """The generators of :data:`GENERATORS` that are shipped with this copy of the course."""
    shipped = set(available())
    return [name for name in GENERATORS if name in shipped]


def samplers_for(name):
    """The samplers shipped model ``name`` accepts, its card's own first."""
    card = model_card(name).get("sampling", {})
    own = card.get("sampler", "ddim")
    if card.get("grid") == "distillation" or own == "consistency":
        return (own,)                               # trained for its own sampler and grid
    choices = FLOW_SAMPLERS if own in FLOW_SAMPLERS else tuple(s for s in DIFFUSION_SAMPLERS if s != "consistency")
    return (own,) + tuple(s for s in choices if s != own)


def fixed_steps(name):
    """The number of steps a distilled student was trained for (it is sampled on that grid only), else None."""
    card = model_card(name).get("sampling", {})
    return card.get("steps") if card.get("grid") == "distillation" else None


@functools.lru_cache(maxsize=None)
def _loaded(name, device):
    model, schedule = load_pretrained(name, device=device)
    return model, schedule, latent_decoding(name, device)


def draw(name, sampler=None, steps=None, w=0.0, seed=0, per_class=1, device="cpu", labels=None):
    """``per_class`` samples of each of the 10 digits from shipped model ``name``, as
    ``python -m lesson_lib.sample --pretrained name --sampler ... --steps ... --guidance w --seed ...``
    makes them (sampler and steps default to the card's). Returns ``(images, labels, seconds)``:
    images in [-1, 1] of shape (10 per_class, 1, 28, 28), class by class (or one per entry of
    ``labels``, when given), their labels, and the wall time of the sampling call."""
    if name not in models():
        raise ValueError(f"name must be one of the shipped generators {', '.join(models())}, got name={name!r}")
    if sampler is not None and sampler not in samplers_for(name):
        raise ValueError(f"{name} is sampled with {' or '.join(samplers_for(name))}, got sampler={sampler!r}")
    model, schedule, decoding = _loaded(name, device)
    sampler, steps, grid = defaults(SimpleNamespace(pretrained=name, sampler=sampler, steps=steps))

    guidance = None
    if w:
        if sampler == "consistency":
            raise ValueError("a consistency model was distilled without guidance: leave w at 0")
        guidance = lambda denoise: ClassifierFreeGuidance(denoise, w=w)      # noqa: E731
    if labels is None:
        labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    start = time.perf_counter()
    x = generate(model, schedule, len(labels), sampler, steps, {"y": labels}, device, seed, progress=False,
                 guidance=guidance, grid=grid, **decoding)
    return x.clamp(-1, 1).cpu(), labels, time.perf_counter() - start


def playground(device="cpu"):
    """The panel: model, sampler, steps, guidance w, seed and samples per class; it redraws when a
    control changes and prints the settings and the time taken under the grid."""
    import ipywidgets as widgets
    from IPython.display import display

    from .plotting import show_grid

    names = models()
    model_box = widgets.Dropdown(options=names, value=names[0], description="model")
    sampler_box = widgets.Dropdown(options=samplers_for(names[0]), description="sampler")
    steps_box = widgets.IntSlider(value=8, min=1, max=100, description="steps", continuous_update=False)
    w_box = widgets.FloatSlider(value=0.0, min=0.0, max=6.0, step=0.5, description="guidance w",
                                continuous_update=False)
    seed_box = widgets.IntText(value=0, description="seed")
    per_class_box = widgets.IntSlider(value=2, min=1, max=8, description="per class", continuous_update=False)
    out = widgets.Output()

    changing = []                                     # set while a model change updates the other controls

    def refresh(*_):
        if changing:
            return
        with out:
            out.clear_output(wait=True)
            try:
                images, labels, seconds = draw(model_box.value, sampler_box.value, steps_box.value, w_box.value,
                                               seed_box.value, per_class_box.value, device)
            except ValueError as error:
                print(error)
                return
            grid = images.reshape(10, per_class_box.value, *images.shape[1:]).transpose(0, 1)   # a column per digit
            show_grid(grid, col_labels=list(range(10)), col_title="class",
                      title=f"{model_box.value}: {sampler_box.value}, {steps_box.value} steps, w = {w_box.value:g}")
            print(f"{len(images)} samples in {seconds:.2f} s on {device}")

    def model_changed(change):
        changing.append(True)                         # one redraw for the new model, not one per control
        try:
            sampler_box.options = samplers_for(change["new"])
            fixed = fixed_steps(change["new"])
            steps_box.disabled = fixed is not None
            steps_box.value = fixed or steps_box.value
            w_box.disabled = sampler_box.value == "consistency"
            if w_box.disabled:
                w_box.value = 0.0
        finally:
            changing.clear()
        refresh()

    model_box.observe(model_changed, names="value")
    for box in (sampler_box, steps_box, w_box, seed_box, per_class_box):
        box.observe(refresh, names="value")
    panel = widgets.VBox([widgets.HBox([model_box, sampler_box, steps_box]),
                          widgets.HBox([w_box, seed_box, per_class_box]), out])
    display(panel)
    refresh()
    return panel
