"""What every network in the course shares: its configuration, what its output means, its input checks.

The rest of the library reads a few attributes of a model and nothing else:

=================  ==========================================================================
``config``         a dict of every constructor argument (JSON-friendly: numbers, strings,
                   lists), stored in checkpoints; ``Cls.from_config(config)`` rebuilds the
                   same architecture. Recorded by :class:`Model` itself, never written by hand
``prediction``     what the output means: one of :data:`PREDICTIONS` (a diffusion denoiser),
                   or None (a classifier)
``learn_sigma``    True if the output also carries the learned variance (Nichol & Dhariwal,
                   2021): ``2 * in_channels`` channels, the prediction then v; default False
``num_classes``    the number of classes of a class-conditional model (its null class, for
                   classifier-free guidance, is index ``num_classes``), else None
``in_channels``    channels of the data (the dimension, for 2-D points); always the data's,
                   so a network fed extra inputs (e.g. a low-resolution image to upsample)
                   names those separately (``cond_channels``)
``image_size``     height = width of the images it was built for; None for 2-D data
``data_shape``     the shape of one example, from the two above: ``(in_channels, image_size,
                   image_size)`` for images, ``(in_channels,)`` for points
=================  ==========================================================================

A model class joins the course by subclassing :class:`Model`. Then

* it is listed in :data:`MODEL_CLASSES`, so that checkpoints naming it can be loaded;
* its ``__init__`` records ``self.config``: the arguments of the call, bound to the
  signature with the defaults filled in, tuples turned into lists (the idea of diffusers'
  ``register_to_config``). So ``Cls(**model.config)`` builds the same network, and a new
  constructor argument is in the config without anyone remembering to add it;
* ``check_inputs(x, t, y)`` checks a forward pass's inputs against ``data_shape`` and
  ``num_classes``, with errors that name the argument.

The configuration is a plain dict rather than a dataclass so that a checkpoint (loaded with
``weights_only=True``) and a JSON model card hold it as it is, and a student can print it.
"""

import functools
import inspect
import numbers

import torch
from torch import nn

from ..arguments import float_tensor, labels

PREDICTIONS = ("eps", "x0", "v")
"""The three things a diffusion network can predict (Ho et al. 2020; Salimans & Ho 2022);
:mod:`lesson_lib.diffusion.forward` converts between them."""

MODEL_CLASSES = {}
"""Every :class:`Model` subclass by class name, as checkpoints record it."""


def check_prediction(prediction):
    """Raise a clear error unless ``prediction`` is one of :data:`PREDICTIONS`."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got prediction={prediction!r}")


def _is_compiling():
    """True while torch.compile traces the model (data-dependent checks are skipped then)."""
    if hasattr(torch, "compiler") and hasattr(torch.compiler, "is_compiling"):
        return torch.compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch 2.2


def reads_values(x):
    """Whether input checks may read tensor values (t >= 0? labels in range?): only on the CPU and
    outside torch.compile. Reading a CUDA tensor makes the host wait for the GPU, at every step of
    the sampler; there the sampler and the Trainer check timesteps and labels where they enter."""
    return x.device.type == "cpu" and not _is_compiling()


def _plain(value):
    """``value`` as JSON holds it: tuples become lists, numpy integers Python ints."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _recording_config(cls, init):
    """``cls.__init__`` that also sets ``self.config`` to the arguments it was called with: bound
    to its signature, defaults filled in, ``**kwargs`` spread out, so ``cls(**config)`` repeats the call."""
    signature = inspect.signature(init)
    parameters = list(signature.parameters.values())[1:]          # after self
    if any(p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL) for p in parameters):
        raise TypeError(f"{cls.__name__}.__init__ takes positional-only arguments or *args, which a config "
                        f"cannot name: give every argument a name, so that {cls.__name__}(**model.config) "
                        f"rebuilds the model")

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        call = signature.bind(self, *args, **kwargs)
        call.apply_defaults()
        config = {}
        for p in parameters:
            if p.kind == p.VAR_KEYWORD:
                config.update(call.arguments[p.name])
            else:
                config[p.name] = call.arguments[p.name]
        # A subclass's __init__ returns last, so its arguments are the config that stays.
        self.config = {name: _plain(value) for name, value in config.items()}

    return __init__


