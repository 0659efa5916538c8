"""What every network in the course shares: its configuration, and what its output means.

The rest of the library reads a few attributes of a model and nothing else:

=================  ==========================================================================
``config``         a dict of every constructor argument (JSON-friendly: numbers, strings,
                   lists), stored in checkpoints; ``Cls.from_config(config)`` rebuilds the
                   same architecture
``prediction``     what the output means: one of :data:`PREDICTIONS` (a diffusion denoiser),
                   or None (a classifier)
``num_classes``    the number of classes of a class-conditional model (its null class, for
                   classifier-free guidance, is index ``num_classes``), else None
``in_channels``    channels of the data (the dimension, for 2-D points)
``image_size``     height = width of the images it was built for; None for 2-D data
=================  ==========================================================================

A model class joins the course by subclassing :class:`Model`: it is then listed in
:data:`MODEL_CLASSES`, so that checkpoints naming it can be loaded. The configuration is a
plain dict rather than a dataclass so that a checkpoint (loaded with ``weights_only=True``)
and a JSON model card hold it as it is, and a student can print it.
"""

from torch import nn

PREDICTIONS = ("eps", "x0", "v")
"""The three things a diffusion network can predict (Ho et al. 2020; Salimans & Ho 2022);
:mod:`lesson_lib.diffusion.forward` converts between them."""

MODEL_CLASSES = {}
"""Every :class:`Model` subclass by class name, as checkpoints record it."""


def check_prediction(prediction):
    """Raise a clear error unless ``prediction`` is one of :data:`PREDICTIONS`."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got prediction={prediction!r}")


class Model(nn.Module):
    """Base class of the course's networks: the attributes above, with their defaults."""

    prediction = "eps"
    num_classes = None
    in_channels = None
    image_size = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        MODEL_CLASSES[cls.__name__] = cls

    @classmethod
    def from_config(cls, config):
        """Build the model described by ``model.config`` (e.g. one stored in a checkpoint)."""
        return cls(**config)