class Model(nn.Module):
    """Base class of the course's networks: the attributes above, with their defaults."""

    prediction = "eps"
    learn_sigma = False
    num_classes = None
    in_channels = None
    image_size = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        MODEL_CLASSES[cls.__name__] = cls
        if "__init__" in vars(cls):
            cls.__init__ = _recording_config(cls, cls.__init__)

    @classmethod
    def from_config(cls, config):
        """Build the model described by ``model.config`` (e.g. one stored in a checkpoint)."""
        return cls(**config)

    @property
    def data_shape(self):
        """The shape of one example: ``(in_channels, image_size, image_size)``, or ``(in_channels,)``."""
        if self.image_size is None:
            return (self.in_channels,)
        return (self.in_channels, self.image_size, self.image_size)

    def forward_gflops(self, t=500, **cond):
        """GFLOPs of one forward pass on one example (zeros of ``data_shape``, class 0 if conditional,
        and ``cond``, the other inputs of a model that takes them, e.g. a super-resolution model's),
        counted by ``torch.utils.flop_counter``: a multiply-add is 2 FLOPs; matrix products,
        convolutions and attention are counted, element-wise operations are not. Attention runs
        through its plain "math" kernel here, whose matrix products the counter sees (it has no
        formula for the CPU's fused kernel)."""
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode
        param = next(self.parameters())
        x = torch.zeros(1, *self.data_shape, device=param.device, dtype=param.dtype)
        y = None if self.num_classes is None else torch.zeros(1, dtype=torch.long, device=param.device)
        with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            self(x, torch.full((1,), t, device=param.device), y=y, **cond)
        return counter.get_total_flops() / 1e9

    def check_inputs(self, x, t, y=None, any_image_size=False):
        """Raise an error naming the argument unless ``model(x, t, y)`` fits this network.

        * ``x``: a float tensor of shape ``(B, *data_shape)``; with ``any_image_size``, images
          of any height and width (a convolutional network, which checks its own size rules);
        * ``t``: integer timesteps of shape ``(B,)``;
        * ``y``: None, or integer labels of shape ``(B,)`` in ``0..num_classes`` (the last one
          is the null class); only a class-conditional model takes them.

        Shapes and dtypes are always checked; the values of ``y`` only where
        :func:`reads_values` (on the CPU). A model without labels reads no value at all.
        """
        float_tensor(x, "x", finite=False)
        shape, name = self.data_shape, type(self).__name__
        fits = x.ndim == 1 + len(shape) and x.shape[1] == shape[0]
        if not (fits and (any_image_size or tuple(x.shape[2:]) == shape[1:])):
            dims = ", ".join(str(d) for d in (shape[:1] + ("H", "W") if any_image_size else shape))
            raise ValueError(f"x must have shape (batch, {dims}), got {tuple(x.shape)}: this {name} has "
                             f"data_shape={shape}, so it takes data of shape (B, {dims})")
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must be a tensor of integer timesteps (torch.long), got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
        if y is None:
            return
        if self.num_classes is None:
            rebuild = ", or build it with num_classes=... to use class labels" if "num_classes" in self.config else ""
            raise ValueError(f"this {name} is unconditional (num_classes=None): call it without class "
                             f"labels y{rebuild}")
        if (not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool
                or y.shape != t.shape):
            raise ValueError(f"y must be an integer tensor of shape ({x.shape[0]},), got "
                             + (f"dtype {y.dtype} and shape {tuple(y.shape)}" if isinstance(y, torch.Tensor)
                                else type(y).__name__))
        if reads_values(x):
            labels(y, self.num_classes, "y", allow_null=True, batch=x.shape[0])
